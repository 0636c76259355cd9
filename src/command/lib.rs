//! The `rocm-fix` command (and `rocm-fix-run`, its second name): a program
//! the user runs, never loaded into other processes.
//!
//! May use: `rocm-fix-shared`, std, `libc` and the command-line crates
//! (clap, clap_complete, clap_mangen, serde, serde_json). Never the engine: what the command knows about the engine's
//! decisions comes from `rocm-fix-shared`.
//!
//! [`cli`] parses the arguments and dispatches ([`exit`]: the exit codes); one
//! module per subcommand:
//!
//! - [`run`]: `rocm-fix run` / `rocm-fix-run`, the supervisor and retry ladder
//! - [`doctor`]: `rocm-fix doctor`, the system report
//! - [`triage`]: `rocm-fix triage`, the real chips behind a pasted rocminfo
//! - [`preload`]: `rocm-fix preload enable|disable|status`, /etc/ld.so.preload
//! - [`kernel_params`]: `rocm-fix kernel-params plan|apply|revert`
//! - [`validate`]: `rocm-fix validate`, probe kernels with and without
//!   rocm-fix on the user's GPU, and a report to share
//! - [`report`]: `rocm-fix report`, the crash bundle; [`kernel_log`] decodes
//!   the amdgpu page-fault reports it (and triage) read
//! - [`kb`]: `rocm-fix kb list|show`, the knowledge base as text and JSON
//!
//! [`input`] reads the files the user points the command at (regular files
//! only, bounded); [`json`] is how the command writes JSON (serde_json, in
//! the layouts its outputs have always had).

pub mod cli;
pub mod doctor;
pub mod exit;
pub mod hipbin;
pub mod input;
pub mod json;
pub mod kb;
pub mod kernel_log;
pub mod kernel_params;
pub mod preload;
pub mod report;
pub mod run;
pub mod triage;
pub mod validate;

/// The version of rocm-fix.
pub const VERSION: &str = rocm_fix_shared::VERSION;
