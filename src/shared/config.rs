//! Configuration: the system-wide file, the user's file, then the
//! environment.
//!
//! Nothing here may stop the host process: every bad value keeps the value
//! already in effect (the default unless the file set it) and yields exactly
//! one warning line for the caller to print.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
/// Auto: only RDNA1/RDNA2, whose real chip (from the KFD topology) maps coherent
/// memory MTYPE_UC (the amdgpu driver's gmc_v10_0.c, amdkfd kfd_svm.c). On: every
/// family. Observe and Off never rewrite.
pub fn active(mode: Mode, family: Family) -> bool {
    match mode {
        Mode::Auto => matches!(family, Family::Rdna1 | Family::Rdna2),
        Mode::On => true,
        Mode::Observe | Mode::Off => false,
    }
}

/// The system-wide configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/rocm-fix.conf";

/// The user's configuration file, read after [`SYSTEM_CONFIG`] and before
/// the environment (never in a secure-execution process, whose HOME is the
/// caller's): `$XDG_CONFIG_HOME/rocm-fix/rocm-fix.conf` when that is an
/// absolute path, else `$HOME/.config/rocm-fix/rocm-fix.conf`. `rocm-fix run
/// --keep` writes here.
pub fn user_config_path(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let abs = |k: &str| env(k).map(PathBuf::from).filter(|p| p.is_absolute());
    abs("XDG_CONFIG_HOME")
        .map(|d| d.join("rocm-fix/rocm-fix.conf"))
        .or_else(|| abs("HOME").map(|h| h.join(".config/rocm-fix/rocm-fix.conf")))
}

/// The configuration of this process: [`SYSTEM_CONFIG`], the user's file
/// (not when `secure`), then the environment (not when `secure`). Returns
/// the configuration and every warning, once each.
pub fn load(secure: bool, env: &dyn Fn(&str) -> Option<OsString>) -> (Config, Vec<String>) {
    let mut warnings = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut paths = vec![PathBuf::from(SYSTEM_CONFIG)];
    if !secure {
        paths.extend(user_config_path(env));
    }
    for path in paths {
        let (bytes, warning) = read_config_file(&path);
        warnings.extend(warning);
        if let Some(b) = bytes {
            files.push((shown_bytes(path.as_os_str().as_bytes()), b));
        }
    }
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let (cfg, w) = from_files(&files, env, secure);
    warnings.extend(w);
    (cfg, warnings)
}

/// The environment `rocm-fix run` gives the commands it starts, from a
/// configuration file: `env.NAME = VALUE` lines set NAME (an empty VALUE
/// sets it empty), `unset = NAME` lines remove it (what `run --keep` writes
/// for settings that are not rocm-fix's own). The preload ignores these
/// lines. A later line for the same NAME wins.
pub fn run_environment(bytes: &[u8]) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for raw in bytes.split(|&b| b == b'\n') {
        let Ok(text) = std::str::from_utf8(raw) else {
            continue;
        };
        let line = strip_comment(text.trim_end_matches('\r')).trim();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let item = if let Some(name) = key.strip_prefix("env.") {
            (name.to_string(), Some(value.to_string()))
        } else if key.eq_ignore_ascii_case("unset") {
            (value.to_string(), None)
        } else {
            continue;
        };
        if !is_env_name(&item.0) {
            continue;
        }
        out.retain(|(k, _)| *k != item.0);
        out.push(item);
    }
    out
}

/// A variable name a shell would accept.
pub fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

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
    let env_os = |k: &str| env(k).map(OsString::from);
    from_raw_sources(file_text.map(str::as_bytes), &env_os, secure)
}

/// [`from_sources`] on what a process really has: the file's bytes and
/// environment values that need not be UTF-8. A line or a value that is not
/// UTF-8 gets one warning and is ignored (a setting never changes silently);
/// bytes that are not UTF-8 inside a comment are ignored with it; the
/// journal path may be any bytes, as paths may.
pub fn from_raw_sources(
    file: Option<&[u8]>,
    env: &dyn Fn(&str) -> Option<OsString>,
    secure: bool,
) -> (Config, Vec<String>) {
    let files: Vec<(&str, &[u8])> = file.map(|b| (SYSTEM_CONFIG, b)).into_iter().collect();
    from_files(&files, env, secure)
}

/// [`from_raw_sources`] with several files, each `(name, bytes)`, applied in
/// order (a later file's value wins), then the environment.
pub fn from_files(
    files: &[(&str, &[u8])],
    env: &dyn Fn(&str) -> Option<OsString>,
    secure: bool,
) -> (Config, Vec<String>) {
    let mut cfg = Config::default();
    let mut warnings = Vec::new();
    for (name, bytes) in files {
        apply_file(&mut cfg, name, bytes, &mut warnings);
    }
    if secure {
        cfg.journal = None;
        return (cfg, warnings);
    }
    for (setting, _, var) in SETTINGS {
        let Some(value) = env(var) else { continue };
        let label = format!("{var}={}", shown_bytes(value.as_bytes()));
        match (value.to_str(), setting) {
            (Some(v), _) => apply(&mut cfg, setting, v, &label, &mut warnings),
            (None, Setting::Journal) => {
                apply_journal(&mut cfg, PathBuf::from(value), &label, &mut warnings)
            }
            (None, _) => warnings.push(format!("rocm-fix: {label} is not UTF-8 text; ignored")),
        }
    }
    (cfg, warnings)
}

/// The largest /etc/rocm-fix.conf read: a real one is a few hundred bytes.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;

/// Reads the system configuration file at `path` without ever blocking or
/// reading without end: only a regular file (a symbolic link is followed
/// only to one) of at most [`MAX_CONFIG_BYTES`] is read. Nothing else is
/// ever opened: a FIFO would block the first HIP call forever, a device
/// (a link to /dev/zero) would be read until memory runs out. Anything
/// else gives one warning, and the defaults. A missing file is no warning.
pub fn read_config_file(path: &Path) -> (Option<Vec<u8>>, Option<String>) {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let name = shown_bytes(path.as_os_str().as_bytes());
    let refuse = |why: String| {
        (
            None,
            Some(format!("rocm-fix: {name} {why}; using the defaults")),
        )
    };
    // stat before open: a device or FIFO is never opened at all.
    let before = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, None),
        Err(e) => return refuse(format!("cannot be read ({e})")),
    };
    if !before.is_file() {
        return refuse("is not a regular file".to_string());
    }
    if before.len() > MAX_CONFIG_BYTES {
        return refuse(format!("is larger than {MAX_CONFIG_BYTES} bytes"));
    }
    // O_NONBLOCK: should the file be swapped for a FIFO after the stat,
    // the open still returns at once, and the fstat below refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) => return refuse(format!("cannot be read ({e})")),
    };
    match file.metadata() {
        Ok(m) if m.is_file() && m.dev() == before.dev() && m.ino() == before.ino() => {}
        Ok(_) => return refuse("changed while being read".to_string()),
        Err(e) => return refuse(format!("cannot be read ({e})")),
    }
    let mut bytes = Vec::new();
    if let Err(e) = (&mut file)
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
    {
        return refuse(format!("cannot be read ({e})"));
    }
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return refuse(format!("is larger than {MAX_CONFIG_BYTES} bytes"));
    }
    (Some(bytes), None)
}

fn apply_file(cfg: &mut Config, name: &str, bytes: &[u8], warnings: &mut Vec<String>) {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = String::from_utf8_lossy(raw);
        let line = strip_comment(&text).trim();
        if line.is_empty() {
            continue;
        }
        // Bytes that are not UTF-8 outside a comment: this line alone is
        // ignored, said once (a Latin-1 letter in a comment is harmless).
        if std::str::from_utf8(raw).is_err() && line.contains('\u{fffd}') {
            warnings.push(format!(
                "rocm-fix: {name} line {line_no}: '{}' is not UTF-8 text; ignored",
                shown_bytes(raw)
            ));
            continue;
        }
        let where_ = format!("rocm-fix: {name} line {line_no}");
        let pair = line.split_once('=').filter(|(k, _)| !k.trim().is_empty());
        let Some((key, value)) = pair else {
            warnings.push(format!(
                "{where_}: '{}' is not 'key = value'; ignored",
                shown(line)
            ));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        // The environment of `rocm-fix run` (see run_environment).
        if key.starts_with("env.") || key.eq_ignore_ascii_case("unset") {
            continue;
        }
        let file = name;
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
        let label = format!("{file} line {line_no}: {name} = {}", shown(value));
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
            apply_journal(cfg, PathBuf::from(value), label, warnings);
            return;
        }
        Setting::Log => {
            if value.trim().is_empty() {
                cfg.log_filter = None;
                return;
            }
            let (filter, rejected) = log_filter(value);
            cfg.log_filter = Some(filter);
            if rejected.is_empty() {
                return;
            }
            let rejected: Vec<String> =
                rejected.iter().map(|r| format!("'{}'", shown(r))).collect();
            format!(
                "has directives that are not 'LEVEL', 'MODULE' or 'MODULE=LEVEL' (levels: off, \
                 error, warn, info, debug, trace): {}; ignored",
                shown(&rejected.join(", "))
            )
        }
    };
    warnings.push(format!("rocm-fix: {label} {problem}"));
}

fn apply_journal(cfg: &mut Config, path: PathBuf, label: &str, warnings: &mut Vec<String>) {
    if path.as_os_str().is_empty() {
        cfg.journal = None;
        return;
    }
    // A relative path would land in whatever directory each process
    // happens to run in.
    if path.is_absolute() {
        cfg.journal = Some(path);
        return;
    }
    let current = match &cfg.journal {
        Some(p) => shown_bytes(p.as_os_str().as_bytes()),
        None => "no journal".to_string(),
    };
    warnings.push(format!(
        "rocm-fix: {label} is not an absolute path; using {current}"
    ));
}

/// An env_logger filter (`LEVEL`, `MODULE`, `MODULE=LEVEL`, comma-separated,
/// then optionally `/TEXT`), checked here rather than by env_logger, which
/// prints one unprefixed warning per bad directive with the user's bytes
/// raw. Returns the filter rebuilt from the good directives only (so that
/// env_logger finds nothing to complain about) and the rejected ones. A
/// module name is a Rust path (letters, digits, `_`, `::`): anything else
/// could never match a module.
pub fn log_filter(spec: &str) -> (String, Vec<String>) {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |s: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s));
    let is_module = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut parts = spec.splitn(3, '/');
    let mods = parts.next().unwrap_or("");
    let text = parts.next();
    if parts.next().is_some() {
        return (String::new(), vec![spec.to_string()]);
    }
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for d in mods.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let ok = match d.split('=').collect::<Vec<_>>().as_slice() {
            [one] => is_level(one) || is_module(one),
            [module, level] => {
                is_module(module.trim()) && (level.trim().is_empty() || is_level(level.trim()))
            }
            _ => false,
        };
        if ok {
            good.push(d.split('=').map(str::trim).collect::<Vec<_>>().join("="));
        } else {
            bad.push(d.to_string());
        }
    }
    let mut filter = good.join(",");
    if let Some(t) = text {
        filter.push('/');
        filter.push_str(t);
    }
    (filter, bad)
}

enum SizeError {
    Malformed,
    TooLarge,
}

/// A ROCM_FIX_PAD value in bytes, or None when it is not one.
pub fn pad_value(s: &str) -> Option<usize> {
    parse_size(s.trim()).ok()
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

/// A size the way ROCM_FIX_PAD takes it: `2M`, `64K`, or bytes.
pub fn show_size(n: usize) -> String {
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
pub fn shown(s: &str) -> String {
    shown_bytes(s.as_bytes())
}

/// [`shown`] for bytes that need not be UTF-8: each byte that is not part
/// of a UTF-8 character is written `\xNN`.
pub fn shown_bytes(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    let mut n = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if n == MAX {
                out.push('…');
                return out;
            }
            n += 1;
            if c.is_control() {
                let _ = write!(out, "{}", c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            if n == MAX {
                out.push('…');
                return out;
            }
            n += 1;
            let _ = write!(out, "\\x{b:02x}");
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
    fn log_filter_keeps_good_directives() {
        let (c, w) = run(
            None,
            &[("ROCM_FIX_LOG", " warn,rocm_fix::hooks = trace/x#y ")],
            false,
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            c.log_filter.as_deref(),
            Some("warn,rocm_fix::hooks=trace/x#y ")
        );
    }

    /// env_logger would print one raw, unprefixed warning per bad directive:
    /// they are ours to reject, in one escaped, bounded warning.
    #[test]
    fn bad_log_directives_get_one_warning_of_ours() {
        let (c, w) = run(
            None,
            &[("ROCM_FIX_LOG", "debug,hooks=loud,a=b=c,x\ny,=info")],
            false,
        );
        assert_eq!(c.log_filter.as_deref(), Some("debug"));
        assert_eq!(
            w,
            ["rocm-fix: ROCM_FIX_LOG=debug,hooks=loud,a=b=c,x\\ny,=info has directives that are \
              not 'LEVEL', 'MODULE' or 'MODULE=LEVEL' (levels: off, error, warn, info, debug, \
              trace): 'hooks=loud', 'a=b=c', 'x\\ny', '=info'; ignored"]
        );
        let (c, w) = run(None, &[("ROCM_FIX_LOG", "a/b/c")], false);
        assert_eq!((c.log_filter.as_deref(), w.len()), (Some(""), 1));
        let huge = "x=y=z,".repeat(100_000);
        let (_, w) = run(None, &[("ROCM_FIX_LOG", &huge)], false);
        assert_eq!(w.len(), 1);
        assert!(w[0].len() < 700, "{}", w[0].len());
        for good in [
            "trace",
            "OFF",
            "rocm_fix_engine",
            "rocm_fix_engine::hooks=",
            "a=debug/x",
        ] {
            assert_eq!(log_filter(good), (good.to_string(), vec![]), "{good}");
        }
    }

    #[test]
    fn values_that_are_not_utf8_warn_once() {
        use std::os::unix::ffi::OsStringExt;
        let env = |k: &str| match k {
            "ROCM_FIX_MODE" => Some(OsString::from_vec(b"off\xff".to_vec())),
            "ROCM_FIX_JOURNAL" => Some(OsString::from_vec(b"/tmp/caf\xe9.jsonl".to_vec())),
            _ => None,
        };
        let file = b"# r\xe9glages\nstats = 1 # \xe9t\xe9\npadding = 4K\xe9\nlog = \xff\n";
        let (c, w) = from_raw_sources(Some(file), &env, false);
        assert_eq!(c.mode, Mode::Auto);
        assert!(c.stats, "a Latin-1 byte in a comment drops nothing");
        assert_eq!(c.pad_bytes, DEFAULT_PAD);
        assert_eq!(
            c.journal.as_deref().map(|p| p.as_os_str().as_bytes()),
            Some(&b"/tmp/caf\xe9.jsonl"[..]),
            "a path may be any bytes"
        );
        assert_eq!(
            w,
            [
                "rocm-fix: /etc/rocm-fix.conf line 3: 'padding = 4K\\xe9' is not UTF-8 text; ignored",
                "rocm-fix: /etc/rocm-fix.conf line 4: 'log = \\xff' is not UTF-8 text; ignored",
                "rocm-fix: ROCM_FIX_MODE=off\\xff is not UTF-8 text; ignored",
            ]
        );
    }

    #[test]
    fn only_a_small_regular_config_file_is_read() {
        let dir = std::env::temp_dir().join(format!("rocm-fix-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ok.conf");
        std::fs::write(&f, "mode = off\n").unwrap();
        assert_eq!(read_config_file(&f), (Some(b"mode = off\n".to_vec()), None));
        assert_eq!(read_config_file(&dir.join("missing")), (None, None));
        let link = dir.join("zero.conf");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let fifo = dir.join("fifo.conf");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let big = dir.join("big.conf");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        for (p, why) in [
            (&link, "is not a regular file"),
            (&fifo, "is not a regular file"),
            (&dir, "is not a regular file"),
            (&big, "is larger than 65536 bytes"),
        ] {
            let (text, warning) = read_config_file(p);
            assert_eq!(text, None);
            assert_eq!(
                warning,
                Some(format!(
                    "rocm-fix: {} {why}; using the defaults",
                    p.display()
                ))
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
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
    fn the_user_file_comes_after_the_system_file_and_before_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            user_config_path(&env(&[("HOME", "/home/u")])),
            Some(PathBuf::from("/home/u/.config/rocm-fix/rocm-fix.conf"))
        );
        assert_eq!(
            user_config_path(&env(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/c")])),
            Some(PathBuf::from("/c/rocm-fix/rocm-fix.conf"))
        );
        assert_eq!(
            user_config_path(&env(&[("HOME", "rel"), ("XDG_CONFIG_HOME", "x")])),
            None
        );
        let files: [(&str, &[u8]); 2] = [
            ("/etc/rocm-fix.conf", b"mode = off\npadding = 4K\n"),
            (
                "/home/u/.config/rocm-fix/rocm-fix.conf",
                b"padding = 2M\nenv.MIOPEN_DEBUG_CONV_GEMM = 0\nunset = HSA_OVERRIDE_GFX_VERSION\nbogus\n",
            ),
        ];
        let (c, w) = from_files(&files, &env(&[("ROCM_FIX_MODE", "on")]), false);
        assert_eq!((c.mode, c.pad_bytes), (Mode::On, 2 << 20));
        assert_eq!(
            w,
            ["rocm-fix: /home/u/.config/rocm-fix/rocm-fix.conf line 4: 'bogus' is not 'key = value'; ignored"],
            "run-only lines are no warning; the file is named"
        );
        assert_eq!(
            run_environment(files[1].1),
            [
                ("MIOPEN_DEBUG_CONV_GEMM".to_string(), Some("0".to_string())),
                ("HSA_OVERRIDE_GFX_VERSION".to_string(), None)
            ]
        );
        assert!(run_environment(b"env.A B = 1\nunset = 9X\nenv. = 2\n").is_empty());
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
