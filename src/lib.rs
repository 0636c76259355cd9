//! rocm-fix: keeps ROCm workloads on AMD RDNA1/RDNA2 GPUs alive through
//! "Memory access fault … Page not present" crashes.
//!
//! The interposer (`librocm_fix.so`) lands with issue 4; this crate holds
//! the plain-Rust modules it is built from.

/// The version of rocm-fix, as the C API and the command report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
