//! Logging, silent unless ROCM_FIX_LOG (or `log` in the config file) gives
//! an env_logger filter such as `debug` or `rocm_fix_engine=trace`. Output
//! goes to stderr, prefixed so it cannot be mistaken for the application's.

pub fn init(filter: Option<&str>) {
    let Some(filter) = filter.filter(|f| !f.is_empty()) else {
        return;
    };
    let _ = env_logger::Builder::new()
        .parse_filters(filter)
        .format(|buf, rec| {
            use std::io::Write;
            writeln!(
                buf,
                "rocm-fix[{}] {}: {}",
                std::process::id(),
                rec.level(),
                rec.args()
            )
        })
        .target(env_logger::Target::Stderr)
        .try_init();
}
