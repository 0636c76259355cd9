//! What the engine and the command both use.
//!
//! Part of this is loaded into user processes with the engine (configuration,
//! topology, the process facts), so the crate stays std + `libc`: no
//! argument parsing, no serde. It never uses the engine or the command.
//!
//! - [`config`]: settings from /etc/rocm-fix.conf and `ROCM_FIX_*`, the
//!   [`config::Mode`] and which GPUs rocm-fix applies to
//! - [`topology`]: the real chip of each GPU, from the KFD topology
//! - [`process`]: secure execution, the topology root, HIP's device order
//! - [`pciids`]: AMD PCI device ids → chips (data in `kb/pci_ids.txt`)
//! - [`kb`]: the known-issues knowledge base and run presets (data in `kb/`)

pub mod config;
pub mod kb;
pub mod pciids;
pub mod process;
pub mod topology;

/// The version of rocm-fix (every crate of the workspace shares it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
