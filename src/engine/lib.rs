//! The engine, `librocm_fix_engine.so`: it loads into every HIP process.
//!
//! The preloaded front (`src/preload`, `librocm_fix.so`) holds every
//! `extern "C"` hook and opens this library on the first HIP or HSA call
//! ([`hooks::rocm_fix_engine_init`], the one export); the C ABI between them
//! is [`abi`]. It is also an rlib, so that unit tests drive the modules
//! directly.
//!
//! May use: `rocm-fix-shared` (configuration, topology), std, `libc`, `log`,
//! `env_logger`. Never the command (`src/command`) nor its crates: what is
//! linked here is mapped into every process that touches the GPU.
//!
//! - [`hooks`]: what each hook does (one function per hooked call)
//! - [`policy`]: every rewrite rule (coherent → non-coherent, padding, …)
//! - [`state`]: what is decided once per process, the real functions, books
//! - [`registry`]: live allocations, for fault forensics
//! - [`pools`]: the HSA memory pools, for an application's own HSA allocations
//! - [`sink`]: mapped memory after a block end, shared, for buffers that end there
//! - [`callers`]: which library made a call (the runtime's own, RCCL, …)
//! - [`forensics`]: the GPU memory fault handler and journal
//! - [`stats`]: the counters of the C API; [`logging`]: `ROCM_FIX_LOG`

pub mod abi;
pub mod callers;
pub mod forensics;
pub mod hooks;
pub mod logging;
pub mod policy;
pub mod pools;
pub mod registry;
pub mod sink;
pub mod state;
pub mod stats;

/// The version of rocm-fix, as the C API reports it.
pub const VERSION: &str = rocm_fix_shared::VERSION;
