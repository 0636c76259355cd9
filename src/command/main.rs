//! `rocm-fix` and `rocm-fix-run` (the same program under a second name):
//! everything is in the library's `cli` module.
fn main() {
    std::process::exit(rocm_fix_command::cli::main(std::env::args_os().collect()));
}
