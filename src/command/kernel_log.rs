//! The amdgpu driver's GPU page-fault report, read back from a kernel log
//! (`dmesg`, `journalctl -k`, or a paste of either), and decoded.
//!
//! What the driver prints, per fault (Linux 4.x to 6.18; the wording moved
//! between releases, the parser takes every form below):
//!
//! ```text
//! [gfxhub] page fault (src_id:0 ring:24 vmid:8 pasid:32770, for process python pid 1796 thread python pid 1796)
//! [gfxhub0] no-retry page fault (src_id:0 ring:24 vmid:3 pasid:32769)     (gmc_v9, 5.x/6.x)
//!  for process pt_main_thread pid 12924 thread pt_main_thread pid 12924)  (on its own line, 6.x)
//!  Process python pid 91762 thread python pid 91762                      (6.8 and later)
//!   in page starting at address 0x00007f2a5318b000 from client 10
//!   in page starting at address 0x0000ae8570611000 from IH client 0x1b (UTCL2)
//! GCVM_L2_PROTECTION_FAULT_STATUS:0x00301031     (VM_ on GC 9, MMVM_ on the mmhub)
//!     Faulty UTCL2 client ID: TCP (0x8)
//!     MORE_FAULTS: 0x1   WALKER_ERROR: 0x0   PERMISSION_FAULTS: 0x3   MAPPING_ERROR: 0x0   RW: 0x0
//! [mmhub] VMC page fault (src_id:0 ring:153 vm_id:0 pas_id:0)            (4.x)
//!   at page 0x00005b7199707000 from 18                                    (4.x)
//! ```
//!
//! Sources (facts only): the print formats are those of
//! `gmc_v9_0_process_interrupt`, `gmc_v10_0_process_interrupt` and the
//! `*_print_l2_protection_fault_status` functions of
//! `drivers/gpu/drm/amd/amdgpu/` (gmc_v10_0.c, gfxhub_v2_0.c, gfxhub_v2_1.c,
//! gfxhub_v3_0.c, gfxhub_v11_5_0.c, gfxhub_v12_0.c) in github.com/torvalds/linux
//! (gmc_v10_0.c read at commit 01eee24fceb9a64b2dc3b3ccb7b7c6852aa7a403),
//! and the real pastes of `tests/fixtures/kernel_log/SOURCES.md`.
//!
//! Each line may carry a prefix: a `dmesg` timestamp (`[ 4778.915423]`,
//! `dmesg -H`'s `[Dez26 08:58]` and `[  +0,000007]`), a `journalctl` one
//! (`Jan 09 18:55:45 host kernel: `, any month spelling), the device
//! (`amdgpu 0000:0b:00.0: `, then `amdgpu: ` on most kernels) or FreeBSD's
//! `drmn0: `. Lines of several GPUs may interleave (each is followed by its
//! device); pastes may start or stop in the middle of a report.

use serde::Serialize;

/// The layout of `*_L2_PROTECTION_FAULT_STATUS`. Bits 0–8 are the same in
/// every generation; the client id and the RW bit moved.
///
/// - GC 10 and 11 (`GCVM_`): CID bits 9–15, RW bit 16, VMID bits 20–23
///   (`gc_10_1_0_sh_mask.h`, `gc_11_0_0_sh_mask.h`);
/// - GC 9 (`VM_`), GC 12 and the mmhubs: CID bits 9–17, RW bit 18, VMID
///   bits 20–23 (the `MMVM_L2_PROTECTION_FAULT_STATUS__*_MASK` values of
///   the amdgpu mmhub headers: CID 0x0003FE00, RW 0x00040000).
///
/// Checked against every pasted fixture that prints both the value and its
/// fields: e.g. GC 12 `0x0084115B` is TCP (8) with RW 1, GC 11 `0x00C01A30`
/// is SDMA0 (13) with VMID 12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// CID 7 bits at 9, RW at 16.
    Narrow,
    /// CID 9 bits at 9, RW at 18.
    Wide,
}

/// The fields of a status value: (more_faults, walker_error,
/// permission_faults, mapping_error, cid, rw). CID and RW are `None` when
/// the layout is unknown and the two layouts disagree on this value.
fn decode_status(status: u32, layout: Option<Layout>) -> [Option<u32>; 6] {
    let more = status & 1;
    let walker = (status >> 1) & 0x7;
    let perm = (status >> 4) & 0xf;
    let mapping = (status >> 8) & 1;
    let narrow = ((status >> 9) & 0x7f, (status >> 16) & 1);
    let wide = ((status >> 9) & 0x1ff, (status >> 18) & 1);
    let (cid, rw) = match layout {
        Some(Layout::Narrow) => (Some(narrow.0), Some(narrow.1)),
        Some(Layout::Wide) => (Some(wide.0), Some(wide.1)),
        // Bits 16–19 clear: both layouts read the same CID and RW (0).
        None if status & 0xf_0000 == 0 => (Some(narrow.0), Some(0)),
        None => (None, None),
    };
    [Some(more), Some(walker), Some(perm), Some(mapping), cid, rw]
}

/// `gfxhub_client_ids[]` of gmc_v9_0.c (GC 9: Vega, Raven, Renoir, CDNA).
const GFX9_CLIENTS: [&str; 13] = [
    "CB",
    "DB",
    "IA",
    "WD",
    "CPF",
    "CPC",
    "CPG",
    "RLC",
    "TCP",
    "SQC (inst)",
    "SQC (data)",
    "SQG",
    "PA",
];

/// `gfxhub_client_ids[]` of gfxhub_v2_0.c, gfxhub_v2_1.c, gfxhub_v3_0.c and
/// gfxhub_v11_5_0.c (GC 10, 10.3, 11, 11.5; GC 12 kernels print the same
/// names, e.g. "SDMA0 (0xd)" in the getsolus#7986 paste).
const GFX10_CLIENTS: [&str; 18] = [
    "CB/DB",
    "Reserved",
    "GE1",
    "GE2",
    "CPF",
    "CPC",
    "CPG",
    "RLC",
    "TCP",
    "SQC (inst)",
    "SQC (data)",
    "SQG",
    "Reserved",
    "SDMA0",
    "SDMA1",
    "GCR",
    "SDMA2",
    "SDMA3",
];

/// What a UTCL2 client's fault usually means for a ROCm user.
pub fn client_meaning(name: &str) -> &'static str {
    let n = name.trim();
    if n == "TCP" {
        "a shader's vector memory load or store (the texture cache of a compute unit): a GPU kernel touched memory that is not mapped, most often reading past the end of its buffer or using freed memory"
    } else if n.starts_with("SQC (inst)") {
        "an instruction fetch: the kernel's code is not mapped (freed code object, or code built for another chip)"
    } else if n.starts_with("SQC") || n == "SQG" {
        "a shader's scalar load (kernel arguments, constants, descriptors): a bad pointer passed to the kernel"
    } else if n == "CPC" || n == "CPF" || n == "CPG" {
        "the command processor reading a queue, packet or signal: the runtime's or driver's own memory, not the application's buffers (with pasid 0, the driver/firmware itself)"
    } else if n.starts_with("SDMA") {
        "a copy engine (hipMemcpy and friends): a copy from or to memory that is freed or not mapped"
    } else if n == "RLC" {
        "the RLC firmware: a driver or firmware problem"
    } else if n == "GCR" {
        "a cache flush or invalidate request"
    } else if ["CB", "DB", "CB/DB", "IA", "WD", "PA", "GE1", "GE2"].contains(&n) {
        "the graphics pipeline (a desktop, game or video), not a compute workload"
    } else {
        "a client rocm-fix has no description for"
    }
}

/// One page-fault report of the kernel log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelFault {
    /// The PCI address of the GPU ("0000:0b:00.0"), when the line gives one.
    pub device: Option<String>,
    /// The timestamp as printed (dmesg or journal), if any.
    pub time: Option<String>,
    /// "gfxhub", "gfxhub0", "mmhub0", …, as printed.
    pub hub: Option<String>,
    pub src_id: Option<u32>,
    pub ring: Option<u32>,
    pub vmid: Option<u32>,
    pub pasid: Option<u32>,
    pub process: Option<String>,
    pub pid: Option<u32>,
    pub thread: Option<String>,
    pub thread_pid: Option<u32>,
    /// The faulting page, as a hex string.
    pub page: Option<String>,
    /// `retry` or `no-retry`; `null` when the kernel does not say.
    pub retry: Option<bool>,
    /// The interrupt client as printed ("0x1b (UTCL2)", "10").
    pub ih_client: Option<String>,
    /// The status register's name as printed.
    pub status_register: Option<String>,
    /// Its value, as a hex string.
    pub status: Option<String>,
    /// The UTCL2 client by name.
    pub client: Option<String>,
    pub client_id: Option<u32>,
    pub more_faults: Option<u32>,
    pub walker_error: Option<u32>,
    pub permission_faults: Option<u32>,
    pub mapping_error: Option<u32>,
    pub rw: Option<u32>,
    /// What this report usually means, in words.
    pub meaning: Vec<String>,
    #[serde(skip)]
    page_value: Option<u64>,
    #[serde(skip)]
    status_value: Option<u32>,
    /// The gmc generation named by a "gmc_vN_0_process_interrupt" line.
    #[serde(skip)]
    gmc: Option<u32>,
    /// The paste line the report starts on (reports come out in that order).
    #[serde(skip)]
    line: usize,
}

impl KernelFault {
    /// The faulting page's address.
    pub fn page_address(&self) -> Option<u64> {
        self.page_value
    }

    fn is_empty(&self) -> bool {
        self.hub.is_none() && self.page_value.is_none() && self.status_value.is_none()
    }
}

/// A ROCr "Memory access fault by GPU node-N … on address 0x…" line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RocrFault {
    pub line: String,
    pub node: Option<u32>,
    pub address: Option<String>,
    pub reason: Option<String>,
}

/// What [`parse`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelLog {
    pub faults: Vec<KernelFault>,
    pub rocr_faults: Vec<RocrFault>,
    /// "N callbacks suppressed" lines: reports the kernel did not print.
    pub suppressed: u64,
    /// The lines that mention amdgpu, kfd or a GPU fault (for the bundle).
    pub amdgpu_lines: Vec<String>,
}

/// Strips a dmesg or journalctl prefix; returns (timestamp, rest).
fn strip_time(line: &str) -> (Option<String>, &str) {
    let mut time = None;
    let mut rest = line;
    // journalctl: "<date words> <host> kernel: rest"
    if let Some(i) = rest.find(" kernel: ") {
        let head = &rest[..i];
        // The host is the last word; the time is what comes before.
        let t = head.rsplit_once(' ').map_or(head, |(t, _)| t).trim();
        if !t.is_empty() {
            time = Some(t.to_string());
        }
        rest = &rest[i + " kernel: ".len()..];
    }
    // dmesg: "[ 4778.915423] ", "[Dez26 08:58] ", "[  +0,000007] "
    let trimmed = rest.trim_start();
    if let Some(inner) = trimmed.strip_prefix('[') {
        if let Some(end) = inner.find(']') {
            let stamp = inner[..end].trim();
            let looks_like_time = stamp.chars().any(|c| c.is_ascii_digit())
                && !stamp.contains("hub")
                && !stamp.contains(' ') | stamp.contains(':') | stamp.starts_with('+');
            if looks_like_time && !stamp.starts_with("drm") {
                time = Some(stamp.to_string());
                rest = &inner[end + 1..];
            }
        }
    }
    (time, rest)
}

/// Strips "amdgpu 0000:0b:00.0: " (and "amdgpu: " after it) or "drmn0: ";
/// returns (device, rest).
fn strip_device(line: &str) -> (Option<String>, &str) {
    let mut rest = line.trim_start();
    let mut device = None;
    if let Some(r) = rest.strip_prefix("amdgpu ") {
        if let Some((dev, after)) = r.split_once(": ") {
            if dev.len() >= 7
                && dev
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                device = Some(dev.to_string());
                rest = after;
            }
        } else if let Some(dev) = r.strip_suffix(':') {
            // A line cut right after the device.
            return (Some(dev.to_string()), "");
        }
    } else if let Some(r) = rest.strip_prefix("drmn") {
        if let Some((n, after)) = r.split_once(": ") {
            if n.bytes().all(|b| b.is_ascii_digit()) {
                device = Some(format!("drmn{n}"));
                rest = after;
            }
        }
    }
    let rest = rest.strip_prefix("amdgpu: ").unwrap_or(rest);
    (device, rest)
}

fn hex(v: &str) -> Option<u64> {
    let v = v.trim();
    let v = v
        .strip_prefix("0x")
        .or_else(|| v.strip_prefix("0X"))
        .unwrap_or(v);
    let digits: &str = v
        .split(|c: char| !c.is_ascii_hexdigit())
        .next()
        .unwrap_or("");
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn number(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.starts_with("0x") {
        return hex(v).and_then(|n| u32::try_from(n).ok());
    }
    let digits: &str = v.split(|c: char| !c.is_ascii_digit()).next().unwrap_or("");
    digits.parse().ok()
}

/// "process NAME pid N thread NAME pid M" (NAME may be empty: the kernel's
/// own context prints "for process  pid 0 thread  pid 0").
fn parse_process(text: &str, f: &mut KernelFault) {
    let text = text.trim().trim_end_matches(')');
    let Some((proc_part, thread_part)) = text.split_once(" thread ") else {
        if let Some((name, pid)) = text.rsplit_once(" pid ") {
            f.process = Some(name.trim().to_string());
            f.pid = number(pid);
        }
        return;
    };
    if let Some((name, pid)) = proc_part.rsplit_once("pid ") {
        f.process = Some(name.trim().to_string());
        f.pid = number(pid);
    }
    if let Some((name, pid)) = thread_part.rsplit_once("pid ") {
        f.thread = Some(name.trim().to_string());
        f.thread_pid = number(pid);
    }
}

/// "[gfxhub0] no-retry page fault (src_id:0 ring:24 vmid:3 pasid:32769, for process …)"
fn parse_header(body: &str) -> Option<KernelFault> {
    let body = body.trim();
    let inner = body.strip_prefix('[')?;
    let (hub, rest) = inner.split_once(']')?;
    if !hub.contains("hub") {
        return None;
    }
    let rest = rest.trim_start();
    let at = rest.find("page fault")?;
    let kind = rest[..at].trim();
    let mut f = KernelFault {
        hub: Some(hub.to_string()),
        retry: match kind {
            "retry" => Some(true),
            "no-retry" => Some(false),
            _ => None,
        },
        ..KernelFault::default()
    };
    let args = rest[at..].split_once('(').map_or("", |(_, a)| a);
    let (ids, process) = match args.split_once(", ") {
        Some((ids, p)) => (ids, Some(p)),
        None => (args.trim_end_matches(')'), None),
    };
    for pair in ids.split_whitespace() {
        let Some((k, v)) = pair.split_once(':') else {
            continue;
        };
        let v = number(v);
        match k {
            "src_id" => f.src_id = v,
            "ring" => f.ring = v,
            "vmid" | "vm_id" => f.vmid = v,
            "pasid" | "pas_id" => f.pasid = v,
            _ => {}
        }
    }
    if let Some(p) = process {
        let p = p.trim();
        parse_process(p.strip_prefix("for process").unwrap_or(p), &mut f);
    }
    Some(f)
}

/// Picks one decoded field of a report.
type FieldOf = fn(&mut KernelFault) -> &mut Option<u32>;

/// Parses a kernel log (or a paste of one).
pub fn parse(text: &str) -> KernelLog {
    let mut log = KernelLog::default();
    // The open report of each device (None: lines without a device).
    let mut open: Vec<(Option<String>, KernelFault)> = Vec::new();
    let mut gmc: Option<u32> = None;
    let close = |log: &mut KernelLog, f: KernelFault| {
        if !f.is_empty() {
            log.faults.push(f);
        }
    };
    for (line_no, raw) in text.lines().enumerate() {
        let raw = raw.trim_end_matches('\r');
        if let Some(i) = raw.find("Memory access fault by GPU") {
            log.amdgpu_lines.push(raw.to_string());
            log.rocr_faults.push(rocr_fault(&raw[i..]));
            continue;
        }
        let (time, rest) = strip_time(raw);
        let (device, body) = strip_device(rest);
        let body = body.trim();
        if let Some((func, _)) = body.split_once(" callbacks suppressed") {
            if let Some((f, count)) = func.rsplit_once(": ") {
                log.suppressed += number(count).unwrap_or(0) as u64;
                // "gmc_v11_0_process_interrupt" names the GC generation.
                if let Some(v) = f.strip_prefix("gmc_v").and_then(number) {
                    gmc = Some(v);
                }
                log.amdgpu_lines.push(raw.to_string());
            }
            continue;
        }
        let lower = raw.to_ascii_lowercase();
        if device.is_some() || lower.contains("amdgpu") || lower.contains("kfd") {
            log.amdgpu_lines.push(raw.to_string());
        }
        let slot = match open.iter().position(|(d, _)| *d == device) {
            Some(i) => i,
            None => {
                open.push((device.clone(), KernelFault::default()));
                open.len() - 1
            }
        };
        if let Some(mut f) = parse_header(body) {
            f.device = device.clone();
            f.time = time;
            f.gmc = gmc;
            f.line = line_no;
            let old = std::mem::replace(&mut open[slot].1, f);
            close(&mut log, old);
            continue;
        }
        let cur = &mut open[slot].1;
        // Lines that belong to a report; a paste may start in the middle of
        // one, so a field arriving before any header opens a report.
        let start_if = |cur: &mut KernelFault, taken: bool, log: &mut KernelLog| {
            if taken {
                let old = std::mem::take(cur);
                close(log, old);
            }
            if cur.is_empty() && cur.device.is_none() {
                cur.device = device.clone();
                cur.gmc = gmc;
                cur.line = line_no;
                if cur.time.is_none() {
                    cur.time = time.clone();
                }
            }
        };
        if let Some(p) = body
            .strip_prefix("for process ")
            .or_else(|| body.strip_prefix("Process "))
            .or_else(|| body.strip_prefix("in process "))
        {
            start_if(cur, cur.process.is_some(), &mut log);
            parse_process(p, cur);
        } else if let Some(p) = body
            .strip_prefix("in page starting at address ")
            .or_else(|| body.strip_prefix("at page "))
        {
            start_if(cur, cur.page_value.is_some(), &mut log);
            let (addr, from) = p.split_once(" from ").unwrap_or((p, ""));
            cur.page_value = hex(addr);
            cur.page = cur.page_value.map(|a| format!("0x{a:016x}"));
            let from = from.trim();
            let from = from.strip_prefix("IH client ").unwrap_or(from);
            let from = from.strip_prefix("client ").unwrap_or(from);
            cur.ih_client = (!from.is_empty()).then(|| from.to_string());
        } else if let Some((reg, value)) = body.split_once("_L2_PROTECTION_FAULT_STATUS:") {
            start_if(cur, cur.status_value.is_some(), &mut log);
            let reg = format!("{}_L2_PROTECTION_FAULT_STATUS", reg.trim());
            cur.status_value = hex(value).and_then(|v| u32::try_from(v).ok());
            cur.status = cur.status_value.map(|v| format!("0x{v:08x}"));
            cur.status_register = Some(reg);
        } else if let Some(c) = body.strip_prefix("Faulty UTCL2 client ID:") {
            start_if(
                cur,
                cur.client_id.is_some() || cur.client.is_some(),
                &mut log,
            );
            let c = c.trim();
            // "TCP (0x8)", or a bare "0x8" / "8" on older kernels.
            match c.rsplit_once(" (") {
                Some((name, id)) => {
                    cur.client = Some(name.trim().to_string());
                    cur.client_id = number(id.trim_end_matches(')'));
                }
                None => cur.client_id = number(c),
            }
        } else {
            let fields: [(&str, FieldOf); 5] = [
                ("MORE_FAULTS:", |f| &mut f.more_faults),
                ("WALKER_ERROR:", |f| &mut f.walker_error),
                ("PERMISSION_FAULTS:", |f| &mut f.permission_faults),
                ("MAPPING_ERROR:", |f| &mut f.mapping_error),
                ("RW:", |f| &mut f.rw),
            ];
            for (key, field) in fields {
                if let Some(v) = body.strip_prefix(key) {
                    let taken = field(cur).is_some();
                    start_if(cur, taken, &mut log);
                    *field(cur) = number(v);
                    break;
                }
            }
        }
    }
    for (_, f) in open {
        close(&mut log, f);
    }
    log.faults.sort_by_key(|f| f.line);
    for f in &mut log.faults {
        complete(f);
    }
    log
}

fn rocr_fault(line: &str) -> RocrFault {
    let node = line.split_once("node-").and_then(|(_, r)| number(r));
    let address = line
        .split_once(" on address ")
        .and_then(|(_, r)| hex(r.trim_end_matches('.')))
        .map(|a| format!("0x{a:x}"));
    let reason = line
        .split_once("Reason: ")
        .map(|(_, r)| r.trim().trim_end_matches('.').to_string());
    RocrFault {
        line: line.trim().to_string(),
        node,
        address,
        reason,
    }
}

/// Fills what the log left out from the status value, names the client,
/// and says what the report means.
fn complete(f: &mut KernelFault) {
    let reg = f.status_register.as_deref().unwrap_or("");
    let gc9 = reg == "VM_L2_PROTECTION_FAULT_STATUS";
    let mmhub = reg.starts_with("MMVM") || f.hub.as_deref().is_some_and(|h| h.starts_with("mm"));
    let layout = if gc9 || mmhub || f.gmc == Some(12) {
        Some(Layout::Wide)
    } else if reg.starts_with("GCVM") && matches!(f.gmc, Some(10) | Some(11)) {
        Some(Layout::Narrow)
    } else {
        None
    };
    if let Some(s) = f.status_value {
        let [more, walker, perm, mapping, cid, rw] = decode_status(s, layout);
        f.more_faults = f.more_faults.or(more);
        f.walker_error = f.walker_error.or(walker);
        f.permission_faults = f.permission_faults.or(perm);
        f.mapping_error = f.mapping_error.or(mapping);
        f.client_id = f.client_id.or(cid);
        f.rw = f.rw.or(rw);
    }
    if f.client.is_none() && !mmhub {
        if let Some(id) = f.client_id {
            let table: &[&str] = if gc9 {
                &GFX9_CLIENTS
            } else if reg.starts_with("GCVM") {
                &GFX10_CLIENTS
            } else {
                &[]
            };
            f.client = table.get(id as usize).map(|s| s.to_string());
        }
    }
    let mut m = Vec::new();
    if f.pasid == Some(0) || (f.vmid == Some(0) && f.pasid.is_none()) {
        m.push("pasid 0 / vmid 0: the fault is in the kernel driver's own context, not in a user process: a driver or firmware problem, not the application's memory".to_string());
    }
    if let Some(c) = &f.client {
        m.push(format!("client {c}: {}", client_meaning(c)));
    }
    if f.mapping_error == Some(1) {
        m.push("MAPPING_ERROR: no valid page is mapped at that address".to_string());
    }
    if let Some(p) = f.permission_faults.filter(|p| *p != 0) {
        m.push(format!(
            "PERMISSION_FAULTS 0x{p:x}: the page-table entry lacked a permission the access needed"
        ));
    }
    if let Some(w) = f.walker_error.filter(|w| *w != 0) {
        m.push(format!(
            "WALKER_ERROR 0x{w:x}: the page-table walk itself failed (a broken page table: driver side)"
        ));
    }
    match f.rw {
        Some(0) => m.push("RW 0: a read".to_string()),
        Some(1) => m.push("RW 1: a write".to_string()),
        _ => {}
    }
    if f.more_faults == Some(1) {
        m.push("MORE_FAULTS: further faults followed this one".to_string());
    }
    match f.retry {
        Some(true) => m.push("a retry fault: the GPU can wait for the page (XNACK/SVM); the fault handler could not provide it".to_string()),
        Some(false) => m.push("a no-retry fault: the GPU cannot wait for the page; the queue is stopped".to_string()),
        None => {}
    }
    f.meaning = m;
}

impl KernelFault {
    /// One line saying who faulted where.
    pub fn headline(&self) -> String {
        let opt = |v: &Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
        let mut s = format!(
            "[{}]{} page fault, vmid {} pasid {}",
            self.hub.as_deref().unwrap_or("?"),
            match self.retry {
                Some(true) => " retry",
                Some(false) => " no-retry",
                None => "",
            },
            opt(&self.vmid),
            opt(&self.pasid)
        );
        if let Some(p) = &self.process {
            let p = if p.is_empty() { "(none)" } else { p };
            s.push_str(&format!(", process {p} pid {}", opt(&self.pid)));
        }
        if let Some(p) = &self.page {
            s.push_str(&format!(", page {p}"));
        }
        if let Some(st) = &self.status {
            s.push_str(&format!(", status {st}"));
        }
        if let Some(c) = &self.client {
            s.push_str(&format!(", client {c}"));
        } else if let Some(id) = self.client_id {
            s.push_str(&format!(", client id {id}"));
        }
        if let Some(d) = &self.device {
            s.push_str(&format!(" (GPU {d})"));
        }
        s
    }
}

/// A fault of rocm-fix's journal that a kernel report matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalMatch {
    /// Index into the kernel faults.
    pub kernel_fault: usize,
    /// The journal line's `address`.
    pub address: String,
    /// How they relate ("same page", "inside the allocation", …).
    pub relation: String,
    /// The journal line, as written.
    pub record: serde_json::Value,
}

/// Matches kernel page-fault reports to rocm-fix journal records (JSON
/// lines) by address: the same 4 KiB page as the recorded fault, or a page
/// inside (or in the padding of) the allocation the record names.
pub fn match_journal(faults: &[KernelFault], journal: &str) -> Vec<JournalMatch> {
    let mut out = Vec::new();
    for line in journal.lines() {
        let Ok(rec) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if rec.get("event").and_then(|e| e.as_str()) != Some("gpu-memory-fault") {
            continue;
        }
        let field =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).and_then(hex);
        let Some(addr) = field(&rec, "address") else {
            continue;
        };
        let alloc = rec.get("allocation");
        let range = alloc.and_then(|a| {
            let base = field(a, "base")?;
            let size = a.get("size")?.as_u64()?;
            let pad = a.get("padding").and_then(|p| p.as_u64()).unwrap_or(0);
            Some((base, base.saturating_add(size).saturating_add(pad)))
        });
        for (i, f) in faults.iter().enumerate() {
            let Some(page) = f.page_value else {
                continue;
            };
            let relation = if page == addr & !0xfff {
                "the same page as the fault rocm-fix recorded"
            } else if range.is_some_and(|(lo, hi)| page + 0xfff >= lo && page < hi) {
                "a page of the allocation (or its padding) rocm-fix recorded"
            } else {
                continue;
            };
            out.push(JournalMatch {
                kernel_fault: i,
                address: format!("0x{addr:x}"),
                relation: relation.to_string(),
                record: rec.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = format!(
            "{}/tests/fixtures/kernel_log/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn status_layouts_agree_with_what_the_kernel_printed() {
        // GC 12 (rocm-libraries#6166): TCP, RW 1, at bit 18.
        let [more, walker, perm, map, cid, rw] = decode_status(0x0084115B, Some(Layout::Wide));
        assert_eq!(
            (more, walker, perm, map, cid, rw),
            (Some(1), Some(5), Some(5), Some(1), Some(8), Some(1))
        );
        // GC 11 (ROCm#2205): SDMA0.
        assert_eq!(decode_status(0x00C01A30, Some(Layout::Narrow))[4], Some(13));
        // GC 10.3: CPC, walker 1, mapping 1; bits 16-19 clear, so the layout
        // does not matter.
        assert_eq!(
            decode_status(0x00000B32, None),
            [Some(0), Some(1), Some(3), Some(1), Some(5), Some(0)]
        );
        // Bits 16-19 set and no layout known: CID and RW stay unknown.
        assert_eq!(decode_status(0x0084115B, None)[4], None);
    }

    #[test]
    fn journalctl_paste_cut_short_gfx1100() {
        let log = parse(&fixture("rocm5051_gfx1100_journalctl_truncated.txt"));
        assert_eq!(log.faults.len(), 1);
        let f = &log.faults[0];
        assert_eq!(f.hub.as_deref(), Some("gfxhub"));
        assert_eq!((f.vmid, f.pasid), (Some(8), Some(32792)));
        assert_eq!((f.process.as_deref(), f.pid), (Some("python"), Some(91762)));
        assert_eq!(f.page.as_deref(), Some("0x00007f2a5318b000"));
        assert_eq!(f.retry, None);
        assert_eq!(f.status, None);
        assert_eq!(f.time.as_deref(), Some("Jan 09 18:55:45"));
        assert_eq!(f.device.as_deref(), Some("0000:0b:00.0"));
        assert_eq!(log.suppressed, 632);
    }

    #[test]
    fn gfx9_no_retry_with_the_process_on_its_own_line() {
        let log = parse(&fixture("amdgpu172_gfx9_noretry_split_process.txt"));
        assert_eq!(log.faults.len(), 2);
        let f = &log.faults[0];
        assert_eq!(f.hub.as_deref(), Some("gfxhub0"));
        assert_eq!(f.retry, Some(false));
        assert_eq!(f.process.as_deref(), Some("pt_main_thread"));
        assert_eq!(f.pid, Some(12924));
        assert_eq!(f.status.as_deref(), Some("0x00301031"));
        assert_eq!(
            f.status_register.as_deref(),
            Some("VM_L2_PROTECTION_FAULT_STATUS")
        );
        assert_eq!((f.client.as_deref(), f.client_id), (Some("TCP"), Some(8)));
        assert_eq!(
            (
                f.more_faults,
                f.walker_error,
                f.permission_faults,
                f.mapping_error,
                f.rw
            ),
            (Some(1), Some(0), Some(3), Some(0), Some(0))
        );
        assert!(f.meaning.iter().any(|m| m.contains("reading past the end")));
        // The second report is cut off after its client line: the fields it
        // did not print come from its status value.
        let g = &log.faults[1];
        assert_eq!(g.page.as_deref(), Some("0x0000ae8570612000"));
        assert_eq!((g.client.as_deref(), g.client_id), (Some("CB"), Some(0)));
        assert_eq!(g.more_faults, Some(0));
    }

    #[test]
    fn two_gpus_interleaved_are_kept_apart() {
        let log = parse(&fixture("amdgpu150_two_gpus_interleaved.txt"));
        let devs: Vec<_> = log.faults.iter().map(|f| f.device.as_deref()).collect();
        // In the order each report starts in the paste.
        assert_eq!(devs, [Some("0000:8b:00.0"), Some("0000:88:00.0")]);
        let a = &log.faults[1];
        assert_eq!(
            (a.vmid, a.pasid, a.pid),
            (Some(8), Some(32772), Some(856757))
        );
        assert_eq!(a.status.as_deref(), Some("0x00801030"));
        assert_eq!(a.permission_faults, Some(3));
        // The paste ends before its MAPPING_ERROR/RW lines on 88 — decoded.
        assert_eq!((a.mapping_error, a.rw), (Some(0), Some(0)));
        // 8b starts mid-report: no header, but page and status.
        let b = &log.faults[0];
        assert_eq!(b.hub, None);
        assert_eq!(b.page.as_deref(), Some("0x0000000000000000"));
        assert_eq!(b.client.as_deref(), Some("TCP"));
    }

    #[test]
    fn gfx12_without_the_amdgpu_prefix() {
        let log = parse(&fixture("rocmlibs6166_gfx1201_no_amdgpu_prefix.txt"));
        assert_eq!(log.faults.len(), 3);
        let f = &log.faults[0];
        assert_eq!((f.vmid, f.pasid, f.ring), (Some(8), Some(46), Some(173)));
        assert_eq!(f.process.as_deref(), Some("rocblas-test"));
        assert_eq!(f.status.as_deref(), Some("0x0084115b"));
        assert_eq!(
            (f.client_id, f.rw, f.walker_error),
            (Some(8), Some(1), Some(5))
        );
        // Later reports of the burst print no status (the register latches
        // only the first).
        assert_eq!(log.faults[1].status, None);
        assert_eq!(log.faults[2].process, None);
    }

    #[test]
    fn kernel_context_faults_blame_the_driver() {
        let log = parse(&fixture("rocm2642_journalctl_kernel_context_cpc.txt"));
        let f = &log.faults[0];
        assert_eq!(
            (f.pasid, f.process.as_deref(), f.pid),
            (Some(0), Some(""), Some(0))
        );
        assert_eq!(f.time.as_deref(), Some("févr. 04 21:11:02"));
        assert_eq!(f.client.as_deref(), Some("CPC"));
        assert_eq!((f.walker_error, f.mapping_error), (Some(1), Some(1)));
        assert!(
            f.meaning[0].contains("driver or firmware"),
            "{:?}",
            f.meaning
        );
    }

    #[test]
    fn older_and_odd_formats() {
        let log = parse(&fixture("kmsdrm76_linux4_vmc_page_fault.txt"));
        let f = &log.faults[0];
        assert_eq!(f.hub.as_deref(), Some("mmhub"));
        assert_eq!((f.vmid, f.pasid), (Some(0), Some(0)));
        assert_eq!(f.page.as_deref(), Some("0x00005b7199707000"));
        assert_eq!(f.ih_client.as_deref(), Some("18"));
        assert_eq!(f.status.as_deref(), Some("0x00000000"));

        let log = parse(&fixture("rocm2804_gfx10_inline_process_truncated.txt"));
        assert_eq!(log.faults.len(), 1);
        let f = &log.faults[0];
        assert_eq!((f.process.as_deref(), f.pid), (Some("python"), Some(1796)));
        assert_eq!(f.ih_client.as_deref(), Some("0x1b (UTCL2)"));

        let log = parse(&fixture("amdgpu204_strix_halo_no_timestamps_truncated.txt"));
        assert_eq!(log.faults.len(), 1);
        assert_eq!(log.faults[0].ring, Some(169));
        assert_eq!(log.faults[0].time, None);

        let log = parse(&fixture("rocm2766_dmesg_human_timestamps.txt"));
        assert_eq!(log.faults.len(), 1);
        assert_eq!(log.faults[0].time.as_deref(), Some("Dez26 08:58"));
        assert_eq!(log.faults[0].page.as_deref(), Some("0x0000000000b91000"));

        let log = parse(&fixture("nixpkgs207109_gfx90c_retry_starts_midway.txt"));
        assert_eq!(log.faults.len(), 2);
        assert_eq!(log.faults[1].retry, Some(true));
        assert_eq!(log.faults[1].vmid, Some(8));
    }

    #[test]
    fn rocr_lines_and_garbage() {
        let log = parse(
            "Memory access fault by GPU node-1 (Agent handle: 0x55f8b54eec30) on address 0x7f2a53193000. Reason: Page not present or supervisor privilege.\n",
        );
        assert!(log.faults.is_empty());
        assert_eq!(log.rocr_faults[0].node, Some(1));
        assert_eq!(
            log.rocr_faults[0].address.as_deref(),
            Some("0x7f2a53193000")
        );
        for junk in [
            "",
            "hello",
            "[x] y",
            "RW: 0x1\n",
            "[gfxhub] page fault (",
            "amdgpu 0000:0b:00.0: amdgpu: ring gfx uses VM inv eng 0 on hub 0",
        ] {
            let log = parse(junk);
            // A lone field line opens a report only with a page, hub or status.
            assert!(log.faults.iter().all(|f| !f.is_empty()), "{junk:?}");
        }
        assert!(parse("RW: 0x1\n").faults.is_empty());
    }

    #[test]
    fn faults_match_the_journal_by_address() {
        let log = parse(&fixture("rocm5051_gfx1100_journalctl_truncated.txt"));
        let journal = r#"{"event":"gpu-memory-fault","address":"0x7f2a5318b010","allocation":{"base":"0x7f2a53180000","size":40000,"padding":8192}}
{"event":"gpu-memory-fault","address":"0x10000","allocation":null}
not json"#;
        let m = match_journal(&log.faults, journal);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].address, "0x7f2a5318b010");
        assert!(m[0].relation.contains("same page"));
        let inside = r#"{"event":"gpu-memory-fault","address":"0x7f2a53190000","allocation":{"base":"0x7f2a53180000","size":40000,"padding":65536}}"#;
        let m = match_journal(&log.faults, inside);
        assert!(m[0].relation.contains("allocation"), "{m:?}");
        assert!(match_journal(
            &log.faults,
            r#"{"event":"gpu-memory-fault","address":"0x1000"}"#
        )
        .is_empty());
    }
}
