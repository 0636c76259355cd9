//! Triage of a pasted `rocminfo` output or KFD topology `properties` file:
//! which agents it shows, which real chip is behind each GPU (whatever name
//! an `HSA_OVERRIDE_GFX_VERSION` made it report), and which known issues of
//! the knowledge base concern that system.
//!
//! The real chip comes from rocminfo's "Chip ID" (the PCI device id, which an
//! override never changes) through the PCI id table, else from a properties
//! file's `gfx_target_version`. "SIMDs per CU" is read from the KFD topology
//! too and tells GCN/CDNA (4) from RDNA (2), which exposes cross-generation
//! overrides even without a Chip ID; the wavefront size is not used, because
//! it follows the overridden ISA.

use crate::kernel_log::{self, KernelFault, RocrFault};
use rocm_fix_shared::kb::{self, Severity};
use rocm_fix_shared::pciids;
use rocm_fix_shared::topology::{self, Family};
use serde::Serialize;
use std::fmt;
use std::fmt::Write as _;

/// What kind of text was triaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Rocminfo,
    KfdProperties,
    /// A kernel log with amdgpu page-fault reports, and no agents.
    KernelLog,
}

impl Source {
    /// "rocminfo" or "kfd-properties".
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Rocminfo => "rocminfo",
            Source::KfdProperties => "kfd-properties",
            Source::KernelLog => "kernel-log",
        }
    }
}

/// HSA agent kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    Cpu,
    Gpu,
    Dsp,
    Aie,
}

impl AgentKind {
    /// "cpu", "gpu", "dsp" or "aie".
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentKind::Cpu => "cpu",
            AgentKind::Gpu => "gpu",
            AgentKind::Dsp => "dsp",
            AgentKind::Aie => "aie",
        }
    }

    fn parse(s: &str) -> Option<AgentKind> {
        match s.trim().to_ascii_uppercase().as_str() {
            "CPU" => Some(AgentKind::Cpu),
            "GPU" => Some(AgentKind::Gpu),
            "DSP" => Some(AgentKind::Dsp),
            "AIE" => Some(AgentKind::Aie),
            _ => None,
        }
    }
}

/// One agent of the paste, in paste order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The number the paste gives it ("Agent 3", KFD node 2), if any.
    pub number: Option<u32>,
    pub kind: Option<AgentKind>,
    /// The gfx name the runtime reported (possibly overridden).
    pub reported_gfx: Option<String>,
    /// The gfx name of the hardware, when it can be told.
    pub real_gfx: Option<String>,
    /// PCI device id.
    pub chip_id: Option<u16>,
    pub marketing_name: Option<String>,
    /// Family of the real chip.
    pub family: Option<Family>,
    /// The reported name does not belong to the hardware.
    pub override_suspected: bool,
    /// How `real_gfx` (and the override verdict) were found.
    pub evidence: Vec<String>,
}

/// A knowledge-base issue that concerns the triaged system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub title: String,
    /// Which agents it concerns, and why.
    pub detail: String,
    pub sources: Vec<String>,
}

/// The result of [`triage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub source: Source,
    /// False when a rocminfo paste stops before rocminfo's closing
    /// "*** Done ***" line (later agents may be missing).
    pub complete: bool,
    pub agents: Vec<Agent>,
    pub findings: Vec<Finding>,
    /// The amdgpu page-fault reports of a pasted kernel log (dmesg,
    /// journalctl -k), decoded; empty when the paste has none.
    pub kernel_faults: Vec<KernelFault>,
    /// ROCr's "Memory access fault by GPU node-N" lines of the paste.
    pub rocr_faults: Vec<RocrFault>,
}

/// Why nothing could be triaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriageError {
    /// Nothing but whitespace.
    Empty,
    /// Neither rocminfo agents nor KFD properties were found.
    NoAgents,
}

impl fmt::Display for TriageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TriageError::Empty => write!(
                f,
                "the input is empty: paste the output of `rocminfo`, or a KFD topology \
                 properties file (/sys/class/kfd/kfd/topology/nodes/N/properties)"
            ),
            TriageError::NoAgents => write!(
                f,
                "nothing to triage: the input is neither `rocminfo` output (\"Agent N\" \
                 sections with Name:, Device Type: and Chip ID: lines), nor a KFD topology \
                 properties file (\"key value\" lines such as gfx_target_version 100302), \
                 nor a kernel log with amdgpu page-fault reports (`sudo dmesg` or \
                 `journalctl -k` lines such as \"amdgpu: [gfxhub] page fault (src_id:0 ...)\")"
            ),
        }
    }
}

impl std::error::Error for TriageError {}

/// Triage a pasted `rocminfo` output or KFD `properties` file.
pub fn triage(text: &str) -> Result<Report, TriageError> {
    if text.trim().is_empty() {
        return Err(TriageError::Empty);
    }
    let log = kernel_log::parse(text);
    let (source, complete, raw) = match parse_rocminfo(text) {
        Some((raw, complete)) => (Source::Rocminfo, complete, raw),
        None => match parse_properties(text) {
            Some(raw) => (Source::KfdProperties, true, raw),
            None if !log.faults.is_empty() => (Source::KernelLog, true, Vec::new()),
            None => return Err(TriageError::NoAgents),
        },
    };
    let agents: Vec<Agent> = raw.iter().map(|r| identify(r, source)).collect();
    let findings = findings(&agents, source);
    Ok(Report {
        source,
        complete,
        agents,
        findings,
        kernel_faults: log.faults,
        rocr_faults: log.rocr_faults,
    })
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// What the paste says about one agent.
#[derive(Debug, Default)]
struct RawAgent {
    number: Option<u32>,
    name: Option<String>,
    marketing_name: Option<String>,
    vendor: Option<String>,
    uuid: Option<String>,
    device_type: Option<String>,
    /// Chip ID as printed; `Err` keeps an unreadable or out-of-range value.
    chip_id: Option<Result<u16, String>>,
    simds_per_cu: Option<u64>,
    // KFD properties only.
    gfx_target_version: Option<u64>,
    simd_count: Option<u64>,
    cpu_cores: Option<u64>,
    vendor_id: Option<u64>,
}

impl RawAgent {
    /// Enough to be an agent rather than a stray "Name:" line.
    fn looks_like_agent(&self) -> bool {
        self.number.is_some()
            || self.device_type.is_some()
            || self.chip_id.is_some()
            || self.uuid.is_some()
            || self
                .name
                .as_deref()
                .and_then(pciids::normalize_gfx_name)
                .is_some()
    }
}

/// "Agent 3" (rocminfo pads these lines with spaces).
fn agent_header(line: &str) -> Option<u32> {
    let rest = line.trim().strip_prefix("Agent")?;
    let n = rest.trim();
    if rest.len() == n.len() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The leading decimal number of "32(0x20)", "4", "1024(0x400) KB".
fn leading_number(v: &str) -> Option<u64> {
    let digits: &str = v
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or("");
    digits.parse().ok()
}

/// rocminfo's "29695(0x73ff)"; older or hand-edited pastes may give only one
/// of the two forms. The hex form wins when both are present.
fn parse_chip_id(v: &str) -> Result<u16, String> {
    let v = v.trim();
    let hex = v
        .find("0x")
        .or_else(|| v.find("0X"))
        .and_then(|i| v.get(i + 2..))
        .map(|h| {
            h.split(|c: char| !c.is_ascii_hexdigit())
                .next()
                .unwrap_or("")
        });
    let n = match hex {
        Some(h) if !h.is_empty() => u64::from_str_radix(h, 16).ok(),
        _ => leading_number(v),
    };
    match n {
        Some(n) => u16::try_from(n).map_err(|_| v.to_string()),
        None => Err(v.to_string()),
    }
}

/// Keys that only occur inside an agent section.
const AGENT_KEYS: [&str; 7] = [
    "Uuid",
    "Marketing Name",
    "Vendor Name",
    "Device Type",
    "Chip ID",
    "SIMDs per CU",
    "Compute Unit",
];

/// The agents of a rocminfo paste, and whether it reached "*** Done ***";
/// `None` if there are none.
fn parse_rocminfo(text: &str) -> Option<(Vec<RawAgent>, bool)> {
    let mut agents: Vec<RawAgent> = Vec::new();
    let mut cur: Option<RawAgent> = None;
    let mut done = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(n) = agent_header(line) {
            agents.extend(cur.take());
            cur = Some(RawAgent {
                number: Some(n),
                ..RawAgent::default()
            });
            continue;
        }
        if line.trim().starts_with("*** Done ***") {
            done = true;
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "Name" {
            // ISA names ("amdgcn-amd-amdhsa--gfx1030") sit deeper inside an
            // agent than the agent's own name.
            let indent = line.len() - line.trim_start().len();
            if value.starts_with("amdgcn-") || indent >= 4 {
                continue;
            }
            // A second agent name without an "Agent N" line: a paste that
            // lost its headers, so this starts the next agent.
            if cur.as_ref().is_none_or(|a| a.name.is_some()) {
                agents.extend(cur.take());
                cur = Some(RawAgent::default());
            }
            if let Some(a) = cur.as_mut() {
                a.name = (!value.is_empty()).then(|| value.to_string());
            }
            continue;
        }
        if !AGENT_KEYS.contains(&key) {
            continue;
        }
        // A paste that starts in the middle of an agent.
        let a = cur.get_or_insert_with(RawAgent::default);
        let text = (!value.is_empty()).then(|| value.to_string());
        match key {
            "Uuid" => a.uuid = text,
            "Marketing Name" => a.marketing_name = text,
            "Vendor Name" => a.vendor = text,
            "Device Type" => a.device_type = text,
            "Chip ID" => a.chip_id = text.map(|t| parse_chip_id(&t)),
            "SIMDs per CU" => a.simds_per_cu = leading_number(value),
            _ => {}
        }
    }
    agents.extend(cur);
    agents.retain(RawAgent::looks_like_agent);
    (!agents.is_empty()).then_some((agents, done))
}

/// KFD topology property keys that identify a properties file.
const KFD_KEYS: [&str; 8] = [
    "cpu_cores_count",
    "simd_count",
    "gfx_target_version",
    "vendor_id",
    "device_id",
    "simd_per_cu",
    "wave_front_size",
    "drm_render_minor",
];

/// The nodes of one or several concatenated properties files; `None` if the
/// text has no KFD property lines.
fn parse_properties(text: &str) -> Option<Vec<RawAgent>> {
    let mut nodes: Vec<RawAgent> = Vec::new();
    let mut cur: Option<(RawAgent, Vec<&str>)> = None;
    let mut recognised = 0usize;
    for line in text.lines() {
        let mut line = line.trim();
        // `grep . nodes/*/properties` prefixes "path:".
        if let Some((path, rest)) = line.split_once(':') {
            if path.ends_with("properties") {
                line = rest.trim();
            }
        }
        let mut words = line.split_ascii_whitespace();
        let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let Some(key) = KFD_KEYS.iter().find(|k| **k == key).copied() else {
            continue;
        };
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        recognised += 1;
        // A key seen again starts the next node's file.
        if cur.as_ref().is_some_and(|(_, seen)| seen.contains(&key)) {
            nodes.extend(cur.take().map(|(n, _)| n));
        }
        let (node, seen) = cur.get_or_insert_with(|| (RawAgent::default(), Vec::new()));
        seen.push(key);
        match key {
            "cpu_cores_count" => node.cpu_cores = Some(value),
            "simd_count" => node.simd_count = Some(value),
            "gfx_target_version" => node.gfx_target_version = Some(value),
            "vendor_id" => node.vendor_id = Some(value),
            "device_id" => node.chip_id = Some(u16::try_from(value).map_err(|_| value.to_string())),
            "simd_per_cu" => node.simds_per_cu = Some(value),
            _ => {}
        }
    }
    nodes.extend(cur.map(|(n, _)| n));
    // One stray "simd_count 4" in a random text is not a properties file.
    if recognised < 2 {
        return None;
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        n.number = u32::try_from(i).ok();
    }
    Some(nodes)
}

// ---------------------------------------------------------------------------
// Identification
// ---------------------------------------------------------------------------

fn identify(raw: &RawAgent, source: Source) -> Agent {
    let kind = agent_kind(raw, source);
    let mut agent = Agent {
        number: raw.number,
        kind,
        reported_gfx: None,
        real_gfx: None,
        chip_id: None,
        marketing_name: raw.marketing_name.clone(),
        family: None,
        override_suspected: false,
        evidence: Vec::new(),
    };
    if kind != Some(AgentKind::Gpu) {
        return agent;
    }
    let ev = &mut agent.evidence;
    agent.reported_gfx = raw.name.as_deref().and_then(pciids::normalize_gfx_name);
    let mut real: Option<u32> = None;
    // The table's generation: gfx803 alone cannot tell Polaris (GCN4) from Fiji.
    let mut real_family: Option<Family> = None;
    match &raw.chip_id {
        Some(Ok(id)) if *id != 0 => {
            agent.chip_id = Some(*id);
            let what = match source {
                Source::Rocminfo | Source::KernelLog => "Chip ID",
                Source::KfdProperties => "device_id",
            };
            match pciids::lookup(*id) {
                Some(c) => {
                    real = Some(c.gfx_target_version);
                    real_family = Some(c.family());
                    ev.push(format!(
                        "{what} 0x{id:04x} is {} ({}, {}) in the PCI id table; \
                         HSA_OVERRIDE_GFX_VERSION never changes it",
                        c.codename,
                        c.gfx(),
                        pciids::family_label(c.family())
                    ));
                    if agent.marketing_name.is_none() {
                        agent.marketing_name = c.marketing_name.map(String::from);
                    }
                }
                None => ev.push(format!(
                    "{what} 0x{id:04x} is not in the PCI id table (not an AMD GPU rocm-fix knows)"
                )),
            }
        }
        Some(Err(v)) => ev.push(format!("Chip ID '{v}' is not a PCI device id")),
        _ => ev.push(match source {
            Source::Rocminfo | Source::KernelLog => {
                "no Chip ID in the paste (cut off before it?)".to_string()
            }
            Source::KfdProperties => "no device_id in the properties".to_string(),
        }),
    }
    if let Some(v) = raw.gfx_target_version.filter(|v| *v != 0) {
        match u32::try_from(v) {
            Ok(v) if real.is_none() => {
                real = Some(v);
                ev.push(format!(
                    "gfx_target_version {v} is {} (sysfs; never overridden)",
                    topology::gfx_name(v)
                ));
            }
            Ok(v) if real != Some(v) => ev.push(format!(
                "gfx_target_version {v} ({}) disagrees with the PCI id table",
                topology::gfx_name(v)
            )),
            _ => {}
        }
    }
    let reported = agent
        .reported_gfx
        .as_deref()
        .and_then(pciids::parse_gfx_name);
    // SIMDs per CU comes from the KFD topology and survives an override:
    // 4 on every GCN (gfx6 to gfx9, Southern Islands to Vega) and CDNA chip,
    // 2 on RDNA (gfx10 and later). It tells the two apart, never one GCN
    // generation from another (an RX 580, gfx803, has 4 like a Vega).
    let simd_says_gfx9 = match raw.simds_per_cu {
        Some(4) => Some(true),
        Some(2) => Some(false),
        _ => None,
    };
    let mut simd_contradicts = false;
    if let Some(gfx9) = simd_says_gfx9 {
        let arch = if gfx9 {
            "GCN/CDNA (gfx6 to gfx9)"
        } else {
            "RDNA (gfx10 or later)"
        };
        let n = if gfx9 { 4 } else { 2 };
        match (real, reported) {
            (Some(r), _) if (r / 10000 < 10) != gfx9 => ev.push(format!(
                "SIMDs per CU {n} points to {arch}, which does not fit the PCI id"
            )),
            (Some(_), _) => {}
            (None, Some(p)) if (p / 10000 < 10) != gfx9 => {
                simd_contradicts = true;
                ev.push(format!(
                    "SIMDs per CU {n} means a {arch} chip, but the reported name {} is not one",
                    topology::gfx_name(p)
                ));
            }
            (None, _) => ev.push(format!(
                "SIMDs per CU {n} fits {arch}, but that does not single out one chip"
            )),
        }
    }
    if let Some(r) = real {
        agent.real_gfx = Some(topology::gfx_name(r));
        agent.family = Some(real_family.unwrap_or_else(|| topology::family(r)));
    }
    agent.override_suspected = match (real, reported) {
        (Some(r), Some(p)) => r != p,
        (None, Some(_)) => simd_contradicts,
        _ => false,
    };
    match (real, reported) {
        (Some(r), Some(p)) if r != p => ev.push(format!(
            "the runtime reports {} but the hardware is {}: HSA_OVERRIDE_GFX_VERSION is in effect",
            topology::gfx_name(p),
            topology::gfx_name(r)
        )),
        (Some(_), Some(_)) => ev.push("the reported name matches the hardware".to_string()),
        _ => {}
    }
    agent
}

fn agent_kind(raw: &RawAgent, source: Source) -> Option<AgentKind> {
    if source == Source::KfdProperties {
        return match (raw.simd_count, raw.cpu_cores) {
            (Some(s), _) if s > 0 => Some(AgentKind::Gpu),
            (Some(0), _) | (_, Some(_)) => Some(AgentKind::Cpu),
            _ => None,
        };
    }
    if let Some(k) = raw.device_type.as_deref().and_then(AgentKind::parse) {
        return Some(k);
    }
    // Cut-off pastes: fall back on the lines before "Device Type".
    if let Some(u) = raw.uuid.as_deref() {
        let prefix = u.split('-').next().unwrap_or("");
        if let Some(k) = AgentKind::parse(prefix) {
            return Some(k);
        }
    }
    if raw.vendor.as_deref() == Some("CPU") {
        return Some(AgentKind::Cpu);
    }
    let name = raw.name.as_deref().unwrap_or("");
    if pciids::normalize_gfx_name(name).is_some() {
        Some(AgentKind::Gpu)
    } else if name.starts_with("aie") {
        Some(AgentKind::Aie)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------

fn label(a: &Agent, index: usize, source: Source) -> String {
    match (a.number, source) {
        (Some(n), Source::Rocminfo | Source::KernelLog) => format!("Agent {n}"),
        (Some(n), Source::KfdProperties) => format!("node {n}"),
        (None, _) => format!("agent #{} of the paste", index + 1),
    }
}

fn chip_text(a: &Agent) -> String {
    match (&a.real_gfx, a.family) {
        (Some(g), Some(f)) => format!("{g} ({})", pciids::family_label(f)),
        (Some(g), None) => g.clone(),
        _ => "an unknown chip".to_string(),
    }
}

fn findings(agents: &[Agent], source: Source) -> Vec<Finding> {
    let native: Vec<String> = kb::issue("override-leftover-supported")
        .map(|i| i.chips)
        .unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |id: &str, detail: String| out.push((id.to_string(), detail));
    let mut present: Vec<(String, String)> = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        if a.kind != Some(AgentKind::Gpu) {
            continue;
        }
        let who = label(a, i, source);
        let real = a.real_gfx.as_deref().and_then(pciids::parse_gfx_name);
        let reported = a.reported_gfx.as_deref().and_then(pciids::parse_gfx_name);
        if a.override_suspected {
            match (real, reported) {
                (Some(r), Some(p)) => {
                    let said = format!(
                        "{who}: the hardware is {} but reports {} ({})",
                        chip_text(a),
                        topology::gfx_name(p),
                        pciids::family_label(topology::family(p))
                    );
                    let fr = a.family.unwrap_or_else(|| topology::family(r));
                    let fp = topology::family(p);
                    if fr == Family::Rdna1 && fp == Family::Rdna2 {
                        add("override-rdna1-as-rdna2", said.clone());
                    } else if r / 10000 != p / 10000 || fr != fp {
                        add("override-cross-family", said.clone());
                    } else if fr == Family::Rdna2 && p == 100300 {
                        add("override-rdna2-to-gfx1030", said.clone());
                    } else if r == 110003 && (p == 110000 || p == 110001) {
                        add("override-gfx1103-as-gfx1100", said.clone());
                    }
                    if native.iter().any(|n| pciids::parse_gfx_name(n) == Some(r)) {
                        add("override-leftover-supported", said);
                    }
                }
                (None, Some(p)) => add(
                    "override-cross-family",
                    format!(
                        "{who}: reports {} but its SIMDs per CU belong to another GPU generation",
                        topology::gfx_name(p)
                    ),
                ),
                _ => {}
            }
        }
        // The chip to look issues up for: the real one, or the reported one
        // when nothing suggests an override.
        match (&a.real_gfx, &a.reported_gfx) {
            (Some(g), _) => present.push((g.clone(), format!("{who} ({g})"))),
            (None, Some(g)) if !a.override_suspected => present.push((
                g.clone(),
                format!("{who} ({g}, reported name; Chip ID unknown)"),
            )),
            _ => {}
        }
    }
    for issue in kb::issues().unwrap_or_default() {
        if !issue.triage || issue.requires_override {
            continue;
        }
        let hits: Vec<&str> = present
            .iter()
            .filter(|(g, _)| issue.chips.iter().any(|e| kb::chip_matches(e, g)))
            .map(|(_, who)| who.as_str())
            .collect();
        if !hits.is_empty() {
            out.push((issue.id.clone(), format!("{} present", hits.join(", "))));
        }
    }
    // One finding per issue; details of several agents are joined.
    let mut merged: Vec<Finding> = Vec::new();
    for (id, detail) in out {
        if let Some(f) = merged.iter_mut().find(|f| f.id == id) {
            f.detail.push_str("; ");
            f.detail.push_str(&detail);
            continue;
        }
        let Some(issue) = kb::issue(&id) else {
            continue;
        };
        merged.push(Finding {
            id,
            severity: issue.severity,
            title: issue.title,
            detail,
            sources: issue.sources,
        });
    }
    // Most severe first; the knowledge-base order otherwise.
    merged.sort_by_key(|f| std::cmp::Reverse(f.severity));
    merged
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// An agent as `--json` prints it.
#[derive(Serialize)]
struct AgentJson<'a> {
    number: Option<u32>,
    kind: Option<&'static str>,
    reported_gfx: Option<&'a str>,
    real_gfx: Option<&'a str>,
    chip_id: Option<String>,
    marketing_name: Option<&'a str>,
    family: Option<&'static str>,
    override_suspected: bool,
    evidence: &'a [String],
}

/// A finding as `--json` prints it.
#[derive(Serialize)]
struct FindingJson<'a> {
    id: &'a str,
    severity: &'static str,
    title: &'a str,
    detail: &'a str,
    sources: &'a [String],
}

/// The report as `--json` prints it.
#[derive(Serialize)]
struct ReportJson<'a> {
    source: &'static str,
    complete: bool,
    agents: Vec<AgentJson<'a>>,
    findings: Vec<FindingJson<'a>>,
    kernel_faults: &'a [KernelFault],
    rocr_faults: &'a [RocrFault],
}

impl Report {
    /// The report as JSON: `source`, `complete`, `agents` (in paste order),
    /// `findings`, `kernel_faults` (one object per amdgpu page-fault report
    /// of a pasted kernel log) and `rocr_faults`, with `null` where a value
    /// is unknown.
    pub fn to_json(&self) -> String {
        let view = ReportJson {
            source: self.source.as_str(),
            complete: self.complete,
            agents: self
                .agents
                .iter()
                .map(|a| AgentJson {
                    number: a.number,
                    kind: a.kind.map(|k| k.as_str()),
                    reported_gfx: a.reported_gfx.as_deref(),
                    real_gfx: a.real_gfx.as_deref(),
                    chip_id: a.chip_id.map(|c| format!("0x{c:04x}")),
                    marketing_name: a.marketing_name.as_deref(),
                    family: a.family.map(pciids::family_label),
                    override_suspected: a.override_suspected,
                    evidence: &a.evidence,
                })
                .collect(),
            findings: self
                .findings
                .iter()
                .map(|f| FindingJson {
                    id: &f.id,
                    severity: f.severity.as_str(),
                    title: &f.title,
                    detail: &f.detail,
                    sources: &f.sources,
                })
                .collect(),
            kernel_faults: &self.kernel_faults,
            rocr_faults: &self.rocr_faults,
        };
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_string_pretty(&view).unwrap_or_default() + "\n"
    }

    /// A readable summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.source != Source::KernelLog {
            self.agents_text(&mut out);
        }
        if !self.kernel_faults.is_empty() || !self.rocr_faults.is_empty() {
            self.kernel_text(&mut out);
        }
        out
    }

    /// The kernel log's page-fault reports, decoded.
    fn kernel_text(&self, out: &mut String) {
        let n = self.kernel_faults.len();
        let _ = writeln!(
            out,
            "Kernel log: {n} amdgpu page-fault report{}",
            if n == 1 { "" } else { "s" }
        );
        for (i, f) in self.kernel_faults.iter().enumerate() {
            let _ = writeln!(out, "  {}. {}", i + 1, f.headline());
            let fields = [
                ("MORE_FAULTS", f.more_faults),
                ("WALKER_ERROR", f.walker_error),
                ("PERMISSION_FAULTS", f.permission_faults),
                ("MAPPING_ERROR", f.mapping_error),
                ("RW", f.rw),
            ];
            let known: Vec<String> = fields
                .iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
                .collect();
            if !known.is_empty() {
                let _ = writeln!(out, "      fields: {}", known.join(", "));
            }
            for m in &f.meaning {
                let _ = writeln!(out, "      {m}");
            }
        }
        for r in &self.rocr_faults {
            let _ = writeln!(out, "  ROCr: {}", r.line);
        }
    }

    /// The agents and the knowledge-base findings.
    fn agents_text(&self, out: &mut String) {
        let gpus = self
            .agents
            .iter()
            .filter(|a| a.kind == Some(AgentKind::Gpu))
            .count();
        let _ = writeln!(
            out,
            "{} with {} agent{} ({gpus} GPU{}){}",
            match self.source {
                Source::Rocminfo => "rocminfo output",
                Source::KfdProperties => "KFD topology properties",
                Source::KernelLog => "kernel log",
            },
            self.agents.len(),
            if self.agents.len() == 1 { "" } else { "s" },
            if gpus == 1 { "" } else { "s" },
            if self.complete {
                ""
            } else {
                "; the paste stops before rocminfo's \"*** Done ***\", later agents may be missing"
            }
        );
        for (i, a) in self.agents.iter().enumerate() {
            let who = label(a, i, self.source);
            let kind = a.kind.map_or("?", |k| k.as_str());
            let name = a.marketing_name.as_deref().unwrap_or("");
            if a.kind != Some(AgentKind::Gpu) {
                let _ = writeln!(out, "  {who}: {kind} {name}");
                continue;
            }
            let chip = match (&a.real_gfx, a.family) {
                (Some(g), Some(f)) => format!("{g} ({})", pciids::family_label(f)),
                _ => "real chip unknown".to_string(),
            };
            let reported = a
                .reported_gfx
                .as_deref()
                .map_or(String::new(), |r| format!("reports {r}; hardware "));
            let _ = writeln!(
                out,
                "  {who}: gpu {name}: {reported}{chip}{}",
                if a.override_suspected {
                    " -- HSA_OVERRIDE_GFX_VERSION suspected"
                } else {
                    ""
                }
            );
            for e in &a.evidence {
                let _ = writeln!(out, "      {e}");
            }
        }
        if self.findings.is_empty() {
            let _ = writeln!(out, "No known issue applies.");
        } else {
            let _ = writeln!(out, "Known issues:");
            for f in &self.findings {
                let _ = writeln!(out, "  [{}] {}: {}", f.severity.as_str(), f.id, f.title);
                let _ = writeln!(out, "      {}", f.detail);
                for s in &f.sources {
                    let _ = writeln!(out, "      {s}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERRIDE: &str = include_str!("../../tests/fixtures/triage/rx6600m_cezanne_override.txt");
    const RDNA1: &str = include_str!("../../tests/fixtures/triage/rx5700xt_rdna1.txt");
    const NEW_FORMAT: &str =
        include_str!("../../tests/fixtures/triage/rx6700xt_dual_cpu_new_format.txt");
    const OLD_FORMAT: &str =
        include_str!("../../tests/fixtures/triage/vega64_rocm33_old_format.txt");
    const PARTIAL: &str = include_str!("../../tests/fixtures/triage/w6600_partial_from_agent2.txt");
    const TRUNCATED: &str =
        include_str!("../../tests/fixtures/triage/rx5700xt_agent5_truncated.txt");

    /// (kind, reported, real, override) per agent.
    fn summary(r: &Report) -> Vec<(&'static str, Option<&str>, Option<&str>, bool)> {
        r.agents
            .iter()
            .map(|a| {
                (
                    a.kind.map_or("?", |k| k.as_str()),
                    a.reported_gfx.as_deref(),
                    a.real_gfx.as_deref(),
                    a.override_suspected,
                )
            })
            .collect()
    }

    fn finding_ids(r: &Report) -> Vec<&str> {
        r.findings.iter().map(|f| f.id.as_str()).collect()
    }

    #[test]
    fn override_fixture_finds_both_overridden_gpus() {
        let r = triage(OVERRIDE).unwrap();
        assert_eq!(r.source, Source::Rocminfo);
        assert!(r.complete);
        assert_eq!(
            summary(&r),
            [
                ("cpu", None, None, false),
                ("gpu", Some("gfx1030"), Some("gfx1032"), true),
                ("gpu", Some("gfx1030"), Some("gfx90c"), true),
            ]
        );
        assert_eq!(r.agents[1].chip_id, Some(0x73ff));
        assert_eq!(r.agents[2].chip_id, Some(0x1638));
        assert_eq!(r.agents[2].family, Some(Family::Gcn5));
        let ids = finding_ids(&r);
        // The Cezanne iGPU (GCN5) run as gfx1030 crosses generations.
        assert_eq!(ids[0], "override-cross-family");
        assert!(
            r.findings[0].detail.contains("Agent 3"),
            "{:?}",
            r.findings[0]
        );
        assert!(ids.contains(&"override-rdna2-to-gfx1030"));
        assert!(ids.contains(&"seed-coherent-memory"));
        assert!(ids.contains(&"overread-miopen-fwdgen"));
    }

    #[test]
    fn rdna1_fixture_is_native_gfx1010() {
        let r = triage(RDNA1).unwrap();
        assert_eq!(
            summary(&r),
            [
                ("cpu", None, None, false),
                ("gpu", Some("gfx1010"), Some("gfx1010"), false)
            ]
        );
        assert_eq!(r.agents[1].family, Some(Family::Rdna1));
        let ids = finding_ids(&r);
        assert!(ids.contains(&"seed-coherent-memory"));
        assert!(ids.contains(&"rdna1-pytorch-builds"));
        assert!(!ids.iter().any(|i| i.starts_with("override-")), "{ids:?}");
    }

    #[test]
    fn new_format_fixture_with_two_cpu_agents() {
        let r = triage(NEW_FORMAT).unwrap();
        assert_eq!(
            summary(&r),
            [
                ("cpu", None, None, false),
                ("cpu", None, None, false),
                ("gpu", Some("gfx1031"), Some("gfx1031"), false)
            ]
        );
        assert_eq!(r.agents[2].number, Some(3));
        assert_eq!(
            r.agents[2].marketing_name.as_deref(),
            Some("AMD Radeon RX 6700 XT")
        );
    }

    #[test]
    fn old_format_fixture_vega() {
        let r = triage(OLD_FORMAT).unwrap();
        assert_eq!(
            summary(&r),
            [
                ("cpu", None, None, false),
                ("cpu", None, None, false),
                ("gpu", Some("gfx900"), Some("gfx900"), false)
            ]
        );
        assert_eq!(r.agents[2].family, Some(Family::Gcn5));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn partial_fixture_starting_at_agent_2() {
        let r = triage(PARTIAL).unwrap();
        assert!(!r.complete);
        assert_eq!(
            summary(&r),
            [("gpu", Some("gfx1032"), Some("gfx1032"), false)]
        );
        assert_eq!(r.agents[0].number, Some(2));
    }

    #[test]
    fn truncated_fixture_reports_the_half_agent() {
        let r = triage(TRUNCATED).unwrap();
        assert!(!r.complete);
        assert_eq!(
            summary(&r),
            [("gpu", Some("gfx1010"), Some("gfx1010"), false)]
        );
        let a = &r.agents[0];
        assert_eq!(a.number, Some(5));
        assert_eq!(a.chip_id, Some(0x731f));
        assert_eq!(
            a.marketing_name.as_deref(),
            Some("Navi 10 [Radeon RX 5600 OEM/5600 XT / 5700/5700 XT]")
        );
        assert!(r.to_text().contains("later agents may be missing"));
    }

    #[test]
    fn fixtures_match_their_expected_json() {
        for (text, expected) in [
            (
                OVERRIDE,
                include_str!("../../tests/fixtures/triage/rx6600m_cezanne_override.expected.json"),
            ),
            (
                RDNA1,
                include_str!("../../tests/fixtures/triage/rx5700xt_rdna1.expected.json"),
            ),
            (
                NEW_FORMAT,
                include_str!(
                    "../../tests/fixtures/triage/rx6700xt_dual_cpu_new_format.expected.json"
                ),
            ),
            (
                OLD_FORMAT,
                include_str!("../../tests/fixtures/triage/vega64_rocm33_old_format.expected.json"),
            ),
            (
                PARTIAL,
                include_str!("../../tests/fixtures/triage/w6600_partial_from_agent2.expected.json"),
            ),
            (
                TRUNCATED,
                include_str!("../../tests/fixtures/triage/rx5700xt_agent5_truncated.expected.json"),
            ),
        ] {
            assert_eq!(triage(text).unwrap().to_json(), expected);
        }
    }

    #[test]
    fn leftover_override_on_an_mi210_is_an_error() {
        // The shape of the #5238 report: an MI210 that reports gfx1030.
        let text = "*******\nAgent 2\n*******\n  Name:                    gfx1030\n  \
                    Marketing Name:          AMD Instinct MI210\n  Device Type:             GPU\n  \
                    Chip ID:                 29711(0x740f)\n  SIMDs per CU:            4\n";
        let r = triage(text).unwrap();
        assert_eq!(
            summary(&r),
            [("gpu", Some("gfx1030"), Some("gfx90a"), true)]
        );
        let ids = finding_ids(&r);
        assert_eq!(
            &ids[..2],
            ["override-cross-family", "override-leftover-supported"]
        );
        assert!(r
            .findings
            .iter()
            .take(2)
            .all(|f| f.severity == Severity::Error));
    }

    #[test]
    fn simd_count_exposes_a_cross_generation_override_without_chip_id() {
        let text = "Agent 2\n  Name: gfx1030\n  Device Type: GPU\n  SIMDs per CU: 4\n";
        let r = triage(text).unwrap();
        let a = &r.agents[0];
        assert_eq!(a.real_gfx, None);
        assert!(a.override_suspected);
        assert_eq!(finding_ids(&r), ["override-cross-family"]);
        // Consistent SIMDs do not single out a chip: unknown, not suspected.
        let r =
            triage("Agent 2\n  Name: gfx1031\n  Device Type: GPU\n  SIMDs per CU: 2\n").unwrap();
        assert_eq!(summary(&r), [("gpu", Some("gfx1031"), None, false)]);
        assert!(r.agents[0]
            .evidence
            .iter()
            .any(|e| e.contains("does not single out")));
    }

    #[test]
    fn gcn_cards_before_vega_are_not_called_overridden() {
        // The shape of an RX 580 paste: Polaris 10, gfx803, 4 SIMDs per CU
        // like every GCN chip, no override.
        let text = "Agent 2\n  Name: gfx803\n  Marketing Name: Radeon RX 580 Series\n  \
                    Device Type: GPU\n  Chip ID: 26591(0x67df)\n  SIMDs per CU: 4\n";
        let r = triage(text).unwrap();
        assert!(!r.agents[0].override_suspected, "{:?}", r.agents[0]);
        assert_eq!(r.agents[0].real_gfx.as_deref(), Some("gfx803"));
        assert_eq!(r.agents[0].family, Some(Family::Gcn4));
        assert!(
            !finding_ids(&r).iter().any(|i| i.starts_with("override-")),
            "{:?}",
            r.findings
        );
        // Every GCN and CDNA chip of the table, reporting its own name with
        // its 4 SIMDs per CU, and every RDNA chip with 2: never an override.
        for c in pciids::all() {
            let simds = if c.gfx_target_version < 100000 { 4 } else { 2 };
            let text = format!(
                "Agent 2\n  Name: {}\n  Device Type: GPU\n  Chip ID: {}(0x{:04x})\n  \
                 SIMDs per CU: {simds}\n",
                c.gfx(),
                c.device_id,
                c.device_id
            );
            let r = triage(&text).unwrap();
            let a = &r.agents[0];
            assert!(!a.override_suspected, "{:#06x}: {a:?}", c.device_id);
            assert_eq!(a.family, Some(c.family()), "{:#06x}", c.device_id);
            assert!(
                !finding_ids(&r).iter().any(|i| i.starts_with("override-")),
                "{:#06x}: {:?}",
                c.device_id,
                r.findings
            );
        }
        // A Polaris card made to report a Vega name is an override across
        // generations (GCN4 hardware, GCN5 name).
        let r = triage("Agent 2\n  Name: gfx900\n  Device Type: GPU\n  Chip ID: 26591(0x67df)\n")
            .unwrap();
        assert!(r.agents[0].override_suspected);
        assert_eq!(finding_ids(&r)[0], "override-cross-family");
        assert!(
            r.findings[0].detail.contains("gfx803 (GCN4)"),
            "{:?}",
            r.findings
        );
        // An RDNA name on a 4-SIMD chip still crosses generations.
        let r =
            triage("Agent 2\n  Name: gfx1030\n  Device Type: GPU\n  SIMDs per CU: 4\n").unwrap();
        assert!(r.agents[0].override_suspected);
    }

    #[test]
    fn a_pasted_kernel_log_is_decoded() {
        let text = include_str!(
            "../../tests/fixtures/kernel_log/rocmlibs6166_gfx1201_no_amdgpu_prefix.txt"
        );
        let r = triage(text).unwrap();
        assert_eq!(r.source, Source::KernelLog);
        assert!(r.agents.is_empty());
        assert_eq!(r.kernel_faults.len(), 3);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let f = &v["kernel_faults"][0];
        assert_eq!(f["hub"], "gfxhub");
        assert_eq!(f["page"], "0x00007f06e865a000");
        assert_eq!(f["status"], "0x0084115b");
        assert_eq!(f["client"], "TCP");
        assert_eq!(f["client_id"], 8);
        assert_eq!(f["rw"], 1);
        assert_eq!(f["retry"], serde_json::Value::Null);
        // A rocminfo paste followed by the kernel log: both are read.
        let both = format!(
            "{}\n{text}",
            include_str!("../../tests/fixtures/triage/rx5700xt_rdna1.txt")
        );
        let r = triage(&both).unwrap();
        assert_eq!((r.source, r.kernel_faults.len()), (Source::Rocminfo, 3));
        assert!(r
            .to_text()
            .contains("Kernel log: 3 amdgpu page-fault reports"));
    }

    #[test]
    fn kfd_properties_files() {
        let text = "cpu_cores_count 16\nsimd_count 0\ngfx_target_version 0\nvendor_id 0\n\
                    device_id 0\ncpu_cores_count 0\nsimd_count 56\ngfx_target_version 100302\n\
                    vendor_id 4098\ndevice_id 29695\nsimd_per_cu 2\nwave_front_size 32\n";
        let r = triage(text).unwrap();
        assert_eq!(r.source, Source::KfdProperties);
        assert_eq!(
            summary(&r),
            [
                ("cpu", None, None, false),
                ("gpu", None, Some("gfx1032"), false)
            ]
        );
        assert_eq!(r.agents[1].chip_id, Some(0x73ff));
        assert_eq!(r.agents[1].number, Some(1));
        assert!(r.to_json().contains("\"source\": \"kfd-properties\""));
        assert!(finding_ids(&r).contains(&"seed-coherent-memory"));
        // Without a device id, gfx_target_version tells the chip.
        let r = triage("simd_count 80\ngfx_target_version 100100\n").unwrap();
        assert_eq!(summary(&r), [("gpu", None, Some("gfx1010"), false)]);
        // grep-style "path:key value" lines.
        let r = triage(
            "/sys/class/kfd/kfd/topology/nodes/1/properties:simd_count 80\n\
             /sys/class/kfd/kfd/topology/nodes/1/properties:device_id 29631\n",
        )
        .unwrap();
        assert_eq!(r.agents[0].real_gfx.as_deref(), Some("gfx1030"));
    }

    #[test]
    fn garbage_is_an_error_with_a_clear_message() {
        assert_eq!(triage(""), Err(TriageError::Empty));
        assert_eq!(triage(" \n\t\n"), Err(TriageError::Empty));
        for junk in [
            "hello world",
            "Name: Alice\n",
            "Agent Smith\n",
            "simd_count 4\n",
            "Traceback (most recent call last):\n  File \"x.py\", line 1\n",
            "\u{0}\u{1}\u{ffff}",
        ] {
            let e = triage(junk).unwrap_err();
            assert_eq!(e, TriageError::NoAgents, "{junk:?}");
        }
        assert!(TriageError::NoAgents
            .to_string()
            .contains("nothing to triage"));
        assert!(TriageError::Empty.to_string().contains("rocminfo"));
    }

    #[test]
    fn odd_values_do_not_panic() {
        for text in [
            "Agent 1\n  Device Type: GPU\n  Chip ID: 99999999999999999999(0xffffffffffffffffff)\n",
            "Agent 1\n  Device Type: GPU\n  Chip ID: banana\n  Name: gfx\n",
            "Agent 99999999999\n  Name: gfx1030\n",
            "Agent 4294967296\n  Name: gfx1030\n  Chip ID: 0x\n",
            "  Name: gfx1030\n  Name: gfx1031\n  Chip ID: 29663\n",
            "  Marketing Name:\n  Device Type: ???\n",
            "simd_count 18446744073709551616\ndevice_id 70000\ngfx_target_version 99999999999\n",
        ] {
            let _ = triage(text).map(|r| (r.to_json(), r.to_text()));
        }
        let r = triage("Agent 1\n  Device Type: GPU\n  Chip ID: 70000(0x11170)\n").unwrap();
        assert_eq!(r.agents[0].chip_id, None);
        assert!(r.agents[0].evidence[0].contains("is not a PCI device id"));
        // Headerless names: each Name starts the next agent; the decimal
        // Chip ID alone is enough.
        let r = triage("  Name: gfx1030\n  Name: gfx1030\n  Chip ID: 29663\n").unwrap();
        assert_eq!(r.agents.len(), 2);
        assert_eq!(r.agents[1].real_gfx.as_deref(), Some("gfx1031"));
        assert!(r.agents[1].override_suspected);
    }

    #[test]
    fn text_summary_reads_well() {
        let t = triage(OVERRIDE).unwrap().to_text();
        assert!(
            t.starts_with("rocminfo output with 3 agents (2 GPUs)\n"),
            "{t}"
        );
        assert!(
            t.contains(
                "Agent 2: gpu AMD Radeon RX 6600M: reports gfx1030; hardware gfx1032 (RDNA2) \
                 -- HSA_OVERRIDE_GFX_VERSION suspected"
            ),
            "{t}"
        );
        assert!(t.contains("[error] override-cross-family"), "{t}");
        assert!(
            t.contains("https://github.com/ROCm/rocm-systems/pull/5686"),
            "{t}"
        );
        let t = triage(OLD_FORMAT).unwrap().to_text();
        assert!(t.contains("No known issue applies."), "{t}");
    }
}
