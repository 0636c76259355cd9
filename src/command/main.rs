//! `rocm-fix` and `rocm-fix-run` (the same program under a second name):
//! everything is in the library's `cli` module.
fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // A reporting command whose reader goes away (`rocm-fix kb list | head`)
    // ends quietly, as other tools do, instead of panicking on EPIPE. The
    // supervisor (`run`, `rocm-fix-run`) keeps Rust's default: it must outlive
    // a closed stderr to wait for its command.
    let runs = args.first().is_some_and(|a| {
        std::path::Path::new(a)
            .file_name()
            .is_some_and(|n| n == "rocm-fix-run")
    }) || args.get(1).is_some_and(|a| a == "run");
    if !runs {
        // SAFETY: restoring the default disposition of one signal at start-up.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    std::process::exit(rocm_fix_command::cli::main(args));
}
