//! `rocm-fix kernel-params plan|apply|revert`: the amdgpu kernel parameters
//! worth setting for the detected chips, written to the boot loader's
//! configuration with an exact undo.
//!
//! A parameter is applied only when the knowledge-base issue it comes from
//! concerns the detected chips and its evidence is confirmed, helped or
//! anecdotal; everything else considered stays in the plan with the reason it
//! was rejected. Every write goes to a temporary file in the same directory,
//! is fsynced and renamed over the target; an edited file is backed up first,
//! and a state file records what was changed so that `revert` restores the
//! previous bytes exactly. A failure undoes whatever the run had written.

use crate::json;
use rocm_fix_shared::kb::{self, Evidence, Issue, Mitigation};
use rocm_fix_shared::pciids;
use serde::Serialize;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The boot loader whose configuration holds the kernel command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// `/etc/default/grub` (drop-ins in `/etc/default/grub.d`).
    Grub,
    /// `/etc/kernel/cmdline`, read by kernel-install.
    SystemdBoot,
    /// Pop!_OS: `/etc/kernelstub/configuration`.
    Kernelstub,
    Unknown,
}

impl Loader {
    /// The name used in the state file and in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Loader::Grub => "grub",
            Loader::SystemdBoot => "systemd-boot",
            Loader::Kernelstub => "kernelstub",
            Loader::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Option<Loader> {
        [
            Loader::Grub,
            Loader::SystemdBoot,
            Loader::Kernelstub,
            Loader::Unknown,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }

    fn label(&self) -> &'static str {
        match self {
            Loader::Grub => "GRUB",
            Loader::SystemdBoot => "systemd-boot (kernel-install)",
            Loader::Kernelstub => "kernelstub (Pop!_OS)",
            Loader::Unknown => "none that rocm-fix knows",
        }
    }

    /// The file rocm-fix writes for this loader, relative to the root.
    fn target(&self) -> Option<&'static str> {
        match self {
            Loader::Grub => Some(GRUB_DROPIN),
            Loader::SystemdBoot => Some(KERNEL_CMDLINE),
            Loader::Kernelstub => Some(KERNELSTUB_CONFIG),
            Loader::Unknown => None,
        }
    }
}

// Paths below the root directory.
const GRUB_DEFAULT: &str = "etc/default/grub";
const GRUB_DIR: &str = "etc/default/grub.d";
const GRUB_DROPIN_NAME: &str = "90-rocm-fix.cfg";
const GRUB_DROPIN: &str = "etc/default/grub.d/90-rocm-fix.cfg";
const KERNEL_CMDLINE: &str = "etc/kernel/cmdline";
const KERNELSTUB_CONFIG: &str = "etc/kernelstub/configuration";
const STATE_FILE: &str = "var/lib/rocm-fix/kernel-params.state";
/// Directories apply may create (and revert removes again when empty).
const STATE_DIRS: [&str; 3] = ["var", "var/lib", "var/lib/rocm-fix"];
const BACKUP_SUFFIX: &str = ".rocm-fix.bak";

/// Configuration files are a few KiB; the cap bounds a hostile or broken one.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Whether `root` holds `rel` (a file, directory or symlink).
fn has(root: &Path, rel: &str) -> bool {
    fs::symlink_metadata(root.join(rel)).is_ok()
}

/// The boot loader in use under `root`.
///
/// kernelstub is checked first: Pop!_OS installs upgraded from GRUB can keep
/// `/etc/default/grub`, but kernelstub writes their boot entries.
pub fn detect_loader(root: &Path) -> Loader {
    if has(root, KERNELSTUB_CONFIG) {
        Loader::Kernelstub
    } else if has(root, GRUB_DEFAULT) {
        Loader::Grub
    } else if [
        KERNEL_CMDLINE,
        "boot/efi/loader",
        "efi/loader",
        "boot/loader/loader.conf",
    ]
    .iter()
    .any(|rel| has(root, rel))
    {
        Loader::SystemdBoot
    } else {
        Loader::Unknown
    }
}

/// One parameter the plan considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// `amdgpu.cwsr_enable`.
    pub name: String,
    pub value: String,
    pub evidence: Evidence,
    /// The knowledge-base issue; empty for parameters the knowledge base has
    /// no mitigation for.
    pub issue: String,
    pub sources: Vec<String>,
    /// Whether `apply` writes it.
    pub apply: bool,
    /// Why it is applied or not.
    pub reason: String,
}

impl Param {
    /// `name=value`.
    pub fn param(&self) -> String {
        format!("{}={}", self.name, self.value)
    }

    fn json(&self) -> ParamJson<'_> {
        ParamJson {
            name: &self.name,
            value: &self.value,
            param: self.param(),
            evidence: self.evidence.as_str(),
            issue: (!self.issue.is_empty()).then_some(self.issue.as_str()),
            sources: &self.sources,
            apply: self.apply,
            reason: &self.reason,
        }
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        json::inline(&self.json())
    }
}

#[derive(Serialize)]
struct ParamJson<'a> {
    name: &'a str,
    value: &'a str,
    param: String,
    evidence: &'static str,
    /// `null` for parameters the knowledge base has no mitigation for.
    issue: Option<&'a str>,
    sources: &'a [String],
    apply: bool,
    reason: &'a str,
}

/// What `plan` found: the loader, and every parameter considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub loader: Loader,
    pub chips: Vec<String>,
    /// Every parameter considered, applied or not, with the reason.
    pub params: Vec<Param>,
    /// ROOT/proc/cmdline, when readable.
    pub current_cmdline: Option<String>,
    /// Problems that affect the whole plan (a knowledge base that does not
    /// parse).
    pub notes: Vec<String>,
}

/// What `apply` or `revert` changed (or, in a dry run, would change).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    pub files_written: Vec<PathBuf>,
    pub backups: Vec<PathBuf>,
    /// The command that makes the boot loader pick the change up (argv).
    pub regenerate: Vec<String>,
    /// What happened, for the user.
    pub notes: Vec<String>,
    pub dry_run: bool,
}

/// Parameters the knowledge base has no mitigation for, but that users try
/// against these faults; listed so the plan shows them considered, with the
/// reason and the sources each names. Never applied.
struct Known {
    name: &'static str,
    value: &'static str,
    evidence: Evidence,
    reason: &'static str,
    sources: &'static [&'static str],
}

const AMDGPU_DRV: &str =
    "https://github.com/torvalds/linux/blob/master/drivers/gpu/drm/amd/amdgpu/amdgpu_drv.c";

const NO_QUEUE_EVICTION_REASON: &str = "a debug option that taints the kernel: it keeps a \
     faulting queue alive for inspection instead of recovering; never applied automatically";

const KNOWN: [Known; 3] = [
    Known {
        name: "amdgpu.mtype_local",
        value: "1",
        evidence: Evidence::NoneFound,
        reason: "only GC 9.4.3, 9.4.4, 9.5.0 (MI300 family) and GC 12.1 read it: on RDNA1/RDNA2 \
                 it changes nothing, and no report ties it to these faults",
        sources: &[AMDGPU_DRV],
    },
    Known {
        name: "amdgpu.noretry",
        value: "0",
        evidence: Evidence::NoneFound,
        reason: "the driver default already fits (1 on RDNA2 and later, 0 on RDNA1), and KFD \
                 never enables XNACK on GC 10.1 and later, so retried faults cannot be \
                 recovered; tried against these faults without success (ROCm #2286)",
        sources: &["https://github.com/ROCm/ROCm/issues/2286", AMDGPU_DRV],
    },
    Known {
        name: "amdgpu.no_queue_eviction_on_vm_fault",
        value: "1",
        evidence: Evidence::NoneFound,
        reason: NO_QUEUE_EVICTION_REASON,
        sources: &[AMDGPU_DRV],
    },
];

/// Parameters never applied on their own, whatever the knowledge base says.
const NEVER_AUTOMATIC: [(&str, &str); 1] = [(
    "amdgpu.no_queue_eviction_on_vm_fault",
    NO_QUEUE_EVICTION_REASON,
)];

/// The kernel treats '-' and '_' in parameter names alike.
fn norm_name(name: &str) -> String {
    name.replace('-', "_")
}

/// `amdgpu.NAME=VALUE` with characters that need no quoting in a shell
/// string, a JSON string or a kernel command line.
fn parse_param(p: &str) -> Option<(String, String)> {
    let (name, value) = p.split_once('=')?;
    let field = name.strip_prefix("amdgpu.")?;
    let name_ok = !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let value_ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.,:+-".contains(&b));
    (name_ok && value_ok).then(|| (name.to_string(), value.to_string()))
}

/// Whether an issue concerns the detected chips, for a setting that outlives
/// the process. When gfx names are known, only they count: a family label
/// would let a gfx1151-only fix reach every RDNA3 chip. With family labels
/// alone, only family and "any" entries count, for the same reason.
fn concerns(issue: &Issue, chips: &[String]) -> bool {
    let gfx: Vec<&String> = chips
        .iter()
        .filter(|c| pciids::parse_gfx_name(c).is_some())
        .collect();
    issue.chips.iter().any(|e| {
        if gfx.is_empty() {
            let broad = e.eq_ignore_ascii_case("any") || pciids::family_from_label(e).is_some();
            broad && chips.iter().any(|q| kb::chip_matches(e, q))
        } else {
            gfx.iter().any(|q| kb::chip_matches(e, q))
        }
    })
}

fn evidence_meaning(e: Evidence) -> &'static str {
    match e {
        Evidence::Confirmed => "a maintainer or a merged fix names it",
        Evidence::Helped => "several users report the fault stopped",
        Evidence::Mixed => "helped some users, not others",
        Evidence::Anecdotal => "one report or one maintainer repro",
        Evidence::Harmful => "makes things worse",
        Evidence::NoneFound => "tried, did not stop the fault",
    }
}

fn chip_list(chips: &[String]) -> String {
    if chips.is_empty() {
        "no detected chip".to_string()
    } else {
        chips.join(", ")
    }
}

/// The decision for one kernel parameter of one mitigation.
fn consider(issue: &Issue, m: &Mitigation, raw: &str, chips: &[String], matched: bool) -> Param {
    let (name, value, well_formed) = match parse_param(raw) {
        Some((n, v)) => (n, v, true),
        None => match raw.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string(), false),
            None => (raw.to_string(), String::new(), false),
        },
    };
    let sources = if m.sources.is_empty() {
        issue.sources.clone()
    } else {
        m.sources.clone()
    };
    let mut why: Vec<String> = Vec::new();
    if !well_formed {
        why.push(if raw.starts_with("amdgpu.") {
            "not a plain NAME=VALUE parameter rocm-fix can write safely".to_string()
        } else {
            "not an amdgpu parameter; rocm-fix only sets amdgpu.* parameters".to_string()
        });
    }
    if let Some((_, r)) = NEVER_AUTOMATIC
        .iter()
        .find(|(n, _)| norm_name(n) == norm_name(&name))
    {
        why.push((*r).to_string());
    }
    if issue.requires_override {
        why.push(format!(
            "issue {} only matters while HSA_OVERRIDE_GFX_VERSION is set, which a kernel \
             parameter would outlive",
            issue.id
        ));
    } else if !(matched && concerns(issue, chips)) {
        why.push(format!(
            "issue {} concerns {}, not {}",
            issue.id,
            issue.chips.join("/"),
            chip_list(chips)
        ));
    }
    if !m.evidence.applicable() {
        let mut s = format!(
            "evidence {}: {} ({})",
            m.evidence.as_str(),
            evidence_meaning(m.evidence),
            m.text
        );
        if let Some(n) = m.notes.first() {
            let _ = write!(s, "; {n}");
        }
        why.push(s);
    }
    let apply = why.is_empty();
    let reason = if apply {
        let mut s = format!(
            "evidence {} ({}) for issue {}: {}",
            m.evidence.as_str(),
            evidence_meaning(m.evidence),
            issue.id,
            m.text
        );
        if let Some(k) = &issue.kernel {
            let _ = write!(s, "; kernel: {k}");
        }
        s
    } else {
        why.join("; ")
    };
    Param {
        name,
        value,
        evidence: m.evidence,
        issue: issue.id.clone(),
        sources,
        apply,
        reason,
    }
}

/// The plan for these chips (gfx names such as "gfx1151" and family labels
/// such as "RDNA3") on the system under `root`.
pub fn plan(root: &Path, chips: &[String]) -> Plan {
    let loader = detect_loader(root);
    let current_cmdline = read_capped(&root.join("proc/cmdline"), 64 * 1024)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| !s.is_empty());
    let mut notes = Vec::new();
    let issues = kb::issues().unwrap_or_else(|e| {
        notes.push(format!(
            "the knowledge base does not parse ({e}); no parameter can be applied"
        ));
        Vec::new()
    });
    // Kernel parameters outlive any process, so issues that only matter under
    // an override are never matched here.
    let matched: Vec<String> = kb::matching(chips, false)
        .into_iter()
        .map(|i| i.id)
        .collect();
    let mut params = Vec::new();
    for issue in &issues {
        let is_matched = matched.contains(&issue.id);
        for m in &issue.mitigations {
            for raw in &m.kernel_params {
                params.push(consider(issue, m, raw, chips, is_matched));
            }
        }
    }
    veto_harmful_and_conflicts(&mut params, chips, &issues);
    // A setting rejected for one issue may still be applied for another;
    // say so, or the plan reads as contradicting itself.
    let applied: Vec<(String, String)> = params
        .iter()
        .filter(|p| p.apply)
        .map(|p| (p.param(), p.issue.clone()))
        .collect();
    for p in params.iter_mut().filter(|p| !p.apply) {
        if let Some((_, by)) = applied.iter().find(|(a, _)| *a == p.param()) {
            let _ = write!(p.reason, " (still applied for issue {by})");
        }
    }
    for k in &KNOWN {
        if !params
            .iter()
            .any(|p| norm_name(&p.name) == norm_name(k.name))
        {
            params.push(Param {
                name: k.name.to_string(),
                value: k.value.to_string(),
                evidence: k.evidence,
                issue: String::new(),
                sources: k.sources.iter().map(|s| s.to_string()).collect(),
                apply: false,
                reason: k.reason.to_string(),
            });
        }
    }
    if let Some(cmdline) = &current_cmdline {
        for p in params.iter_mut().filter(|p| p.apply) {
            if cmdline_has(cmdline, &p.name, &p.value) {
                p.reason
                    .push_str("; already on the running kernel's command line");
            }
        }
    }
    Plan {
        loader,
        chips: chips.to_vec(),
        params,
        current_cmdline,
        notes,
    }
}

/// A parameter marked harmful for an issue that concerns these chips is not
/// applied for any issue; two applicable values for one name cancel out.
/// None-found for one issue does not veto a fix confirmed for another: it
/// only says the setting did not stop that other fault.
fn veto_harmful_and_conflicts(params: &mut [Param], chips: &[String], issues: &[Issue]) {
    let harmful: Vec<(String, String)> = params
        .iter()
        .filter(|p| p.evidence == Evidence::Harmful)
        .filter(|p| {
            issues
                .iter()
                .any(|i| i.id == p.issue && !i.requires_override && concerns(i, chips))
        })
        .map(|p| (p.param(), p.issue.clone()))
        .collect();
    for p in params.iter_mut().filter(|p| p.apply) {
        if let Some((_, by)) = harmful.iter().find(|(h, _)| *h == p.param()) {
            p.apply = false;
            p.reason = format!("marked harmful on these chips by issue {by}; {}", p.reason);
        }
    }
    let applied: Vec<(String, String)> = params
        .iter()
        .filter(|p| p.apply)
        .map(|p| (norm_name(&p.name), p.value.clone()))
        .collect();
    for p in params.iter_mut().filter(|p| p.apply) {
        let other = applied
            .iter()
            .find(|(n, v)| *n == norm_name(&p.name) && *v != p.value);
        if let Some((_, v)) = other {
            p.apply = false;
            p.reason = format!(
                "conflicts with {}={v}, also suggested for these chips; set neither \
                 automatically; {}",
                p.name, p.reason
            );
        }
    }
}

impl Plan {
    /// The parameters `apply` writes, each `name=value` once.
    pub fn to_apply(&self) -> Vec<&Param> {
        let mut out: Vec<&Param> = Vec::new();
        for p in self.params.iter().filter(|p| p.apply) {
            if !out.iter().any(|q| q.param() == p.param()) {
                out.push(p);
            }
        }
        out
    }

    /// A readable report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Kernel parameters for {}", chip_list(&self.chips));
        let _ = writeln!(out, "Boot loader: {}", self.loader.label());
        if let Some(c) = &self.current_cmdline {
            let _ = writeln!(out, "Running kernel command line: {c}");
        }
        for n in &self.notes {
            let _ = writeln!(out, "Note: {n}");
        }
        let apply = self.to_apply();
        out.push('\n');
        if apply.is_empty() {
            let _ = writeln!(
                out,
                "Nothing is worth applying: no amdgpu parameter has confirmed, helped or \
                 anecdotal evidence against a fault on {}. `apply` writes nothing.",
                chip_list(&self.chips)
            );
        } else {
            let _ = writeln!(out, "Worth applying ({}):", apply.len());
            for p in &apply {
                render_param(&mut out, p);
            }
        }
        let rejected: Vec<&Param> = self.params.iter().filter(|p| !p.apply).collect();
        if !rejected.is_empty() {
            let _ = writeln!(out, "\nConsidered and not applied ({}):", rejected.len());
            for p in rejected {
                render_param(&mut out, p);
            }
        }
        if !apply.is_empty() {
            out.push('\n');
            match self.loader.target() {
                Some(t) => {
                    let _ = writeln!(
                        out,
                        "`rocm-fix kernel-params apply` writes /{t} (with a backup of any file \
                         it edits); `revert` restores it exactly."
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "No supported boot loader was found (GRUB's /{GRUB_DEFAULT}, kernelstub's \
                         /{KERNELSTUB_CONFIG}, systemd-boot's /{KERNEL_CMDLINE}): add {} to the \
                         kernel command line by hand.",
                        apply
                            .iter()
                            .map(|p| p.param())
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                }
            }
        }
        out
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        json::inline(&PlanJson {
            loader: self.loader.as_str(),
            chips: &self.chips,
            current_cmdline: self.current_cmdline.as_deref(),
            to_apply: self.to_apply().iter().map(|p| p.param()).collect(),
            params: self.params.iter().map(Param::json).collect(),
            notes: &self.notes,
        })
    }
}

#[derive(Serialize)]
struct PlanJson<'a> {
    loader: &'static str,
    chips: &'a [String],
    current_cmdline: Option<&'a str>,
    to_apply: Vec<String>,
    params: Vec<ParamJson<'a>>,
    notes: &'a [String],
}

fn render_param(out: &mut String, p: &Param) {
    let issue = if p.issue.is_empty() {
        "no knowledge-base issue".to_string()
    } else {
        format!("issue {}", p.issue)
    };
    let _ = writeln!(out, "  {}  [{}]  {issue}", p.param(), p.evidence.as_str());
    let _ = writeln!(out, "      {}", p.reason);
    for s in &p.sources {
        let _ = writeln!(out, "      source: {s}");
    }
}

impl Change {
    /// A readable report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for n in &self.notes {
            let _ = writeln!(out, "{n}");
        }
        // Revert removes as well as writes, so one neutral word for both.
        let verb = if self.dry_run {
            "would change"
        } else {
            "changed"
        };
        for f in &self.files_written {
            let _ = writeln!(out, "  {verb}: {}", f.display());
        }
        for b in &self.backups {
            let _ = writeln!(out, "  backup: {}", b.display());
        }
        if !self.regenerate.is_empty() {
            let _ = writeln!(
                out,
                "To take effect: run `{}` (or pass --yes), then reboot.",
                self.regenerate.join(" ")
            );
        }
        out
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        let paths =
            |v: &[PathBuf]| -> Vec<String> { v.iter().map(|p| p.display().to_string()).collect() };
        json::inline(&ChangeJson {
            dry_run: self.dry_run,
            files_written: paths(&self.files_written),
            backups: paths(&self.backups),
            regenerate: &self.regenerate,
            notes: &self.notes,
        })
    }
}

#[derive(Serialize)]
struct ChangeJson<'a> {
    dry_run: bool,
    files_written: Vec<String>,
    backups: Vec<String>,
    regenerate: &'a [String],
    notes: &'a [String],
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// A regular file's bytes, at most `cap`: a FIFO or device under the root
/// is refused, never waited on or read without end.
fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    crate::input::read_regular(path, cap)
}

/// The file's bytes, `None` if it does not exist.
fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match read_capped(path, MAX_FILE_BYTES) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot read {}: {e}. Nothing was changed.",
            path.display()
        )),
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777)
}

/// Renaming over a symlink would replace the link with a file, so rocm-fix
/// leaves linked configuration to the user.
fn refuse_symlink(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "{} is a symbolic link; rocm-fix edits only regular files. Nothing was changed.",
            path.display()
        )),
        Ok(m) if !m.is_file() => Err(format!(
            "{} is not a regular file. Nothing was changed.",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// Replaces `path` atomically: a temporary file in the same directory,
/// fsync, rename, fsync of the directory. The owner of a replaced file is
/// kept where permitted.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    // A leading dot and no ".cfg" ending keep GRUB from sourcing it mid-write.
    let tmp = dir.join(format!(
        ".{}.rocm-fix-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let owner = fs::metadata(path).ok();
    // The name is rocm-fix's own; a leftover is from a run that crashed.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode given to open.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some(m) = &owner {
            use std::os::unix::fs::MetadataExt as _;
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // Durability of the rename; some filesystems cannot fsync a directory.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates `rel` and its missing parents; returns the ones created,
/// outermost first.
fn create_dirs(root: &Path, rel: &str) -> io::Result<Vec<String>> {
    let mut created = Vec::new();
    let mut so_far = String::new();
    for part in rel.split('/') {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(part);
        let p = root.join(&so_far);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() || (m.file_type().is_symlink() && p.is_dir()) => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", p.display()),
                ))
            }
            Err(_) => {
                fs::create_dir(&p)?;
                created.push(so_far.clone());
            }
        }
    }
    Ok(created)
}

/// Steps to undo, run in reverse when a later step fails.
enum Undo {
    RemoveFile(PathBuf),
    Restore(PathBuf, Vec<u8>, u32),
    RemoveDir(PathBuf),
}

fn run_undo(steps: Vec<Undo>) -> Result<(), String> {
    let mut failed = Vec::new();
    for step in steps.into_iter().rev() {
        let r = match &step {
            Undo::RemoveFile(p) => fs::remove_file(p).map_err(|e| (p.clone(), e)),
            Undo::Restore(p, data, mode) => {
                write_atomic(p, data, *mode).map_err(|e| (p.clone(), e))
            }
            Undo::RemoveDir(p) => fs::remove_dir(p).map_err(|e| (p.clone(), e)),
        };
        if let Err((p, e)) = r {
            failed.push(format!("{}: {e}", p.display()));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// 64-bit FNV-1a: enough to notice that a file changed since rocm-fix wrote
/// it (not a defence against deliberate collisions).
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/// What an earlier `apply` changed (ROOT/var/lib/rocm-fix/kernel-params.state).
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    loader: Loader,
    params: Vec<String>,
    /// The file written, relative to the root.
    file: String,
    /// The copy of the file as it was before rocm-fix; `None` when rocm-fix
    /// created the file.
    backup: Option<String>,
    /// Directories rocm-fix created, outermost first.
    created_dirs: Vec<String>,
    /// (length, FNV-1a) of each content rocm-fix wrote to `file`.
    written: Vec<(u64, u64)>,
    /// kernelstub: the kernel_options lists rocm-fix wrote. kernelstub
    /// rewrites its configuration in its own layout, so the lists are
    /// compared, not the bytes.
    wrote_options: Vec<Vec<String>>,
}

impl State {
    fn to_text(&self) -> String {
        let mut out = String::from(
            "# rocm-fix kernel-params state: what `rocm-fix kernel-params apply` changed,\n\
             # so that `rocm-fix kernel-params revert` can undo exactly that. Do not edit.\n\
             format 1\n",
        );
        let _ = writeln!(out, "loader {}", self.loader.as_str());
        for p in &self.params {
            let _ = writeln!(out, "param {p}");
        }
        let _ = writeln!(out, "file /{}", self.file);
        if let Some(b) = &self.backup {
            let _ = writeln!(out, "backup /{b}");
        }
        for d in &self.created_dirs {
            let _ = writeln!(out, "created-dir /{d}");
        }
        for (len, h) in &self.written {
            let _ = writeln!(out, "written {len} {h:016x}");
        }
        for o in &self.wrote_options {
            let _ = writeln!(out, "wrote-options {}", json::inline(o));
        }
        out
    }

    /// Parses a state file, accepting only paths rocm-fix itself writes, so
    /// that a damaged or foreign file cannot make revert touch anything else.
    fn parse(text: &str) -> Result<State, String> {
        let mut loader = None;
        let mut format_seen = false;
        let mut st = State {
            loader: Loader::Unknown,
            params: Vec::new(),
            file: String::new(),
            backup: None,
            created_dirs: Vec::new(),
            written: Vec::new(),
            wrote_options: Vec::new(),
        };
        for (n, line) in text.lines().enumerate() {
            let bad = |what: &str| format!("line {}: {what}", n + 1);
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let path = || value.strip_prefix('/').map(str::to_string);
            match key {
                "format" if value == "1" => format_seen = true,
                "loader" => loader = Some(Loader::parse(value).ok_or_else(|| bad("loader"))?),
                "param" => {
                    parse_param(value).ok_or_else(|| bad("param"))?;
                    st.params.push(value.to_string());
                }
                "file" => st.file = path().ok_or_else(|| bad("file"))?,
                "backup" => st.backup = Some(path().ok_or_else(|| bad("backup"))?),
                "created-dir" => {
                    let d = path().ok_or_else(|| bad("created-dir"))?;
                    if d != GRUB_DIR && !STATE_DIRS.contains(&d.as_str()) {
                        return Err(bad("created-dir names a directory rocm-fix never creates"));
                    }
                    st.created_dirs.push(d);
                }
                "written" => {
                    let (len, h) = value.split_once(' ').ok_or_else(|| bad("written"))?;
                    let len = len.parse().map_err(|_| bad("written"))?;
                    let h = u64::from_str_radix(h, 16).map_err(|_| bad("written"))?;
                    st.written.push((len, h));
                }
                "wrote-options" => {
                    let v = Json::parse(value.as_bytes()).map_err(|e| bad(&e))?;
                    st.wrote_options
                        .push(v.strings().ok_or_else(|| bad("wrote-options"))?);
                }
                _ => return Err(bad(&format!("unknown entry '{key}'"))),
            }
        }
        if !format_seen {
            return Err("no 'format 1' line".into());
        }
        st.loader = loader.ok_or("no loader")?;
        let target = st.loader.target().ok_or("loader 'unknown'")?;
        if st.file != target {
            return Err(format!(
                "file /{} is not the {} file",
                st.file,
                st.loader.as_str()
            ));
        }
        if let Some(b) = &st.backup {
            if *b != format!("{target}{BACKUP_SUFFIX}") || st.loader == Loader::Grub {
                return Err(format!("backup /{b} is not one rocm-fix makes"));
            }
        } else if st.loader != Loader::Grub {
            return Err("no backup recorded".into());
        }
        if st.params.is_empty() {
            return Err("no param".into());
        }
        let proof_missing = if st.loader == Loader::Kernelstub {
            st.wrote_options.is_empty()
        } else {
            st.written.is_empty()
        };
        if proof_missing {
            return Err("no record of the content written".into());
        }
        Ok(st)
    }
}

/// The recorded state with its raw bytes, `None` when there is none.
fn read_state(root: &Path) -> Result<Option<(State, Vec<u8>)>, String> {
    let path = root.join(STATE_FILE);
    let Some(raw) = read_opt(&path)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&raw);
    let st = State::parse(&text).map_err(|e| {
        // The reason may quote the file: escaped, so garbage in it reaches
        // the terminal as text.
        format!(
            "{} is not a state file rocm-fix understands ({}); nothing was changed. \
             Restore the boot configuration by hand and remove that file.",
            path.display(),
            crate::input::shown(&e)
        )
    })?;
    Ok(Some((st, raw)))
}

/// How the target file relates to what the state recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Current {
    /// It holds what rocm-fix wrote.
    Ours,
    /// It holds the backed-up original (a run stopped before or after writing).
    Original,
    /// It is gone (only accepted for the GRUB drop-in).
    Missing,
}

fn check_current(root: &Path, st: &State) -> Result<Current, String> {
    let path = root.join(&st.file);
    refuse_symlink(&path)?;
    let state_path = root.join(STATE_FILE);
    let current = read_opt(&path)?;
    let backup = match &st.backup {
        Some(b) => read_opt(&root.join(b))?,
        None => None,
    };
    let Some(cur) = current else {
        return match (&st.backup, st.loader) {
            (None, Loader::Grub) => Ok(Current::Missing),
            _ => Err(format!(
                "{} is gone since rocm-fix changed it; its original is in {}. Restore it by \
                 hand, then remove {}.",
                path.display(),
                st.backup
                    .as_deref()
                    .map_or_else(String::new, |b| root.join(b).display().to_string()),
                state_path.display()
            )),
        };
    };
    let ours = if st.loader == Loader::Kernelstub {
        kernelstub_options(&cur)
            .map(|(o, _)| st.wrote_options.contains(&o))
            .unwrap_or(false)
    } else {
        st.written.contains(&(cur.len() as u64, fnv1a(&cur)))
    };
    if ours {
        return Ok(Current::Ours);
    }
    if backup.as_deref() == Some(cur.as_slice()) {
        return Ok(Current::Original);
    }
    Err(match &st.backup {
        Some(b) => format!(
            "{} changed since rocm-fix wrote it (edited by hand or by another tool); rocm-fix \
             will not overwrite those changes. The file as it was before rocm-fix is {}: \
             compare, restore by hand, then remove it and {}.",
            path.display(),
            root.join(b).display(),
            state_path.display()
        ),
        None => format!(
            "{} changed since rocm-fix wrote it; rocm-fix will not remove those changes. \
             Remove it by hand, then remove {}.",
            path.display(),
            state_path.display()
        ),
    })
}

// ---------------------------------------------------------------------------
// Apply and revert
// ---------------------------------------------------------------------------

/// One parameter to write, with what the file's comments say about it.
struct Wanted {
    param: String,
    name: String,
    value: String,
    comment: String,
}

/// The plan's parameters to apply, checked again here because a `Plan` can
/// be built by hand: only well-formed amdgpu parameters with applicable
/// evidence, none of the never-automatic ones, one value per name.
fn wanted(plan: &Plan) -> Result<Vec<Wanted>, String> {
    let mut out: Vec<Wanted> = Vec::new();
    for p in plan.to_apply() {
        let param = p.param();
        let Some((name, value)) = parse_param(&param) else {
            return Err(format!(
                "refusing to write '{param}': not a plain amdgpu.NAME=VALUE parameter. \
                 Nothing was changed."
            ));
        };
        if !p.evidence.applicable() {
            return Err(format!(
                "refusing to write {param}: its evidence is {} (only confirmed, helped or \
                 anecdotal evidence is applied). Nothing was changed.",
                p.evidence.as_str()
            ));
        }
        if let Some((_, r)) = NEVER_AUTOMATIC
            .iter()
            .find(|(n, _)| norm_name(n) == norm_name(&name))
        {
            return Err(format!(
                "refusing to write {param}: {r}. Nothing was changed."
            ));
        }
        if let Some(w) = out
            .iter()
            .find(|w| norm_name(&w.name) == norm_name(&name) && w.value != value)
        {
            return Err(format!(
                "refusing to write both {} and {param}. Nothing was changed.",
                w.param
            ));
        }
        // Comments in a file that a shell sources: printable ASCII only.
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect()
        };
        let mut comment = format!("# {param}: evidence {}", clean(p.evidence.as_str()));
        if !p.issue.is_empty() {
            let _ = write!(comment, ", issue {}", clean(&p.issue));
        }
        for s in &p.sources {
            let _ = write!(comment, "\n#   {}", clean(s));
        }
        out.push(Wanted {
            param,
            name,
            value,
            comment,
        });
    }
    Ok(out)
}

/// Whether a command line holds `name=value` (names compared as the kernel
/// does, '-' and '_' alike).
fn cmdline_has(cmdline: &str, name: &str, value: &str) -> bool {
    cmdline.split_ascii_whitespace().any(|t| {
        t.split_once('=')
            .is_some_and(|(n, v)| norm_name(n) == norm_name(name) && v == value)
    })
}

/// A value already set for `name` in these tokens, if any.
fn existing_value<'a, I: IntoIterator<Item = &'a str>>(tokens: I, name: &str) -> Option<String> {
    tokens.into_iter().find_map(|t| {
        let (n, v) = t.split_once('=').unwrap_or((t, ""));
        (norm_name(n) == norm_name(name)).then(|| v.to_string())
    })
}

/// Splits `wanted` into the parameters to add and those already set, and
/// refuses when one is set to another value.
fn missing_params<'a>(
    tokens: &[&str],
    wanted: &'a [Wanted],
    where_: &str,
) -> Result<Vec<&'a Wanted>, String> {
    let mut out = Vec::new();
    for w in wanted {
        match existing_value(tokens.iter().copied(), &w.name) {
            None => out.push(w),
            Some(v) if v == w.value => {}
            Some(v) => {
                let shown = if v.is_empty() {
                    w.name.clone()
                } else {
                    format!("{}={v}", w.name)
                };
                return Err(format!(
                    "{where_} already sets {shown}; rocm-fix leaves a value you chose alone and \
                     does not add {}. Nothing was changed.",
                    w.param
                ));
            }
        }
    }
    Ok(out)
}

/// The GRUB drop-in for these parameters.
fn grub_dropin(params: &[&Wanted], regenerate: &[String]) -> Vec<u8> {
    let mut out = String::from(
        "# Written by rocm-fix (`rocm-fix kernel-params apply`). Remove it with\n\
         # `rocm-fix kernel-params revert`, which restores the previous state.\n",
    );
    let _ = writeln!(
        out,
        "# Takes effect after `{}` and a reboot.",
        regenerate.join(" ")
    );
    out.push_str(
        "# Only GRUB_CMDLINE_LINUX_DEFAULT: recovery entries boot without these\n\
         # parameters, a way back if one of them misbehaves.\n#\n",
    );
    for w in params {
        let _ = writeln!(out, "{}", w.comment);
    }
    let list: Vec<&str> = params.iter().map(|w| w.param.as_str()).collect();
    let _ = writeln!(
        out,
        "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT {}\"",
        list.join(" ")
    );
    out.into_bytes()
}

/// Words of GRUB settings files (comments skipped; quotes split words).
fn grub_tokens(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| {
            l.split(|c: char| c.is_ascii_whitespace() || c == '"' || c == '\'')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The grub-mkconfig under `root`, if any, and whether it sources
/// /etc/default/grub.d (a Debian addition; upstream GRUB, Arch and Fedora do
/// not, so a drop-in would be ignored there).
fn grub_reads_dropins(root: &Path) -> Result<(), String> {
    let candidates = [
        "usr/sbin/grub-mkconfig",
        "sbin/grub-mkconfig",
        "usr/bin/grub-mkconfig",
        "usr/sbin/grub2-mkconfig",
        "sbin/grub2-mkconfig",
        "usr/bin/grub2-mkconfig",
    ];
    let Some(rel) = candidates.iter().find(|r| root.join(r).is_file()) else {
        return Err(format!(
            "found /{GRUB_DEFAULT} but no grub-mkconfig under {}, so rocm-fix cannot tell \
             whether drop-ins in /{GRUB_DIR} are read. Nothing was changed.",
            root.display()
        ));
    };
    let path = root.join(rel);
    let text = read_capped(&path, MAX_FILE_BYTES)
        .map_err(|e| format!("cannot read {}: {e}. Nothing was changed.", path.display()))?;
    if String::from_utf8_lossy(&text).contains("/default/grub.d") {
        Ok(())
    } else {
        Err(format!(
            "{} does not read /{GRUB_DIR}/*.cfg (only Debian and Ubuntu's GRUB does), so a \
             drop-in would be ignored. Nothing was changed.",
            path.display()
        ))
    }
}

/// Inserts the parameters after the last word of a kernel command-line
/// file, keeping every other byte (line endings, trailing spaces) as it was.
fn cmdline_with(orig: &[u8], params: &[&Wanted]) -> Vec<u8> {
    if params.is_empty() {
        return orig.to_vec();
    }
    let end = orig
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let list: Vec<&str> = params.iter().map(|w| w.param.as_str()).collect();
    let mut out = Vec::with_capacity(orig.len() + 64);
    out.extend_from_slice(&orig[..end]);
    if end > 0 {
        out.push(b' ');
    }
    out.extend_from_slice(list.join(" ").as_bytes());
    out.extend_from_slice(&orig[end..]);
    out
}

/// kernelstub's `user.kernel_options` and the byte span of that array.
fn kernelstub_options(text: &[u8]) -> Result<(Vec<String>, Json), String> {
    let doc = Json::parse(text)?;
    let user = doc
        .get("user")
        .ok_or("it has no \"user\" section (run `kernelstub` once so that it writes one)")?;
    let opts = user
        .get("kernel_options")
        .ok_or("its \"user\" section has no \"kernel_options\"")?;
    let list = opts
        .strings()
        .ok_or("\"kernel_options\" is not a list of strings (run `kernelstub` once so that it upgrades the file)")?;
    Ok((list, opts.clone()))
}

/// Appends the parameters to kernelstub's user kernel_options in the file's
/// own layout, leaving every other byte as it was.
fn kernelstub_with(orig: &[u8], params: &[&Wanted]) -> Result<Vec<u8>, String> {
    let (_, arr) = kernelstub_options(orig)?;
    if params.is_empty() {
        return Ok(orig.to_vec());
    }
    let JsonKind::Arr(items) = &arr.kind else {
        return Err("\"kernel_options\" is not a list".into());
    };
    let quoted: Vec<String> = params.iter().map(|w| json::inline(&w.param)).collect();
    let (at, insert) = match items.as_slice() {
        [] => (arr.start + 1, quoted.join(", ")),
        [only] => {
            // "[\n      \"a\"" → separator ",\n      "
            let lead = String::from_utf8_lossy(&orig[arr.start + 1..only.start]).into_owned();
            let sep = if lead.is_empty() {
                ", ".to_string()
            } else {
                format!(",{lead}")
            };
            (only.end, format!("{sep}{}", quoted.join(&sep)))
        }
        [.., prev, last] => {
            let sep = String::from_utf8_lossy(&orig[prev.end..last.start]).into_owned();
            (last.end, format!("{sep}{}", quoted.join(&sep)))
        }
    };
    let mut out = Vec::with_capacity(orig.len() + insert.len());
    out.extend_from_slice(&orig[..at]);
    out.extend_from_slice(insert.as_bytes());
    out.extend_from_slice(&orig[at..]);
    Ok(out)
}

fn regeneration(root: &Path, loader: Loader) -> Vec<String> {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    match loader {
        Loader::Grub => {
            if has(root, "usr/sbin/update-grub") || has(root, "sbin/update-grub") {
                v(&["update-grub"])
            } else if has(root, "usr/sbin/grub2-mkconfig") || has(root, "sbin/grub2-mkconfig") {
                v(&["grub2-mkconfig", "-o", "/boot/grub2/grub.cfg"])
            } else {
                v(&["grub-mkconfig", "-o", "/boot/grub/grub.cfg"])
            }
        }
        Loader::SystemdBoot => {
            let release = read_capped(&root.join("proc/sys/kernel/osrelease"), 4096)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .filter(|s| !s.is_empty() && !s.contains('/') && !s.contains(char::is_whitespace));
            let Some(r) = release else {
                return v(&[
                    "kernel-install",
                    "add",
                    "$(uname -r)",
                    "/boot/vmlinuz-$(uname -r)",
                ]);
            };
            let image = ["usr/lib/modules", "lib/modules"]
                .iter()
                .map(|d| format!("{d}/{r}/vmlinuz"))
                .find(|rel| root.join(rel).is_file())
                .map_or_else(|| format!("/boot/vmlinuz-{r}"), |rel| format!("/{rel}"));
            vec!["kernel-install".into(), "add".into(), r, image]
        }
        Loader::Kernelstub => v(&["kernelstub"]),
        Loader::Unknown => Vec::new(),
    }
}

fn regeneration_notes(loader: Loader) -> Vec<String> {
    match loader {
        Loader::SystemdBoot => vec![
            "kernel-install rewrites the entry of the running kernel only; other installed \
             kernels pick the change up when they are next installed. If your kernels are \
             unified images built by mkinitcpio or dracut, rebuild them instead."
                .to_string(),
        ],
        _ => Vec::new(),
    }
}

fn nothing_written(regenerate: Vec<String>, notes: Vec<String>, dry_run: bool) -> Change {
    Change {
        files_written: Vec::new(),
        backups: Vec::new(),
        regenerate,
        notes,
        dry_run,
    }
}

/// Writes the plan's parameters to the boot loader's configuration.
///
/// Idempotent: a second run with the same plan writes nothing. A run with a
/// different plan rewrites rocm-fix's change from the original file, so the
/// backup always holds the file as it was before rocm-fix. Nothing to apply
/// is `Ok` with nothing written.
/// Every path rocm-fix reads or writes under a root, relative to it.
fn touched_paths() -> Vec<String> {
    let mut rels: Vec<String> = [
        GRUB_DEFAULT,
        GRUB_DIR,
        GRUB_DROPIN,
        KERNEL_CMDLINE,
        KERNELSTUB_CONFIG,
        STATE_FILE,
    ]
    .iter()
    .map(|r| r.to_string())
    .collect();
    rels.push(format!("{KERNEL_CMDLINE}{BACKUP_SUFFIX}"));
    rels.push(format!("{KERNELSTUB_CONFIG}{BACKUP_SUFFIX}"));
    rels
}

/// Nothing under an image root (`--root`) may resolve outside it: a
/// symbolic link there (`ROOT/var/lib/rocm-fix -> /var/lib/rocm-fix`) would
/// make rocm-fix read or write the host's files. Every existing component
/// of every path rocm-fix touches must stay inside the root once resolved.
fn confine(root: &Path) -> Result<(), String> {
    let Ok(real_root) = fs::canonicalize(root) else {
        return Ok(()); // a missing root fails later, with its own message
    };
    if real_root == Path::new("/") {
        return Ok(());
    }
    for rel in touched_paths() {
        let mut p = root.to_path_buf();
        for part in rel.split('/') {
            p.push(part);
            let Ok(m) = fs::symlink_metadata(&p) else {
                break; // nothing more of it exists: created inside the root
            };
            if !m.file_type().is_symlink() {
                continue;
            }
            let inside = fs::canonicalize(&p).is_ok_and(|t| t.starts_with(&real_root));
            if !inside {
                return Err(format!(
                    "{} is a symbolic link that leads outside {} ({}); rocm-fix touches \
                     nothing outside the root it is given. Nothing was changed.",
                    p.display(),
                    root.display(),
                    fs::read_link(&p).map_or_else(
                        |_| "unreadable".to_string(),
                        |t| crate::input::shown(&t.to_string_lossy())
                    )
                ));
            }
        }
    }
    Ok(())
}

pub fn apply(root: &Path, plan: &Plan, dry_run: bool) -> Result<Change, String> {
    confine(root)?;
    let wanted = wanted(plan)?;
    let state = read_state(root)?;
    if wanted.is_empty() {
        let mut notes = vec![format!(
            "Nothing to apply: no amdgpu parameter has confirmed, helped or anecdotal evidence \
             for {}. Nothing was written.",
            chip_list(&plan.chips)
        )];
        if let Some((st, _)) = &state {
            notes.push(format!(
                "An earlier apply is still in place ({}); `rocm-fix kernel-params revert` \
                 removes it.",
                st.params.join(" ")
            ));
        }
        return Ok(nothing_written(Vec::new(), notes, dry_run));
    }
    let loader = plan.loader;
    let detected = detect_loader(root);
    if detected != loader {
        return Err(format!(
            "the plan was made for {} but {} now has {}; make a new plan. Nothing was changed.",
            loader.label(),
            root.display(),
            detected.label()
        ));
    }
    let Some(rel) = loader.target() else {
        return Err(format!(
            "No supported boot loader found under {} (looked for /{GRUB_DEFAULT}, \
             /{KERNELSTUB_CONFIG}, /{KERNEL_CMDLINE}, /boot/efi/loader and /efi/loader). \
             Add {} to the kernel command line by hand. Nothing was changed.",
            root.display(),
            wanted
                .iter()
                .map(|w| w.param.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    };
    if let Some((st, _)) = &state {
        if st.loader != loader {
            return Err(format!(
                "An earlier apply changed {} /{}; run `rocm-fix kernel-params revert` \
                 first. Nothing was changed.",
                st.loader.label(),
                st.file
            ));
        }
    }
    let path = root.join(rel);
    refuse_symlink(&path)?;
    let backup_rel = format!("{rel}{BACKUP_SUFFIX}");
    let backup_path = root.join(&backup_rel);
    let regenerate = regeneration(root, loader);

    // The file as it was before rocm-fix, and where it stands now.
    let (original, current_status) = match &state {
        Some((st, _)) => {
            let status = check_current(root, st)?;
            let orig = match &st.backup {
                Some(b) => {
                    let p = root.join(b);
                    Some(read_opt(&p)?.ok_or_else(|| {
                        format!(
                            "the backup {} is missing; restore /{} by hand and remove {}. \
                             Nothing was changed.",
                            p.display(),
                            st.file,
                            root.join(STATE_FILE).display()
                        )
                    })?)
                }
                None => None,
            };
            (orig, Some(status))
        }
        None => {
            let cur = read_opt(&path)?;
            if loader == Loader::Grub && cur.is_some() {
                return Err(format!(
                    "{} exists, but rocm-fix has no record of writing it; remove it by hand \
                     and retry. Nothing was changed.",
                    path.display()
                ));
            }
            if let (Some(c), Some(b)) = (&cur, read_opt(&backup_path)?) {
                // A copy equal to the file is what an interrupted run leaves; anything
                // else may be the only copy of an older configuration.
                if *c != b {
                    return Err(format!(
                        "{} exists, but no state file records it (an earlier run was \
                         interrupted, or it is someone else's). Compare it with {}, remove it, \
                         and retry. Nothing was changed.",
                        backup_path.display(),
                        path.display()
                    ));
                }
            }
            (cur, None)
        }
    };

    let (new, to_write) = match loader {
        Loader::Grub => {
            if !has(root, GRUB_DEFAULT) {
                return Err(format!(
                    "{} is missing; rocm-fix adds to an existing GRUB configuration only. \
                     Nothing was changed.",
                    root.join(GRUB_DEFAULT).display()
                ));
            }
            grub_reads_dropins(root)?;
            let mut tokens = Vec::new();
            let mut files = vec![root.join(GRUB_DEFAULT)];
            if let Ok(rd) = fs::read_dir(root.join(GRUB_DIR)) {
                let mut more: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "cfg")
                            && p.file_name().is_some_and(|n| n != GRUB_DROPIN_NAME)
                    })
                    .collect();
                more.sort();
                files.extend(more);
            }
            for f in &files {
                if let Some(b) = read_opt(f)? {
                    tokens.extend(grub_tokens(&String::from_utf8_lossy(&b)));
                }
            }
            let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let add = missing_params(&refs, &wanted, "the GRUB configuration")?;
            let text = grub_dropin(&add, &regenerate);
            (
                text,
                add.into_iter().map(|w| w.param.clone()).collect::<Vec<_>>(),
            )
        }
        Loader::SystemdBoot | Loader::Kernelstub => {
            let Some(orig) = &original else {
                return Err(if loader == Loader::SystemdBoot {
                    format!(
                        "systemd-boot without {}: its entries then take their options from \
                         /proc/cmdline or from hand-written files in /boot/loader/entries, \
                         which rocm-fix does not edit. Create {} from your current command \
                         line, or add {} to your entry's options line by hand. Nothing was \
                         changed.",
                        path.display(),
                        path.display(),
                        wanted
                            .iter()
                            .map(|w| w.param.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                } else {
                    format!("{} is missing. Nothing was changed.", path.display())
                });
            };
            if loader == Loader::SystemdBoot {
                let text = String::from_utf8_lossy(orig);
                let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
                let add = missing_params(&tokens, &wanted, &path.display().to_string())?;
                let params = add.iter().map(|w| w.param.clone()).collect::<Vec<_>>();
                (cmdline_with(orig, &add), params)
            } else {
                let (opts, _) = kernelstub_options(orig).map_err(|e| {
                    format!("cannot edit {}: {e}. Nothing was changed.", path.display())
                })?;
                let words: Vec<&str> = opts
                    .iter()
                    .flat_map(|o| o.split_ascii_whitespace())
                    .collect();
                let add = missing_params(&words, &wanted, &path.display().to_string())?;
                let params = add.iter().map(|w| w.param.clone()).collect::<Vec<_>>();
                let new = kernelstub_with(orig, &add).map_err(|e| {
                    format!("cannot edit {}: {e}. Nothing was changed.", path.display())
                })?;
                (new, params)
            }
        }
        Loader::Unknown => return Err("no boot loader".into()),
    };

    if to_write.is_empty() {
        let mut notes = vec![format!(
            "Nothing to write: {} already set in the boot configuration.",
            wanted
                .iter()
                .map(|w| w.param.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )];
        if state.is_some() {
            notes.push(
                "An earlier rocm-fix change is still in place; `rocm-fix kernel-params revert` \
                 removes it."
                    .into(),
            );
        }
        return Ok(nothing_written(Vec::new(), notes, dry_run));
    }

    // Already applied: the file says what this plan would write.
    if let Some((st, _)) = &state {
        let cur = read_opt(&path)?;
        let same = match (&cur, loader) {
            (Some(c), Loader::Kernelstub) => {
                let want = kernelstub_options(&new).map(|(o, _)| o).ok();
                want.is_some() && kernelstub_options(c).map(|(o, _)| o).ok() == want
            }
            (Some(c), _) => *c == new,
            (None, _) => false,
        };
        if same && current_status == Some(Current::Ours) && st.params == to_write {
            let mut notes = vec![format!(
                "Already applied: {} holds {}. Nothing was written.",
                path.display(),
                to_write.join(" ")
            )];
            notes.extend(regeneration_notes(loader));
            let backups = st.backup.iter().map(|b| root.join(b)).collect();
            return Ok(Change {
                files_written: Vec::new(),
                backups,
                regenerate,
                notes,
                dry_run,
            });
        }
    }

    let mut created_dirs: Vec<String> = state
        .as_ref()
        .map(|(st, _)| st.created_dirs.clone())
        .unwrap_or_default();
    let make_backup = state.is_none() && original.is_some();
    let backup = if original.is_some() {
        Some(backup_rel.clone())
    } else {
        None
    };
    let files_written = vec![path.clone(), root.join(STATE_FILE)];
    let backups: Vec<PathBuf> = backup.iter().map(|b| root.join(b)).collect();
    let mut notes = Vec::new();

    if dry_run {
        notes.push(format!(
            "Dry run: nothing was written. apply would set {}.",
            to_write.join(" ")
        ));
        if loader == Loader::Grub {
            notes.push(format!(
                "{} would read:\n{}",
                path.display(),
                String::from_utf8_lossy(&new).trim_end()
            ));
        }
        notes.extend(regeneration_notes(loader));
        return Ok(Change {
            files_written,
            backups,
            regenerate,
            notes,
            dry_run,
        });
    }

    let mut undo: Vec<Undo> = Vec::new();
    let fail = |undo: Vec<Undo>, what: String| -> String {
        match run_undo(undo) {
            Ok(()) => format!("{what}. Nothing was changed."),
            Err(e) => format!(
                "{what}; undoing the partial change also failed ({e}). Compare {} with {} by \
                 hand.",
                path.display(),
                backup_path.display()
            ),
        }
    };

    // 1. Directories.
    let parent_rel = match rel.rsplit_once('/') {
        Some((d, _)) => d,
        None => "",
    };
    let grub_dir = (loader == Loader::Grub).then_some(parent_rel);
    for dir in grub_dir.into_iter().chain(["var/lib/rocm-fix"]) {
        match create_dirs(root, dir) {
            Ok(made) => {
                for d in made {
                    undo.push(Undo::RemoveDir(root.join(&d)));
                    created_dirs.push(d);
                }
            }
            Err(e) => {
                return Err(fail(
                    undo,
                    format!("cannot create {}: {e}", root.join(dir).display()),
                ))
            }
        }
    }

    // 2. The backup, before the file changes.
    if make_backup && !backup_path.exists() {
        if let Some(orig) = &original {
            if let Err(e) = write_atomic(&backup_path, orig, mode_of(&path)) {
                return Err(fail(
                    undo,
                    format!("cannot write {}: {e}", backup_path.display()),
                ));
            }
            undo.push(Undo::RemoveFile(backup_path.clone()));
        }
    }

    // 3. The state, before the file changes, so a crash leaves a record.
    let mut written: Vec<(u64, u64)> = state
        .as_ref()
        .and_then(|(st, _)| st.written.last().copied())
        .into_iter()
        .collect();
    let mut wrote_options: Vec<Vec<String>> = state
        .as_ref()
        .and_then(|(st, _)| st.wrote_options.last().cloned())
        .into_iter()
        .collect();
    if loader == Loader::Kernelstub {
        if let Ok((o, _)) = kernelstub_options(&new) {
            wrote_options.push(o);
        }
    } else {
        written.push((new.len() as u64, fnv1a(&new)));
    }
    let st = State {
        loader,
        params: to_write.clone(),
        file: rel.to_string(),
        backup,
        created_dirs,
        written,
        wrote_options,
    };
    let state_path = root.join(STATE_FILE);
    if let Err(e) = write_atomic(&state_path, st.to_text().as_bytes(), 0o644) {
        return Err(fail(
            undo,
            format!("cannot write {}: {e}", state_path.display()),
        ));
    }
    undo.push(match &state {
        Some((_, raw)) => Undo::Restore(state_path.clone(), raw.clone(), 0o644),
        None => Undo::RemoveFile(state_path.clone()),
    });

    // 4. The file itself.
    let mode = if original.is_some() || path.exists() {
        mode_of(&path)
    } else {
        0o644
    };
    if let Err(e) = write_atomic(&path, &new, mode) {
        return Err(fail(undo, format!("cannot write {}: {e}", path.display())));
    }

    notes.push(format!("Set {} in {}.", to_write.join(" "), path.display()));
    if make_backup {
        notes.push(format!(
            "The previous {} is saved as {}.",
            path.display(),
            backup_path.display()
        ));
    }
    notes.extend(regeneration_notes(loader));
    Ok(Change {
        files_written,
        backups,
        regenerate,
        notes,
        dry_run,
    })
}

/// Undoes what `apply` recorded: restores edited files byte for byte from
/// their backups, removes the GRUB drop-in, and removes the backups, the
/// state and the directories apply created. No state is `Ok` with nothing to
/// do.
pub fn revert(root: &Path, dry_run: bool) -> Result<Change, String> {
    confine(root)?;
    let state_path = root.join(STATE_FILE);
    let Some((st, _)) = read_state(root)? else {
        return Ok(nothing_written(
            Vec::new(),
            vec![format!(
                "Nothing to revert: {} records no rocm-fix kernel-parameter change.",
                state_path.display()
            )],
            dry_run,
        ));
    };
    let status = check_current(root, &st)?;
    let path = root.join(&st.file);
    let backup = match &st.backup {
        Some(b) => {
            let p = root.join(b);
            let bytes = read_opt(&p)?.ok_or_else(|| {
                format!(
                    "the backup {} is missing; restore {} by hand and remove {}. Nothing was \
                     changed.",
                    p.display(),
                    path.display(),
                    state_path.display()
                )
            })?;
            Some((p, bytes))
        }
        None => None,
    };
    let regenerate = regeneration(root, st.loader);
    let mut notes = Vec::new();
    let files_written = vec![path.clone()];
    if dry_run {
        notes.push(match &backup {
            Some((p, _)) => format!(
                "Dry run: nothing was changed. revert would restore {} from {} and remove {}.",
                path.display(),
                p.display(),
                state_path.display()
            ),
            None => format!(
                "Dry run: nothing was changed. revert would remove {} and {}.",
                path.display(),
                state_path.display()
            ),
        });
        return Ok(Change {
            files_written,
            backups: Vec::new(),
            regenerate,
            notes,
            dry_run,
        });
    }
    match &backup {
        Some((p, bytes)) => {
            if status != Current::Original {
                write_atomic(&path, bytes, mode_of(p)).map_err(|e| {
                    format!(
                        "cannot restore {}: {e}. Nothing was changed; the original is still \
                         in {}.",
                        path.display(),
                        p.display()
                    )
                })?;
            }
            notes.push(format!(
                "Restored {} from {} (byte-identical).",
                path.display(),
                p.display()
            ));
        }
        None => {
            if status != Current::Missing {
                fs::remove_file(&path).map_err(|e| {
                    format!(
                        "cannot remove {}: {e}. Nothing was changed.",
                        path.display()
                    )
                })?;
            }
            notes.push(format!("Removed {}.", path.display()));
        }
    }
    // The file is back; the bookkeeping follows. Should this fail, a second
    // revert finds the original in place and finishes.
    fs::remove_file(&state_path).map_err(|e| {
        format!(
            "restored {}, but cannot remove {}: {e}; run revert again",
            path.display(),
            state_path.display()
        )
    })?;
    if let Some((p, _)) = &backup {
        if let Err(e) = fs::remove_file(p) {
            notes.push(format!(
                "Could not remove the backup {} ({e}); it equals {} now and can be deleted.",
                p.display(),
                path.display()
            ));
        }
    }
    // Innermost first; a directory someone else filled stays.
    for d in st.created_dirs.iter().rev() {
        let _ = fs::remove_dir(root.join(d));
    }
    notes.extend(regeneration_notes(st.loader));
    Ok(Change {
        files_written,
        backups: Vec::new(),
        regenerate,
        notes,
        dry_run,
    })
}

fn is_real_root(root: &Path) -> bool {
    fs::canonicalize(root).is_ok_and(|p| p == Path::new("/"))
}

/// Runs the command that makes the boot loader pick the change up (only on
/// `--yes`). With a root other than "/" it runs nothing and says so: running
/// it inside another system would need a chroot, which is out of scope.
pub fn run_regeneration(root: &Path, change: &Change) -> Result<(), String> {
    let Some((cmd, args)) = change.regenerate.split_first() else {
        return Ok(());
    };
    let shown = change.regenerate.join(" ");
    if !is_real_root(root) {
        return Err(format!(
            "not running `{shown}`: {} is not the running system (running it in a chroot is \
             out of scope); run it inside that system.",
            root.display()
        ));
    }
    if change.regenerate.iter().any(|a| a.contains("$(")) {
        return Err(format!(
            "not running `{shown}`: the kernel version is unknown; run it yourself."
        ));
    }
    let status = std::process::Command::new(cmd)
        .args(args)
        .status()
        .map_err(|e| format!("could not run `{shown}`: {e}; run it yourself."))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{shown}` failed ({status}); the configuration change is in place, so fix the \
             problem and run it again."
        ))
    }
}

// ---------------------------------------------------------------------------
// kernelstub's JSON, read with serde_json: each value keeps its byte span
// (through serde_json's RawValue, a slice of the input), so that a parameter
// is added without reformatting the rest of the file.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Json {
    start: usize,
    end: usize,
    kind: JsonKind,
}

#[derive(Debug, Clone)]
enum JsonKind {
    Obj(Vec<(String, Json)>),
    Arr(Vec<Json>),
    Str(String),
    Scalar,
}

/// Nesting deeper than this is refused rather than risking the stack.
const JSON_MAX_DEPTH: usize = 64;

impl Json {
    fn parse(text: &[u8]) -> Result<Json, String> {
        let doc = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
        // Checked whole first: serde_json refuses deep nesting here (its
        // recursion limit), which reading the raw slices does not check.
        serde_json::from_str::<serde_json::Value>(doc).map_err(json_error)?;
        let raw: &serde_json::value::RawValue = serde_json::from_str(doc).map_err(json_error)?;
        Json::node(doc, raw, 0)
    }

    /// The value `raw` (a slice of `doc`) and everything in it.
    fn node(doc: &str, raw: &serde_json::value::RawValue, depth: usize) -> Result<Json, String> {
        if depth > JSON_MAX_DEPTH {
            return Err("not valid JSON (nested too deeply)".into());
        }
        let text = raw.get().trim_matches([' ', '\t', '\r', '\n']);
        // The slice lies within `doc`: its offset is the distance of the pointers.
        let start = text.as_ptr() as usize - doc.as_ptr() as usize;
        let kind = match text.as_bytes().first() {
            Some(b'{') => {
                let members: Vec<(String, &serde_json::value::RawValue)> =
                    serde_json::from_str::<Members>(text).map_err(json_error)?.0;
                JsonKind::Obj(
                    members
                        .into_iter()
                        .map(|(k, v)| Ok((k, Json::node(doc, v, depth + 1)?)))
                        .collect::<Result<_, String>>()?,
                )
            }
            Some(b'[') => {
                let items: Vec<&serde_json::value::RawValue> =
                    serde_json::from_str(text).map_err(json_error)?;
                JsonKind::Arr(
                    items
                        .into_iter()
                        .map(|v| Json::node(doc, v, depth + 1))
                        .collect::<Result<_, String>>()?,
                )
            }
            Some(b'"') => JsonKind::Str(serde_json::from_str(text).map_err(json_error)?),
            _ => JsonKind::Scalar,
        };
        Ok(Json {
            start,
            end: start + text.len(),
            kind,
        })
    }

    /// The last member named `key` (Python's json keeps the last).
    fn get(&self, key: &str) -> Option<&Json> {
        match &self.kind {
            JsonKind::Obj(m) => m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn strings(&self) -> Option<Vec<String>> {
        match &self.kind {
            JsonKind::Arr(items) => items
                .iter()
                .map(|i| match &i.kind {
                    JsonKind::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

/// An object's members in order, duplicates kept (a map would drop them).
struct Members<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry()? {
                    out.push(kv);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

fn json_error(e: serde_json::Error) -> String {
    if e.to_string().contains("recursion limit") {
        "not valid JSON (nested too deeply)".into()
    } else {
        format!("not valid JSON ({e})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fixtures() -> PathBuf {
        // In the crate, the manifest dir; when this file is compiled from
        // elsewhere by path, next to this source file.
        let by_manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kparams");
        if by_manifest.is_dir() {
            return by_manifest;
        }
        Path::new(file!())
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("tests/fixtures/kparams")
    }

    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_tree(&e.path(), &dest);
            } else {
                fs::copy(e.path(), &dest).unwrap();
            }
        }
    }

    /// A private copy of a fixture root, removed on drop.
    struct Root(PathBuf);

    impl Root {
        fn new(fixture: &str) -> Root {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "rocm-fix-kparams-{}-{}-{fixture}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            if fixture == "empty" {
                fs::create_dir_all(&dir).unwrap();
            } else {
                copy_tree(&fixtures().join(fixture), &dir);
            }
            Root(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        fn read(&self, rel: &str) -> Vec<u8> {
            fs::read(self.0.join(rel)).unwrap()
        }

        fn write(&self, rel: &str, data: &[u8]) {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }

        /// Every directory and file with its bytes and mode.
        fn snapshot(&self) -> BTreeMap<PathBuf, Option<(Vec<u8>, u32)>> {
            fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<(Vec<u8>, u32)>>) {
                for e in fs::read_dir(dir).unwrap() {
                    let p = e.unwrap().path();
                    let rel = p.strip_prefix(base).unwrap().to_path_buf();
                    if p.is_dir() {
                        out.insert(rel, None);
                        walk(base, &p, out);
                    } else {
                        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
                        out.insert(rel, Some((fs::read(&p).unwrap(), mode)));
                    }
                }
            }
            let mut out = BTreeMap::new();
            walk(&self.0, &self.0, &mut out);
            out
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn chips(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Strix Halo, as detection reports it: gfx name and family label.
    fn strix_halo() -> Vec<String> {
        let family = pciids::family_label(rocm_fix_shared::topology::family(110501));
        assert_eq!(family, "RDNA3");
        chips(&["gfx1151", family])
    }

    fn applied(plan: &Plan) -> Vec<String> {
        plan.to_apply().iter().map(|p| p.param()).collect()
    }

    #[test]
    fn detects_each_boot_loader() {
        for (fixture, want) in [
            ("grub", Loader::Grub),
            ("systemd-boot", Loader::SystemdBoot),
            ("kernelstub", Loader::Kernelstub),
            ("unknown", Loader::Unknown),
            ("empty", Loader::Unknown),
        ] {
            let r = Root::new(fixture);
            assert_eq!(detect_loader(r.path()), want, "{fixture}");
        }
        assert_eq!(
            detect_loader(Path::new("/nonexistent/rocm-fix")),
            Loader::Unknown
        );
        // An ESP with systemd-boot but no /etc/kernel/cmdline.
        let r = Root::new("empty");
        r.write("efi/loader/loader.conf", b"timeout 3\n");
        assert_eq!(detect_loader(r.path()), Loader::SystemdBoot);
        // Pop!_OS upgraded from GRUB: kernelstub writes the entries.
        let r = Root::new("kernelstub");
        r.write(
            "etc/default/grub",
            b"GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n",
        );
        assert_eq!(detect_loader(r.path()), Loader::Kernelstub);
    }

    #[test]
    fn strix_halo_gets_cwsr_off_from_the_confirmed_issue() {
        let r = Root::new("grub");
        let plan = plan(r.path(), &strix_halo());
        assert_eq!(plan.loader, Loader::Grub);
        assert_eq!(applied(&plan), ["amdgpu.cwsr_enable=0"]);
        let p = plan.to_apply()[0];
        assert_eq!(p.evidence, Evidence::Confirmed);
        assert_eq!(p.issue, "strix-halo-cwsr");
        assert!(p
            .sources
            .contains(&"https://github.com/ROCm/ROCm/issues/5991".to_string()));
        // The RDNA3 desktop report (none-found) is listed, not applied.
        assert!(plan
            .params
            .iter()
            .any(|q| q.issue == "kernel-618-sdma-rdna3"
                && !q.apply
                && q.evidence == Evidence::NoneFound
                && q.reason.contains("none-found")
                && q.reason.contains("still applied for issue strix-halo-cwsr")));
        let text = plan.to_text();
        assert!(text.contains("Worth applying (1):"), "{text}");
        assert!(text.contains("amdgpu.cwsr_enable=0  [confirmed]  issue strix-halo-cwsr"));
        assert!(text.contains("Running kernel command line: BOOT_IMAGE="));
        let json = plan.to_json();
        assert!(
            json.contains("\"to_apply\": [\"amdgpu.cwsr_enable=0\"]"),
            "{json}"
        );
        assert!(json.contains("\"loader\": \"grub\""));
        assert!(Json::parse(json.as_bytes()).is_ok(), "{json}");
    }

    #[test]
    fn rdna1_applies_nothing_and_says_why() {
        let r = Root::new("grub");
        let plan = plan(r.path(), &chips(&["gfx1010", "RDNA1"]));
        assert!(plan.to_apply().is_empty());
        let why = |name: &str| -> Vec<String> {
            plan.params
                .iter()
                .filter(|p| p.name == name)
                .map(|p| {
                    assert!(!p.apply, "{name}");
                    p.reason.clone()
                })
                .collect()
        };
        let cwsr = why("amdgpu.cwsr_enable");
        assert!(cwsr
            .iter()
            .any(|r| r.contains("strix-halo-cwsr concerns gfx1151")));
        assert!(cwsr.iter().any(|r| r.contains("evidence none-found")));
        assert!(why("amdgpu.mtype_local")[0].contains("MI300"));
        assert!(why("amdgpu.noretry")[0].contains("default"));
        assert!(why("amdgpu.no_queue_eviction_on_vm_fault")[0].contains("taints the kernel"));
        let text = plan.to_text();
        assert!(text.contains("Nothing is worth applying"), "{text}");
        assert!(text.contains("Considered and not applied (5):"), "{text}");
        assert!(plan.to_json().contains("\"to_apply\": []"));
    }

    #[test]
    fn a_gfx1151_fix_does_not_reach_other_rdna3_chips() {
        let r = Root::new("grub");
        for list in [
            &["gfx1100", "RDNA3"][..],
            &["RDNA3"],
            &["rdna2", "gfx1032"],
            &[],
        ] {
            let plan = plan(r.path(), &chips(list));
            assert!(plan.to_apply().is_empty(), "{list:?}");
        }
    }

    #[test]
    fn grub_apply_writes_a_drop_in_and_revert_removes_every_trace() {
        let r = Root::new("grub");
        let before = r.snapshot();
        let plan = plan(r.path(), &strix_halo());
        let c = apply(r.path(), &plan, false).unwrap();
        assert_eq!(c.regenerate, ["update-grub"]);
        assert_eq!(c.files_written[0], r.path().join(GRUB_DROPIN));
        assert!(c.backups.is_empty());
        let dropin = String::from_utf8(r.read(GRUB_DROPIN)).unwrap();
        assert!(dropin.starts_with("# Written by rocm-fix"), "{dropin}");
        assert!(dropin.ends_with(
            "\nGRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT amdgpu.cwsr_enable=0\"\n"
        ));
        assert!(
            dropin.contains("# amdgpu.cwsr_enable=0: evidence confirmed, issue strix-halo-cwsr")
        );
        assert_eq!(
            r.read(GRUB_DEFAULT),
            before[Path::new(GRUB_DEFAULT)].as_ref().unwrap().0
        );
        assert!(c.to_text().contains("run `update-grub`"));

        // Idempotent.
        let after_first = r.snapshot();
        let c2 = apply(r.path(), &plan, false).unwrap();
        assert!(c2.files_written.is_empty());
        assert!(c2.notes[0].starts_with("Already applied"), "{:?}", c2.notes);
        assert_eq!(r.snapshot(), after_first);

        let rv = revert(r.path(), false).unwrap();
        assert_eq!(rv.regenerate, ["update-grub"]);
        assert_eq!(r.snapshot(), before, "revert must leave the tree as it was");
        let again = revert(r.path(), false).unwrap();
        assert!(again.notes[0].starts_with("Nothing to revert"));
    }

    #[test]
    fn grub_drop_in_directory_that_existed_stays() {
        let r = Root::new("grub");
        r.write(
            "etc/default/grub.d/50-cloudimg-settings.cfg",
            b"GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1\"\n",
        );
        let before = r.snapshot();
        apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap();
        revert(r.path(), false).unwrap();
        assert_eq!(r.snapshot(), before);
    }

    #[test]
    fn systemd_boot_keeps_crlf_and_trailing_spaces() {
        let r = Root::new("systemd-boot");
        let before = r.snapshot();
        let orig = r.read(KERNEL_CMDLINE);
        assert!(orig.ends_with(b"splash  \r\n"), "fixture lost its CRLF");
        let plan = plan(r.path(), &strix_halo());
        let c = apply(r.path(), &plan, false).unwrap();
        assert_eq!(
            r.read(KERNEL_CMDLINE),
            b"root=UUID=5d1e7c0a-93b2-4f6e-8a1d-2c4b6e8f0a13 rw quiet splash amdgpu.cwsr_enable=0  \r\n"
        );
        assert_eq!(r.read("etc/kernel/cmdline.rocm-fix.bak"), orig);
        assert_eq!(
            c.backups,
            [r.path().join("etc/kernel/cmdline.rocm-fix.bak")]
        );
        assert_eq!(
            c.regenerate,
            [
                "kernel-install",
                "add",
                "6.12.8-test",
                "/usr/lib/modules/6.12.8-test/vmlinuz"
            ]
        );
        let after_first = r.snapshot();
        let c2 = apply(r.path(), &plan, false).unwrap();
        assert!(c2.files_written.is_empty());
        assert_eq!(r.snapshot(), after_first);
        revert(r.path(), false).unwrap();
        assert_eq!(r.read(KERNEL_CMDLINE), orig);
        assert_eq!(r.snapshot(), before);
    }

    #[test]
    fn kernelstub_appends_in_the_files_own_layout() {
        let r = Root::new("kernelstub");
        let before = r.snapshot();
        let orig = String::from_utf8(r.read(KERNELSTUB_CONFIG)).unwrap();
        let plan = plan(r.path(), &strix_halo());
        let c = apply(r.path(), &plan, false).unwrap();
        assert_eq!(c.regenerate, ["kernelstub"]);
        let new = String::from_utf8(r.read(KERNELSTUB_CONFIG)).unwrap();
        let want = orig.replace(
            "      \"splash\"\n    ],\n    \"esp_path\": \"/boot/efi\",\n    \"setup_loader\": false,\n    \"manage_mode\": false,\n    \"force_update\": false,\n    \"live_mode\": false,\n    \"config_rev\": 3\n  }\n}",
            "      \"splash\",\n      \"amdgpu.cwsr_enable=0\"\n    ],\n    \"esp_path\": \"/boot/efi\",\n    \"setup_loader\": false,\n    \"manage_mode\": false,\n    \"force_update\": false,\n    \"live_mode\": false,\n    \"config_rev\": 3\n  }\n}",
        );
        assert_ne!(want, orig);
        assert_eq!(new, want);
        let (opts, _) = kernelstub_options(new.as_bytes()).unwrap();
        assert_eq!(
            opts,
            [
                "quiet",
                "loglevel=0",
                "systemd.show_status=false",
                "splash",
                "amdgpu.cwsr_enable=0"
            ]
        );
        let after_first = r.snapshot();
        apply(r.path(), &plan, false).unwrap();
        assert_eq!(r.snapshot(), after_first);
        revert(r.path(), false).unwrap();
        assert_eq!(r.snapshot(), before);
    }

    #[test]
    fn kernelstub_rewriting_its_file_does_not_block_revert() {
        let r = Root::new("kernelstub");
        let orig = r.read(KERNELSTUB_CONFIG);
        let plan = plan(r.path(), &strix_halo());
        apply(r.path(), &plan, false).unwrap();
        // `kernelstub` re-saves the file in its own layout, same options.
        r.write(
            KERNELSTUB_CONFIG,
            br#"{"default": {"kernel_options": ["quiet", "splash"], "config_rev": 4}, "user": {"kernel_options": ["quiet", "loglevel=0", "systemd.show_status=false", "splash", "amdgpu.cwsr_enable=0"], "config_rev": 4}}"#,
        );
        let again = apply(r.path(), &plan, false).unwrap();
        assert!(again.files_written.is_empty(), "{:?}", again.notes);
        revert(r.path(), false).unwrap();
        assert_eq!(r.read(KERNELSTUB_CONFIG), orig);
    }

    #[test]
    fn edits_made_after_apply_are_never_overwritten() {
        let r = Root::new("kernelstub");
        let plan = plan(r.path(), &strix_halo());
        apply(r.path(), &plan, false).unwrap();
        let edited = String::from_utf8(r.read(KERNELSTUB_CONFIG))
            .unwrap()
            .replace(
                "\"amdgpu.cwsr_enable=0\"",
                "\"amdgpu.cwsr_enable=0\",\n      \"nomodeset\"",
            );
        r.write(KERNELSTUB_CONFIG, edited.as_bytes());
        let snap = r.snapshot();
        let e = revert(r.path(), false).unwrap_err();
        assert!(e.contains("changed since rocm-fix wrote it"), "{e}");
        assert!(e.contains("configuration.rocm-fix.bak"), "{e}");
        assert!(apply(r.path(), &plan, false).is_err());
        assert_eq!(r.snapshot(), snap);

        let r = Root::new("grub");
        apply(r.path(), &super::plan(r.path(), &strix_halo()), false).unwrap();
        r.write(
            GRUB_DROPIN,
            b"GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT mine\"\n",
        );
        let snap = r.snapshot();
        assert!(revert(r.path(), false)
            .unwrap_err()
            .contains("Remove it by hand"));
        assert_eq!(r.snapshot(), snap);
    }

    #[test]
    fn dry_runs_write_nothing() {
        for fixture in ["grub", "systemd-boot", "kernelstub"] {
            let r = Root::new(fixture);
            let before = r.snapshot();
            let plan = plan(r.path(), &strix_halo());
            let c = apply(r.path(), &plan, true).unwrap();
            assert!(c.dry_run);
            assert_eq!(c.files_written.len(), 2, "{fixture}: {:?}", c.files_written);
            assert!(c.notes[0].starts_with("Dry run"), "{fixture}");
            assert!(c.to_text().contains("would change"));
            assert_eq!(r.snapshot(), before, "{fixture}");

            apply(r.path(), &plan, false).unwrap();
            let applied = r.snapshot();
            let c = revert(r.path(), true).unwrap();
            assert!(c.notes[0].starts_with("Dry run"));
            assert_eq!(r.snapshot(), applied, "{fixture}");
        }
    }

    #[test]
    fn nothing_to_apply_writes_nothing() {
        for fixture in ["grub", "systemd-boot", "kernelstub", "unknown"] {
            let r = Root::new(fixture);
            let before = r.snapshot();
            let plan = plan(r.path(), &chips(&["gfx1010", "RDNA1"]));
            let c = apply(r.path(), &plan, false).unwrap();
            assert!(c.files_written.is_empty() && c.regenerate.is_empty());
            assert!(c.notes[0].starts_with("Nothing to apply"), "{:?}", c.notes);
            assert_eq!(r.snapshot(), before);
        }
    }

    #[test]
    fn unknown_loader_is_refused_with_the_parameters_to_add_by_hand() {
        let r = Root::new("unknown");
        let before = r.snapshot();
        let plan = plan(r.path(), &strix_halo());
        assert!(plan
            .to_text()
            .contains("add amdgpu.cwsr_enable=0 to the kernel command line by hand"));
        let e = apply(r.path(), &plan, false).unwrap_err();
        assert!(e.starts_with("No supported boot loader"), "{e}");
        assert!(e.contains("amdgpu.cwsr_enable=0"));
        assert_eq!(r.snapshot(), before);
    }

    #[test]
    fn failures_leave_nothing_half_written() {
        // The drop-in directory cannot be created.
        let r = Root::new("grub");
        r.write(GRUB_DIR, b"not a directory\n");
        let before = r.snapshot();
        let e = apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap_err();
        assert!(e.contains("Nothing was changed"), "{e}");
        assert_eq!(r.snapshot(), before);

        // The state cannot be written after the backup was: the backup goes.
        let r = Root::new("systemd-boot");
        r.write("var/lib/rocm-fix", b"in the way\n");
        let before = r.snapshot();
        let e = apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap_err();
        assert!(e.contains("Nothing was changed"), "{e}");
        assert_eq!(r.snapshot(), before);

        // The target's directory refuses the temporary file.
        let r = Root::new("systemd-boot");
        let p = plan(r.path(), &strix_halo());
        let tmp = format!(".cmdline.rocm-fix-tmp-{}", std::process::id());
        fs::create_dir(r.path().join("etc/kernel").join(&tmp)).unwrap();
        let before = r.snapshot();
        let e = apply(r.path(), &p, false).unwrap_err();
        assert!(
            e.contains("cannot write") && e.contains("Nothing was changed"),
            "{e}"
        );
        assert_eq!(r.snapshot(), before);
    }

    #[test]
    fn a_grub_that_ignores_drop_ins_is_refused() {
        let r = Root::new("grub");
        r.write(
            "usr/sbin/grub-mkconfig",
            b"#! /bin/sh\nif test -f ${sysconfdir}/default/grub ; then\n  . ${sysconfdir}/default/grub\nfi\n",
        );
        let before = r.snapshot();
        let e = apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap_err();
        assert!(e.contains("would be ignored"), "{e}");
        assert_eq!(r.snapshot(), before);
        fs::remove_file(r.path().join("usr/sbin/grub-mkconfig")).unwrap();
        let e = apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap_err();
        assert!(e.contains("no grub-mkconfig"), "{e}");
    }

    #[test]
    fn values_the_user_chose_are_left_alone() {
        let r = Root::new("systemd-boot");
        r.write(KERNEL_CMDLINE, b"root=/dev/sda2 amdgpu.cwsr_enable=1\n");
        let before = r.snapshot();
        let e = apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap_err();
        assert!(e.contains("already sets amdgpu.cwsr_enable=1"), "{e}");
        assert_eq!(r.snapshot(), before);

        // Already there (the kernel reads '-' as '_'): nothing to do.
        r.write(KERNEL_CMDLINE, b"root=/dev/sda2 amdgpu.cwsr-enable=0\n");
        let before = r.snapshot();
        let c = apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap();
        assert!(c.files_written.is_empty());
        assert!(c.notes[0].contains("already set"), "{:?}", c.notes);
        assert_eq!(r.snapshot(), before);

        let r = Root::new("grub");
        r.write(
            GRUB_DEFAULT,
            b"GRUB_CMDLINE_LINUX_DEFAULT=\"quiet amdgpu.cwsr_enable=1\"\n",
        );
        let e = apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap_err();
        assert!(e.contains("the GRUB configuration already sets"), "{e}");
    }

    #[test]
    fn systemd_boot_without_a_cmdline_file_is_refused() {
        let r = Root::new("systemd-boot");
        fs::remove_file(r.path().join(KERNEL_CMDLINE)).unwrap();
        let before = r.snapshot();
        let e = apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap_err();
        assert!(e.contains("/boot/loader/entries"), "{e}");
        assert_eq!(r.snapshot(), before);
    }

    #[test]
    fn rejected_evidence_is_never_written_even_from_a_hand_made_plan() {
        let r = Root::new("systemd-boot");
        let before = r.snapshot();
        let mut p = plan(r.path(), &chips(&["gfx1100"]));
        for q in p.params.iter_mut() {
            q.apply = true;
        }
        let e = apply(r.path(), &p, false).unwrap_err();
        assert!(e.contains("refusing"), "{e}");
        let mut p = plan(r.path(), &strix_halo());
        p.params[0] = Param {
            name: "amdgpu.x".into(),
            value: "1 init=/bin/sh".into(),
            evidence: Evidence::Confirmed,
            issue: "x".into(),
            sources: Vec::new(),
            apply: true,
            reason: String::new(),
        };
        assert!(apply(r.path(), &p, false)
            .unwrap_err()
            .contains("not a plain"));
        assert_eq!(r.snapshot(), before);
    }

    #[test]
    fn a_changed_plan_rewrites_from_the_original() {
        let r = Root::new("systemd-boot");
        let orig = r.read(KERNEL_CMDLINE);
        let mut p = plan(r.path(), &strix_halo());
        apply(r.path(), &p, false).unwrap();
        p.params.push(Param {
            name: "amdgpu.gpu_recovery".into(),
            value: "1".into(),
            evidence: Evidence::Anecdotal,
            issue: "x".into(),
            sources: Vec::new(),
            apply: true,
            reason: String::new(),
        });
        apply(r.path(), &p, false).unwrap();
        assert!(String::from_utf8_lossy(&r.read(KERNEL_CMDLINE))
            .contains("splash amdgpu.cwsr_enable=0 amdgpu.gpu_recovery=1  \r\n"));
        // The backup still holds the file from before the first apply.
        assert_eq!(r.read("etc/kernel/cmdline.rocm-fix.bak"), orig);
        revert(r.path(), false).unwrap();
        assert_eq!(r.read(KERNEL_CMDLINE), orig);
    }

    #[test]
    fn an_interrupted_revert_can_be_finished() {
        let r = Root::new("systemd-boot");
        let before = r.snapshot();
        apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap();
        // The file was restored, then the run stopped.
        let orig = r.read("etc/kernel/cmdline.rocm-fix.bak");
        r.write(KERNEL_CMDLINE, &orig);
        revert(r.path(), false).unwrap();
        assert_eq!(r.snapshot(), before);
    }

    #[test]
    fn stray_files_are_not_clobbered() {
        let r = Root::new("systemd-boot");
        r.write("etc/kernel/cmdline.rocm-fix.bak", b"something older\n");
        let before = r.snapshot();
        let e = apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap_err();
        assert!(e.contains("no state file records it"), "{e}");
        assert_eq!(r.snapshot(), before);

        let r = Root::new("grub");
        r.write(GRUB_DROPIN, b"# someone's\n");
        let e = apply(r.path(), &plan(r.path(), &strix_halo()), false).unwrap_err();
        assert!(e.contains("no record of writing it"), "{e}");
    }

    #[test]
    fn a_damaged_state_file_stops_revert_cleanly() {
        let r = Root::new("systemd-boot");
        for bad in [
            "garbage",
            "format 1\nloader systemd-boot\nparam amdgpu.cwsr_enable=0\nfile /etc/passwd\nbackup /etc/passwd.rocm-fix.bak\nwritten 1 0\n",
            "format 1\nloader grub\nparam amdgpu.cwsr_enable=0\nfile /etc/default/grub.d/90-rocm-fix.cfg\ncreated-dir /etc\nwritten 1 0\n",
            "format 1\nloader kernelstub\nparam amdgpu.cwsr_enable=0\nfile /etc/kernelstub/configuration\nbackup /etc/kernelstub/configuration.rocm-fix.bak\nwrote-options [[[\n",
        ] {
            r.write(STATE_FILE, bad.as_bytes());
            let before = r.snapshot();
            let e = revert(r.path(), false).unwrap_err();
            assert!(e.contains("not a state file rocm-fix understands"), "{e}");
            assert_eq!(r.snapshot(), before);
        }
    }

    #[test]
    fn regeneration_runs_only_on_the_real_root() {
        let r = Root::new("grub");
        let c = Change {
            regenerate: vec!["update-grub".into()],
            ..Change::default()
        };
        let e = run_regeneration(r.path(), &c).unwrap_err();
        assert!(e.starts_with("not running `update-grub`"), "{e}");
        assert!(e.contains("chroot"));
        assert!(run_regeneration(r.path(), &Change::default()).is_ok());
        let c = Change {
            regenerate: vec!["kernel-install".into(), "add".into(), "$(uname -r)".into()],
            ..Change::default()
        };
        assert!(run_regeneration(Path::new("/"), &c)
            .unwrap_err()
            .contains("kernel version is unknown"));
    }

    #[test]
    fn json_reader_survives_garbage() {
        let deep = "[".repeat(10_000);
        for bad in [
            "",
            "{",
            "[1,",
            "{\"a\" 1}",
            "\"\\u12\"",
            "\"\\ud800\\u0041\"",
            "nope",
            "{\"user\": {\"kernel_options\": \"quiet splash\"}}",
            "\u{0}",
            deep.as_str(),
        ] {
            let _ = Json::parse(bad.as_bytes());
            let _ = kernelstub_options(bad.as_bytes());
        }
        assert!(Json::parse(deep.as_bytes())
            .unwrap_err()
            .contains("nested too deeply"));
        assert!(Json::parse(&[0xff, 0xfe]).is_err());
        let v =
            Json::parse(br#"{"a": ["x\"y", "\u00e9\ud83d\ude00", 1.5e3, true, null]}"#).unwrap();
        let JsonKind::Arr(items) = &v.get("a").unwrap().kind else {
            panic!("not an array");
        };
        assert!(matches!(&items[0].kind, JsonKind::Str(s) if s == "x\"y"));
        assert!(matches!(&items[1].kind, JsonKind::Str(s) if s == "é😀"));
        // An empty list gets the parameter inside its brackets.
        let w = Wanted {
            param: "amdgpu.cwsr_enable=0".into(),
            name: "amdgpu.cwsr_enable".into(),
            value: "0".into(),
            comment: String::new(),
        };
        let out = kernelstub_with(br#"{"user": {"kernel_options": []}}"#, &[&w]).unwrap();
        assert_eq!(
            out,
            br#"{"user": {"kernel_options": ["amdgpu.cwsr_enable=0"]}}"#
        );
        let out = kernelstub_with(br#"{"user": {"kernel_options": ["quiet"]}}"#, &[&w]).unwrap();
        assert_eq!(
            out,
            br#"{"user": {"kernel_options": ["quiet", "amdgpu.cwsr_enable=0"]}}"#
        );
    }

    #[test]
    fn parameters_are_checked_for_safe_characters() {
        assert_eq!(
            parse_param("amdgpu.cwsr_enable=0"),
            Some(("amdgpu.cwsr_enable".into(), "0".into()))
        );
        for bad in [
            "iommu=pt",
            "amdgpu.=1",
            "amdgpu.x=",
            "amdgpu.x=\"1\"",
            "amdgpu.x=$(reboot)",
            "amdgpu.x=1 y=2",
            "amdgpu.X=1",
        ] {
            assert_eq!(parse_param(bad), None, "{bad}");
        }
    }
}
