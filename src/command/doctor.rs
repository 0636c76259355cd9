//! `rocm-fix doctor`: what a user pastes into a bug report, and what to do.
//!
//! Every input comes through [`Options`] (a sysfs root, the environment, an
//! etc folder, a proc root, the ROCm and library folders), so a captured tree
//! gives the report of the machine it came from. The real chip of each GPU
//! is read from the KFD topology (amdkfd kfd_topology.c): `HSA_OVERRIDE_GFX_VERSION` only
//! changes the name the runtime reports, and the verdict on an override comes
//! from the knowledge base. Nothing here writes or fails: what cannot be read
//! is reported as such.

use crate::hipbin;
use crate::json;
use crate::kb::MitigationJson;
use rocm_fix_shared::config;
use rocm_fix_shared::config::Mode;
use rocm_fix_shared::kb::{self, Evidence, Severity};
use rocm_fix_shared::pciids;
use rocm_fix_shared::process;
use rocm_fix_shared::topology::{self, Family};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Sysfs and proc files are a few bytes; the cap bounds a hostile capture.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// A real amdgpu has about 100 parameters; the cap bounds a hostile capture.
const MAX_DIR_ENTRIES: usize = 1024;
/// Longest value kept from a file or variable (LD_PRELOAD can be long).
const MAX_VALUE_CHARS: usize = 1000;
/// The global override; `HSA_OVERRIDE_GFX_VERSION_<node>` wins over it (6.3+).
const OVERRIDE_VAR: &str = "HSA_OVERRIDE_GFX_VERSION";
const ISSUE_CROSS: &str = "override-cross-family";
const ISSUE_LEFTOVER: &str = "override-leftover-supported";
const ISSUE_RDNA1: &str = "override-rdna1-as-rdna2";
const ISSUE_RDNA2: &str = "override-rdna2-to-gfx1030";
const ISSUE_GFX1103: &str = "override-gfx1103-as-gfx1100";
/// AMD on cross-generation overrides: "not generally compatible" (field reports).
const SOURCE_1880: &str = "https://github.com/ROCm/ROCm/issues/1880";
const SOURCE_2286: &str = "https://github.com/ROCm/ROCm/issues/2286";
const SOURCE_8139: &str = "https://github.com/AUTOMATIC1111/stable-diffusion-webui/issues/8139";

/// Where `diagnose` reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// A captured sysfs root (with `class/kfd/kfd/topology` inside), or the
    /// topology folder itself (with `nodes/`). `None`: the real `/sys`, with
    /// the topology from `SIMGPU_KFD_TOPOLOGY` in `env` when that is set.
    pub sysfs: Option<PathBuf>,
    /// The environment to judge (the first of duplicate names counts, as
    /// with getenv).
    pub env: Vec<(String, String)>,
    /// `/etc` normally. Files that ld.so.preload and LD_PRELOAD name are
    /// looked up under its parent folder, so a captured tree is checked
    /// against itself.
    pub etc: PathBuf,
    /// `/proc` normally.
    pub proc_root: PathBuf,
    /// `/opt/rocm` normally (its `.info/version` names the release).
    pub rocm_root: PathBuf,
    /// `/usr/lib/x86_64-linux-gnu` normally: Debian's `libamdhip64.so.*`.
    pub lib_dir: PathBuf,
    /// `--python PATH`: the Python environment to look into.
    pub python: Option<PathBuf>,
    /// `--binary FILE`: HIP binaries whose GPU code to check.
    pub binaries: Vec<PathBuf>,
}

impl Options {
    /// The running system: `/sys`, this process's environment, `/etc`,
    /// `/proc`, `/opt/rocm`, `/usr/lib/x86_64-linux-gnu`.
    pub fn from_system() -> Options {
        Options {
            sysfs: None,
            // vars() would panic on a variable that is not UTF-8.
            env: std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
            etc: PathBuf::from("/etc"),
            proc_root: PathBuf::from("/proc"),
            rocm_root: PathBuf::from("/opt/rocm"),
            lib_dir: PathBuf::from("/usr/lib/x86_64-linux-gnu"),
            python: None,
            binaries: Vec::new(),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Each variable once, first occurrence, sorted by name.
    fn vars(&self) -> Vec<(&str, &str)> {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (k, v) in &self.env {
            if !seen.iter().any(|(s, _)| s == k) {
                seen.push((k.as_str(), v.as_str()));
            }
        }
        seen.sort_by(|a, b| a.0.cmp(b.0));
        seen
    }

    /// The filesystem root the etc folder belongs to ("/" normally).
    fn root(&self) -> PathBuf {
        self.etc
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
    }

    /// An absolute path of the inspected system, under [`Options::root`].
    fn on_system(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }
}

/// What an override does on one chip, as far as public reports tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Causes faults or crashes (cross-generation, or left on a supported GPU).
    Harmful,
    /// Helped some users, crashed others.
    Mixed,
    /// Widely used and reported working, though not official.
    Helped,
    /// One report that it works.
    Anecdotal,
    /// Names the chip itself: changes nothing on this GPU.
    NoOp,
    /// No public report either way.
    Untested,
    /// Not `major.minor.stepping`.
    Invalid,
}

impl Verdict {
    /// The name used in reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Harmful => "harmful",
            Verdict::Mixed => "mixed",
            Verdict::Helped => "helped",
            Verdict::Anecdotal => "anecdotal",
            Verdict::NoOp => "no-op",
            Verdict::Untested => "untested",
            Verdict::Invalid => "invalid",
        }
    }

    /// How loudly the report flags it.
    pub fn severity(&self) -> Severity {
        match self {
            Verdict::Harmful => Severity::Error,
            Verdict::Mixed | Verdict::Untested | Verdict::Invalid => Severity::Warning,
            Verdict::Helped | Verdict::Anecdotal | Verdict::NoOp => Severity::Info,
        }
    }

    /// Whether a GPU relies on the override (so removing it would hurt).
    fn relied_on(&self) -> bool {
        matches!(self, Verdict::Helped | Verdict::Anecdotal)
    }
}

/// An `HSA_OVERRIDE_GFX_VERSION` in effect for one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// `HSA_OVERRIDE_GFX_VERSION` or `HSA_OVERRIDE_GFX_VERSION_<node>`.
    pub variable: String,
    pub value: String,
    pub verdict: Verdict,
    /// The knowledge base's evidence level for the verdict, if it has one.
    pub evidence: Option<Evidence>,
    /// Knowledge-base issues behind the verdict.
    pub issues: Vec<String>,
    pub why: String,
    pub sources: Vec<String>,
}

/// One GPU node of the KFD topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub node: u32,
    /// As sysfs has it (0 when the kernel does not know the chip).
    pub gfx_target_version: u32,
    /// The real chip: from gfx_target_version, else from the PCI id table.
    pub gfx: Option<String>,
    pub device_id: u32,
    pub codename: Option<String>,
    pub marketing_name: Option<String>,
    /// From the PCI id table, else from gfx_target_version.
    pub family: Family,
    /// The name HSA and HIP report (the override's, when one is in effect).
    pub reported_gfx: Option<String>,
    pub gfx_override: Option<Override>,
    /// Whether rocm-fix's rewrites apply to this GPU in the effective mode.
    pub rocm_fix_applies: bool,
    pub notes: Vec<String>,
}

/// Where the ROCm version was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocmVersion {
    pub version: String,
    pub source: String,
}

/// Firmware versions of one DRM card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardFirmware {
    /// "card0".
    pub card: String,
    /// PCI device id as sysfs prints it ("0x731f").
    pub device_id: Option<String>,
    /// (file name, value), e.g. ("mec_fw_version", "0x00000090").
    pub versions: Vec<(String, String)>,
}

/// A set environment variable that can cause or hide faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskyVar {
    pub name: String,
    pub value: String,
    pub severity: Severity,
    pub why: String,
    pub sources: Vec<String>,
}

/// One library named by ld.so.preload or LD_PRELOAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreloadEntry {
    pub path: String,
    /// It is rocm-fix's front, librocm_fix.so.
    pub rocm_fix: bool,
    /// `None` for a bare name, which only the loader's search path resolves.
    pub exists: Option<bool>,
    /// librocm_fix_engine.so next to it (rocm-fix entries that exist only).
    pub engine_exists: Option<bool>,
}

/// rocm-fix's own installation and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    /// The effective mode (rocm-fix.conf, then ROCM_FIX_MODE).
    pub mode: Mode,
    pub config_file: PathBuf,
    pub config_file_exists: bool,
    /// Values rocm-fix rejects, as it would print them.
    pub config_warnings: Vec<String>,
    pub ld_so_preload: PathBuf,
    pub ld_so_preload_exists: bool,
    pub ld_so_preload_entries: Vec<PreloadEntry>,
    pub ld_preload_entries: Vec<PreloadEntry>,
    /// Every ROCM_FIX_* variable.
    pub settings: Vec<(String, String)>,
}

/// A knowledge-base issue that concerns these GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownIssue {
    pub issue: kb::Issue,
    /// KFD nodes of the GPUs it concerns.
    pub nodes: Vec<u32>,
}

/// Something to act on (or know), most severe first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// A stable tag for scripts: "override", "no-gpu", "environment", …
    pub topic: String,
    pub text: String,
    pub sources: Vec<String>,
}

/// The result of [`diagnose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kfd_topology: PathBuf,
    /// The sysfs root that module parameters and firmware come from, if known.
    pub sysfs_root: Option<PathBuf>,
    pub gpus: Vec<GpuInfo>,
    /// `osrelease`.
    pub kernel: Option<String>,
    pub proc_root: PathBuf,
    /// `None` when the parameters folder is absent (amdgpu not loaded).
    pub amdgpu_parameters: Option<Vec<(String, String)>>,
    pub rocm_version: Option<RocmVersion>,
    pub rocm_root: PathBuf,
    pub lib_dir: PathBuf,
    pub firmware: Vec<CardFirmware>,
    pub risky_environment: Vec<RiskyVar>,
    pub rocm_fix: Installation,
    pub known_issues: Vec<KnownIssue>,
    pub findings: Vec<Finding>,
    /// Every ROCm installation seen (legacy, TheRock, Debian's packages).
    pub rocm_installs: Vec<hipbin::Install>,
    /// `--python`: where that Python's HIP runtime comes from.
    pub python_runtime: Option<hipbin::PythonRuntime>,
    /// HIP binaries checked for the real chips' code: (path, what it is,
    /// the bundles or why they could not be read).
    pub binaries: Vec<(PathBuf, String, Result<hipbin::Bundles, String>)>,
}

/// Gathers the report. Never fails and never panics: whatever cannot be
/// read is reported as missing.
pub fn diagnose(opts: &Options) -> Report {
    let (kfd_topology, sysfs_root) = locate(opts);
    let rocm_fix = installation(opts);
    let gpus: Vec<GpuInfo> = topology::read_topology(&kfd_topology)
        .iter()
        .map(|g| gpu_info(g, opts, rocm_fix.mode))
        .collect();
    let amdgpu_parameters = sysfs_root
        .as_ref()
        .and_then(|r| name_values(&r.join("module/amdgpu/parameters")));
    let firmware = sysfs_root
        .as_ref()
        .map(|r| firmware(&r.join("class/drm")))
        .unwrap_or_default();
    let mut report = Report {
        kfd_topology,
        sysfs_root,
        kernel: read_line(&opts.proc_root.join("sys/kernel/osrelease")),
        proc_root: opts.proc_root.clone(),
        amdgpu_parameters,
        rocm_version: rocm_version(opts),
        rocm_root: opts.rocm_root.clone(),
        lib_dir: opts.lib_dir.clone(),
        firmware,
        risky_environment: risky_environment(opts, &gpus),
        known_issues: known_issues(&gpus, opts),
        gpus,
        rocm_fix,
        findings: Vec::new(),
        rocm_installs: hipbin::installs(&opts.root(), &opts.rocm_root),
        python_runtime: opts.python.as_deref().map(hipbin::python_runtime),
        binaries: Vec::new(),
    };
    let mut bins: Vec<(PathBuf, String)> = opts
        .binaries
        .iter()
        .map(|b| (b.clone(), b.display().to_string()))
        .collect();
    if let Some(t) = report
        .python_runtime
        .as_ref()
        .and_then(|p| p.torch_hip.clone())
    {
        bins.insert(0, (t, "your torch".to_string()));
    }
    report.binaries = bins
        .into_iter()
        .map(|(p, label)| {
            let b = hipbin::read_bundles(&p).map_err(|e| e.to_string());
            (p, label, b)
        })
        .collect();
    report.known_issues = checked_issues(std::mem::take(&mut report.known_issues), &report);
    report.findings = findings(&report, opts);
    report
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// The topology folder, and the sysfs root around it when there is one.
fn locate(opts: &Options) -> (PathBuf, Option<PathBuf>) {
    const SUFFIX: &str = "class/kfd/kfd/topology";
    match &opts.sysfs {
        Some(dir) => {
            let inside = dir.join(SUFFIX);
            if inside.join("nodes").is_dir() || !dir.join("nodes").is_dir() {
                return (inside, Some(dir.clone()));
            }
            // The topology folder itself; a full capture still has its root
            // four levels up, a bare copy has none.
            let root = dir
                .ends_with(SUFFIX)
                .then(|| dir.ancestors().nth(4).map(Path::to_path_buf))
                .flatten();
            (dir.clone(), root)
        }
        None => {
            let topo = opts
                .var(process::TOPOLOGY_VAR)
                .filter(|v| !v.is_empty())
                .unwrap_or(topology::default_root());
            (PathBuf::from(topo), Some(PathBuf::from("/sys")))
        }
    }
}

/// A regular file's text, capped; `None` for anything else. FIFOs and
/// devices are refused so that a hostile capture cannot block the report.
fn read_text(path: &Path) -> Option<String> {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES).read_to_end(&mut buf))
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The first line of a file, trimmed and clipped; `None` when unreadable or empty.
fn read_line(path: &Path) -> Option<String> {
    let text = read_text(path)?;
    let line = text.lines().next().unwrap_or("").trim();
    (!line.is_empty()).then(|| clip(line))
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_VALUE_CHARS) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or(s)),
        None => s.to_string(),
    }
}

/// Entry names of a folder, sorted; `None` when it cannot be listed.
fn list_dir(dir: &Path) -> Option<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .take(MAX_DIR_ENTRIES)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Some(names)
}

/// `name=value` for each readable file of a folder (module parameters,
/// fw_version); files only root may read are left out.
fn name_values(dir: &Path) -> Option<Vec<(String, String)>> {
    let names = list_dir(dir)?;
    Some(
        names
            .into_iter()
            .filter_map(|n| {
                let v = read_text(&dir.join(&n))?;
                let v = v.lines().next().unwrap_or("").trim().to_string();
                Some((n, clip(&v)))
            })
            .collect(),
    )
}

/// Firmware of every `cardN` (connectors like card0-DP-1 have none).
fn firmware(drm: &Path) -> Vec<CardFirmware> {
    let mut cards: Vec<(u32, String)> = list_dir(drm)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| {
            let num = n.strip_prefix("card")?;
            let k = num
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| num.parse::<u32>().ok())
                .flatten()?;
            Some((k, n))
        })
        .collect();
    cards.sort();
    cards
        .into_iter()
        .filter_map(|(_, card)| {
            let device = drm.join(&card).join("device");
            let versions = name_values(&device.join("fw_version"))?;
            (!versions.is_empty()).then(|| CardFirmware {
                device_id: read_line(&device.join("device")),
                card,
                versions,
            })
        })
        .collect()
}

/// `rocm_root/.info/version`, else the version in the file names of
/// Debian's libamdhip64 (libamdhip64.so.5.2.21153 → 5.2).
fn rocm_version(opts: &Options) -> Option<RocmVersion> {
    let info = opts.rocm_root.join(".info/version");
    if let Some(v) = read_line(&info) {
        return Some(RocmVersion {
            version: v,
            source: info.display().to_string(),
        });
    }
    let best = list_dir(&opts.lib_dir)?
        .into_iter()
        .filter_map(|n| {
            let parts: Vec<u64> = n
                .strip_prefix("libamdhip64.so.")?
                .split('.')
                .map(|p| {
                    p.bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| p.parse().ok())
                        .flatten()
                })
                .collect::<Option<_>>()?;
            Some((parts, n))
        })
        // The most specific name (5.2.21153 over the SONAME link .so.5).
        .max_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.0.cmp(&b.0)))?;
    let version: Vec<String> = best.0.iter().take(2).map(u64::to_string).collect();
    Some(RocmVersion {
        version: version.join("."),
        source: opts.lib_dir.join(&best.1).display().to_string(),
    })
}

// ---------------------------------------------------------------------------
// GPUs and overrides
// ---------------------------------------------------------------------------

fn gpu_info(g: &topology::Gpu, opts: &Options, mode: Mode) -> GpuInfo {
    let chip = u16::try_from(g.device_id).ok().and_then(pciids::lookup);
    let mut notes = Vec::new();
    let real = match (g.gfx_target_version, chip) {
        (0, Some(c)) => {
            notes.push(format!(
                "gfx_target_version is 0: the chip is taken from PCI device 0x{:04x}",
                g.device_id
            ));
            Some(c.gfx_target_version)
        }
        (0, None) => {
            notes.push("gfx_target_version is 0 and the PCI device id is unknown".to_string());
            None
        }
        (v, _) => Some(v),
    };
    if let Some(c) = chip.filter(|c| c.gfx_target_version != g.gfx_target_version) {
        if g.gfx_target_version != 0 {
            notes.push(format!(
                "PCI device 0x{:04x} is {} in the PCI id table, sysfs says {}",
                g.device_id,
                c.gfx(),
                topology::gfx_name(g.gfx_target_version)
            ));
        }
    }
    let family = chip.map_or_else(
        || real.map_or(Family::Other, topology::family),
        |c| c.family(),
    );
    // libhsakmt reads the per-node variable first, then the global one.
    let per_node = format!("{OVERRIDE_VAR}_{}", g.node);
    let gfx_override = [per_node.as_str(), OVERRIDE_VAR]
        .into_iter()
        .find_map(|var| opts.var(var).map(|v| judge(real, var, v)));
    let reported_gfx = match &gfx_override {
        Some(o) => topology::parse_override(&o.value).map(topology::gfx_name),
        None => real.map(topology::gfx_name),
    };
    GpuInfo {
        node: g.node,
        gfx_target_version: g.gfx_target_version,
        gfx: real.map(topology::gfx_name),
        device_id: g.device_id,
        codename: chip.map(|c| c.codename.to_string()),
        marketing_name: chip.and_then(|c| c.marketing_name).map(String::from),
        family,
        reported_gfx,
        gfx_override,
        // The engine decides from sysfs alone (engine.rs), so the same here.
        rocm_fix_applies: config::active(mode, topology::family(g.gfx_target_version)),
        notes,
    }
}

/// "gfx1100 (RDNA3)".
fn chip_text(v: u32) -> String {
    format!(
        "{} ({})",
        topology::gfx_name(v),
        pciids::family_label(topology::family(v))
    )
}

/// The verdict on running `value` on the real chip `real` (field reports,
/// "Mitigations and their evidence"; the same split as triage).
fn judge(real: Option<u32>, variable: &str, value: &str) -> Override {
    let mk = |verdict: Verdict, evidence: Option<Evidence>, issues: &[&str], why: String| {
        let mut sources: Vec<String> = Vec::new();
        for id in issues {
            for s in kb::issue(id).map(|i| i.sources).unwrap_or_default() {
                if !sources.contains(&s) {
                    sources.push(s);
                }
            }
        }
        if issues.contains(&ISSUE_CROSS) {
            sources.push(SOURCE_1880.to_string());
        }
        Override {
            variable: variable.to_string(),
            value: clip(value),
            verdict,
            evidence,
            issues: issues.iter().map(|s| s.to_string()).collect(),
            why,
            sources,
        }
    };
    let Some(p) = topology::parse_override(value) else {
        return mk(
            Verdict::Invalid,
            None,
            &[],
            "not major.minor.stepping (like 10.3.0); recent libhsakmt rejects it \
             (\"HSA_OVERRIDE_GFX_VERSION … is invalid\") and may then find no GPU"
                .to_string(),
        );
    };
    let Some(r) = real else {
        return mk(
            Verdict::Untested,
            None,
            &[],
            format!(
                "the runtime reports {} but the real chip is unknown, so the override cannot be \
                 judged",
                topology::gfx_name(p)
            ),
        );
    };
    let (rg, pg) = (chip_text(r), chip_text(p));
    if p == r {
        return mk(
            Verdict::NoOp,
            None,
            &[],
            format!(
                "it names the chip itself ({rg}): it changes nothing here, but is wrong on any \
                 other card"
            ),
        );
    }
    let native = kb::issue(ISSUE_LEFTOVER)
        .map(|i| i.chips)
        .unwrap_or_default()
        .iter()
        .any(|c| pciids::parse_gfx_name(c) == Some(r));
    let (fr, fp) = (topology::family(r), topology::family(p));
    let leftover = format!(
        "; {} needs no override (ROCm supports it natively), and a forgotten override caused \
         \"Memory access fault … Reason: Unknown\" on a supported GPU (ROCm#5238, confirmed)",
        topology::gfx_name(r)
    );
    if fr == Family::Rdna1 && fp == Family::Rdna2 {
        return mk(
            Verdict::Mixed,
            Some(Evidence::Mixed),
            &[ISSUE_RDNA1],
            format!(
                "{pg} code on {rg} hardware crashes some cards (ROCm#887, A1111#9283) and works \
                 for others (llama.cpp PR #1087, ROCm#2527); 10.1.0 is the value reported working, \
                 and gfx1010 needs no override from ROCm 6.1 on (ROCm#887)"
            ),
        );
    }
    if r / 10000 != p / 10000 || fr != fp {
        let mut why = if r / 10000 != p / 10000 {
            format!(
                "the runtime loads {pg} code on {rg} hardware, another GPU generation; AMD calls \
                 such overrides not generally compatible (ROCm#1880) and libhsakmt now refuses \
                 them (rocm-systems PR #5686)"
            )
        } else {
            // Same major, other family (gfx1032 as 10.1.0): libhsakmt's
            // cross-major check lets it through, but the ISA still differs.
            format!(
                "the runtime loads {pg} code on {rg} hardware, a chip of another family; \
                 libhsakmt accepts it (its check is for other major versions only), but the code \
                 is built for another ISA"
            )
        };
        if native {
            why.push_str(&leftover);
            return mk(
                Verdict::Harmful,
                Some(Evidence::Confirmed),
                &[ISSUE_CROSS, ISSUE_LEFTOVER],
                why,
            );
        }
        return mk(
            Verdict::Harmful,
            Some(Evidence::Harmful),
            &[ISSUE_CROSS],
            why,
        );
    }
    if native {
        return mk(
            Verdict::Harmful,
            Some(Evidence::Confirmed),
            &[ISSUE_LEFTOVER],
            format!("the runtime loads {pg} code on {rg} hardware{leftover}"),
        );
    }
    if fr == Family::Rdna2 && p == 100300 {
        return mk(
            Verdict::Helped,
            Some(Evidence::Helped),
            &[ISSUE_RDNA2],
            format!(
                "common, not official: ROCm's libraries ship gfx1030 code only; users run {rg} \
                 as gfx1030 (ROCm#1797, #2720) and AMD says gfx1036 has the same ISA but calls \
                 this \"not an official workaround\" (Tensile#1907)"
            ),
        );
    }
    if r == 110003 && p == 110000 {
        return mk(
            Verdict::Mixed,
            Some(Evidence::Mixed),
            &[ISSUE_GFX1103],
            "ISA-compatible, but some fp16 kernels tuned for gfx1100 need more VGPRs than \
             gfx1103 has and hang (AMD, ROCm#4557)"
                .to_string(),
        );
    }
    if fr == Family::Rdna1 && p == 100100 {
        return mk(
            Verdict::Anecdotal,
            Some(Evidence::Anecdotal),
            &[ISSUE_RDNA1],
            format!(
                "runs gfx1010 code on {rg}: one report that 10.1.0 works where 10.3.0 crashes \
                 (ROCm#887)"
            ),
        );
    }
    mk(
        Verdict::Untested,
        None,
        &[],
        format!("no public report on running {pg} code on {rg} hardware"),
    )
}

// ---------------------------------------------------------------------------
// Environment and installation
// ---------------------------------------------------------------------------

/// When a set variable is risky.
#[derive(Clone, Copy)]
enum When {
    /// Any value.
    Set,
    /// Any value but this one (the default).
    Not(&'static str),
    /// Only this value.
    Is(&'static str),
}

/// Risky variables (a trailing `*` matches any suffix): when, how loud,
/// why (ROCR-Runtime runtime.cpp and flag.h, libhsakmt fmm.c, clr hip_memory.cpp, amdkfd
/// kfd_process.c, the amdgpu driver's gmc_v10_0.c and the field reports), and a source if
/// public.
const RISKS: [(&str, When, Severity, &str, &str); 11] = [
    (
        "HSA_XNACK",
        When::Not("0"),
        Severity::Warning,
        "AMD's known issue: HSA_XNACK can itself cause page faults; on RDNA it does nothing \
         useful (KFD never enables XNACK on GFX10 and later; RDNA2 has no XNACK)",
        SOURCE_2286,
    ),
    (
        "HSA_DISABLE_CACHE",
        When::Not("0"),
        Severity::Warning,
        "ROCr makes every allocation coherent and uncached (MTYPE_UC on GFX10): the memory \
         type rocm-fix moves allocations away from on RDNA1/RDNA2, applied inside the runtime \
         where rocm-fix cannot undo it; a debugging aid only",
        "",
    ),
    (
        "HIP_HOST_COHERENT",
        When::Not("0"),
        Severity::Warning,
        "makes hipHostMalloc memory coherent (fine-grained) unless the program asks for \
         NonCoherent; tried against these faults without effect (ROCm#2286)",
        SOURCE_2286,
    ),
    (
        "PYTORCH_HIP_ALLOC_CONF",
        When::Set,
        Severity::Info,
        "tried against these faults without effect (did not help an RX 5700 XT, A1111#8139); \
         it changes where PyTorch places tensors, so a fault may move or vanish for unrelated \
         reasons",
        SOURCE_8139,
    ),
    (
        "HSA_ENABLE_SDMA",
        When::Is("0"),
        Severity::Info,
        "copies with blit kernels instead of the SDMA engines; tried against these faults \
         without effect (ROCm#2286)",
        SOURCE_2286,
    ),
    (
        "HSA_USE_SVM",
        When::Is("0"),
        Severity::Info,
        "turns off ROCr's SVM (HMM) support, which changes where managed memory lives; tried \
         against these faults without effect (ROCm#2286)",
        SOURCE_2286,
    ),
    (
        "HSA_ENABLE_INTERRUPT",
        When::Is("0"),
        Severity::Warning,
        "ROCr arms its memory-fault handler only when interrupts are on: neither ROCr's fault \
         message nor rocm-fix's fault record appear",
        "",
    ),
    (
        "HSA_ENABLE_VM_FAULT_MESSAGE",
        When::Is("0"),
        Severity::Warning,
        "ROCr does not print \"Memory access fault by GPU node-…\": a fault shows only as an \
         abort",
        "",
    ),
    (
        "AMD_SERIALIZE_*",
        When::Set,
        Severity::Info,
        "a debugging setting: it serialises GPU work, which is slower and changes timing, so a \
         fault may appear elsewhere or not at all",
        "",
    ),
    (
        "MIOPEN_DEBUG_*",
        When::Set,
        Severity::Info,
        "restricts the MIOpen convolution solvers: slower convolutions; keep it only as a \
         deliberate workaround",
        "",
    ),
    (
        "MIOPEN_FIND_*",
        When::Set,
        Severity::Info,
        "changes how MIOpen picks convolution solvers; keep it only as a deliberate workaround",
        "",
    ),
];

/// Why a set variable is risky, or `None` when its value is harmless.
fn risk_of(name: &str, value: &str) -> Option<(Severity, String, Vec<String>)> {
    let v = value.trim();
    RISKS
        .iter()
        .find_map(|&(pattern, when, severity, why, source)| {
            let named = match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            };
            let risky = match when {
                When::Set => true,
                When::Not(ok) => v != ok,
                When::Is(bad) => v == bad,
            };
            let sources = (!source.is_empty()).then(|| source.to_string());
            (named && risky).then(|| (severity, why.to_string(), sources.into_iter().collect()))
        })
}

fn risky_environment(opts: &Options, gpus: &[GpuInfo]) -> Vec<RiskyVar> {
    let mut out = Vec::new();
    for (name, value) in opts.vars() {
        let risk = if name == OVERRIDE_VAR || override_node(name).is_some() {
            Some(override_risk(name, gpus))
        } else if name == "ROCM_FIX_MODE" {
            match Mode::parse(value.trim()) {
                Some(Mode::Off) => Some((
                    Severity::Warning,
                    "rocm-fix does nothing: every call is forwarded untouched".to_string(),
                    Vec::new(),
                )),
                Some(Mode::Observe) => Some((
                    Severity::Info,
                    "rocm-fix records faults but rewrites and pads nothing".to_string(),
                    Vec::new(),
                )),
                Some(_) => None,
                None if value.trim().is_empty() => None,
                None => Some((
                    Severity::Warning,
                    "not one of auto, on, observe, off: rocm-fix ignores it".to_string(),
                    Vec::new(),
                )),
            }
        } else if name == "LD_PRELOAD" && value.contains("librocm_fix") {
            Some((
                Severity::Info,
                "every program started from this environment loads rocm-fix (`rocm-fix run` \
                 sets it for one program only)"
                    .to_string(),
                Vec::new(),
            ))
        } else {
            risk_of(name, value)
        };
        let Some((severity, mut why, mut sources)) = risk else {
            continue;
        };
        // Name the known-issue mitigation that sets exactly this value.
        for issue in kb::issues().unwrap_or_default() {
            for m in &issue.mitigations {
                if m.env.iter().any(|(k, v)| k == name && v == value)
                    && !name.starts_with(OVERRIDE_VAR)
                {
                    let _ = write!(
                        why,
                        "; known-issue mitigation \"{}\" ({}): evidence {}",
                        m.text,
                        issue.id,
                        m.evidence.as_str()
                    );
                    for s in &m.sources {
                        if !sources.contains(s) {
                            sources.push(s.clone());
                        }
                    }
                }
            }
        }
        out.push(RiskyVar {
            name: name.to_string(),
            value: clip(value),
            severity,
            why,
            sources,
        });
    }
    out
}

/// The node of `HSA_OVERRIDE_GFX_VERSION_<node>`.
fn override_node(name: &str) -> Option<&str> {
    name.strip_prefix(OVERRIDE_VAR)?.strip_prefix('_')
}

/// An override variable's risk: the worst verdict among the GPUs it reaches.
fn override_risk(name: &str, gpus: &[GpuInfo]) -> (Severity, String, Vec<String>) {
    let hits: Vec<(&GpuInfo, &Override)> = gpus
        .iter()
        .filter_map(|g| g.gfx_override.as_ref().map(|o| (g, o)))
        .filter(|(_, o)| o.variable == name)
        .collect();
    if hits.is_empty() {
        let why = match override_node(name) {
            Some(n) if !n.bytes().all(|b| b.is_ascii_digit()) || n.is_empty() => {
                "not a variable libhsakmt reads (the suffix must be a KFD node number)".to_string()
            }
            Some(n) => format!("no GPU is KFD node {n}: it has no effect"),
            None if gpus.is_empty() => "no GPU found to judge it against".to_string(),
            None => "every GPU has its own per-node override: it has no effect".to_string(),
        };
        return (Severity::Info, why, Vec::new());
    }
    let severity = hits
        .iter()
        .map(|(_, o)| o.verdict.severity())
        .max()
        .unwrap_or(Severity::Info);
    let parts: Vec<String> = hits
        .iter()
        .map(|(g, o)| {
            format!(
                "node {} ({}): {}",
                g.node,
                g.gfx.as_deref().unwrap_or("unknown chip"),
                o.verdict.as_str()
            )
        })
        .collect();
    let mut sources: Vec<String> = Vec::new();
    for (_, o) in &hits {
        for s in &o.sources {
            if !sources.contains(s) {
                sources.push(s.clone());
            }
        }
    }
    (
        severity,
        format!(
            "changes the gfx name the runtime reports, never the chip: {}",
            parts.join("; ")
        ),
        sources,
    )
}

fn installation(opts: &Options) -> Installation {
    let config_file = opts.etc.join("rocm-fix.conf");
    let config_text = read_text(&config_file);
    let env = |k: &str| opts.var(k).map(String::from);
    // The same rules as the engine: the system file, the user's file, then
    // ROCM_FIX_* over them.
    let env_os = |k: &str| opts.var(k).map(std::ffi::OsString::from);
    let user_file = config::user_config_path(&env_os);
    let user_text = user_file.as_deref().and_then(read_text);
    let mut files: Vec<(String, &[u8])> = Vec::new();
    if let Some(t) = &config_text {
        files.push((config_file.display().to_string(), t.as_bytes()));
    }
    if let (Some(p), Some(t)) = (&user_file, &user_text) {
        files.push((p.display().to_string(), t.as_bytes()));
    }
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let env_os = |k: &str| env(k).map(std::ffi::OsString::from);
    let (cfg, config_warnings) = config::from_files(&files, &env_os, false);
    let ld_so_preload = opts.etc.join("ld.so.preload");
    let preload_text = read_text(&ld_so_preload);
    let entries = |text: &str| -> Vec<PreloadEntry> {
        // ld.so splits both lists at spaces, tabs, newlines and colons.
        text.split([' ', '\t', '\n', ':'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .take(MAX_DIR_ENTRIES)
            .map(|p| preload_entry(opts, p))
            .collect()
    };
    let settings = opts
        .vars()
        .into_iter()
        .filter(|(k, _)| k.starts_with("ROCM_FIX_"))
        .map(|(k, v)| (k.to_string(), clip(v)))
        .collect();
    Installation {
        mode: cfg.mode,
        config_file_exists: config_text.is_some(),
        config_file,
        config_warnings,
        ld_so_preload_exists: preload_text.is_some(),
        ld_so_preload_entries: preload_text.as_deref().map(entries).unwrap_or_default(),
        ld_so_preload,
        ld_preload_entries: opts.var("LD_PRELOAD").map(entries).unwrap_or_default(),
        settings,
    }
}

fn preload_entry(opts: &Options, path: &str) -> PreloadEntry {
    let base = path.rsplit('/').next().unwrap_or(path);
    let rocm_fix = base.starts_with("librocm_fix") && !base.starts_with("librocm_fix_engine");
    let (exists, engine_exists) = if path.starts_with('/') {
        let file = opts.on_system(path);
        let exists = file.is_file();
        // The front opens the engine from its own folder (src/preload).
        let engine = (rocm_fix && exists).then(|| {
            file.parent()
                .is_some_and(|d| d.join("librocm_fix_engine.so").is_file())
        });
        (Some(exists), engine)
    } else {
        (None, None)
    };
    PreloadEntry {
        path: clip(path),
        rocm_fix,
        exists,
        engine_exists,
    }
}

// ---------------------------------------------------------------------------
// Known issues and findings
// ---------------------------------------------------------------------------

fn known_issues(gpus: &[GpuInfo], opts: &Options) -> Vec<KnownIssue> {
    // Only gfx names are queried: a family query ("rdna2") would also match
    // entries for single chips of that family (gfx1030's leftover-override
    // entry for a gfx1032).
    let chips: Vec<String> = gpus.iter().filter_map(|g| g.gfx.clone()).collect();
    let named: Vec<&str> = gpus
        .iter()
        .filter_map(|g| g.gfx_override.as_ref())
        .flat_map(|o| o.issues.iter().map(String::as_str))
        .collect();
    let mut out: Vec<KnownIssue> = kb::matching(&chips, !named.is_empty())
        .into_iter()
        // An override issue matters only where the verdict named it.
        .filter(|i| !i.requires_override || named.contains(&i.id.as_str()))
        // An issue about a harmful setting (HSA_XNACK=1) matters only while
        // that variable is set.
        .filter(|i| {
            let harmful_setting = !i.mitigations.is_empty()
                && i.mitigations
                    .iter()
                    .all(|m| m.evidence == Evidence::Harmful && !m.env.is_empty());
            !harmful_setting
                || i.mitigations
                    .iter()
                    .flat_map(|m| &m.env)
                    .any(|(k, _)| opts.var(k).is_some())
        })
        .map(|issue| {
            let nodes = gpus
                .iter()
                .filter(|g| {
                    if issue.requires_override {
                        g.gfx_override
                            .as_ref()
                            .is_some_and(|o| o.issues.contains(&issue.id))
                    } else {
                        g.gfx
                            .as_deref()
                            .is_some_and(|gfx| issue.chips.iter().any(|e| kb::chip_matches(e, gfx)))
                    }
                })
                .map(|g| g.node)
                .collect();
            KnownIssue { issue, nodes }
        })
        .collect();
    out.sort_by_key(|k| std::cmp::Reverse(k.issue.severity));
    out
}

/// Known issues with a firmware or kernel check (`check-firmware`,
/// `check-kernel` in issues.kb): kept when the check holds or cannot be
/// read, dropped when it is known not to hold.
fn checked_issues(issues: Vec<KnownIssue>, r: &Report) -> Vec<KnownIssue> {
    issues
        .into_iter()
        .filter(|k| issue_check(&k.issue, r).0 != Some(false))
        .collect()
}

/// Whether an issue's firmware/kernel check holds here (None: it has no
/// check, or what it needs is not readable), and what was seen.
fn issue_check(i: &kb::Issue, r: &Report) -> (Option<bool>, Vec<String>) {
    let mut seen = Vec::new();
    let mut result: Option<bool> = None;
    if let Some(range) = &i.check_kernel {
        if let Some(hit) = r.kernel.as_deref().and_then(|k| range.contains(k)) {
            seen.push(format!(
                "kernel {} ({} {})",
                shown(r.kernel.as_deref().unwrap_or_default()),
                if hit { "in" } else { "outside" },
                range.text()
            ));
            result = Some(hit);
        }
    }
    if !i.check_firmware.is_empty() {
        let parse = |v: &str| {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => v.parse().ok(),
            }
        };
        let mut any_read = false;
        let mut hit = false;
        for card in &r.firmware {
            // The card's GPU must be one the issue names.
            let gpu = r.gpus.iter().find(|g| {
                card.device_id
                    .as_deref()
                    .and_then(|d| u32::from_str_radix(d.trim_start_matches("0x"), 16).ok())
                    == Some(g.device_id)
            });
            let gpu = gpu.or(if r.gpus.len() == 1 {
                r.gpus.first()
            } else {
                None
            });
            let Some(gfx) = gpu.and_then(|g| g.gfx.as_deref()) else {
                continue;
            };
            if !i.chips.iter().any(|c| kb::chip_matches(c, gfx)) {
                continue;
            }
            for (name, bad) in &i.check_firmware {
                if let Some((_, v)) = card.versions.iter().find(|(n, _)| n == name) {
                    any_read = true;
                    if parse(v) == Some(*bad) {
                        hit = true;
                        seen.push(format!("{}: {name} {} on {gfx}", card.card, shown(v)));
                    }
                }
            }
        }
        if any_read {
            result = Some(result.unwrap_or(true) && hit);
        }
    }
    (result, seen)
}

fn gpu_label(g: &GpuInfo) -> String {
    format!(
        "{} ({}, node {})",
        g.gfx.as_deref().unwrap_or("unknown chip"),
        pciids::family_label(g.family),
        g.node
    )
}

fn findings(r: &Report, opts: &Options) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    let mut add = |severity: Severity, topic: &str, text: String, sources: Vec<String>| {
        out.push(Finding {
            severity,
            topic: topic.to_string(),
            text,
            sources,
        });
    };
    if r.gpus.is_empty() {
        add(
            Severity::Warning,
            "no-gpu",
            format!(
                "no AMD GPU found in the KFD topology at {}: ROCm programs will find no GPU; \
                 check that the amdgpu driver is loaded (lsmod | grep amdgpu) and /dev/kfd exists",
                r.kfd_topology.display()
            ),
            Vec::new(),
        );
    }
    for g in &r.gpus {
        let Some(o) = &g.gfx_override else {
            continue;
        };
        let setting = format!("{}={}", o.variable, o.value);
        let chip = gpu_label(g);
        // Other GPUs that rely on the same global variable.
        let relying: Vec<&GpuInfo> = r
            .gpus
            .iter()
            .filter(|h| h.node != g.node)
            .filter(|h| {
                h.gfx_override
                    .as_ref()
                    .is_some_and(|x| x.variable == o.variable && x.verdict.relied_on())
            })
            .collect();
        let mut text = match o.verdict {
            Verdict::Harmful => format!("remove {setting}: harmful on {chip}: {}", o.why),
            Verdict::Mixed => format!("reconsider {setting} on {chip}: mixed results: {}", o.why),
            Verdict::Untested => format!("check {setting} on {chip}: {}", o.why),
            Verdict::Invalid => format!("fix or remove {setting}: {}", o.why),
            Verdict::Helped => format!("{setting} on {chip}: {}", o.why),
            Verdict::Anecdotal => format!("{setting} on {chip}: {}", o.why),
            Verdict::NoOp if relying.is_empty() => format!("remove {setting}: {}", o.why),
            Verdict::NoOp => continue,
        };
        if o.variable == OVERRIDE_VAR && o.verdict.severity() >= Severity::Warning {
            for h in &relying {
                let _ = write!(
                    text,
                    "; node {} ({}) relies on it: set {OVERRIDE_VAR}_{}={} for that GPU only \
                     (ROCm 6.3 and later) and unset {OVERRIDE_VAR}",
                    h.node,
                    h.gfx.as_deref().unwrap_or("unknown chip"),
                    h.node,
                    o.value
                );
            }
        }
        add(o.verdict.severity(), "override", text, o.sources.clone());
    }
    for v in &r.risky_environment {
        if let Some(n) = override_node(&v.name) {
            if !r.gpus.iter().any(|g| g.node.to_string() == n) {
                add(
                    Severity::Info,
                    "override",
                    format!("{}={}: {}", v.name, v.value, v.why),
                    Vec::new(),
                );
            }
            continue;
        }
        // Overrides, the mode and LD_PRELOAD have findings of their own.
        if v.severity >= Severity::Warning
            && !matches!(
                v.name.as_str(),
                OVERRIDE_VAR | "ROCM_FIX_MODE" | "LD_PRELOAD"
            )
        {
            add(
                v.severity,
                "environment",
                format!("unset {}={}: {}", v.name, v.value, v.why),
                v.sources.clone(),
            );
        }
    }
    let inst = &r.rocm_fix;
    for w in &inst.config_warnings {
        add(Severity::Warning, "rocm-fix", w.clone(), Vec::new());
    }
    let preloads = [
        (
            &inst.ld_so_preload_entries,
            inst.ld_so_preload.display().to_string(),
            Severity::Error,
        ),
        (
            &inst.ld_preload_entries,
            "LD_PRELOAD".to_string(),
            Severity::Warning,
        ),
    ];
    for (entries, from, severity) in &preloads {
        for e in entries.iter().filter(|e| e.rocm_fix) {
            if e.exists == Some(false) {
                add(
                    *severity,
                    "rocm-fix",
                    format!(
                        "{from} names {}, which does not exist: the loader prints \"cannot be \
                         preloaded\" and runs without rocm-fix; reinstall rocm-fix or remove the \
                         entry",
                        e.path
                    ),
                    Vec::new(),
                );
            } else if e.engine_exists == Some(false) {
                add(
                    *severity,
                    "rocm-fix",
                    format!(
                        "librocm_fix_engine.so is missing next to {} ({from}): rocm-fix then \
                         forwards every call and fixes nothing; reinstall rocm-fix",
                        e.path
                    ),
                    Vec::new(),
                );
            }
        }
    }
    let mut fronts: Vec<&str> = inst
        .ld_so_preload_entries
        .iter()
        .chain(&inst.ld_preload_entries)
        // A missing file is not loaded, so it is no second copy.
        .filter(|e| e.rocm_fix && e.exists != Some(false))
        .map(|e| e.path.as_str())
        .collect();
    fronts.sort_unstable();
    fronts.dedup();
    if fronts.len() > 1 {
        add(
            Severity::Warning,
            "rocm-fix",
            format!(
                "more than one librocm_fix.so is preloaded ({}): keep one",
                fronts.join(", ")
            ),
            Vec::new(),
        );
    }
    let rdna12: Vec<&GpuInfo> = r
        .gpus
        .iter()
        .filter(|g| {
            matches!(
                topology::family(g.gfx_target_version),
                Family::Rdna1 | Family::Rdna2
            )
        })
        .collect();
    let chips = |list: &[&GpuInfo]| -> String {
        list.iter()
            .map(|g| gpu_label(g))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match inst.mode {
        Mode::Off if !rdna12.is_empty() => add(
            Severity::Warning,
            "rocm-fix",
            format!(
                "rocm-fix is off (ROCM_FIX_MODE or {}), so it protects none of {}: set the mode \
                 to auto",
                inst.config_file.display(),
                chips(&rdna12)
            ),
            Vec::new(),
        ),
        Mode::Observe if !rdna12.is_empty() => add(
            Severity::Info,
            "rocm-fix",
            format!(
                "rocm-fix is in observe mode: it records faults on {} but rewrites nothing",
                chips(&rdna12)
            ),
            Vec::new(),
        ),
        _ => {}
    }
    if !r.gpus.is_empty() && !r.gpus.iter().any(|g| g.rocm_fix_applies) && inst.mode == Mode::Auto {
        add(
            Severity::Info,
            "rocm-fix",
            "rocm-fix changes nothing on these GPUs in auto mode (it rewrites on RDNA1/RDNA2); \
             ROCM_FIX_MODE=on extends it to every AMD GPU, for kernels that read past buffer ends"
                .to_string(),
            Vec::new(),
        );
    }
    if fronts.is_empty() && r.gpus.iter().any(|g| g.rocm_fix_applies) {
        add(
            Severity::Info,
            "rocm-fix",
            format!(
                "rocm-fix is not loaded here (neither {} nor LD_PRELOAD names an installed \
                 librocm_fix.so): start programs with `rocm-fix run COMMAND` or \
                 LD_PRELOAD=/path/to/librocm_fix.so",
                inst.ld_so_preload.display()
            ),
            Vec::new(),
        );
    }
    if r.rocm_version.is_none() {
        add(
            Severity::Info,
            "rocm",
            format!(
                "ROCm not found: no {} and no libamdhip64.so.* in {}",
                opts.rocm_root.join(".info/version").display(),
                opts.lib_dir.display()
            ),
            Vec::new(),
        );
    }
    for k in &r.known_issues {
        let (Some(true), seen) = issue_check(&k.issue, r) else {
            continue;
        };
        let best = k
            .issue
            .mitigations
            .iter()
            .find(|m| !matches!(m.evidence, Evidence::Harmful | Evidence::NoneFound));
        let layer = if k.issue.check_firmware.is_empty() {
            "kernel"
        } else {
            "firmware"
        };
        add(
            k.issue.severity.max(Severity::Warning),
            layer,
            format!(
                "{layer}: {} ({}{}): {}{}",
                seen.join("; "),
                k.issue.id,
                if k.issue.hypothesis {
                    ", a hypothesis: not confirmed upstream"
                } else {
                    ""
                },
                k.issue.title,
                best.map_or(String::new(), |m| format!(
                    "; {} (evidence: {})",
                    m.text,
                    m.evidence.as_str()
                ))
            ),
            k.issue.sources.clone(),
        );
    }
    if let Some(py) = &r.python_runtime {
        let text = match py.runtimes.as_slice() {
            [] => format!(
                "{}: no libamdhip64 of its own in {} ({}): it uses the system's ROCm",
                py.python.display(),
                if py.site_packages.is_empty() {
                    "any site-packages".to_string()
                } else {
                    py.site_packages
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                py.how
            ),
            [(p, what), rest @ ..] => format!(
                "{}: its HIP runtime is {} ({what}){}",
                py.python.display(),
                p.display(),
                if rest.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; also found: {}",
                        rest.iter()
                            .map(|(p, w)| format!("{} ({w})", p.display()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
        };
        add(Severity::Info, "python", text, Vec::new());
    }
    let chips: Vec<&str> = r.gpus.iter().filter_map(|g| g.gfx.as_deref()).collect();
    for (path, label, bundles) in &r.binaries {
        match bundles {
            Err(e) => add(
                Severity::Warning,
                "binary",
                format!("cannot read {}: {}", path.display(), shown(e)),
                Vec::new(),
            ),
            Ok(b) if b.bundles == 0 && b.compressed == 0 => add(
                Severity::Info,
                "binary",
                format!(
                    "{} ({}) carries no GPU code (no clang offload bundle)",
                    label,
                    path.display()
                ),
                Vec::new(),
            ),
            Ok(b) => {
                for chip in &chips {
                    let has = if b.targets.is_empty() {
                        "its bundles are compressed (CCOB), so their targets cannot be listed"
                            .to_string()
                    } else {
                        format!("it carries {}", b.targets.join(", "))
                    };
                    match hipbin::covers(b, chip) {
                        Some(true) => add(
                            Severity::Info,
                            "binary",
                            format!("{label} has {chip} code ({})", path.display()),
                            Vec::new(),
                        ),
                        Some(false) => add(
                            Severity::Error,
                            "binary",
                            format!(
                                "{label} has no {chip} code ({}; {has}): kernels cannot run on this \
                                 GPU without an override, and no rocm-fix mitigation helps; use a \
                                 build for {chip}",
                                path.display()
                            ),
                            Vec::new(),
                        ),
                        None => add(
                            Severity::Info,
                            "binary",
                            format!(
                                "{label} ({}): {has}; whether it has {chip} code is unknown \
                                 (roc-obj-ls or clang-offload-bundler --list can tell)",
                                path.display()
                            ),
                            Vec::new(),
                        ),
                    }
                }
            }
        }
    }
    // Most severe first; discovery order otherwise (the sort is stable).
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// A value made safe for one line of text: control characters escaped, so
/// a hostile file or variable cannot forge report lines.
fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `items` joined by two spaces, wrapped before `width` columns.
fn wrap(items: &[String], indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for it in items {
        if !line.is_empty() && indent.len() + line.len() + 2 + it.len() > width {
            let _ = writeln!(out, "{indent}{line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push_str("  ");
        }
        line.push_str(it);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{indent}{line}");
    }
    out
}

fn pairs_text(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", shown(k), shown(v)))
        .collect()
}

fn entry_text(e: &PreloadEntry) -> String {
    let state = match (e.exists, e.engine_exists) {
        (None, _) => "a bare name: found only on the loader's search path",
        (Some(false), _) => "MISSING",
        (Some(true), Some(true)) => "present, engine next to it",
        (Some(true), Some(false)) => "present, but librocm_fix_engine.so is MISSING next to it",
        (Some(true), None) => "present",
    };
    format!("{} ({state})", shown(&e.path))
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------
//
// `doctor --json` is `json::pretty` of these views: members in the order
// below, lists of strings and the knowledge base's mitigations on one line
// (`json::Inline`), and the ROCm installations, the Python runtime and the
// binaries on one compact line with their keys sorted (`json::Compact`), as
// they have been printed since they were added.

/// [`Report`] as JSON.
#[derive(Serialize)]
struct ReportJson<'a> {
    rocm_fix_version: &'static str,
    kfd_topology: String,
    gpus: Vec<GpuJson<'a>>,
    kernel: Option<&'a str>,
    #[serde(serialize_with = "pairs_opt")]
    amdgpu_parameters: Option<&'a [(String, String)]>,
    rocm_version: Option<&'a RocmVersion>,
    /// `null` when no card has firmware versions.
    firmware: Option<Vec<FirmwareJson<'a>>>,
    risky_environment: Vec<RiskyJson<'a>>,
    rocm_fix: InstallationJson<'a>,
    known_issues: Vec<KnownIssueJson<'a>>,
    findings: Vec<FindingJson<'a>>,
    rocm_installs: json::Compact<Vec<InstallJson<'a>>>,
    python: json::Compact<Option<PythonJson<'a>>>,
    binaries: json::Compact<Vec<BinaryJson<'a>>>,
}

/// `null`, or the pairs as one object.
fn pairs_opt<S: serde::Serializer>(
    v: &Option<&[(String, String)]>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(p) => json::pairs(p, s),
    }
}

#[derive(Serialize)]
struct GpuJson<'a> {
    node: u32,
    gfx: Option<&'a str>,
    gfx_target_version: u32,
    device_id: String,
    codename: Option<&'a str>,
    marketing_name: Option<&'a str>,
    family: &'static str,
    reported_gfx: Option<&'a str>,
    #[serde(rename = "override")]
    gfx_override: Option<OverrideJson<'a>>,
    rocm_fix_applies: bool,
    notes: json::Inline<&'a [String]>,
}

#[derive(Serialize)]
struct OverrideJson<'a> {
    variable: &'a str,
    value: &'a str,
    verdict: &'static str,
    severity: &'static str,
    evidence: Option<&'static str>,
    issues: json::Inline<&'a [String]>,
    why: &'a str,
    sources: json::Inline<&'a [String]>,
}

impl Serialize for RocmVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct RocmVersionJson<'a> {
            version: &'a str,
            source: &'a str,
        }
        RocmVersionJson {
            version: &self.version,
            source: &self.source,
        }
        .serialize(s)
    }
}

#[derive(Serialize)]
struct FirmwareJson<'a> {
    card: &'a str,
    device_id: Option<&'a str>,
    #[serde(serialize_with = "json::pairs")]
    versions: &'a [(String, String)],
}

#[derive(Serialize)]
struct RiskyJson<'a> {
    name: &'a str,
    value: &'a str,
    severity: &'static str,
    why: &'a str,
    sources: json::Inline<&'a [String]>,
}

#[derive(Serialize)]
struct InstallationJson<'a> {
    mode: &'static str,
    config_file: ConfigFileJson<'a>,
    ld_so_preload: LdSoPreloadJson<'a>,
    ld_preload: Vec<EntryJson<'a>>,
    #[serde(serialize_with = "json::pairs")]
    settings: &'a [(String, String)],
}

#[derive(Serialize)]
struct ConfigFileJson<'a> {
    path: String,
    exists: bool,
    warnings: json::Inline<&'a [String]>,
}

#[derive(Serialize)]
struct LdSoPreloadJson<'a> {
    path: String,
    exists: bool,
    entries: Vec<EntryJson<'a>>,
}

#[derive(Serialize)]
struct EntryJson<'a> {
    path: &'a str,
    rocm_fix: bool,
    exists: Option<bool>,
    engine_exists: Option<bool>,
}

impl<'a> From<&'a PreloadEntry> for EntryJson<'a> {
    fn from(e: &'a PreloadEntry) -> Self {
        EntryJson {
            path: &e.path,
            rocm_fix: e.rocm_fix,
            exists: e.exists,
            engine_exists: e.engine_exists,
        }
    }
}

#[derive(Serialize)]
struct KnownIssueJson<'a> {
    id: &'a str,
    severity: &'static str,
    title: &'a str,
    hypothesis: bool,
    nodes: json::Inline<&'a [u32]>,
    cause: &'a str,
    mitigations: Vec<json::Inline<MitigationJson<'a>>>,
    sources: json::Inline<&'a [String]>,
}

#[derive(Serialize)]
struct FindingJson<'a> {
    severity: &'static str,
    topic: &'a str,
    text: &'a str,
    sources: json::Inline<&'a [String]>,
}

#[derive(Serialize)]
struct InstallJson<'a> {
    kind: &'a str,
    source: &'a str,
    version: Option<&'a str>,
}

#[derive(Serialize)]
struct PythonJson<'a> {
    found_by: &'a str,
    libamdhip64: Vec<RuntimeJson<'a>>,
    python: String,
    site_packages: Vec<String>,
    torch_hip: Option<String>,
}

#[derive(Serialize)]
struct RuntimeJson<'a> {
    from: &'a str,
    path: String,
}

/// A binary that could be read, or why not.
#[derive(Serialize)]
#[serde(untagged)]
enum BinaryJson<'a> {
    Read {
        bundles: usize,
        compressed_bundles: usize,
        /// Whether it has code for each real chip, by chip.
        covers: BTreeMap<&'a str, Option<bool>>,
        label: &'a str,
        path: String,
        targets: &'a [String],
    },
    Unreadable {
        error: &'a str,
        label: &'a str,
        path: String,
    },
}

impl Report {
    /// Whether any finding is a warning or an error.
    pub fn has_problems(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity >= Severity::Warning)
    }

    /// The report as JSON (see the module's tests for the shape).
    pub fn to_json(&self) -> String {
        let mut out = json::pretty(&self.json());
        out.push('\n');
        out
    }

    fn json(&self) -> ReportJson<'_> {
        let inst = &self.rocm_fix;
        let chips: Vec<&str> = self.gpus.iter().filter_map(|g| g.gfx.as_deref()).collect();
        ReportJson {
            rocm_fix_version: env!("CARGO_PKG_VERSION"),
            kfd_topology: self.kfd_topology.display().to_string(),
            gpus: self
                .gpus
                .iter()
                .map(|g| GpuJson {
                    node: g.node,
                    gfx: g.gfx.as_deref(),
                    gfx_target_version: g.gfx_target_version,
                    device_id: format!("0x{:04x}", g.device_id),
                    codename: g.codename.as_deref(),
                    marketing_name: g.marketing_name.as_deref(),
                    family: pciids::family_label(g.family),
                    reported_gfx: g.reported_gfx.as_deref(),
                    gfx_override: g.gfx_override.as_ref().map(|o| OverrideJson {
                        variable: &o.variable,
                        value: &o.value,
                        verdict: o.verdict.as_str(),
                        severity: o.verdict.severity().as_str(),
                        evidence: o.evidence.map(|e| e.as_str()),
                        issues: json::Inline(&o.issues),
                        why: &o.why,
                        sources: json::Inline(&o.sources),
                    }),
                    rocm_fix_applies: g.rocm_fix_applies,
                    notes: json::Inline(&g.notes),
                })
                .collect(),
            kernel: self.kernel.as_deref(),
            amdgpu_parameters: self.amdgpu_parameters.as_deref(),
            rocm_version: self.rocm_version.as_ref(),
            firmware: (!self.firmware.is_empty()).then(|| {
                self.firmware
                    .iter()
                    .map(|c| FirmwareJson {
                        card: &c.card,
                        device_id: c.device_id.as_deref(),
                        versions: &c.versions,
                    })
                    .collect()
            }),
            risky_environment: self
                .risky_environment
                .iter()
                .map(|v| RiskyJson {
                    name: &v.name,
                    value: &v.value,
                    severity: v.severity.as_str(),
                    why: &v.why,
                    sources: json::Inline(&v.sources),
                })
                .collect(),
            rocm_fix: InstallationJson {
                mode: inst.mode.as_str(),
                config_file: ConfigFileJson {
                    path: inst.config_file.display().to_string(),
                    exists: inst.config_file_exists,
                    warnings: json::Inline(&inst.config_warnings),
                },
                ld_so_preload: LdSoPreloadJson {
                    path: inst.ld_so_preload.display().to_string(),
                    exists: inst.ld_so_preload_exists,
                    entries: inst
                        .ld_so_preload_entries
                        .iter()
                        .map(EntryJson::from)
                        .collect(),
                },
                ld_preload: inst
                    .ld_preload_entries
                    .iter()
                    .map(EntryJson::from)
                    .collect(),
                settings: &inst.settings,
            },
            known_issues: self
                .known_issues
                .iter()
                .map(|k| {
                    let i = &k.issue;
                    KnownIssueJson {
                        id: &i.id,
                        severity: i.severity.as_str(),
                        title: &i.title,
                        hypothesis: i.hypothesis,
                        nodes: json::Inline(&k.nodes),
                        cause: &i.cause,
                        mitigations: i
                            .mitigations
                            .iter()
                            .map(|m| json::Inline(MitigationJson::from(m)))
                            .collect(),
                        sources: json::Inline(&i.sources),
                    }
                })
                .collect(),
            findings: self
                .findings
                .iter()
                .map(|f| FindingJson {
                    severity: f.severity.as_str(),
                    topic: &f.topic,
                    text: &f.text,
                    sources: json::Inline(&f.sources),
                })
                .collect(),
            rocm_installs: json::Compact(
                self.rocm_installs
                    .iter()
                    .map(|i| InstallJson {
                        kind: &i.kind,
                        source: &i.source,
                        version: i.version.as_deref(),
                    })
                    .collect(),
            ),
            python: json::Compact(self.python_runtime.as_ref().map(|p| {
                PythonJson {
                    found_by: &p.how,
                    libamdhip64: p
                        .runtimes
                        .iter()
                        .map(|(f, w)| RuntimeJson {
                            from: w,
                            path: f.display().to_string(),
                        })
                        .collect(),
                    python: p.python.display().to_string(),
                    site_packages: p
                        .site_packages
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect(),
                    torch_hip: p.torch_hip.as_ref().map(|t| t.display().to_string()),
                }
            })),
            binaries: json::Compact(
                self.binaries
                    .iter()
                    .map(|(p, label, b)| match b {
                        Ok(b) => BinaryJson::Read {
                            bundles: b.bundles,
                            compressed_bundles: b.compressed,
                            covers: chips.iter().map(|&c| (c, hipbin::covers(b, c))).collect(),
                            label,
                            path: p.display().to_string(),
                            targets: &b.targets,
                        },
                        Err(e) => BinaryJson::Unreadable {
                            error: e,
                            label,
                            path: p.display().to_string(),
                        },
                    })
                    .collect(),
            ),
        }
    }

    /// The readable report.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "rocm-fix {} doctor report", env!("CARGO_PKG_VERSION"));
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "GPUs (KFD topology at {})",
            shown(&self.kfd_topology.display().to_string())
        );
        if self.gpus.is_empty() {
            let _ = writeln!(
                o,
                "  no AMD GPU found in the KFD topology at {}",
                shown(&self.kfd_topology.display().to_string())
            );
        }
        for g in &self.gpus {
            let name = match (&g.codename, &g.marketing_name) {
                (Some(c), Some(m)) => format!(" ({c}, {m})"),
                (Some(c), None) => format!(" ({c})"),
                _ => " (not in the PCI id table)".to_string(),
            };
            let _ = writeln!(
                o,
                "  node {}: {}, {}, PCI device 0x{:04x}{name}",
                g.node,
                g.gfx.as_deref().unwrap_or("unknown chip"),
                pciids::family_label(g.family),
                g.device_id
            );
            let reported = g.reported_gfx.as_deref().unwrap_or("unknown");
            match &g.gfx_override {
                None => {
                    let _ = writeln!(
                        o,
                        "    runtime reports: {reported} (no HSA_OVERRIDE_GFX_VERSION)"
                    );
                }
                Some(ov) => {
                    let _ = writeln!(
                        o,
                        "    runtime reports: {reported}, because {}={} (the chip is still {})",
                        ov.variable,
                        shown(&ov.value),
                        g.gfx.as_deref().unwrap_or("unknown")
                    );
                    let evidence = ov
                        .evidence
                        .map_or(String::new(), |e| format!(" (evidence: {})", e.as_str()));
                    let _ = writeln!(
                        o,
                        "    override verdict: {}{evidence}: {}",
                        ov.verdict.as_str(),
                        ov.why
                    );
                    for s in &ov.sources {
                        let _ = writeln!(o, "      source: {s}");
                    }
                }
            }
            let applies = if g.rocm_fix_applies {
                format!("applies (mode {})", self.rocm_fix.mode.as_str())
            } else if self.rocm_fix.mode == Mode::Auto {
                "does not apply (auto mode rewrites on RDNA1/RDNA2 only)".to_string()
            } else {
                format!("does not apply (mode {})", self.rocm_fix.mode.as_str())
            };
            let _ = writeln!(o, "    rocm-fix: {applies}");
            for n in &g.notes {
                let _ = writeln!(o, "    note: {n}");
            }
        }

        let _ = writeln!(o);
        let _ = writeln!(o, "System");
        let _ = writeln!(
            o,
            "  kernel: {}",
            self.kernel.as_deref().map_or_else(
                || format!(
                    "not readable ({})",
                    self.proc_root.join("sys/kernel/osrelease").display()
                ),
                shown
            )
        );
        let rocm = match &self.rocm_version {
            Some(v) => format!("{} (from {})", shown(&v.version), shown(&v.source)),
            None => "not found".to_string(),
        };
        let _ = writeln!(o, "  ROCm: {rocm}");
        for i in &self.rocm_installs {
            let _ = writeln!(
                o,
                "    installed: {} {} ({})",
                i.kind,
                shown(i.version.as_deref().unwrap_or("version unknown")),
                shown(&i.source)
            );
        }
        if let Some(py) = &self.python_runtime {
            let _ = writeln!(o, "  Python {}:", shown(&py.python.display().to_string()));
            for (p, what) in &py.runtimes {
                let _ = writeln!(
                    o,
                    "    libamdhip64: {} ({what})",
                    shown(&p.display().to_string())
                );
            }
            if py.runtimes.is_empty() {
                let _ = writeln!(o, "    libamdhip64: none of its own (the system's)");
            }
        }
        for (p, label, b) in &self.binaries {
            let what = match b {
                Ok(b) if !b.targets.is_empty() => b.targets.join(", "),
                Ok(b) if b.compressed > 0 => format!("{} compressed bundle(s)", b.compressed),
                Ok(_) => "no GPU code".to_string(),
                Err(e) => format!("not readable: {}", shown(e)),
            };
            let _ = writeln!(o, "  {label} ({}): {what}", shown(&p.display().to_string()));
        }
        let params_dir = self
            .sysfs_root
            .as_ref()
            .map(|r| r.join("module/amdgpu/parameters").display().to_string());
        match (&self.amdgpu_parameters, &params_dir) {
            (Some(p), Some(dir)) => {
                let _ = writeln!(o, "  amdgpu parameters ({}):", shown(dir));
                if p.is_empty() {
                    let _ = writeln!(o, "    none readable");
                }
                o.push_str(&wrap(&pairs_text(p), "    ", 100));
            }
            (_, Some(dir)) => {
                let _ = writeln!(
                    o,
                    "  amdgpu parameters: not present ({} is missing)",
                    shown(dir)
                );
            }
            (_, None) => {
                let _ = writeln!(o, "  amdgpu parameters: not in this capture");
            }
        }
        if self.firmware.is_empty() {
            let _ = match &self.sysfs_root {
                Some(root) => writeln!(
                    o,
                    "  firmware: not readable (no {}/card*/device/fw_version)",
                    shown(&root.join("class/drm").display().to_string())
                ),
                None => writeln!(o, "  firmware: not in this capture"),
            };
        }
        for c in &self.firmware {
            let id = c
                .device_id
                .as_deref()
                .map_or(String::new(), |d| format!(", PCI device {}", shown(d)));
            let _ = writeln!(o, "  firmware of {}{id}:", shown(&c.card));
            o.push_str(&wrap(&pairs_text(&c.versions), "    ", 100));
        }

        let _ = writeln!(o);
        let _ = writeln!(o, "Risky environment variables");
        if self.risky_environment.is_empty() {
            let _ = writeln!(o, "  none set");
        }
        for v in &self.risky_environment {
            let _ = writeln!(
                o,
                "  [{}] {}={}: {}",
                v.severity.as_str(),
                shown(&v.name),
                shown(&v.value),
                shown(&v.why)
            );
        }

        let inst = &self.rocm_fix;
        let _ = writeln!(o);
        let _ = writeln!(o, "rocm-fix installation");
        let _ = writeln!(o, "  mode: {}", inst.mode.as_str());
        let _ = writeln!(
            o,
            "  config file: {} ({})",
            inst.config_file.display(),
            if inst.config_file_exists {
                "present"
            } else {
                "not present"
            }
        );
        let preload = inst.ld_so_preload.display();
        if !inst.ld_so_preload_exists {
            let _ = writeln!(o, "  {preload}: not present");
        } else if inst.ld_so_preload_entries.is_empty() {
            let _ = writeln!(o, "  {preload}: empty");
        } else {
            let _ = writeln!(o, "  {preload}:");
            for e in &inst.ld_so_preload_entries {
                let _ = writeln!(o, "    {}", entry_text(e));
            }
        }
        if inst.ld_preload_entries.is_empty() {
            let _ = writeln!(o, "  LD_PRELOAD: not set");
        } else {
            let _ = writeln!(o, "  LD_PRELOAD:");
            for e in &inst.ld_preload_entries {
                let _ = writeln!(o, "    {}", entry_text(e));
            }
        }
        if inst.settings.is_empty() {
            let _ = writeln!(o, "  ROCM_FIX_* settings: none");
        } else {
            let _ = writeln!(
                o,
                "  ROCM_FIX_* settings: {}",
                pairs_text(&inst.settings).join("  ")
            );
        }

        let _ = writeln!(o);
        if self.known_issues.is_empty() {
            let _ = writeln!(o, "Known issues: none for these GPUs");
        } else {
            let _ = writeln!(
                o,
                "Known issues for these GPUs ({})",
                self.known_issues.len()
            );
        }
        for k in &self.known_issues {
            let i = &k.issue;
            let nodes: Vec<String> = k.nodes.iter().map(|n| format!("node {n}")).collect();
            let _ = writeln!(
                o,
                "  [{}] {}: {}{} ({})",
                i.severity.as_str(),
                i.id,
                i.title,
                if i.hypothesis { " [unconfirmed]" } else { "" },
                if nodes.is_empty() {
                    "every GPU".to_string()
                } else {
                    nodes.join(", ")
                }
            );
            for m in &i.mitigations {
                let _ = writeln!(o, "    [{}] {}", m.evidence.as_str(), m.text);
                for (k, v) in &m.env {
                    let _ = writeln!(o, "        env {k}={v}");
                }
                for p in &m.kernel_params {
                    let _ = writeln!(o, "        kernel parameter {p}");
                }
            }
            for s in &i.sources {
                let _ = writeln!(o, "    source: {s}");
            }
        }

        let _ = writeln!(o);
        if self.findings.is_empty() {
            let _ = writeln!(o, "What to do: nothing, no problems found");
        } else {
            let _ = writeln!(o, "What to do");
        }
        for f in &self.findings {
            let _ = writeln!(o, "  [{}] {}", f.severity.as_str(), shown(&f.text));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/doctor");

    /// Options for a captured machine under tests/fixtures/doctor/NAME.
    fn machine(name: &str, env: &[(&str, &str)]) -> Options {
        let base = Path::new(FIXTURES).join(name);
        Options {
            sysfs: Some(base.join("sys")),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            etc: base.join("etc"),
            proc_root: base.join("proc"),
            rocm_root: base.join("opt/rocm"),
            lib_dir: base.join("usr/lib/x86_64-linux-gnu"),
            python: None,
            binaries: Vec::new(),
        }
    }

    /// A scratch tree, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            let dir =
                std::env::temp_dir().join(format!("rocm-fix-doctor-{}-{tag}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }

        fn file(&self, rel: &str, text: &str) -> &Tree {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
            self
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The top-level keys of a JSON object, after checking the whole text
    /// is well-formed JSON.
    fn json_keys(text: &str) -> Vec<String> {
        struct P<'a> {
            b: &'a [u8],
            i: usize,
        }
        impl P<'_> {
            fn ws(&mut self) {
                while self.b.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
                    self.i += 1;
                }
            }
            fn eat(&mut self, c: u8) -> bool {
                self.ws();
                let ok = self.b.get(self.i) == Some(&c);
                if ok {
                    self.i += 1;
                }
                ok
            }
            fn string(&mut self) -> String {
                assert!(self.eat(b'"'), "string expected at {}", self.i);
                let start = self.i;
                loop {
                    match self.b.get(self.i) {
                        Some(b'"') => break,
                        Some(b'\\') => self.i += 2,
                        Some(c) if *c < 0x20 => panic!("raw control character at {}", self.i),
                        Some(_) => self.i += 1,
                        None => panic!("unterminated string"),
                    }
                }
                self.i += 1;
                String::from_utf8_lossy(&self.b[start..self.i - 1]).into_owned()
            }
            fn value(&mut self, depth: usize) -> Vec<String> {
                self.ws();
                match self.b.get(self.i) {
                    Some(b'{') => {
                        self.i += 1;
                        let mut keys = Vec::new();
                        if self.eat(b'}') {
                            return keys;
                        }
                        loop {
                            keys.push(self.string());
                            assert!(self.eat(b':'), "':' expected at {}", self.i);
                            self.value(depth + 1);
                            if self.eat(b'}') {
                                break;
                            }
                            assert!(self.eat(b','), "',' expected at {}", self.i);
                        }
                        if depth == 0 {
                            keys
                        } else {
                            Vec::new()
                        }
                    }
                    Some(b'[') => {
                        self.i += 1;
                        if !self.eat(b']') {
                            loop {
                                self.value(depth + 1);
                                if self.eat(b']') {
                                    break;
                                }
                                assert!(self.eat(b','), "',' expected at {}", self.i);
                            }
                        }
                        Vec::new()
                    }
                    Some(b'"') => {
                        self.string();
                        Vec::new()
                    }
                    _ => {
                        let start = self.i;
                        while self
                            .b
                            .get(self.i)
                            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-')
                        {
                            self.i += 1;
                        }
                        let word = std::str::from_utf8(&self.b[start..self.i]).unwrap();
                        assert!(
                            ["true", "false", "null"].contains(&word)
                                || word.parse::<i64>().is_ok(),
                            "bad literal {word:?} at {start}"
                        );
                        Vec::new()
                    }
                }
            }
        }
        let mut p = P {
            b: text.as_bytes(),
            i: 0,
        };
        let keys = p.value(0);
        p.ws();
        assert_eq!(p.i, text.len(), "trailing text after the JSON value");
        keys
    }

    const TOP_KEYS: [&str; 12] = [
        "gpus",
        "kernel",
        "amdgpu_parameters",
        "rocm_version",
        "firmware",
        "risky_environment",
        "rocm_fix",
        "known_issues",
        "findings",
        "rocm_installs",
        "python",
        "binaries",
    ];

    fn ids(r: &Report) -> Vec<&str> {
        r.known_issues.iter().map(|k| k.issue.id.as_str()).collect()
    }

    #[test]
    fn rx5700xt_without_override_is_clean_and_rocm_fix_applies() {
        let r = diagnose(&machine("rx5700xt", &[]));
        let t = r.to_text();
        for want in [
            "node 1: gfx1010, RDNA1, PCI device 0x731f (Navi10, Radeon RX 5600 OEM/5600 XT / 5700/5700 XT)",
            "    runtime reports: gfx1010 (no HSA_OVERRIDE_GFX_VERSION)",
            "    rocm-fix: applies (mode auto)",
            "  kernel: 6.1.0-18-amd64",
            "  ROCm: 5.2 (from ",
            "rx5700xt/usr/lib/x86_64-linux-gnu/libamdhip64.so.5.2.21153)",
            "    cwsr_enable=1  noretry=-1\n",
            "  firmware of card0, PCI device 0x731f:\n    mec_fw_version=0x00000090  \
             sdma_fw_version=0x00000053  smc_fw_version=0x002a3e00\n",
            "    /usr/lib/x86_64-linux-gnu/librocm_fix.so (present, engine next to it)",
            "Risky environment variables\n  none set\n",
            "[info] seed-coherent-memory: Hypothesis:",
            "[helped] PyTorch 1.13.1",
            "What to do: nothing, no problems found",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        // Connectors (card0-DP-1) and render nodes have no firmware.
        assert_eq!(r.firmware.len(), 1);
        let known = ids(&r);
        assert!(known.contains(&"rdna1-pytorch-builds"), "{known:?}");
        assert!(
            !known.iter().any(|i| i.starts_with("override-")),
            "{known:?}"
        );
        assert!(!known.contains(&"hsa-xnack-faults"), "HSA_XNACK is not set");
        assert!(!r.has_problems());

        let j = r.to_json();
        assert_eq!(json_keys(&j)[2..], TOP_KEYS);
        for want in [
            "\"gfx\": \"gfx1010\"",
            "\"gfx_target_version\": 100100",
            "\"device_id\": \"0x731f\"",
            "\"family\": \"RDNA1\"",
            "\"reported_gfx\": \"gfx1010\"",
            "\"override\": null",
            "\"rocm_fix_applies\": true",
            "\"kernel\": \"6.1.0-18-amd64\"",
            "\"cwsr_enable\": \"1\"",
            "\"noretry\": \"-1\"",
            "\"version\": \"5.2\"",
            "\"mec_fw_version\": \"0x00000090\"",
            "\"mode\": \"auto\"",
            "\"path\": \"/usr/lib/x86_64-linux-gnu/librocm_fix.so\"",
            "\"engine_exists\": true",
            "\"findings\": []",
        ] {
            assert!(j.contains(want), "missing {want:?} in\n{j}");
        }
    }

    #[test]
    fn rx7900xtx_with_the_rdna2_override_is_harmful() {
        let r = diagnose(&machine(
            "rx7900xtx_with_override",
            &[("HSA_OVERRIDE_GFX_VERSION", "10.3.0")],
        ));
        let t = r.to_text();
        for want in [
            "node 1: gfx1100, RDNA3, PCI device 0x744c (Navi31, Radeon RX 7900 XT/7900 XTX/7900 GRE/7900M)",
            "runtime reports: gfx1030, because HSA_OVERRIDE_GFX_VERSION=10.3.0 (the chip is still gfx1100)",
            "override verdict: harmful (evidence: confirmed): the runtime loads gfx1030 (RDNA2) code \
             on gfx1100 (RDNA3) hardware",
            "source: https://github.com/ROCm/ROCm/issues/5238",
            "rocm-fix: does not apply (auto mode rewrites on RDNA1/RDNA2 only)",
            "ROCm: 6.2.4-120 (from ",
            "amdgpu parameters: not present (",
            "firmware: not readable (no ",
            "[error] HSA_OVERRIDE_GFX_VERSION=10.3.0: changes the gfx name the runtime reports, \
             never the chip: node 1 (gfx1100): harmful",
            "\n  [error] remove HSA_OVERRIDE_GFX_VERSION=10.3.0: harmful on gfx1100 (RDNA3, node 1): ",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        // The harmful override is the first thing to do.
        let first = r.findings.first().unwrap();
        assert_eq!(
            (first.severity, first.topic.as_str()),
            (Severity::Error, "override")
        );
        assert!(first
            .sources
            .iter()
            .any(|s| s.ends_with("rocm-systems/pull/5686")));
        assert_eq!(
            ids(&r)[..2],
            ["override-cross-family", "override-leftover-supported"]
        );
        assert!(!ids(&r).contains(&"override-rdna2-to-gfx1030"));
        assert!(r.has_problems());

        let j = r.to_json();
        assert_eq!(json_keys(&j)[2..], TOP_KEYS);
        for want in [
            "\"gfx\": \"gfx1100\"",
            "\"reported_gfx\": \"gfx1030\"",
            "\"variable\": \"HSA_OVERRIDE_GFX_VERSION\"",
            "\"verdict\": \"harmful\"",
            "\"evidence\": \"confirmed\"",
            "\"issues\": [\"override-cross-family\", \"override-leftover-supported\"]",
            "\"rocm_fix_applies\": false",
            "\"amdgpu_parameters\": null",
            "\"firmware\": null",
            "\"version\": \"6.2.4-120\"",
        ] {
            assert!(j.contains(want), "missing {want:?} in\n{j}");
        }
    }

    #[test]
    fn the_per_node_override_wins_over_the_global_one() {
        let r = diagnose(&machine(
            "rx7900xtx_with_override",
            &[
                ("HSA_OVERRIDE_GFX_VERSION", "10.3.0"),
                ("HSA_OVERRIDE_GFX_VERSION_1", "11.0.0"),
            ],
        ));
        let o = r.gpus[0].gfx_override.as_ref().unwrap();
        assert_eq!(
            (o.variable.as_str(), o.verdict),
            ("HSA_OVERRIDE_GFX_VERSION_1", Verdict::NoOp)
        );
        assert_eq!(r.gpus[0].reported_gfx.as_deref(), Some("gfx1100"));
        let t = r.to_text();
        assert!(
            t.contains(
                "[info] HSA_OVERRIDE_GFX_VERSION=10.3.0: every GPU has its own per-node override: \
             it has no effect"
            ),
            "{t}"
        );
        assert!(
            t.contains("[info] remove HSA_OVERRIDE_GFX_VERSION_1=11.0.0: it names the chip itself"),
            "{t}"
        );
        assert!(!ids(&r).iter().any(|i| i.starts_with("override-")));
    }

    #[test]
    fn no_gpu_is_said_plainly_and_the_rest_is_still_reported() {
        let r = diagnose(&machine("nogpu", &[]));
        let t = r.to_text();
        let topo = format!("{FIXTURES}/nogpu/sys/class/kfd/kfd/topology");
        for want in [
            format!("  no AMD GPU found in the KFD topology at {topo}\n"),
            format!("[warning] no AMD GPU found in the KFD topology at {topo}: "),
            "  kernel: not readable (".to_string(),
            "  ROCm: not found\n".to_string(),
            "    /usr/lib/x86_64-linux-gnu/librocm_fix.so (MISSING)".to_string(),
            "Known issues: none for these GPUs".to_string(),
        ] {
            assert!(t.contains(&want), "missing {want:?} in\n{t}");
        }
        // A preload that does not exist breaks every program: an error, first.
        let first = r.findings.first().unwrap();
        assert_eq!(first.severity, Severity::Error);
        assert!(first
            .text
            .contains("names /usr/lib/x86_64-linux-gnu/librocm_fix.so, which does not exist"));
        assert!(r.has_problems());
        let j = r.to_json();
        assert_eq!(json_keys(&j)[2..], TOP_KEYS);
        for want in [
            "\"gpus\": []",
            "\"kernel\": null",
            "\"rocm_version\": null",
            "\"known_issues\": []",
        ] {
            assert!(j.contains(want), "missing {want:?} in\n{j}");
        }
    }

    #[test]
    fn an_override_one_gpu_needs_and_another_cannot_take_goes_per_node() {
        let r = diagnose(&machine(
            "rx6600m_cezanne",
            &[("HSA_OVERRIDE_GFX_VERSION", "10.3.0")],
        ));
        let verdicts: Vec<(u32, Verdict)> = r
            .gpus
            .iter()
            .map(|g| (g.node, g.gfx_override.as_ref().unwrap().verdict))
            .collect();
        assert_eq!(verdicts, [(1, Verdict::Helped), (2, Verdict::Harmful)]);
        let t = r.to_text();
        assert!(t.contains(
            "[error] remove HSA_OVERRIDE_GFX_VERSION=10.3.0: harmful on gfx90c (GCN5, node 2): "
        ), "{t}");
        assert!(t.contains(
            "node 1 (gfx1032) relies on it: set HSA_OVERRIDE_GFX_VERSION_1=10.3.0 for that GPU only \
             (ROCm 6.3 and later) and unset HSA_OVERRIDE_GFX_VERSION"
        ), "{t}");
        let helped = "[info] HSA_OVERRIDE_GFX_VERSION=10.3.0 on gfx1032 (RDNA2, node 1): common, \
                      not official";
        assert!(t.contains(helped), "{t}");
        let known = ids(&r);
        assert!(
            known.contains(&"override-rdna2-to-gfx1030")
                && known.contains(&"override-cross-family")
        );
        // gfx1032 is not natively supported; a family query would say it is.
        assert!(!known.contains(&"override-leftover-supported"), "{known:?}");
        let cross = r
            .known_issues
            .iter()
            .find(|k| k.issue.id == "override-cross-family")
            .unwrap();
        assert_eq!(cross.nodes, [2]);
    }

    #[test]
    fn rdna1_with_the_rdna2_override_is_mixed() {
        let r = diagnose(&machine(
            "rx5700xt",
            &[("HSA_OVERRIDE_GFX_VERSION", "10.3.0")],
        ));
        let t = r.to_text();
        assert!(
            t.contains(
                "override verdict: mixed (evidence: mixed): gfx1030 (RDNA2) code on gfx1010"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "[warning] reconsider HSA_OVERRIDE_GFX_VERSION=10.3.0 on gfx1010 (RDNA1, node 1)"
            ),
            "{t}"
        );
        assert!(ids(&r).contains(&"override-rdna1-as-rdna2"));
        assert!(r.has_problems());
    }

    #[test]
    fn verdicts_per_chip_and_value() {
        // (real chip, value, verdict, evidence)
        let cases = [
            (Some(110000), "10.3.0", "harmful", Some("confirmed")), // cross-family, native
            (Some(90012), "10.3.0", "harmful", Some("harmful")),    // cross-family
            (Some(100300), "10.1.0", "harmful", Some("confirmed")), // native gfx1030
            (Some(100302), "10.1.0", "harmful", Some("harmful")),   // same major, other family
            (Some(110000), "11.0.1", "harmful", Some("confirmed")), // leftover, same family
            (Some(100100), "10.3.0", "mixed", Some("mixed")),
            (Some(100302), "10.3.0", "helped", Some("helped")),
            (Some(110003), "11.0.0", "mixed", Some("mixed")),
            (Some(100102), "10.1.0", "anecdotal", Some("anecdotal")),
            (Some(100300), "10.3.0", "no-op", None),
            (Some(100302), "10.3.1", "untested", None),
            (None, "10.3.0", "untested", None),
        ];
        for (real, value, verdict, evidence) in cases {
            let o = judge(real, OVERRIDE_VAR, value);
            let got = (o.verdict.as_str(), o.evidence.map(|e| e.as_str()));
            assert_eq!(got, (verdict, evidence), "{real:?} {value}");
        }
        let why = |real, value| judge(Some(real), OVERRIDE_VAR, value).why;
        assert!(why(100302, "10.1.0").contains("libhsakmt accepts it"));
        assert!(why(110000, "10.3.0").contains("libhsakmt now refuses them"));
        for bad in ["", "10.3", "gfx1030", "10.3.0 ", "1O.3.0"] {
            let o = judge(Some(100300), OVERRIDE_VAR, bad);
            assert_eq!(o.verdict, Verdict::Invalid, "{bad:?}");
        }
    }

    #[test]
    fn verdict_evidence_agrees_with_the_knowledge_base() {
        // (chip, value, issue): the KB mitigation that sets this value.
        for (real, value, issue) in [
            (90012, "10.3.0", "override-cross-family"),
            (100100, "10.3.0", "override-rdna1-as-rdna2"),
            (100102, "10.1.0", "override-rdna1-as-rdna2"),
            (100302, "10.3.0", "override-rdna2-to-gfx1030"),
            (110003, "11.0.0", "override-gfx1103-as-gfx1100"),
        ] {
            let o = judge(Some(real), OVERRIDE_VAR, value);
            let m = kb::issue(issue)
                .unwrap()
                .mitigations
                .into_iter()
                .find(|m| m.env.iter().any(|(k, v)| k == OVERRIDE_VAR && v == value))
                .unwrap();
            assert_eq!(o.evidence, Some(m.evidence), "{issue} {value}");
            assert!(o.issues.contains(&issue.to_string()));
        }
        // The leftover verdict is the KB's confirmed fix for #5238.
        let i = kb::issue("override-leftover-supported").unwrap();
        assert_eq!(i.mitigations[0].evidence, Evidence::Confirmed);
    }

    #[test]
    fn risky_variables_say_why_and_escape_what_they_show() {
        let r = diagnose(&machine(
            "rx5700xt",
            &[
                ("HSA_XNACK", "1"),
                ("HSA_DISABLE_CACHE", "0"),
                ("HSA_ENABLE_INTERRUPT", "0"),
                ("HIP_HOST_COHERENT", "1"),
                ("MIOPEN_DEBUG_CONV_GEMM", "0"),
                ("AMD_SERIALIZE_KERNEL", "3\n  [error] forged"),
                ("ROCM_FIX_PAD", "2M"),
                ("HSA_XNACK", "0"),
            ],
        ));
        let names: Vec<(&str, Severity)> = r
            .risky_environment
            .iter()
            .map(|v| (v.name.as_str(), v.severity))
            .collect();
        assert_eq!(
            names,
            [
                ("AMD_SERIALIZE_KERNEL", Severity::Info),
                ("HIP_HOST_COHERENT", Severity::Warning),
                ("HSA_ENABLE_INTERRUPT", Severity::Warning),
                ("HSA_XNACK", Severity::Warning),
                ("MIOPEN_DEBUG_CONV_GEMM", Severity::Info),
            ],
            "HSA_DISABLE_CACHE=0 is harmless; the first HSA_XNACK counts, as with getenv"
        );
        let t = r.to_text();
        for want in [
            "[warning] unset HSA_XNACK=1: AMD's known issue: HSA_XNACK can itself cause page faults",
            "(hsa-xnack-faults): evidence harmful",
            "[warning] unset HSA_ENABLE_INTERRUPT=0: ROCr arms its memory-fault handler only when \
             interrupts are on",
            "MIOPEN_DEBUG_CONV_GEMM=0: restricts the MIOpen convolution solvers",
            "(miopen-gemmbwdrest-wrw2): evidence anecdotal",
            "AMD_SERIALIZE_KERNEL=3\\n  [error] forged: a debugging setting",
            "ROCM_FIX_* settings: ROCM_FIX_PAD=2M",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(
            !t.contains("\n  [error] forged"),
            "a value forged a line:\n{t}"
        );
        assert!(
            ids(&r).contains(&"hsa-xnack-faults"),
            "HSA_XNACK is set now"
        );
        let j = r.to_json();
        json_keys(&j);
        assert!(j.contains("\"value\": \"3\\n  [error] forged\""), "{j}");
        assert!(j.contains("\"ROCM_FIX_PAD\": \"2M\""), "{j}");
    }

    #[test]
    fn mode_and_preload_problems_are_findings() {
        let r = diagnose(&machine(
            "rx5700xt",
            &[
                ("ROCM_FIX_MODE", "off"),
                ("LD_PRELOAD", "/opt/other/librocm_fix.so:libfoo.so"),
            ],
        ));
        assert_eq!(r.rocm_fix.mode, Mode::Off);
        assert!(!r.gpus[0].rocm_fix_applies);
        let t = r.to_text();
        for want in [
            "rocm-fix: does not apply (mode off)",
            "[warning] ROCM_FIX_MODE=off: rocm-fix does nothing",
            "    /opt/other/librocm_fix.so (MISSING)\n    libfoo.so (a bare name: found only on the \
             loader's search path)",
            "[warning] LD_PRELOAD names /opt/other/librocm_fix.so, which does not exist",
            "[warning] rocm-fix is off (ROCM_FIX_MODE or ",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(
            !t.contains("more than one librocm_fix.so"),
            "a missing file is no second copy"
        );

        let r = diagnose(&machine("rx5700xt", &[("ROCM_FIX_MODE", "bogus")]));
        assert_eq!(r.rocm_fix.mode, Mode::Auto);
        assert!(r.findings.iter().any(|f| f.severity == Severity::Warning
            && f.text
                .contains("ROCM_FIX_MODE=bogus is not one of auto, on, observe, off")));
    }

    #[test]
    fn a_front_without_its_engine_is_an_error() {
        let t = Tree::new("noengine");
        t.file("etc/ld.so.preload", "/usr/lib/rf/librocm_fix.so\n")
            .file("usr/lib/rf/librocm_fix.so", "fixture")
            .file("etc/rocm-fix.conf", "mode = observe\n")
            .file("opt/rocm/.info/version", "6.4.1-9\n");
        let mut o = machine("rx5700xt", &[]);
        o.etc = t.0.join("etc");
        o.rocm_root = t.0.join("opt/rocm");
        let r = diagnose(&o);
        assert_eq!(r.rocm_fix.mode, Mode::Observe, "from rocm-fix.conf");
        assert_eq!(
            r.rocm_version.as_ref().map(|v| v.version.as_str()),
            Some("6.4.1-9")
        );
        let f = r.findings.first().unwrap();
        assert_eq!(f.severity, Severity::Error);
        assert!(
            f.text
                .starts_with("librocm_fix_engine.so is missing next to /usr/lib/rf/librocm_fix.so"),
            "{}",
            f.text
        );
        assert!(r.to_text().contains("[info] rocm-fix is in observe mode"));
    }

    #[test]
    fn sysfs_may_be_the_topology_folder_or_come_from_the_simulated_device() {
        let topo = format!("{FIXTURES}/rx5700xt/sys/class/kfd/kfd/topology");
        let mut o = machine("rx5700xt", &[]);
        o.sysfs = Some(PathBuf::from(&topo));
        let r = diagnose(&o);
        assert_eq!(r.gpus.len(), 1);
        // A full capture's root is found again above the topology folder.
        assert!(r.amdgpu_parameters.as_ref().is_some_and(|p| p.len() == 2));

        let bare = Tree::new("bare");
        bare.file("nodes/0/properties", "simd_count 0\n").file(
            "nodes/1/properties",
            "simd_count 40\ngfx_target_version 100302\ndevice_id 29695\n",
        );
        o.sysfs = Some(bare.0.clone());
        let r = diagnose(&o);
        assert_eq!(r.gpus[0].gfx.as_deref(), Some("gfx1032"));
        assert!(r
            .to_text()
            .contains("amdgpu parameters: not in this capture"));

        o.sysfs = None;
        o.env = vec![(process::TOPOLOGY_VAR.to_string(), topo.clone())];
        let r = diagnose(&o);
        assert_eq!(r.kfd_topology, PathBuf::from(&topo));
        assert_eq!(r.gpus[0].gfx.as_deref(), Some("gfx1010"));
    }

    #[test]
    fn the_chip_comes_from_the_pci_id_when_sysfs_has_no_version() {
        let t = Tree::new("gfx0");
        t.file("nodes/0/properties", "simd_count 0\n")
            .file(
                "nodes/1/properties",
                "simd_count 40\ngfx_target_version 0\ndevice_id 29695\n",
            )
            .file(
                "nodes/2/properties",
                "simd_count 40\ngfx_target_version 0\ndevice_id 1\n",
            );
        let mut o = machine("nogpu", &[("HSA_OVERRIDE_GFX_VERSION", "10.3.0")]);
        o.sysfs = Some(t.0.clone());
        let r = diagnose(&o);
        let g = &r.gpus[0];
        assert_eq!(
            (g.gfx.as_deref(), g.family),
            (Some("gfx1032"), Family::Rdna2)
        );
        assert!(!g.rocm_fix_applies, "the engine decides from sysfs alone");
        assert!(g.notes[0].contains("taken from PCI device 0x73ff"));
        let unknown = &r.gpus[1];
        assert_eq!(
            (unknown.gfx.as_deref(), unknown.family),
            (None, Family::Other)
        );
        assert_eq!(
            unknown.gfx_override.as_ref().unwrap().verdict,
            Verdict::Untested
        );
        json_keys(&r.to_json());
    }

    #[test]
    fn rocm_version_from_the_most_specific_library_name() {
        let t = Tree::new("libs");
        t.file("lib/libamdhip64.so.6", "")
            .file("lib/libamdhip64.so.6.1.40093", "")
            .file("lib/libamdhip64.so.5.7.1", "")
            .file("lib/libamdhip64.so.6.x", "")
            .file("lib/libamdhip64.so", "");
        let mut o = machine("nogpu", &[]);
        o.lib_dir = t.0.join("lib");
        let v = rocm_version(&o).unwrap();
        assert_eq!(v.version, "6.1");
        assert!(v.source.ends_with("libamdhip64.so.6.1.40093"));
    }

    #[test]
    fn nothing_readable_still_gives_a_report() {
        let o = Options {
            sysfs: Some(PathBuf::from("/nonexistent/rocm-fix")),
            env: Vec::new(),
            etc: PathBuf::from("/nonexistent/rocm-fix/etc"),
            proc_root: PathBuf::from("/nonexistent/rocm-fix/proc"),
            rocm_root: PathBuf::from("/nonexistent/rocm-fix/rocm"),
            lib_dir: PathBuf::from("/nonexistent/rocm-fix/lib"),
            python: None,
            binaries: Vec::new(),
        };
        let r = diagnose(&o);
        assert!(r.to_text().contains(
            "no AMD GPU found in the KFD topology at /nonexistent/rocm-fix/class/kfd/kfd/topology"
        ));
        assert_eq!(json_keys(&r.to_json())[2..], TOP_KEYS);
    }

    #[test]
    fn fifos_and_oversized_values_cannot_block_or_flood_the_report() {
        let t = Tree::new("hostile");
        t.file("module/amdgpu/parameters/noretry", &"7".repeat(5000))
            .file("class/drm/card0/device/fw_version/mes_fw_version", "0x83\n");
        let fifo = t.0.join("module/amdgpu/parameters/pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo only reads the path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut o = machine("nogpu", &[]);
        o.sysfs = Some(t.0.clone());
        let r = diagnose(&o);
        let params = r.amdgpu_parameters.unwrap();
        assert_eq!(params.len(), 1, "the FIFO is skipped, not read");
        assert_eq!(params[0].1.chars().count(), MAX_VALUE_CHARS + 1);
        assert_eq!(
            r.firmware[0].versions,
            [("mes_fw_version".to_string(), "0x83".to_string())]
        );
        assert_eq!(r.firmware[0].device_id, None);
    }

    fn findings_text(r: &Report) -> String {
        r.findings
            .iter()
            .map(|f| format!("[{}] {}", f.severity.as_str(), f.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_kernel_with_a_known_regression_is_named_with_its_evidence() {
        let t = Tree::new("kernel618");
        t.file("sys/kernel/osrelease", "6.18.3-arch1-1\n");
        let mut o = machine("rx7900xtx_with_override", &[]);
        o.proc_root = t.0.clone();
        let r = diagnose(&o);
        let text = findings_text(&r);
        assert!(
            text.contains("[warning] kernel: kernel 6.18.3-arch1-1 (in 6.18 up to (not including) 7.1) (kernel-618-sdma-rdna3, a hypothesis: not confirmed upstream)")
                && text.contains("Kernel 6.17.9 or 6.12 LTS instead of 6.18.x (RDNA3) (evidence: helped)"),
            "{text}"
        );
        t.file("sys/kernel/osrelease", "6.17.9-arch1-1\n");
        let r = diagnose(&o);
        assert!(
            !findings_text(&r).contains("kernel-618"),
            "{}",
            findings_text(&r)
        );
        assert!(!r
            .known_issues
            .iter()
            .any(|k| k.issue.id == "kernel-618-sdma-rdna3"));
    }

    /// A Strix Halo (gfx1151, PCI 0x1586) with the given MES version.
    fn strix_halo(t: &Tree, mes: &str) -> Options {
        let props = fs::read_to_string(
            Path::new(FIXTURES)
                .join("rx7900xtx_with_override/sys/class/kfd/kfd/topology/nodes/1/properties"),
        )
        .unwrap()
        .replace("gfx_target_version 110000", "gfx_target_version 110501")
        .replace("device_id 29772", "device_id 5510");
        let topo = "sys/class/kfd/kfd/topology/nodes";
        t.file(
            &format!("{topo}/0/properties"),
            &fs::read_to_string(
                Path::new(FIXTURES)
                    .join("rx7900xtx_with_override")
                    .join(topo)
                    .join("0/properties"),
            )
            .unwrap(),
        )
        .file(&format!("{topo}/1/properties"), &props)
        .file(&format!("{topo}/1/gpu_id"), "1234\n")
        .file("sys/class/drm/card0/device/device", "0x1586\n")
        .file("sys/class/drm/card0/device/fw_version/mes_fw_version", mes);
        let mut o = machine("nogpu", &[]);
        o.sysfs = Some(t.0.join("sys"));
        o
    }

    #[test]
    fn mes_0x83_on_strix_halo_is_named_as_the_firmware_layer() {
        let t = Tree::new("mes83");
        let r = diagnose(&strix_halo(&t, "0x00000083\n"));
        let text = findings_text(&r);
        assert!(
            text.contains(
                "firmware: card0: mes_fw_version 0x00000083 on gfx1151 (strix-halo-mes-0x83)"
            ),
            "{text}"
        );
        let t = Tree::new("mes80");
        let r = diagnose(&strix_halo(&t, "0x00000080\n"));
        assert!(
            !findings_text(&r).contains("strix-halo-mes-0x83"),
            "{}",
            findings_text(&r)
        );
        assert!(!r
            .known_issues
            .iter()
            .any(|k| k.issue.id == "strix-halo-mes-0x83"));
    }

    #[test]
    fn the_installed_rocms_and_a_pythons_runtime_and_torch_code() {
        let t = Tree::new("python");
        let site = "venv/lib/python3.11/site-packages";
        // A python that does not run: its site-packages are found around it.
        t.file("venv/bin/python", "")
            .file(&format!("{site}/torch/lib/libamdhip64.so"), "")
            .file(&format!("{site}/_rocm_sdk_core/lib/libamdhip64.so.7"), "")
            .file("etc/hostname", "x\n")
            .file("opt/rocm/core/.keep", "")
            .file("opt/rocm/.info/version", "6.4.1-83\n")
            .file(
                "var/lib/dpkg/status",
                "Package: libamdhip64-5\nStatus: install ok installed\nVersion: 5.2.3-3\n\n\
                 Package: amdrocm-core\nStatus: install ok installed\nVersion: 10.0.0-1\n",
            );
        let hip = t.0.join(site).join("torch/lib/libtorch_hip.so");
        fs::write(
            &hip,
            crate::hipbin::tests::bundle(&[
                "host-x86_64-unknown-linux-gnu-",
                "hipv4-amdgcn-amd-amdhsa--gfx1030",
                "hipv4-amdgcn-amd-amdhsa--gfx1100",
            ]),
        )
        .unwrap();
        let mut o = machine("rx5700xt", &[]);
        o.etc = t.0.join("etc");
        o.rocm_root = t.0.join("opt/rocm");
        o.python = Some(t.0.join("venv/bin/python"));
        let r = diagnose(&o);
        let kinds: Vec<(&str, Option<&str>)> = r
            .rocm_installs
            .iter()
            .map(|i| (i.kind.as_str(), i.version.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("legacy", Some("6.4.1-83")),
                ("therock", None),
                ("debian", Some("5.2.3-3")),
                ("therock", Some("10.0.0-1"))
            ]
        );
        let text = findings_text(&r);
        assert!(
            text.contains(&format!(
                "[error] your torch has no gfx1010 code ({}; it carries gfx1030, gfx1100)",
                hip.display()
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "its HIP runtime is {}/{site}/torch/lib/libamdhip64.so (PyTorch's own copy (torch/lib)); also found: {}/{site}/_rocm_sdk_core/lib/libamdhip64.so.7",
                t.0.display(),
                t.0.display()
            )),
            "{text}"
        );
        let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(j["binaries"][0]["covers"]["gfx1010"], false);
        assert_eq!(j["binaries"][0]["targets"][0], "gfx1030");
        assert_eq!(j["rocm_installs"][3]["kind"], "therock");
        assert!(r.has_problems());
    }

    #[test]
    fn from_system_reads_the_real_places() {
        let o = Options::from_system();
        assert_eq!(o.sysfs, None);
        assert_eq!(o.etc, PathBuf::from("/etc"));
        assert_eq!(o.proc_root, PathBuf::from("/proc"));
        assert_eq!(o.rocm_root, PathBuf::from("/opt/rocm"));
        assert!(o.env.iter().any(|(k, _)| k == "PATH"));
        // Whatever this machine has, the report renders.
        json_keys(&diagnose(&o).to_json());
    }
}
