//! Which ROCm is installed, where a Python's HIP runtime comes from, and
//! which GPUs a HIP binary carries code for (doctor's `--python` and
//! `--binary`).
//!
//! A HIP binary keeps its device code in clang offload bundles (in ELF files,
//! the `.hip_fatbin` section). Uncompressed bundles start with the magic
//! `__CLANG_OFFLOAD_BUNDLE__`, then a little-endian u64 entry count, then per
//! entry u64 offset, u64 size, u64 id length and the id ("hipv4-amdgcn-amd-
//! amdhsa--gfx1030", "host-x86_64-unknown-linux-gnu-"). Compressed bundles
//! start with `CCOB`, a u16 version and a u16 method (zlib 0, zstd 1), then
//! sizes and a hash; their entry ids are inside the compressed data. Sources:
//! LLVM clang/include/clang/Driver/OffloadBundler.h (`OffloadBundleEntry`,
//! `CompressedOffloadBundle`: "CCOB", V1/V2 header fields) and ROCm clr
//! hipamd/src/hip_code_object.cpp (both magic strings, the
//! "hipv4-amdgcn-amd-amdhsa--" entry prefix).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"__CLANG_OFFLOAD_BUNDLE__";
const CCOB: &[u8] = b"CCOB";
/// Bundles in `.hip_fatbin` are aligned to 4096 bytes (clang's
/// `-bundle-align=4096` for HIP); a CCOB header is looked for only there.
const BUNDLE_ALIGN: u64 = 4096;
const CHUNK: usize = 8 << 20;
/// Entries of one bundle we read (a real one has a few dozen).
const MAX_ENTRIES: u64 = 4096;

/// What a binary carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundles {
    /// GPU processors with code (gfx1030, gfx10-3-generic, …), sorted, once each.
    pub targets: Vec<String>,
    /// Uncompressed bundles read.
    pub bundles: usize,
    /// Compressed (CCOB) bundles found, whose entries cannot be listed.
    pub compressed: usize,
}

/// The `.hip_fatbin` section of an ELF64 little-endian file: (offset, size).
fn fatbin_section(f: &mut std::fs::File) -> Option<(u64, u64)> {
    let mut h = [0u8; 64];
    f.seek(SeekFrom::Start(0)).ok()?;
    f.read_exact(&mut h).ok()?;
    if &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as u64;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let shoff = u64_at(&h, 0x28);
    let shentsize = u16_at(&h, 0x3a);
    let shnum = u16_at(&h, 0x3c);
    let shstrndx = u16_at(&h, 0x3e);
    if shentsize < 64 || shnum == 0 || shnum > 65_000 || shstrndx >= shnum {
        return None;
    }
    let mut table = vec![0u8; (shentsize * shnum) as usize];
    f.seek(SeekFrom::Start(shoff)).ok()?;
    f.read_exact(&mut table).ok()?;
    let sh = |i: u64| &table[(i * shentsize) as usize..((i + 1) * shentsize) as usize];
    let strtab = sh(shstrndx);
    let (str_off, str_size) = (u64_at(strtab, 0x18), u64_at(strtab, 0x20).min(1 << 24));
    let mut names = vec![0u8; str_size as usize];
    f.seek(SeekFrom::Start(str_off)).ok()?;
    f.read_exact(&mut names).ok()?;
    (0..shnum).find_map(|i| {
        let s = sh(i);
        let name_at = u32_at(s, 0) as usize;
        let name = names.get(name_at..)?;
        let end = name.iter().position(|&b| b == 0)?;
        (&name[..end] == b".hip_fatbin").then(|| (u64_at(s, 0x18), u64_at(s, 0x20)))
    })
}

/// The GPU processor of an entry id: "hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-"
/// → "gfx90a"; None for host entries.
pub fn entry_target(id: &str) -> Option<String> {
    let (triple, target) = id.split_once("--")?;
    if !triple.contains("amdgcn") {
        return None;
    }
    let proc_ = target.split(':').next()?.trim();
    (!proc_.is_empty()).then(|| proc_.to_string())
}

fn parse_bundle(f: &mut std::fs::File, at: u64, end: u64, out: &mut Bundles) -> Option<()> {
    let mut n = [0u8; 8];
    f.seek(SeekFrom::Start(at + MAGIC.len() as u64)).ok()?;
    f.read_exact(&mut n).ok()?;
    let count = u64::from_le_bytes(n);
    if count == 0 || count > MAX_ENTRIES {
        return None;
    }
    let mut found = Vec::new();
    for _ in 0..count {
        let mut e = [0u8; 24];
        f.read_exact(&mut e).ok()?;
        let len = u64::from_le_bytes(e[16..24].try_into().ok()?);
        let (off, size) = (
            u64::from_le_bytes(e[0..8].try_into().ok()?),
            u64::from_le_bytes(e[8..16].try_into().ok()?),
        );
        if len > 1024 || at.checked_add(off)?.checked_add(size)? > end {
            return None;
        }
        let mut id = vec![0u8; len as usize];
        f.read_exact(&mut id).ok()?;
        found.extend(entry_target(&String::from_utf8_lossy(&id)));
    }
    out.bundles += 1;
    out.targets.extend(found);
    Some(())
}

/// Reads every offload bundle of `path` (its `.hip_fatbin` section when it
/// is an ELF that has one, else the whole file), streaming, so that a
/// 1 GiB libtorch_hip.so costs no more than a few MiB of memory.
pub fn read_bundles(path: &Path) -> std::io::Result<Bundles> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let (start, size) = fatbin_section(&mut f).unwrap_or((0, len));
    let end = start.saturating_add(size).min(len);
    let mut out = Bundles::default();
    let mut hits: Vec<(u64, bool)> = Vec::new();
    let mut pos = start;
    let mut buf = vec![0u8; CHUNK + MAGIC.len()];
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..want])?;
        let data = &buf[..want];
        for i in memfind(data, MAGIC) {
            hits.push((pos + i as u64, false));
        }
        for i in memfind(data, CCOB) {
            let at = pos + i as u64;
            let aligned = (at - start).is_multiple_of(BUNDLE_ALIGN);
            let header = data.get(i + 4..i + 8).map(|h| {
                (
                    u16::from_le_bytes([h[0], h[1]]),
                    u16::from_le_bytes([h[2], h[3]]),
                )
            });
            if aligned && matches!(header, Some((1..=3, 0..=1))) {
                hits.push((at, true));
            }
        }
        if want < buf.len() {
            break;
        }
        // Overlap by a magic's length, so one across the boundary is seen.
        pos += (want - MAGIC.len()) as u64;
    }
    hits.sort();
    hits.dedup();
    for (at, compressed) in hits {
        if compressed {
            out.compressed += 1;
        } else {
            let _ = parse_bundle(&mut f, at, end, &mut out);
        }
    }
    out.targets.sort();
    out.targets.dedup();
    Ok(out)
}

fn memfind(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)
        {
            None => break,
            Some(p) => {
                let at = i + p;
                if &hay[at..at + needle.len()] == needle {
                    out.push(at);
                }
                i = at + 1;
            }
        }
    }
    out
}

/// The chips a generic target's code runs on (LLVM AMDGPUUsage, "Generic
/// processor code objects", llvmorg-19.1.0).
fn generic_covers(target: &str, chip: &str) -> bool {
    let members: &[&str] = match target {
        "gfx9-generic" => &["gfx900", "gfx902", "gfx904", "gfx906", "gfx909", "gfx90c"],
        "gfx9-4-generic" => &["gfx940", "gfx941", "gfx942", "gfx950"],
        "gfx10-1-generic" => &["gfx1010", "gfx1011", "gfx1012", "gfx1013"],
        "gfx10-3-generic" => &[
            "gfx1030", "gfx1031", "gfx1032", "gfx1033", "gfx1034", "gfx1035", "gfx1036",
        ],
        "gfx11-generic" => &[
            "gfx1100", "gfx1101", "gfx1102", "gfx1103", "gfx1150", "gfx1151", "gfx1152", "gfx1153",
        ],
        "gfx12-generic" => &["gfx1200", "gfx1201"],
        _ => &[],
    };
    members.contains(&chip)
}

/// Whether the bundles carry code that runs on `chip`: Some(true/false), or
/// None when only compressed bundles were found (their targets unknown).
pub fn covers(b: &Bundles, chip: &str) -> Option<bool> {
    if b.targets
        .iter()
        .any(|t| t == chip || generic_covers(t, chip))
    {
        return Some(true);
    }
    if b.compressed > 0 {
        return None;
    }
    Some(false)
}

/// A Python environment's HIP runtime, as found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PythonRuntime {
    pub python: PathBuf,
    /// The site-packages folders looked in.
    pub site_packages: Vec<PathBuf>,
    /// Every libamdhip64 found there: (path, what ships it).
    pub runtimes: Vec<(PathBuf, String)>,
    /// torch's HIP library, if there is one.
    pub torch_hip: Option<PathBuf>,
    /// How the site-packages were found.
    pub how: String,
}

/// The site-packages of `python`: from the interpreter itself (`sys.path`,
/// which imports nothing but `site`), else from the layout around it
/// (PREFIX/bin/python → PREFIX/lib/python3.*/site-packages).
pub fn site_packages(python: &Path) -> (Vec<PathBuf>, String) {
    let asked = std::process::Command::new(python)
        .args(["-c", "import sys\nfor p in sys.path:\n    print(p)"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(o) = asked {
        if o.status.success() {
            let dirs: Vec<PathBuf> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(PathBuf::from)
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n == "site-packages" || n == "dist-packages")
                        && p.is_dir()
                })
                .collect();
            return (dirs, format!("sys.path of {}", python.display()));
        }
    }
    let prefix = python.parent().and_then(Path::parent);
    let mut dirs = Vec::new();
    if let Some(lib) = prefix.map(|p| p.join("lib")) {
        if let Ok(rd) = std::fs::read_dir(&lib) {
            let mut names: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .map(|e| e.path().join("site-packages"))
                .filter(|p| p.is_dir())
                .collect();
            names.sort();
            dirs.extend(names);
        }
    }
    (
        dirs,
        format!("the folders around {} (it did not run)", python.display()),
    )
}

fn hip_libs_in(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).take(4096).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        let ft = match e.file_type() {
            Ok(t) => t,
            Err(_) => continue,
        };
        if ft.is_dir() && depth > 0 {
            hip_libs_in(&p, depth - 1, out);
        } else if name.starts_with("libamdhip64.so") && !ft.is_dir() {
            out.push(p);
        }
    }
}

/// Where `python`'s libamdhip64 comes from: torch's own copy
/// (site-packages/torch/lib), TheRock's `_rocm_sdk_core` wheel, or none
/// (then the system's, through the dynamic linker).
pub fn python_runtime(python: &Path) -> PythonRuntime {
    let (site, how) = site_packages(python);
    let mut out = PythonRuntime {
        python: python.to_path_buf(),
        site_packages: site.clone(),
        how,
        ..Default::default()
    };
    for sp in &site {
        let torch_lib = sp.join("torch/lib");
        let mut found = Vec::new();
        hip_libs_in(&torch_lib, 0, &mut found);
        for p in found {
            out.runtimes
                .push((p, "PyTorch's own copy (torch/lib)".to_string()));
        }
        let hip = torch_lib.join("libtorch_hip.so");
        if out.torch_hip.is_none() && hip.is_file() {
            out.torch_hip = Some(hip);
        }
        if let Ok(rd) = std::fs::read_dir(sp) {
            let mut sdk: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("_rocm_sdk_core")
                })
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            sdk.sort();
            for d in sdk {
                let mut found = Vec::new();
                hip_libs_in(&d, 3, &mut found);
                for p in found {
                    out.runtimes.push((
                        p,
                        "TheRock's ROCm wheel (_rocm_sdk_core, rocm[libraries])".to_string(),
                    ));
                }
            }
        }
    }
    out
}

/// One ROCm installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// "legacy" (/opt/rocm with .info/version), "therock" (/opt/rocm/core,
    /// amdrocm-* packages), "debian" (Debian's packages).
    pub kind: String,
    pub version: Option<String>,
    /// Where it was seen.
    pub source: String,
}

/// The version of an installed Debian package from a dpkg `status` file's
/// text, for every package whose name passes `want`.
pub fn dpkg_installed(status: &str, want: &dyn Fn(&str) -> bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in status.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let (Some(p), Some(st)) = (field("Package:"), field("Status:")) else {
            continue;
        };
        if st.ends_with(" installed") && want(&p) {
            out.push((p, field("Version:").unwrap_or_default()));
        }
    }
    out
}

/// The ROCm installations under `root` ("/" normally): `rocm_root`'s
/// `.info/version` (AMD's legacy packages), `rocm_root/core` (TheRock's
/// ROCm 10 layout) and dpkg's status (Debian's `libamdhip64-N`, TheRock's
/// `amdrocm-*`).
pub fn installs(root: &Path, rocm_root: &Path) -> Vec<Install> {
    let read = |p: &Path| crate::input::read_regular(p, 64 << 20).ok();
    let mut out = Vec::new();
    let info = rocm_root.join(".info/version");
    if let Some(v) = read(&info) {
        out.push(Install {
            kind: "legacy".into(),
            version: Some(String::from_utf8_lossy(&v).trim().to_string()),
            source: info.display().to_string(),
        });
    }
    let core = rocm_root.join("core");
    if core.is_dir() {
        let version = ["core/.info/version", ".info/version-core"]
            .iter()
            .find_map(|f| read(&rocm_root.join(f)))
            .map(|v| String::from_utf8_lossy(&v).trim().to_string());
        out.push(Install {
            kind: "therock".into(),
            version,
            source: core.display().to_string(),
        });
    }
    let status = root.join("var/lib/dpkg/status");
    if let Some(text) = read(&status) {
        let text = String::from_utf8_lossy(&text);
        for (p, v) in dpkg_installed(&text, &|p| {
            p.starts_with("libamdhip64-") || p.starts_with("amdrocm-") || p == "hip-runtime-amd"
        }) {
            let kind = if p.starts_with("amdrocm-") {
                "therock"
            } else if p == "hip-runtime-amd" {
                "legacy"
            } else {
                "debian"
            };
            out.push(Install {
                kind: kind.into(),
                version: Some(v),
                source: format!("{} ({p})", status.display()),
            });
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An uncompressed bundle with these entry ids (code bytes zero).
    pub fn bundle(ids: &[&str]) -> Vec<u8> {
        let mut head = MAGIC.to_vec();
        head.extend((ids.len() as u64).to_le_bytes());
        let table: usize = ids.iter().map(|i| 24 + i.len()).sum();
        let mut off = (MAGIC.len() + 8 + table) as u64;
        for id in ids {
            head.extend(off.to_le_bytes());
            head.extend(16u64.to_le_bytes());
            head.extend((id.len() as u64).to_le_bytes());
            head.extend(id.as_bytes());
            off += 16;
        }
        head.extend(vec![0u8; 16 * ids.len()]);
        head
    }

    #[test]
    fn bundles_name_their_gpu_targets() {
        let dir = std::env::temp_dir().join(format!("rocm-fix-bundles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("lib.so");
        let mut bytes = b"junk before".to_vec();
        bytes.extend(bundle(&[
            "host-x86_64-unknown-linux-gnu-",
            "hipv4-amdgcn-amd-amdhsa--gfx1030",
            "hipv4-amdgcn-amd-amdhsa--gfx90a:sramecc+:xnack-",
        ]));
        bytes.extend(vec![7u8; 100]);
        bytes.extend(bundle(&["hipv4-amdgcn-amd-amdhsa--gfx1100"]));
        std::fs::write(&f, &bytes).unwrap();
        let b = read_bundles(&f).unwrap();
        assert_eq!(b.targets, ["gfx1030", "gfx1100", "gfx90a"]);
        assert_eq!((b.bundles, b.compressed), (2, 0));
        assert_eq!(covers(&b, "gfx1030"), Some(true));
        assert_eq!(covers(&b, "gfx1010"), Some(false));
        // A compressed bundle: the targets are unknown.
        let mut c = b"CCOB".to_vec();
        c.extend(2u16.to_le_bytes());
        c.extend(1u16.to_le_bytes());
        c.extend(vec![0u8; 64]);
        std::fs::write(&f, &c).unwrap();
        let b = read_bundles(&f).unwrap();
        assert_eq!(
            (b.bundles, b.compressed, covers(&b, "gfx1010")),
            (0, 1, None)
        );
        let mut g = bundle(&["hipv4-amdgcn-amd-amdhsa--gfx10-1-generic"]);
        g.extend(b"tail");
        std::fs::write(&f, &g).unwrap();
        assert_eq!(covers(&read_bundles(&f).unwrap(), "gfx1012"), Some(true));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dpkg_status_names_installed_packages_only() {
        let status = "Package: libamdhip64-6\nStatus: install ok installed\nVersion: 6.4.3-1\n\n\
                      Package: libamdhip64-5\nStatus: deinstall ok config-files\nVersion: 5.2.3-3\n\n\
                      Package: amdrocm-core\nStatus: install ok installed\nVersion: 10.0.0\n";
        assert_eq!(
            dpkg_installed(status, &|p| p.starts_with("libamdhip64-")
                || p.starts_with("amdrocm-")),
            [
                ("libamdhip64-6".to_string(), "6.4.3-1".to_string()),
                ("amdrocm-core".to_string(), "10.0.0".to_string())
            ]
        );
    }
}
