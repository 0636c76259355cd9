//! The command's exit codes (documented in `--help` and README), in a module
//! of their own so that the subcommands that return them need not import the
//! argument parser that dispatches to them.

/// Success (run: the command's own status is passed through).
pub const EXIT_OK: i32 = 0;
/// doctor found problems worth acting on; triage found warnings.
pub const EXIT_FINDINGS: i32 = 1;
/// Bad usage, or input that is not what the command reads.
pub const EXIT_USAGE: i32 = 2;
/// Something failed on our side (a file we cannot read or write, no preload).
pub const EXIT_ERROR: i32 = 3;
