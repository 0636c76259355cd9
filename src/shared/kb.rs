//! The knowledge base: known causes of GPU memory faults, what helps against
//! them and how well that is supported, plus the run supervisor's per-tool
//! presets and retry ladder.
//!
//! The data is text in the repository (`src/shared/kb/issues.kb`,
//! `src/shared/kb/presets.kb`), compiled in with `include_str!` and parsed here; the
//! format is described at the top of each file. Parse errors name the file
//! and line. A unit test guarantees the compiled-in data parses, so the
//! accessors that cannot return an error treat a failure as "no data".
//!
//! Data and lookups only: `rocm-fix kb` presents them (text and JSON) in
//! src/command/kb.rs.

use crate::pciids;
use std::sync::OnceLock;

const ISSUES_KB: &str = include_str!("kb/issues.kb");
const PRESETS_KB: &str = include_str!("kb/presets.kb");

/// How well a mitigation is supported by public reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Evidence {
    /// A maintainer or a merged fix names it.
    Confirmed,
    /// Several users report that the fault stopped.
    Helped,
    /// Helped some users, not others.
    Mixed,
    /// One report, or one maintainer repro (or our inference, as noted).
    Anecdotal,
    /// Makes things worse.
    Harmful,
    /// Tried; did not stop the fault.
    NoneFound,
}

impl Evidence {
    const ALL: [Evidence; 6] = [
        Evidence::Confirmed,
        Evidence::Helped,
        Evidence::Mixed,
        Evidence::Anecdotal,
        Evidence::Harmful,
        Evidence::NoneFound,
    ];

    /// The name used in the data files and in reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            Evidence::Confirmed => "confirmed",
            Evidence::Helped => "helped",
            Evidence::Mixed => "mixed",
            Evidence::Anecdotal => "anecdotal",
            Evidence::Harmful => "harmful",
            Evidence::NoneFound => "none-found",
        }
    }

    /// Parses [`Evidence::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Evidence> {
        Evidence::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Whether a setting with this evidence may be applied by default.
    pub fn applicable(&self) -> bool {
        matches!(
            self,
            Evidence::Confirmed | Evidence::Helped | Evidence::Anecdotal
        )
    }
}

/// How triage reports an issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    /// "info", "warning" or "error".
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    fn parse(s: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Error]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Something users tried against an issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mitigation {
    pub text: String,
    pub evidence: Evidence,
    /// Environment variables it sets (an empty value means "set, empty").
    pub env: Vec<(String, String)>,
    /// Kernel command-line parameters it sets.
    pub kernel_params: Vec<String>,
    pub sources: Vec<String>,
    /// Shared `rocm-fix validate` reports (report.json of a real card) that
    /// bear on it: https:// URLs (an issue comment, a gist).
    pub validation_reports: Vec<String>,
    pub notes: Vec<String>,
}

/// One known issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub id: String,
    pub title: String,
    pub symptoms: Vec<String>,
    /// gfx names ("gfx1030"), families ("rdna2") or "any".
    pub chips: Vec<String>,
    pub rocm: Option<String>,
    pub kernel: Option<String>,
    pub firmware: Option<String>,
    pub cause: String,
    /// The cause is not confirmed upstream.
    pub hypothesis: bool,
    /// Only relevant while HSA_OVERRIDE_GFX_VERSION is in effect.
    pub requires_override: bool,
    /// Triage reports it whenever a matching chip is present.
    pub triage: bool,
    pub severity: Severity,
    pub mitigations: Vec<Mitigation>,
    pub sources: Vec<String>,
    /// `check-firmware: NAME=VALUE`: the issue is present when a GPU it
    /// names reports this value in sysfs `device/fw_version/NAME`.
    pub check_firmware: Vec<(String, u64)>,
    /// `check-kernel: FROM..UNTIL`: the kernel releases it affects, FROM
    /// included, UNTIL (may be empty: no end known) excluded.
    pub check_kernel: Option<KernelRange>,
    /// Shared `rocm-fix validate` reports that bear on it (https:// URLs).
    pub validation_reports: Vec<String>,
}

/// Kernel releases `from` (included) up to `until` (excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRange {
    pub from: Vec<u32>,
    pub until: Option<Vec<u32>>,
}

impl KernelRange {
    /// "6.18.3-arch1-1" → [6, 18, 3]: the leading dotted numbers.
    pub fn release(s: &str) -> Option<Vec<u32>> {
        let head = s
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()?;
        let v: Vec<u32> = head
            .split('.')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        (!v.is_empty()).then_some(v)
    }

    /// Whether a kernel release (`uname -r`) lies in the range.
    pub fn contains(&self, release: &str) -> Option<bool> {
        let r = Self::release(release)?;
        Some(r >= self.from && self.until.as_ref().is_none_or(|u| r < *u))
    }

    /// "6.18 to before 7.1", "6.18 and later".
    pub fn text(&self) -> String {
        let j = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
        match &self.until {
            Some(u) => format!("{} up to (not including) {}", j(&self.from), j(u)),
            None => format!("{} and later", j(&self.from)),
        }
    }
}

/// One environment setting of a preset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: String,
    pub value: String,
    pub evidence: Evidence,
    /// The knowledge-base issue it comes from.
    pub issue: String,
    /// Chips it applies to; empty means any chip.
    pub chips: Vec<String>,
    /// Whether the supervisor applies it (only with confirmed, helped or
    /// anecdotal evidence; the parser enforces that).
    pub applicable: bool,
    pub notes: Vec<String>,
}

impl Setting {
    /// Whether the setting concerns one of these chips (gfx names or
    /// families); a setting without chips concerns every chip.
    pub fn applies_to(&self, chips: &[String]) -> bool {
        self.chips.is_empty()
            || self
                .chips
                .iter()
                .any(|e| chips.iter().any(|q| chip_matches(e, q)))
    }
}

/// How the supervisor recognises a tool, and what it sets for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub id: String,
    pub title: String,
    /// Globs for the basename of argv[0].
    pub argv0: Vec<String>,
    /// Python modules run with `-m`.
    pub modules: Vec<String>,
    /// Globs for the script python runs.
    pub scripts: Vec<String>,
    pub settings: Vec<Setting>,
}

/// One step of the retry ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rung {
    pub id: String,
    pub title: String,
    /// "always", "torch" or "harmful-override".
    pub when: String,
    pub evidence: Evidence,
    /// Variables to set (an empty value means "set, empty").
    pub env: Vec<(String, String)>,
    /// Variables to remove.
    pub unset: Vec<String>,
    pub issues: Vec<String>,
    pub notes: Vec<String>,
    pub sources: Vec<String>,
}

/// The compiled-in issues, parsed.
pub fn issues() -> Result<Vec<Issue>, String> {
    static CACHE: OnceLock<Result<Vec<Issue>, String>> = OnceLock::new();
    CACHE
        .get_or_init(|| parse_issues("issues.kb", ISSUES_KB))
        .clone()
}

/// The issue with this id.
pub fn issue(id: &str) -> Option<Issue> {
    issues().ok()?.into_iter().find(|i| i.id == id)
}

/// The compiled-in presets, in priority order.
pub fn presets() -> Result<Vec<Preset>, String> {
    parsed_presets().map(|(p, _)| p)
}

/// The compiled-in retry ladder, in order.
pub fn ladder() -> Result<Vec<Rung>, String> {
    parsed_presets().map(|(_, r)| r)
}

/// Presets and rungs, as parsed from presets.kb.
type PresetData = (Vec<Preset>, Vec<Rung>);

fn parsed_presets() -> Result<PresetData, String> {
    static CACHE: OnceLock<Result<PresetData, String>> = OnceLock::new();
    CACHE
        .get_or_init(|| parse_presets("presets.kb", PRESETS_KB))
        .clone()
}

/// The first preset whose patterns match this command line.
pub fn preset_for(argv: &[String]) -> Option<Preset> {
    presets().ok()?.into_iter().find(|p| p.matches(argv))
}

/// Issues that concern any of these chips (gfx names such as "gfx1032" or
/// families such as "rdna2"). Issues that only matter under
/// HSA_OVERRIDE_GFX_VERSION are left out unless `override_in_effect`.
pub fn matching(chips: &[String], override_in_effect: bool) -> Vec<Issue> {
    issues()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| override_in_effect || !i.requires_override)
        .filter(|i| {
            i.chips
                .iter()
                .any(|e| chips.iter().any(|q| chip_matches(e, q)))
        })
        .collect()
}

/// Whether a knowledge-base chip entry (gfx name, family or "any") covers a
/// queried chip (gfx name or family).
pub fn chip_matches(entry: &str, query: &str) -> bool {
    let (entry, query) = (entry.trim(), query.trim());
    if entry.eq_ignore_ascii_case("any") {
        return true;
    }
    if entry.eq_ignore_ascii_case(query) {
        return true;
    }
    let family_of = |s: &str| {
        pciids::family_from_label(s)
            .or_else(|| pciids::parse_gfx_name(s).map(crate::topology::family))
    };
    match (
        pciids::family_from_label(entry),
        pciids::parse_gfx_name(entry),
    ) {
        // A family entry covers its gfx names and itself; gfx803 is both
        // GCN3 (Fiji) and GCN4 (Polaris, Vega M).
        (Some(f), _) => {
            family_of(query) == Some(f)
                || (f == crate::topology::Family::Gcn4
                    && pciids::parse_gfx_name(query) == Some(80003))
        }
        // A gfx entry covers the same target (":xnack-" and the like aside)
        // and the family it belongs to.
        (None, Some(v)) => {
            pciids::parse_gfx_name(query) == Some(v)
                || pciids::family_from_label(query) == Some(crate::topology::family(v))
        }
        (None, None) => false,
    }
}

impl Preset {
    /// Whether this preset recognises the command line.
    pub fn matches(&self, argv: &[String]) -> bool {
        let Some(argv0) = argv.first() else {
            return false;
        };
        let base = basename(argv0);
        if self.argv0.iter().any(|g| glob(g, base)) {
            return true;
        }
        let Some(py) = python_target(argv) else {
            return false;
        };
        match py {
            PythonTarget::Module(m) => self.modules.iter().any(|want| {
                m == want
                    || m.strip_prefix(want.as_str())
                        .is_some_and(|r| r.starts_with('.'))
            }),
            PythonTarget::Script(path) => self.scripts.iter().any(|g| {
                if g.contains('/') {
                    glob(g, path)
                } else {
                    glob(g, basename(path))
                }
            }),
        }
    }

    /// Settings the supervisor applies for these chips.
    pub fn applicable_settings(&self, chips: &[String]) -> Vec<&Setting> {
        self.settings
            .iter()
            .filter(|s| s.applicable && s.applies_to(chips))
            .collect()
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

enum PythonTarget<'a> {
    Module(&'a str),
    Script(&'a str),
}

/// What a python command line runs: `-m module` or a script path.
fn python_target(argv: &[String]) -> Option<PythonTarget<'_>> {
    let base = basename(argv.first()?);
    let is_python = base == "python"
        || base == "python3"
        || base
            .strip_prefix("python3.")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b't'));
    if !is_python {
        return None;
    }
    let mut args = argv.iter().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-m" => return args.next().map(|m| PythonTarget::Module(m.as_str())),
            // Options that take a separate argument.
            "-W" | "-X" | "--check-hash-based-pycs" => {
                args.next();
            }
            // -c runs a command string, not a script.
            "-c" | "-" => return None,
            s if s.starts_with("-m") && s.len() > 2 => {
                return s.get(2..).map(PythonTarget::Module);
            }
            s if s.starts_with('-') => {}
            s => return Some(PythonTarget::Script(s)),
        }
    }
    None
}

/// `*` matches any run of characters (including '/'), `?` any one character.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point (the last '*').
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// One `key: value` line, with the indented lines under it.
#[derive(Debug)]
struct Field {
    key: String,
    value: String,
    line: usize,
    children: Vec<Field>,
}

/// One `[kind id]` block.
#[derive(Debug)]
struct Block {
    kind: String,
    id: String,
    line: usize,
    fields: Vec<Field>,
}

/// Splits a data file into blocks. `nested` lists the keys whose entries
/// take indented child lines.
fn parse_blocks(
    file: &str,
    text: &str,
    kinds: &[&str],
    nested: &[&str],
) -> Result<Vec<Block>, String> {
    let mut blocks: Vec<Block> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |m: String| format!("{file}:{line}: {m}");
        let l = raw.trim_end_matches('\r');
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(inner) = t.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| err("a header must look like [kind ID]".into()))?;
            let mut words = inner.split_whitespace();
            let (Some(kind), Some(id), None) = (words.next(), words.next(), words.next()) else {
                return Err(err("a header must look like [kind ID]".into()));
            };
            if !kinds.contains(&kind) {
                return Err(err(format!(
                    "unknown kind '{kind}' (expected {})",
                    kinds.join(" or ")
                )));
            }
            if !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(err(format!(
                    "id '{id}' may hold only lower-case letters, digits and '-'"
                )));
            }
            if blocks.iter().any(|b| b.kind == kind && b.id == id) {
                return Err(err(format!("duplicate {kind} id '{id}'")));
            }
            blocks.push(Block {
                kind: kind.to_string(),
                id: id.to_string(),
                line,
                fields: Vec::new(),
            });
            continue;
        }
        let (key, value) = t
            .split_once(':')
            .ok_or_else(|| err("expected `key: value`".into()))?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err(format!("bad key '{key}'")));
        }
        if value.is_empty() {
            return Err(err(format!("'{key}' has no value")));
        }
        let block = blocks
            .last_mut()
            .ok_or_else(|| err("a field before the first [kind ID] header".into()))?;
        let field = Field {
            key: key.to_string(),
            value: value.to_string(),
            line,
            children: Vec::new(),
        };
        let indented = l.starts_with(' ') || l.starts_with('\t');
        if indented {
            let parent = block
                .fields
                .last_mut()
                .filter(|f| nested.contains(&f.key.as_str()))
                .ok_or_else(|| {
                    err(format!(
                        "indented line, but no {} line above it",
                        nested.join("/")
                    ))
                })?;
            parent.children.push(field);
        } else {
            block.fields.push(field);
        }
    }
    Ok(blocks)
}

/// Collects the values of one block's (or one entry's) fields by key,
/// rejecting unknown keys and repeated single keys.
struct Fields<'a> {
    file: &'a str,
    owner: String,
    owner_line: usize,
    fields: &'a [Field],
}

impl<'a> Fields<'a> {
    fn check_keys(&self, single: &[&str], multi: &[&str]) -> Result<(), String> {
        for (n, f) in self.fields.iter().enumerate() {
            let k = f.key.as_str();
            if single.contains(&k) {
                if self.fields.iter().take(n).any(|g| g.key == k) {
                    return Err(format!("{}:{}: '{k}' given twice", self.file, f.line));
                }
            } else if !multi.contains(&k) {
                let mut known: Vec<&str> = single.iter().chain(multi).copied().collect();
                known.sort_unstable();
                return Err(format!(
                    "{}:{}: unknown key '{k}' in {} (known: {})",
                    self.file,
                    f.line,
                    self.owner,
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn one(&self, key: &str) -> Option<&'a Field> {
        self.fields.iter().find(|f| f.key == key)
    }

    fn opt(&self, key: &str) -> Option<String> {
        self.one(key).map(|f| f.value.clone())
    }

    fn required(&self, key: &str) -> Result<String, String> {
        self.opt(key).ok_or_else(|| {
            format!(
                "{}:{}: {} has no '{key}'",
                self.file, self.owner_line, self.owner
            )
        })
    }

    fn all(&self, key: &str) -> Vec<&'a Field> {
        self.fields.iter().filter(|f| f.key == key).collect()
    }

    fn values(&self, key: &str) -> Vec<String> {
        self.all(key).into_iter().map(|f| f.value.clone()).collect()
    }

    fn yes_no(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.one(key) {
            None => Ok(default),
            Some(f) => match f.value.as_str() {
                "yes" => Ok(true),
                "no" => Ok(false),
                v => Err(format!(
                    "{}:{}: '{key}' must be yes or no, not '{v}'",
                    self.file, f.line
                )),
            },
        }
    }

    fn evidence(&self) -> Result<Evidence, String> {
        let f = self.one("evidence").ok_or_else(|| {
            format!(
                "{}:{}: {} has no evidence level",
                self.file, self.owner_line, self.owner
            )
        })?;
        Evidence::parse(&f.value).ok_or_else(|| {
            format!(
                "{}:{}: evidence '{}' is not one of {}",
                self.file,
                f.line,
                f.value,
                Evidence::ALL.map(|e| e.as_str()).join(", ")
            )
        })
    }

    fn sources(&self, key: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for f in self.all(key) {
            if !f.value.starts_with("https://") || f.value.contains(char::is_whitespace) {
                return Err(format!(
                    "{}:{}: a source must be one https:// URL",
                    self.file, f.line
                ));
            }
            out.push(f.value.clone());
        }
        Ok(out)
    }

    fn env(&self, key: &str) -> Result<Vec<(String, String)>, String> {
        self.all(key)
            .into_iter()
            .map(|f| {
                parse_env(&f.value)
                    .ok_or_else(|| format!("{}:{}: expected NAME=VALUE", self.file, f.line))
            })
            .collect()
    }

    fn chips(&self, key: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for f in self.all(key) {
            let v = f.value.as_str();
            let ok = v == "any"
                || pciids::family_from_label(v).is_some_and(|_| v == v.to_ascii_lowercase())
                || pciids::parse_gfx_name(v).is_some();
            if !ok {
                return Err(format!(
                    "{}:{}: chip '{v}' is not a gfx name, a family (rdna1 rdna2 rdna3 rdna4 gcn2 gcn3 gcn4 gcn5 cdna) or 'any'",
                    self.file, f.line
                ));
            }
            out.push(v.to_string());
        }
        Ok(out)
    }
}

/// `NAME=VALUE` with NAME of upper-case letters, digits and '_'; VALUE may be
/// empty.
fn parse_env(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once('=')?;
    let ok = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !k.starts_with(|c: char| c.is_ascii_digit());
    ok.then(|| (k.to_string(), v.to_string()))
}

/// Parses one issues file; errors name the file and line.
pub fn parse_issues(file: &str, text: &str) -> Result<Vec<Issue>, String> {
    let blocks = parse_blocks(file, text, &["issue"], &["mitigation"])?;
    let mut out = Vec::new();
    for b in &blocks {
        let f = Fields {
            file,
            owner: format!("issue '{}'", b.id),
            owner_line: b.line,
            fields: &b.fields,
        };
        f.check_keys(
            &[
                "title",
                "cause",
                "rocm",
                "kernel",
                "firmware",
                "hypothesis",
                "requires",
                "triage",
                "severity",
                "check-kernel",
            ],
            &[
                "symptom",
                "chip",
                "source",
                "validation-report",
                "mitigation",
                "check-firmware",
            ],
        )?;
        let mut check_firmware = Vec::new();
        for v in f.all("check-firmware") {
            let parsed = v.value.split_once('=').and_then(|(k, val)| {
                let val = val.trim();
                let n = match val.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16).ok()?,
                    None => val.parse().ok()?,
                };
                Some((k.trim().to_string(), n))
            });
            check_firmware.push(parsed.ok_or_else(|| {
                format!(
                    "{file}:{}: check-firmware must be NAME=VALUE (a number)",
                    v.line
                )
            })?);
        }
        let check_kernel = match f.one("check-kernel") {
            None => None,
            Some(v) => {
                let bad = || {
                    format!("{file}:{}: check-kernel must be FROM..UNTIL (like 6.18..7.1; UNTIL may be empty)", v.line)
                };
                let (from, until) = v.value.split_once("..").ok_or_else(bad)?;
                Some(KernelRange {
                    from: KernelRange::release(from.trim()).ok_or_else(bad)?,
                    until: match until.trim() {
                        "" => None,
                        u => Some(KernelRange::release(u).ok_or_else(bad)?),
                    },
                })
            }
        };
        let sources = f.sources("source")?;
        let validation_reports = f.sources("validation-report")?;
        if sources.is_empty() && validation_reports.is_empty() {
            return Err(format!(
                "{file}:{}: issue '{}' has no source URL",
                b.line, b.id
            ));
        }
        let chips = f.chips("chip")?;
        if chips.is_empty() {
            return Err(format!("{file}:{}: issue '{}' has no chip", b.line, b.id));
        }
        let requires_override = match f.one("requires") {
            None => false,
            Some(r) if r.value == "override" => true,
            Some(r) => {
                return Err(format!(
                    "{file}:{}: 'requires' can only be 'override'",
                    r.line
                ))
            }
        };
        let severity = match f.one("severity") {
            None => Severity::Warning,
            Some(s) => Severity::parse(&s.value).ok_or_else(|| {
                format!("{file}:{}: severity must be info, warning or error", s.line)
            })?,
        };
        let mut mitigations = Vec::new();
        for m in f.all("mitigation") {
            let mf = Fields {
                file,
                owner: format!("mitigation of '{}'", b.id),
                owner_line: m.line,
                fields: &m.children,
            };
            mf.check_keys(
                &["evidence"],
                &["env", "kernel-param", "source", "validation-report", "note"],
            )?;
            mitigations.push(Mitigation {
                text: m.value.clone(),
                evidence: mf.evidence()?,
                env: mf.env("env")?,
                kernel_params: mf.values("kernel-param"),
                sources: mf.sources("source")?,
                validation_reports: mf.sources("validation-report")?,
                notes: mf.values("note"),
            });
        }
        out.push(Issue {
            id: b.id.clone(),
            title: f.required("title")?,
            symptoms: f.values("symptom"),
            chips,
            rocm: f.opt("rocm"),
            kernel: f.opt("kernel"),
            firmware: f.opt("firmware"),
            cause: f.required("cause")?,
            hypothesis: f.yes_no("hypothesis", false)?,
            requires_override,
            triage: f.yes_no("triage", false)?,
            severity,
            mitigations,
            sources,
            validation_reports,
            check_firmware,
            check_kernel,
        });
    }
    Ok(out)
}

fn parse_presets(file: &str, text: &str) -> Result<PresetData, String> {
    let blocks = parse_blocks(file, text, &["preset", "rung"], &["setting"])?;
    let mut presets = Vec::new();
    let mut rungs = Vec::new();
    for b in &blocks {
        let f = Fields {
            file,
            owner: format!("{} '{}'", b.kind, b.id),
            owner_line: b.line,
            fields: &b.fields,
        };
        if b.kind == "preset" {
            f.check_keys(&["title"], &["argv0", "module", "script", "setting"])?;
            let mut settings = Vec::new();
            for s in f.all("setting") {
                let (name, value) = parse_env(&s.value)
                    .ok_or_else(|| format!("{file}:{}: expected NAME=VALUE", s.line))?;
                let sf = Fields {
                    file,
                    owner: format!("setting {name} of '{}'", b.id),
                    owner_line: s.line,
                    fields: &s.children,
                };
                sf.check_keys(&["evidence", "issue", "apply"], &["chip", "note"])?;
                let evidence = sf.evidence()?;
                let applicable = match sf.one("apply") {
                    None => {
                        return Err(format!(
                            "{file}:{}: setting {name} needs 'apply: yes' or 'apply: no'",
                            s.line
                        ))
                    }
                    Some(a) => sf
                        .yes_no("apply", false)
                        .map_err(|_| format!("{file}:{}: 'apply' must be yes or no", a.line))?,
                };
                if applicable && !evidence.applicable() {
                    return Err(format!(
                        "{file}:{}: setting {name} has evidence '{}' and may not be applied \
                         (only confirmed, helped or anecdotal)",
                        s.line,
                        evidence.as_str()
                    ));
                }
                settings.push(Setting {
                    name,
                    value,
                    evidence,
                    issue: sf.required("issue")?,
                    chips: sf.chips("chip")?,
                    applicable,
                    notes: sf.values("note"),
                });
            }
            let argv0 = f.values("argv0");
            let modules = f.values("module");
            let scripts = f.values("script");
            if argv0.is_empty() && modules.is_empty() && scripts.is_empty() {
                return Err(format!(
                    "{file}:{}: preset '{}' has no argv0, module or script pattern",
                    b.line, b.id
                ));
            }
            presets.push(Preset {
                id: b.id.clone(),
                title: f.required("title")?,
                argv0,
                modules,
                scripts,
                settings,
            });
        } else {
            f.check_keys(
                &["title", "when", "evidence"],
                &["env", "unset", "issue", "note", "source"],
            )?;
            let when = f.required("when")?;
            if !["always", "torch", "harmful-override"].contains(&when.as_str()) {
                let line = f.one("when").map_or(b.line, |w| w.line);
                return Err(format!(
                    "{file}:{line}: 'when' must be always, torch or harmful-override"
                ));
            }
            let sources = f.sources("source")?;
            if sources.is_empty() {
                return Err(format!(
                    "{file}:{}: rung '{}' has no source URL",
                    b.line, b.id
                ));
            }
            let unset = f.values("unset");
            if let Some(bad) = f
                .all("unset")
                .into_iter()
                .find(|u| parse_env(&format!("{}=", u.value)).is_none())
            {
                return Err(format!(
                    "{file}:{}: 'unset' takes a variable name",
                    bad.line
                ));
            }
            rungs.push(Rung {
                id: b.id.clone(),
                title: f.required("title")?,
                when,
                evidence: f.evidence()?,
                env: f.env("env")?,
                unset,
                issues: f.values("issue"),
                notes: f.values("note"),
                sources,
            });
        }
    }
    Ok((presets, rungs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn compiled_in_issues_parse_and_are_complete() {
        let list = issues().unwrap();
        assert!(list.len() >= 15, "{} issues", list.len());
        let mut ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), list.len(), "issue ids are not unique");
        for i in &list {
            assert!(
                i.sources.iter().any(|s| s.starts_with("https://")),
                "{} has no source URL",
                i.id
            );
            assert!(!i.title.is_empty() && !i.cause.is_empty(), "{}", i.id);
            assert!(!i.chips.is_empty(), "{}", i.id);
            for m in &i.mitigations {
                // Evidence is a required key; parsing fails without it.
                assert!(Evidence::parse(m.evidence.as_str()).is_some(), "{}", i.id);
            }
        }
    }

    #[test]
    fn the_seed_hypothesis_is_labelled_as_one() {
        let i = issue("seed-coherent-memory").unwrap();
        assert!(i.hypothesis);
        assert!(i.title.starts_with("Hypothesis"));
        assert!(i.chips.contains(&"rdna1".to_string()) && i.chips.contains(&"rdna2".to_string()));
    }

    #[test]
    fn evidence_names_round_trip() {
        let names: Vec<&str> = Evidence::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "confirmed",
                "helped",
                "mixed",
                "anecdotal",
                "harmful",
                "none-found"
            ]
        );
        for e in Evidence::ALL {
            assert_eq!(Evidence::parse(e.as_str()), Some(e));
        }
        assert_eq!(Evidence::parse("Confirmed"), None);
        assert!(Evidence::Anecdotal.applicable() && !Evidence::Mixed.applicable());
        assert!(!Evidence::Harmful.applicable() && !Evidence::NoneFound.applicable());
    }

    #[test]
    fn presets_and_ladder_parse_and_agree_with_the_issues() {
        let list = issues().unwrap();
        let presets = presets().unwrap();
        for want in [
            "ultralytics",
            "python-torch",
            "comfyui",
            "a1111",
            "ollama",
            "llama-cpp",
        ] {
            assert!(presets.iter().any(|p| p.id == want), "no preset {want}");
        }
        for p in &presets {
            for s in &p.settings {
                let i = list
                    .iter()
                    .find(|i| i.id == s.issue)
                    .unwrap_or_else(|| panic!("{}: unknown issue {}", p.id, s.issue));
                // The setting's evidence is the evidence of the mitigation
                // that sets the same variable to the same value.
                let m = i
                    .mitigations
                    .iter()
                    .find(|m| m.env.iter().any(|(k, v)| *k == s.name && *v == s.value))
                    .unwrap_or_else(|| panic!("{}: {} not in {}", p.id, s.name, i.id));
                assert_eq!(m.evidence, s.evidence, "{} {}", p.id, s.name);
                if s.applicable {
                    assert!(s.evidence.applicable(), "{} {}", p.id, s.name);
                }
            }
        }
        let rungs = ladder().unwrap();
        let ids: Vec<&str> = rungs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "pad-2m",
                "miopen-solvers",
                "no-hip-caching",
                "drop-harmful-override",
                "cpu-fallback"
            ]
        );
        for r in &rungs {
            assert!(!r.sources.is_empty(), "{}", r.id);
            for i in &r.issues {
                assert!(
                    list.iter().any(|x| x.id == *i),
                    "{}: unknown issue {i}",
                    r.id
                );
            }
        }
        let cpu = rungs.last().unwrap();
        assert_eq!(
            cpu.env,
            [("HIP_VISIBLE_DEVICES".to_string(), String::new())]
        );
        let drop = &rungs[3];
        assert_eq!(drop.unset, ["HSA_OVERRIDE_GFX_VERSION"]);
        assert_eq!(drop.when, "harmful-override");
    }

    #[test]
    fn harmful_and_none_found_settings_are_never_applied() {
        for p in presets().unwrap() {
            let all_chips = ["gfx1010", "gfx1030", "gfx1032", "rdna3"].map(String::from);
            for s in p.applicable_settings(&all_chips) {
                assert!(
                    matches!(
                        s.evidence,
                        Evidence::Confirmed | Evidence::Helped | Evidence::Anecdotal
                    ),
                    "{} {}",
                    p.id,
                    s.name
                );
            }
        }
        let bad = "[preset x]\ntitle: t\nargv0: x\nsetting: HSA_XNACK=1\n  evidence: harmful\n  issue: i\n  apply: yes\n";
        let e = parse_presets("p.kb", bad).unwrap_err();
        assert!(
            e.starts_with("p.kb:4:") && e.contains("may not be applied"),
            "{e}"
        );
    }

    #[test]
    fn presets_recognise_command_lines() {
        let id = |s: &str| preset_for(&argv(s)).map(|p| p.id);
        assert_eq!(
            id("yolo train data=coco8.yaml").as_deref(),
            Some("ultralytics")
        );
        assert_eq!(
            id("/venv/bin/yolo detect predict").as_deref(),
            Some("ultralytics")
        );
        assert_eq!(
            id("python3 -m ultralytics train").as_deref(),
            Some("ultralytics")
        );
        assert_eq!(
            id("python -u -multralytics").as_deref(),
            Some("ultralytics")
        );
        assert_eq!(
            id("python3.11 /opt/ComfyUI/main.py --listen").as_deref(),
            Some("comfyui")
        );
        assert_eq!(id("comfy launch").as_deref(), Some("comfyui"));
        assert_eq!(
            id("python launch.py --precision full").as_deref(),
            Some("a1111")
        );
        assert_eq!(id("./webui.sh").as_deref(), Some("a1111"));
        assert_eq!(id("ollama serve").as_deref(), Some("ollama"));
        assert_eq!(
            id("/usr/local/bin/llama-server -m x.gguf").as_deref(),
            Some("llama-cpp")
        );
        assert_eq!(
            id("python3 -m llama_cpp.server --model m").as_deref(),
            Some("llama-cpp")
        );
        assert_eq!(
            id("python3 -X dev train.py").as_deref(),
            Some("python-torch")
        );
        assert_eq!(id("python3 -c print(1)").as_deref(), Some("python-torch"));
        assert_eq!(id("python3 -m llama_cppx").as_deref(), Some("python-torch"));
        assert_eq!(id("bash run.sh").as_deref(), None);
        assert_eq!(id("python3-config --libs").as_deref(), None);
        assert_eq!(preset_for(&[]).map(|p| p.id), None);
    }

    #[test]
    fn applicable_settings_follow_the_chip() {
        let p = presets()
            .unwrap()
            .into_iter()
            .find(|p| p.id == "ollama")
            .unwrap();
        let on = |chip: &str| -> Vec<String> {
            p.applicable_settings(&[chip.to_string()])
                .iter()
                .map(|s| format!("{}={}", s.name, s.value))
                .collect()
        };
        assert_eq!(on("gfx1032"), ["HSA_OVERRIDE_GFX_VERSION=10.3.0"]);
        assert!(on("gfx1030").is_empty());
        assert!(
            on("gfx1010").is_empty(),
            "mixed evidence on RDNA1 must not be applied"
        );
        assert!(on("gfx1100").is_empty());
    }

    #[test]
    fn matching_filters_by_chip_and_override() {
        let ids = |chips: &[&str], ov: bool| -> Vec<String> {
            let chips: Vec<String> = chips.iter().map(|s| s.to_string()).collect();
            matching(&chips, ov).into_iter().map(|i| i.id).collect()
        };
        let rdna2 = ids(&["gfx1032"], false);
        assert!(rdna2.contains(&"seed-coherent-memory".to_string()));
        assert!(rdna2.contains(&"miopen-gemmbwdrest-wrw2".to_string()));
        assert!(!rdna2.contains(&"override-rdna2-to-gfx1030".to_string()));
        assert!(!rdna2.contains(&"strix-halo-mes-0x83".to_string()));
        let with_override = ids(&["gfx1032"], true);
        assert!(with_override.contains(&"override-rdna2-to-gfx1030".to_string()));
        assert!(with_override.contains(&"override-cross-family".to_string()));
        assert!(ids(&["rdna2"], false).contains(&"seed-coherent-memory".to_string()));
        assert!(ids(&["gfx1151"], false).contains(&"strix-halo-cwsr".to_string()));
        assert!(!ids(&["gfx1151"], false).contains(&"seed-coherent-memory".to_string()));
        assert!(ids(&[], true).is_empty());
    }

    #[test]
    fn chip_entries_cover_families_and_targets() {
        assert!(chip_matches("any", "gfx900"));
        assert!(chip_matches("rdna2", "gfx1036"));
        assert!(chip_matches("rdna2", "RDNA2"));
        assert!(!chip_matches("rdna2", "gfx1010"));
        assert!(chip_matches("gfx1030", "gfx1030:xnack-"));
        assert!(chip_matches("gfx1030", "rdna2"));
        assert!(!chip_matches("gfx1030", "gfx1031"));
        assert!(chip_matches("gcn4", "gfx803"));
        assert!(chip_matches("gcn3", "gfx803"));
        assert!(!chip_matches("gcn4", "gfx802"));
        assert!(chip_matches("gcn2", "gfx701"));
        assert!(!chip_matches("gcn5", "gfx803"));
        assert!(!chip_matches("gfx1030", "nonsense"));
        assert!(!chip_matches("nonsense", "nonsense2"));
    }

    #[test]
    fn validation_reports_are_a_source_kind_of_issues_and_mitigations() {
        let text = "[issue a]\ntitle: t\ncause: c\nchip: rdna1\n\
                    validation-report: https://github.com/o/r/issues/1#report\n\
                    mitigation: m\n  evidence: helped\n  validation-report: https://gist.github.com/x/1\n";
        let issues = parse_issues("x.kb", text).unwrap();
        assert_eq!(issues[0].sources, Vec::<String>::new());
        assert_eq!(
            issues[0].validation_reports,
            ["https://github.com/o/r/issues/1#report"]
        );
        assert_eq!(
            issues[0].mitigations[0].validation_reports,
            ["https://gist.github.com/x/1"]
        );
        let bad = "[issue a]\ntitle: t\ncause: c\nchip: rdna1\nvalidation-report: report.json\n";
        assert_eq!(
            parse_issues("x.kb", bad).unwrap_err(),
            "x.kb:5: a source must be one https:// URL"
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases: [(&str, &str); 11] = [
            ("title: x\n", "x.kb:1: a field before"),
            ("[issue a]\n[issue a]\n", "x.kb:2: duplicate issue id"),
            ("[issue A]\n", "x.kb:1: id 'A'"),
            ("[thing a]\n", "x.kb:1: unknown kind"),
            ("[issue a]\ntitle x\n", "x.kb:2: expected `key: value`"),
            ("[issue a]\ntitle:\n", "x.kb:2: 'title' has no value"),
            ("[issue a]\n  evidence: helped\n", "x.kb:2: indented line"),
            ("[issue a]\ncolour: red\n", "x.kb:2: unknown key 'colour'"),
            ("[issue a]\ntitle: t\ntitle: u\n", "x.kb:3: 'title' given twice"),
            (
                "[issue a]\ntitle: t\ncause: c\nchip: any\nsource: https://x\nmitigation: m\n  env: x=1\n",
                "x.kb:6: mitigation of 'a' has no evidence level",
            ),
            (
                "[issue a]\ntitle: t\ncause: c\nchip: gfx10x0\nsource: https://x\n",
                "x.kb:4: chip 'gfx10x0'",
            ),
        ];
        for (text, want) in cases {
            let e = parse_issues("x.kb", text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        let e = parse_issues("x.kb", "[issue a]\ntitle: t\ncause: c\nchip: any\n").unwrap_err();
        assert!(e.contains("x.kb:1:") && e.contains("no source URL"), "{e}");
        let e = parse_issues(
            "x.kb",
            "[issue a]\ntitle: t\ncause: c\nchip: any\nsource: http://x\n",
        )
        .unwrap_err();
        assert!(e.starts_with("x.kb:5:"), "{e}");
        let e = parse_issues(
            "x.kb",
            "[issue a]\ntitle: t\ncause: c\nchip: any\nsource: https://x\nmitigation: m\n  evidence: great\n",
        )
        .unwrap_err();
        assert!(e.starts_with("x.kb:7: evidence 'great'"), "{e}");
        // Windows line endings and comments are fine.
        let ok = parse_issues(
            "x.kb",
            "# c\r\n[issue a]\r\ntitle: t\r\ncause: c\r\nchip: rdna1\r\nsource: https://x\r\n",
        )
        .unwrap();
        assert_eq!(ok[0].chips, ["rdna1"]);
    }

    #[test]
    fn env_values_may_be_empty_but_names_must_be_proper() {
        assert_eq!(parse_env("A_1="), Some(("A_1".into(), String::new())));
        assert_eq!(parse_env("X=a=b"), Some(("X".into(), "a=b".into())));
        for bad in ["=1", "lower=1", "1A=2", "A B=1", "NOEQUALS"] {
            assert_eq!(parse_env(bad), None, "{bad}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob("python3.*", "python3.11"));
        assert!(!glob("python3.*", "python3"));
        assert!(glob("*/ComfyUI/main.py", "/home/u/ComfyUI/main.py"));
        assert!(!glob("*/ComfyUI/main.py", "ComfyUI/main.py"));
        assert!(glob("llama-*", "llama-server"));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("*", "") && glob("**", "x") && !glob("", "x"));
        assert!(glob("*a*b", "xxaybzb"));
    }
}
