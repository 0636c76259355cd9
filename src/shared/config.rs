//! Configuration: the system-wide file, then the environment.
//!
//! Nothing here may stop the host process: every bad value keeps the value
//! already in effect (the default unless the file set it) and yields exactly
//! one warning line for the caller to print.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::topology::Family;

/// How much rocm-fix does in a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Rewrite on RDNA1/RDNA2 only (the chips the fix is for).
    #[default]
    Auto,
    /// Rewrite on any AMD GPU.
    On,
    /// Forensics only: record allocations and explain faults, rewrite nothing.
    Observe,
    /// Do nothing.
    Off,
}

impl Mode {
    /// The name used in configuration and reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::On => "on",
            Mode::Observe => "observe",
            Mode::Off => "off",
        }
    }

    /// `auto`, `on`, `observe` or `off`, case-insensitive.
    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::Auto, Mode::On, Mode::Observe, Mode::Off]
            .into_iter()
            .find(|m| s.eq_ignore_ascii_case(m.as_str()))
    }
}

/// Whether allocation rewrites apply to a GPU of `family` under `mode`.
///
/// Auto: only RDNA1/RDNA2, whose real chip (facts §5) maps coherent memory
/// MTYPE_UC (facts §6). On: every family. Observe and Off never rewrite.
pub fn active(mode: Mode, family: Family) -> bool {
    match mode {
        Mode::Auto => matches!(family, Family::Rdna1 | Family::Rdna2),
        Mode::On => true,
        Mode::Observe | Mode::Off => false,
    }
}

/// The system-wide configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/rocm-fix.conf";

/// Default padding after each allocation: 64 KiB (16 pages). It is VRAM
/// spent per allocation, so it stays small; an over-read beyond it is named
/// in the fault journal and `rocm-fix-run` retries with more.
pub const DEFAULT_PAD: usize = 64 << 10;

/// Largest accepted padding: 1 GiB.
pub const MAX_PAD: usize = 1 << 30;

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// What rocm-fix does (`auto` by default).
    pub mode: Mode,
    /// Bytes of padding after each allocation (0 = none).
    pub pad_bytes: usize,
    /// Absolute path of the allocation journal, if any.
    pub journal: Option<PathBuf>,
    /// Print statistics at exit.
    pub stats: bool,
    /// env_logger-style filter, stored as given.
    pub log_filter: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Auto,
            pad_bytes: DEFAULT_PAD,
            journal: None,
            stats: false,
            log_filter: None,
        }
    }
}

/// The settings, each reachable as a file key and an environment variable.
#[derive(Clone, Copy)]
enum Setting {
    Mode,
    Padding,
    Journal,
    Stats,
    Log,
}

const SETTINGS: [(Setting, &str, &str); 5] = [
    (Setting::Mode, "mode", "ROCM_FIX_MODE"),
    (Setting::Padding, "padding", "ROCM_FIX_PAD"),
    (Setting::Journal, "journal", "ROCM_FIX_JOURNAL"),
    (Setting::Stats, "stats", "ROCM_FIX_STATS"),
    (Setting::Log, "log", "ROCM_FIX_LOG"),
];

/// Builds the configuration from the system file's text (if any) and then
/// the environment, which overrides it.
///
/// File: `key = value` lines (keys `mode`, `padding`, `journal`, `stats`,
/// `log`, case-insensitive); `#` starts a comment at the start of a line or
/// after whitespace; blank lines are ignored; a repeated key's last value wins.
/// Environment: `ROCM_FIX_MODE` (auto|on|observe|off, case-insensitive),
/// `ROCM_FIX_PAD` (bytes, or with a K/M/G suffix; at most 1G; 0 = none),
/// `ROCM_FIX_JOURNAL` (absolute path), `ROCM_FIX_STATS` (1/0/true/false),
/// `ROCM_FIX_LOG` (stored as-is). An empty value leaves mode, padding and
/// stats as they are and turns journal and log off.
///
/// When `secure` (an AT_SECURE, e.g. setuid, process) the environment is
/// not read at all and no journal is written, so an unprivileged caller
/// cannot steer a privileged process.
///
/// Returns the configuration and one warning per rejected value or line.
pub fn from_sources(
    file_text: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    secure: bool,
) -> (Config, Vec<String>) {
    let mut cfg = Config::default();
    let mut warnings = Vec::new();
    if let Some(text) = file_text {
        apply_file(&mut cfg, text, &mut warnings);
    }
    if secure {
        cfg.journal = None;
        return (cfg, warnings);
    }
    for (setting, _, var) in SETTINGS {
        if let Some(value) = env(var) {
            let label = format!("{var}={}", shown(&value));
            apply(&mut cfg, setting, &value, &label, &mut warnings);
        }
    }
    (cfg, warnings)
}

fn apply_file(cfg: &mut Config, text: &str, warnings: &mut Vec<String>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let where_ = format!("rocm-fix: {SYSTEM_CONFIG} line {line_no}");
        let pair = line.split_once('=').filter(|(k, _)| !k.trim().is_empty());
        let Some((key, value)) = pair else {
            warnings.push(format!(
                "{where_}: '{}' is not 'key = value'; ignored",
                shown(line)
            ));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let Some(&(setting, name, _)) = SETTINGS
            .iter()
            .find(|(_, name, _)| key.eq_ignore_ascii_case(name))
        else {
            warnings.push(format!(
                "{where_}: unknown key '{}' (known: mode, padding, journal, stats, log); ignored",
                shown(key)
            ));
            continue;
        };
        let label = format!("{SYSTEM_CONFIG} line {line_no}: {name} = {}", shown(value));
        apply(cfg, setting, value, &label, warnings);
    }
}

/// Removes a `#` comment that starts the line or follows whitespace
/// (so `a#b` in a path or filter survives).
fn strip_comment(line: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return line.get(..i).unwrap_or(line);
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Applies one value; `label` names its source in the warning.
fn apply(cfg: &mut Config, setting: Setting, value: &str, label: &str, warnings: &mut Vec<String>) {
    let trimmed = value.trim();
    let problem = match setting {
        Setting::Mode => {
            if trimmed.is_empty() {
                return;
            }
            match Mode::parse(trimmed) {
                Some(m) => {
                    cfg.mode = m;
                    return;
                }
                None => format!(
                    "is not one of auto, on, observe, off; using {}",
                    cfg.mode.as_str()
                ),
            }
        }
        Setting::Padding => {
            if trimmed.is_empty() {
                return;
            }
            match parse_size(trimmed) {
                Ok(n) => {
                    cfg.pad_bytes = n;
                    return;
                }
                Err(SizeError::TooLarge) => format!(
                    "is more than the maximum 1G; using {}",
                    show_size(cfg.pad_bytes)
                ),
                Err(SizeError::Malformed) => format!(
                    "is not a size (bytes, or a number with K, M or G like 64K or 2M); using {}",
                    show_size(cfg.pad_bytes)
                ),
            }
        }
        Setting::Stats => {
            if trimmed.is_empty() {
                return;
            }
            match parse_bool(trimmed) {
                Some(b) => {
                    cfg.stats = b;
                    return;
                }
                None => format!(
                    "is not one of 1, 0, true, false; using {}",
                    if cfg.stats { "1" } else { "0" }
                ),
            }
        }
        Setting::Journal => {
            if value.is_empty() {
                cfg.journal = None;
                return;
            }
            let path = PathBuf::from(value);
            // A relative path would land in whatever directory each process
            // happens to run in.
            if path.is_absolute() {
                cfg.journal = Some(path);
                return;
            }
            let current = match &cfg.journal {
                Some(p) => shown(&p.to_string_lossy()),
                None => "no journal".to_string(),
            };
            format!("is not an absolute path; using {current}")
        }
        Setting::Log => {
            cfg.log_filter = (!value.is_empty()).then(|| value.to_string());
            return;
        }
    };
    warnings.push(format!("rocm-fix: {label} {problem}"));
}

enum SizeError {
    Malformed,
    TooLarge,
}

/// Decimal bytes with an optional binary K, M or G suffix (either case).
fn parse_size(s: &str) -> Result<usize, SizeError> {
    let (digits, shift) = match s.chars().last() {
        Some(c @ ('k' | 'K')) => (s.strip_suffix(c), 10),
        Some(c @ ('m' | 'M')) => (s.strip_suffix(c), 20),
        Some(c @ ('g' | 'G')) => (s.strip_suffix(c), 30),
        _ => (Some(s), 0),
    };
    let digits = digits.ok_or(SizeError::Malformed)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SizeError::Malformed);
    }
    // All digits, so a parse failure can only be overflow.
    let n: u64 = digits.parse().map_err(|_| SizeError::TooLarge)?;
    let bytes = n.checked_mul(1u64 << shift).ok_or(SizeError::TooLarge)?;
    match usize::try_from(bytes) {
        Ok(b) if b <= MAX_PAD => Ok(b),
        _ => Err(SizeError::TooLarge),
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    if s == "1" || s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s == "0" || s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A size as the user would write it: 1M, 64K, or plain bytes.
/// ROCr's VRAM block (ROCR-Runtime amd_memory_region.h `block_size_`).
const ROCR_BLOCK: u64 = 2 << 20;

/// The `ROCM_FIX_PAD` a retry should use after a fault `distance` bytes past
/// a buffer's end (that far at least: the fault names the first unmapped page
/// the kernel reached, not how far it read): twice the distance, in whole
/// 2 MiB blocks, at most [`MAX_PAD`]. A sink of that size costs address
/// space, not VRAM per buffer, so one generous step beats several small ones.
pub fn suggested_pad(distance: u64) -> String {
    let want = distance
        .saturating_mul(2)
        .max(1)
        .div_ceil(ROCR_BLOCK)
        .saturating_mul(ROCR_BLOCK)
        .min(MAX_PAD as u64);
    show_size(want as usize)
}

fn show_size(n: usize) -> String {
    const UNITS: [(u32, &str); 3] = [(30, "G"), (20, "M"), (10, "K")];
    for (shift, unit) in UNITS {
        let unit_bytes = 1usize << shift;
        if n != 0 && n.is_multiple_of(unit_bytes) {
            return format!("{}{unit}", n / unit_bytes);
        }
    }
    n.to_string()
}

/// A user value made safe for a one-line warning: control characters
/// escaped (no forged log lines), and at most 200 characters.
fn shown(s: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn run(file: Option<&str>, env: &[(&str, &str)], secure: bool) -> (Config, Vec<String>) {
        from_sources(file, &env_of(env), secure)
    }

    #[test]
    fn defaults() {
        let (c, w) = run(None, &[], false);
        assert_eq!(
            c,
            Config {
                mode: Mode::Auto,
                pad_bytes: 65536,
                journal: None,
                stats: false,
                log_filter: None
            }
        );
        assert_eq!(c, Config::default());
        assert!(w.is_empty());
        assert_eq!(SYSTEM_CONFIG, "/etc/rocm-fix.conf");
    }

    #[test]
    fn environment_values() {
        let (c, w) = run(
            None,
            &[
                ("ROCM_FIX_MODE", "Observe"),
                ("ROCM_FIX_PAD", "64K"),
                ("ROCM_FIX_JOURNAL", "/tmp/j.log"),
                ("ROCM_FIX_STATS", "TRUE"),
                ("ROCM_FIX_LOG", "rocm_fix=debug,hooks=trace"),
            ],
            false,
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.mode, Mode::Observe);
        assert_eq!(c.pad_bytes, 65536);
        assert_eq!(c.journal, Some(PathBuf::from("/tmp/j.log")));
        assert!(c.stats);
        assert_eq!(c.log_filter.as_deref(), Some("rocm_fix=debug,hooks=trace"));
    }

    #[test]
    fn modes_are_case_insensitive() {
        for (v, m) in [
            ("auto", Mode::Auto),
            ("ON", Mode::On),
            ("oBsErVe", Mode::Observe),
            ("off", Mode::Off),
            (" on ", Mode::On),
        ] {
            let (c, w) = run(None, &[("ROCM_FIX_MODE", v)], false);
            assert_eq!(c.mode, m, "{v}");
            assert!(w.is_empty());
        }
    }

    #[test]
    fn bad_mode_warns_once_with_the_exact_text() {
        let (c, w) = run(None, &[("ROCM_FIX_MODE", "bogus")], false);
        assert_eq!(c.mode, Mode::Auto);
        assert_eq!(
            w,
            ["rocm-fix: ROCM_FIX_MODE=bogus is not one of auto, on, observe, off; using auto"]
        );
    }

    #[test]
    fn bad_env_value_keeps_what_the_file_set() {
        let (c, w) = run(
            Some("mode = off\npadding = 2M\n"),
            &[("ROCM_FIX_MODE", "of"), ("ROCM_FIX_PAD", "lots")],
            false,
        );
        assert_eq!(c.mode, Mode::Off);
        assert_eq!(c.pad_bytes, 2 << 20);
        assert_eq!(
            w,
            [
                "rocm-fix: ROCM_FIX_MODE=of is not one of auto, on, observe, off; using off",
                "rocm-fix: ROCM_FIX_PAD=lots is not a size (bytes, or a number with K, M or G \
                 like 64K or 2M); using 2M",
            ]
        );
    }

    #[test]
    fn sizes() {
        for (v, n) in [
            ("0", 0),
            ("4096", 4096),
            ("64K", 65536),
            ("64k", 65536),
            ("2M", 2 << 20),
            ("1G", 1 << 30),
            ("1024M", 1 << 30),
            ("1073741824", 1 << 30),
            ("0M", 0),
            ("007", 7),
        ] {
            let (c, w) = run(None, &[("ROCM_FIX_PAD", v)], false);
            assert_eq!(c.pad_bytes, n, "{v}");
            assert!(w.is_empty(), "{v}: {w:?}");
        }
    }

    #[test]
    fn bad_sizes_keep_the_default() {
        for v in [
            "-1", "+5", "1.5M", "2MB", "2 M", "K", "0x100", "1T", "abc", "5KK",
        ] {
            let (c, w) = run(None, &[("ROCM_FIX_PAD", v)], false);
            assert_eq!(c.pad_bytes, DEFAULT_PAD, "{v}");
            assert_eq!(w.len(), 1, "{v}");
            assert!(
                w[0].starts_with(&format!("rocm-fix: ROCM_FIX_PAD={v} is not a size")),
                "{}",
                w[0]
            );
            assert!(w[0].ends_with("; using 64K"), "{}", w[0]);
        }
        for v in [
            "2G",
            "1073741825",
            "1025M",
            "99999999999999999999999",
            "17179869184G",
        ] {
            let (c, w) = run(None, &[("ROCM_FIX_PAD", v)], false);
            assert_eq!(c.pad_bytes, DEFAULT_PAD, "{v}");
            assert_eq!(
                w,
                [format!(
                    "rocm-fix: ROCM_FIX_PAD={v} is more than the maximum 1G; using 64K"
                )]
            );
        }
    }

    #[test]
    fn stats_values() {
        for (v, b) in [("1", true), ("0", false), ("true", true), ("False", false)] {
            let (c, w) = run(None, &[("ROCM_FIX_STATS", v)], false);
            assert_eq!(c.stats, b, "{v}");
            assert!(w.is_empty());
        }
        let (c, w) = run(None, &[("ROCM_FIX_STATS", "yes")], false);
        assert!(!c.stats);
        assert_eq!(
            w,
            ["rocm-fix: ROCM_FIX_STATS=yes is not one of 1, 0, true, false; using 0"]
        );
    }

    #[test]
    fn journal_must_be_absolute() {
        let (c, w) = run(None, &[("ROCM_FIX_JOURNAL", "journal.log")], false);
        assert_eq!(c.journal, None);
        assert_eq!(
            w,
            ["rocm-fix: ROCM_FIX_JOURNAL=journal.log is not an absolute path; using no journal"]
        );
        let (c, w) = run(
            Some("journal = /var/log/rocm-fix.log"),
            &[("ROCM_FIX_JOURNAL", "./x")],
            false,
        );
        assert_eq!(c.journal, Some(PathBuf::from("/var/log/rocm-fix.log")));
        assert_eq!(
            w,
            ["rocm-fix: ROCM_FIX_JOURNAL=./x is not an absolute path; using /var/log/rocm-fix.log"]
        );
    }

    #[test]
    fn empty_env_values() {
        // Empty mode/pad/stats: as if unset. Empty journal/log: turned off.
        let (c, w) = run(
            Some("mode = off\npadding = 0\nstats = 1\njournal = /j\nlog = debug\n"),
            &[
                ("ROCM_FIX_MODE", ""),
                ("ROCM_FIX_PAD", ""),
                ("ROCM_FIX_STATS", ""),
                ("ROCM_FIX_JOURNAL", ""),
                ("ROCM_FIX_LOG", ""),
            ],
            false,
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.mode, Mode::Off);
        assert_eq!(c.pad_bytes, 0);
        assert!(c.stats);
        assert_eq!(c.journal, None);
        assert_eq!(c.log_filter, None);
    }

    #[test]
    fn log_filter_is_stored_as_is() {
        let (c, w) = run(
            None,
            &[("ROCM_FIX_LOG", " warn,rocm_fix::hooks=trace/x#y ")],
            false,
        );
        assert!(w.is_empty());
        assert_eq!(
            c.log_filter.as_deref(),
            Some(" warn,rocm_fix::hooks=trace/x#y ")
        );
    }

    #[test]
    fn file_values() {
        let file = "\u{feff}# rocm-fix system configuration\n\
                    \n\
                    mode = on\n\
                    \tpadding=256K   # for MIOpen\n\
                    Journal = /var/log/rocm fix#1.log\n\
                    stats = true\r\n\
                    log = info\n";
        let (c, w) = run(Some(file), &[], false);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.mode, Mode::On);
        assert_eq!(c.pad_bytes, 256 << 10);
        assert_eq!(c.journal, Some(PathBuf::from("/var/log/rocm fix#1.log")));
        assert!(c.stats);
        assert_eq!(c.log_filter.as_deref(), Some("info"));
    }

    #[test]
    fn environment_overrides_file() {
        let (c, w) = run(
            Some("mode = off\npadding = 0\nstats = 0\nlog = error"),
            &[
                ("ROCM_FIX_MODE", "auto"),
                ("ROCM_FIX_PAD", "4K"),
                ("ROCM_FIX_STATS", "1"),
                ("ROCM_FIX_LOG", "trace"),
            ],
            false,
        );
        assert!(w.is_empty());
        assert_eq!(c.mode, Mode::Auto);
        assert_eq!(c.pad_bytes, 4096);
        assert!(c.stats);
        assert_eq!(c.log_filter.as_deref(), Some("trace"));
    }

    #[test]
    fn file_errors_warn_once_per_line_and_keep_defaults() {
        let file = "mode = sometimes\n\
                    colour = blue\n\
                    just some words\n\
                    = 5\n\
                    padding = 3X\n\
                    stats = maybe\n\
                    journal = relative/path\n\
                    padding = 8K\n";
        let (c, w) = run(Some(file), &[], false);
        assert_eq!(c.mode, Mode::Auto);
        assert_eq!(c.pad_bytes, 8192);
        assert!(!c.stats);
        assert_eq!(c.journal, None);
        assert_eq!(
            w,
            [
                "rocm-fix: /etc/rocm-fix.conf line 1: mode = sometimes is not one of auto, on, \
                 observe, off; using auto",
                "rocm-fix: /etc/rocm-fix.conf line 2: unknown key 'colour' (known: mode, \
                 padding, journal, stats, log); ignored",
                "rocm-fix: /etc/rocm-fix.conf line 3: 'just some words' is not 'key = value'; \
                 ignored",
                "rocm-fix: /etc/rocm-fix.conf line 4: '= 5' is not 'key = value'; ignored",
                "rocm-fix: /etc/rocm-fix.conf line 5: padding = 3X is not a size (bytes, or a \
                 number with K, M or G like 64K or 2M); using 64K",
                "rocm-fix: /etc/rocm-fix.conf line 6: stats = maybe is not one of 1, 0, true, \
                 false; using 0",
                "rocm-fix: /etc/rocm-fix.conf line 7: journal = relative/path is not an \
                 absolute path; using no journal",
            ]
        );
    }

    #[test]
    fn secure_ignores_environment_and_journal() {
        let env = [
            ("ROCM_FIX_MODE", "bogus"),
            ("ROCM_FIX_PAD", "0"),
            ("ROCM_FIX_JOURNAL", "/tmp/evil"),
            ("ROCM_FIX_STATS", "1"),
            ("ROCM_FIX_LOG", "trace"),
        ];
        let (c, w) = run(
            Some("mode = observe\njournal = /var/log/rocm-fix.log\n"),
            &env,
            true,
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.mode, Mode::Observe);
        assert_eq!(c.pad_bytes, DEFAULT_PAD);
        assert_eq!(c.journal, None);
        assert!(!c.stats);
        assert_eq!(c.log_filter, None);
    }

    #[test]
    fn secure_never_calls_the_environment() {
        let called = std::cell::Cell::new(false);
        let env = |_: &str| {
            called.set(true);
            None
        };
        let _ = from_sources(None, &env, true);
        assert!(!called.get());
        let _ = from_sources(None, &env, false);
        assert!(called.get());
    }

    #[test]
    fn warnings_escape_control_characters_and_are_bounded() {
        let (_, w) = run(None, &[("ROCM_FIX_MODE", "x\nrocm-fix: forged")], false);
        assert_eq!(w.len(), 1);
        assert!(!w[0].contains('\n'), "{}", w[0]);
        assert!(w[0].contains("x\\nrocm-fix: forged"));
        let long = "z".repeat(10_000);
        let (_, w) = run(None, &[("ROCM_FIX_MODE", &long)], false);
        assert_eq!(w.len(), 1);
        assert!(w[0].len() < 400);
    }

    #[test]
    fn comments() {
        assert_eq!(strip_comment("# all"), "");
        assert_eq!(strip_comment("a = b # c"), "a = b ");
        assert_eq!(strip_comment("a = b#c"), "a = b#c");
        assert_eq!(strip_comment("a = b\t#c"), "a = b\t");
        assert_eq!(strip_comment(""), "");
    }

    #[test]
    fn one_retry_covers_twice_the_observed_over_read_in_whole_blocks() {
        assert_eq!(suggested_pad(65536), "2M");
        assert_eq!(suggested_pad(190_000), "2M");
        assert_eq!(suggested_pad(2 << 20), "4M");
        assert_eq!(suggested_pad(3 << 20), "6M");
        assert_eq!(suggested_pad(0), "2M");
        assert_eq!(suggested_pad(u64::MAX), "1G");
    }

    #[test]
    fn show_sizes() {
        assert_eq!(show_size(0), "0");
        assert_eq!(show_size(1 << 20), "1M");
        assert_eq!(show_size(1 << 30), "1G");
        assert_eq!(show_size(3 << 10), "3K");
        assert_eq!(show_size(1000), "1000");
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let junk = [
            "",
            "=",
            "==",
            "#",
            "\0",
            "mode",
            "mode=",
            "padding=K",
            "padding=99999999999999999999G",
            "é=ü",
            "\u{feff}",
            "journal=\u{0}",
            "a=b=c",
            "\r\n\r\n",
            "stats=\u{1F600}",
        ];
        for j in junk {
            let _ = run(Some(j), &[], false);
            for (_, _, var) in SETTINGS {
                let _ = run(None, &[(var, j)], false);
            }
        }
    }
}
