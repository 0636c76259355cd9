//! Logging, silent unless ROCM_FIX_LOG (or `log` in the config file) gives
//! an env_logger filter such as `debug` or `rocm_fix_engine=trace`. Output
//! goes to stderr, prefixed so it cannot be mistaken for the application's.

pub fn init(filter: Option<&str>) {
    let Some(filter) = filter.filter(|f| !f.is_empty()) else {
        return;
    };
    // env_logger prints one unprefixed warning per bad directive, with the
    // user's bytes raw: it only ever sees the filter rebuilt from the good
    // directives (the configuration warned about the rest, escaped). Without
    // its regex feature nothing else in a filter can make it warn.
    let (filter, _) = rocm_fix_shared::config::log_filter(filter);
    if filter.is_empty() {
        return;
    }
    let _ = env_logger::Builder::new()
        .parse_filters(&filter)
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
