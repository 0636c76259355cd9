//! The probe kernels' code objects: one clang offload bundle
//! (`probes/probes.co`, built by scripts/build-probes from
//! src/command/probes/probes.hip) and where the command finds it.
//!
//! Bundle layout (clang's `clang-offload-bundler`, binary format): the magic
//! `__CLANG_OFFLOAD_BUNDLE__`, a little-endian u64 entry count, then per entry
//! u64 offset, u64 size, u64 id length and the id (`hipv4-amdgcn-amd-amdhsa--gfx1010`).

use std::path::{Path, PathBuf};

/// The kernels every code object holds, by name (extern "C").
pub const KERNELS: [&str; 3] = [
    "rocm_fix_probe_read",
    "rocm_fix_probe_write",
    "rocm_fix_probe_signal",
];

/// The targets scripts/build-probes asks for.
pub const WANTED: [&str; 14] = [
    "gfx1010", "gfx1011", "gfx1012", "gfx1030", "gfx1031", "gfx1032", "gfx1033", "gfx1034",
    "gfx1035", "gfx1036", "gfx1100", "gfx1101", "gfx1102", "gfx1103",
];

const MAGIC: &[u8] = b"__CLANG_OFFLOAD_BUNDLE__";

/// One code object of the bundle.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The bundle entry id, e.g. `hipv4-amdgcn-amd-amdhsa--gfx1030`.
    pub id: String,
    /// The GPU target (`gfx1030`), with any feature suffix removed.
    pub target: String,
    pub offset: usize,
    pub size: usize,
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

/// The GPU code objects of a bundle (the host entry left out).
pub fn entries(b: &[u8]) -> Result<Vec<Entry>, String> {
    if !b.starts_with(MAGIC) {
        return Err("not a clang offload bundle".into());
    }
    let n = u64_at(b, MAGIC.len()).ok_or("truncated bundle header")?;
    if n > 1024 {
        return Err(format!("implausible entry count {n}"));
    }
    let mut at = MAGIC.len() + 8;
    let mut out = Vec::new();
    for _ in 0..n {
        let (off, size, len) = match (u64_at(b, at), u64_at(b, at + 8), u64_at(b, at + 16)) {
            (Some(o), Some(s), Some(l)) => (o as usize, s as usize, l as usize),
            _ => return Err("truncated bundle entry".into()),
        };
        at += 24;
        let id = b
            .get(at..at.saturating_add(len))
            .ok_or("truncated bundle entry id")?;
        let id = String::from_utf8_lossy(id).to_string();
        at += len;
        if off.checked_add(size).is_none_or(|end| end > b.len()) {
            return Err(format!("entry {id} lies outside the bundle"));
        }
        if let Some(t) = id.split("--").nth(1).filter(|_| id.contains("amdgcn")) {
            let target = t.split(':').next().unwrap_or(t).to_string();
            out.push(Entry {
                id: id.clone(),
                target,
                offset: off,
                size,
            });
        }
    }
    Ok(out)
}

/// The names of the dynamic symbols of an ELF64 code object (AMDGPU code
/// objects list their kernels there), or an error if it is not one.
pub fn elf_symbols(b: &[u8]) -> Result<Vec<String>, String> {
    let u16_at = |at: usize| b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    if !b.starts_with(b"\x7fELF\x02\x01") {
        return Err("not a little-endian ELF64 object".into());
    }
    if u16_at(18) != Some(224) {
        return Err("not an AMDGPU object (e_machine is not EM_AMDGPU)".into());
    }
    let shoff = u64_at(b, 0x28).ok_or("truncated ELF header")? as usize;
    let shentsize = u16_at(0x3a).ok_or("truncated ELF header")? as usize;
    let shnum = u16_at(0x3c).ok_or("truncated ELF header")? as usize;
    let sh = |i: usize| shoff + i * shentsize;
    let mut names = Vec::new();
    for i in 0..shnum {
        // SHT_DYNSYM = 11; sh_link is its string table.
        if u32_at(sh(i) + 4) != Some(11) {
            continue;
        }
        let (off, size, link, entsize) = (
            u64_at(b, sh(i) + 0x18).ok_or("bad section")? as usize,
            u64_at(b, sh(i) + 0x20).ok_or("bad section")? as usize,
            u32_at(sh(i) + 0x28).ok_or("bad section")? as usize,
            u64_at(b, sh(i) + 0x38).ok_or("bad section")?.max(24) as usize,
        );
        let stroff = u64_at(b, sh(link) + 0x18).ok_or("bad string table")? as usize;
        for s in (off..off + size).step_by(entsize) {
            let name = u32_at(s).ok_or("bad symbol")? as usize;
            let start = stroff + name;
            let text = b.get(start..).ok_or("bad symbol name")?;
            let end = text.iter().position(|&c| c == 0).unwrap_or(0);
            if end > 0 {
                names.push(String::from_utf8_lossy(&text[..end]).to_string());
            }
        }
    }
    Ok(names)
}

/// Where the bundle is: `probes/probes.co` next to this program (the build
/// folder), then `../lib/rocm-fix/probes/` (scripts/install), then
/// /usr/lib/rocm-fix/probes/ (the .deb).
pub fn find() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("probes/probes.co"));
            candidates.push(dir.join("../lib/rocm-fix/probes/probes.co"));
        }
    }
    candidates.push(PathBuf::from("/usr/lib/rocm-fix/probes/probes.co"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "cannot find the probe kernels (probes/probes.co; looked in {}); \
                 scripts/build builds them",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Reads the bundle and checks that every entry is an AMDGPU code object
/// holding every probe kernel. Returns its bytes and its targets.
pub fn load(path: &Path) -> Result<(Vec<u8>, Vec<String>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let list = entries(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut targets = Vec::new();
    for e in &list {
        let syms = elf_symbols(&bytes[e.offset..e.offset + e.size])
            .map_err(|m| format!("{}: {}: {m}", path.display(), e.id))?;
        for k in KERNELS {
            if !syms.iter().any(|s| s == k) {
                return Err(format!("{}: {} lacks the kernel {k}", path.display(), e.id));
            }
        }
        targets.push(e.target.clone());
    }
    Ok((bytes, targets))
}
