//! rocm-fix: keeps ROCm workloads on AMD RDNA1/RDNA2 GPUs alive through
//! "Memory access fault … Page not present" crashes.
//!
//! This crate is the engine, `librocm_fix_engine.so`, that the preloaded
//! front (`src/preload`, `librocm_fix.so`) opens on the first HIP/HSA call;
//! it is also an rlib of plain modules that unit tests drive directly:
//!
//! - [`policy`]: every rewrite rule (coherent → non-coherent, padding, …)
//! - [`topology`]: the real chip of each GPU, from the KFD topology
//! - [`registry`]: live allocations, for fault forensics
//! - [`config`]: settings from /etc/rocm-fix.conf and ROCM_FIX_* variables
//! - [`engine`]: what each hook does; [`forensics`]: the fault handler
//! - [`kb`]: the known-issues knowledge base (data in src/kb/); [`triage`]:
//!   the real chips behind a pasted rocminfo; [`pciids`]: AMD PCI device ids

pub mod callers;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod engine;
pub mod engine_abi;
pub mod forensics;
pub mod kb;
pub mod kparams;
pub mod logging;
pub mod pciids;
pub mod policy;
pub mod pools;
pub mod preload_file;
pub mod process;
pub mod registry;
pub mod stats;
pub mod supervisor;
pub mod topology;
pub mod triage;

/// The version of rocm-fix, as the C API and the command report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
