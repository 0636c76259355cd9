//! The real GPU chips, read from the KFD topology (amdkfd kfd_topology.c).
//!
//! `HSA_OVERRIDE_GFX_VERSION` changes the name HSA and HIP report but never the
//! sysfs `gfx_target_version`, so the chip family is decided from sysfs only.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// One GPU node of the KFD topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gpu {
    /// KFD topology node number (the `N` of `nodes/N`).
    pub node: u32,
    /// `major*10000 + minor*100 + stepping`, as sysfs reports it (never overridden).
    pub gfx_target_version: u32,
    /// PCI device id.
    pub device_id: u32,
}

/// Node directories are numbered densely from 0; real systems have far fewer.
const MAX_NODES: u32 = 64;

/// A properties file is a few hundred bytes; the cap bounds a hostile or broken file.
const MAX_PROPERTIES_BYTES: u64 = 64 * 1024;

/// Where the kernel publishes the KFD topology.
pub fn default_root() -> &'static str {
    "/sys/class/kfd/kfd/topology"
}

/// Reads `root/nodes/N/properties` for N = 0, 1, … until a node directory is
/// missing (at most 64 nodes) and returns the GPU nodes (`simd_count > 0`).
///
/// Never fails: an unreadable node is skipped, unparsable lines are ignored,
/// and a missing root gives an empty list.
pub fn read_topology(root: &Path) -> Vec<Gpu> {
    let mut gpus = Vec::new();
    // One path and one buffer, reused for every node: this runs in every process.
    let mut path = PathBuf::from(root);
    path.push("nodes");
    let mut name = String::with_capacity(4);
    let mut buf = Vec::with_capacity(2048);
    for node in 0..MAX_NODES {
        name.clear();
        let _ = write!(name, "{node}");
        path.push(&name);
        if !path.is_dir() {
            break;
        }
        path.push("properties");
        buf.clear();
        let read_ok = std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_PROPERTIES_BYTES).read_to_end(&mut buf))
            .is_ok();
        path.pop();
        path.pop();
        if !read_ok {
            continue;
        }
        if let Some(gpu) = parse_properties(node, &buf) {
            gpus.push(gpu);
        }
    }
    gpus
}

/// Parses one properties file; `Some` only for a GPU node.
fn parse_properties(node: u32, text: &[u8]) -> Option<Gpu> {
    let mut simd_count: u64 = 0;
    let mut gfx_target_version: u32 = 0;
    let mut device_id: u32 = 0;
    for line in text.split(|&b| b == b'\n') {
        // A line that is not UTF-8 cannot hold a key we want; skip it alone.
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let mut words = line.split_ascii_whitespace();
        let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            continue; // u64::from_str would accept a leading '+'
        }
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "simd_count" => simd_count = value,
            "gfx_target_version" => {
                if let Ok(v) = u32::try_from(value) {
                    gfx_target_version = v;
                }
            }
            "device_id" => {
                if let Ok(v) = u32::try_from(value) {
                    device_id = v;
                }
            }
            _ => {}
        }
    }
    (simd_count > 0).then_some(Gpu {
        node,
        gfx_target_version,
        device_id,
    })
}

/// GPU families, as far as rocm-fix needs to tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// gfx1010–gfx1013 (Navi1x).
    Rdna1,
    /// gfx1030–gfx1037 (Navi2x, Van Gogh, Rembrandt, …).
    Rdna2,
    /// gfx11xx: gfx110x and the RDNA3.5 APUs gfx115x.
    Rdna3,
    /// gfx120x.
    Rdna4,
    /// gfx700–gfx705 (Sea Islands: Kaveri, Bonaire, Hawaii, Kabini, Mullins).
    Gcn2,
    /// gfx801–gfx810 (Volcanic Islands: Carrizo, Topaz, Tonga, Fiji, Stoney).
    /// Polaris and Vega M share Fiji's gfx803, so a bare gfx803 is GCN3 here;
    /// the PCI id table tells them apart as [`Family::Gcn4`].
    Gcn3,
    /// Polaris and Vega M (gfx803): only a PCI device id tells them from Fiji.
    Gcn4,
    /// gfx900–gfx90c other than gfx908/gfx90a (Vega, Raven, Renoir, MI50/60).
    Gcn5,
    /// gfx908, gfx90a, gfx94x, gfx95x (MI100 and later).
    Cdna,
    /// Anything else (GCN1/gfx6, gfx1000, gfx125x, unknown future chips, 0).
    Other,
}

impl Family {
    /// Lower-case name for logs and reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            Family::Rdna1 => "rdna1",
            Family::Rdna2 => "rdna2",
            Family::Rdna3 => "rdna3",
            Family::Rdna4 => "rdna4",
            Family::Gcn2 => "gcn2",
            Family::Gcn3 => "gcn3",
            Family::Gcn4 => "gcn4",
            Family::Gcn5 => "gcn5",
            Family::Cdna => "cdna",
            Family::Other => "other",
        }
    }
}

/// The family of a `gfx_target_version` (encoded as amdkfd kfd_device.c sets it).
pub fn family(gfx_target_version: u32) -> Family {
    let v = gfx_target_version;
    let major = v / 10000;
    let minor = (v / 100) % 100;
    match (major, minor) {
        (10, 1) => Family::Rdna1,
        (10, 3) => Family::Rdna2,
        // gfx110x is 1100xx and gfx115x is 1105xx: all of gfx11 is RDNA3(.5).
        (11, _) => Family::Rdna3,
        (12, 0) => Family::Rdna4,
        // gfx908 and gfx90a are CDNA despite sharing GFX9.0 with Vega.
        (9, 0) if v == 90008 || v == 90010 => Family::Cdna,
        (9, 0) if v <= 90012 => Family::Gcn5,
        // GFX9.4 (MI300: gfx940/941/942) and 9.5 (gfx950).
        (9, 4) | (9, 5) => Family::Cdna,
        // GFX7 (gfx700–gfx705) and GFX8 (gfx801–gfx805, gfx810 Stoney).
        (7, 0) if v <= 70005 => Family::Gcn2,
        (8, 0) if (80001..=80005).contains(&v) => Family::Gcn3,
        (8, 1) if v == 80100 => Family::Gcn3,
        _ => Family::Other,
    }
}

/// The LLVM target name: `gfx` + major + minor + stepping in hex
/// (90010 → "gfx90a", 100300 → "gfx1030").
pub fn gfx_name(v: u32) -> String {
    format!("gfx{}{}{:x}", v / 10000, (v / 100) % 100, v % 100)
}

/// Parses an `HSA_OVERRIDE_GFX_VERSION` value `major.minor.stepping` (decimal,
/// minor and stepping below 100) into a `gfx_target_version`.
///
/// Anything else — signs, spaces, missing or extra parts, trailing garbage,
/// overflow — is `None`.
pub fn parse_override(s: &str) -> Option<u32> {
    let mut parts = s.split('.');
    let major = decimal(parts.next()?)?;
    let minor = decimal(parts.next()?)?;
    let stepping = decimal(parts.next()?)?;
    if parts.next().is_some() || minor >= 100 || stepping >= 100 {
        return None;
    }
    major
        .checked_mul(10000)?
        .checked_add(minor * 100 + stepping)
}

/// A non-empty run of ASCII digits that fits in u32.
fn decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A scratch topology tree, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!(
                "rocm-fix-topology-{}-{}",
                std::process::id(),
                tag
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("nodes")).unwrap();
            Tree(dir)
        }

        fn node(&self, n: u32, props: &str) -> &Tree {
            let d = self.0.join("nodes").join(n.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("properties"), props).unwrap();
            self
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const CPU: &str =
        "cpu_cores_count 16\nsimd_count 0\ngfx_target_version 0\nvendor_id 0\ndevice_id 0\n";

    fn gpu_props(version: u32, device: u32) -> String {
        format!(
            "cpu_cores_count 0\nsimd_count 80\nmem_banks_count 1\ngfx_target_version {version}\n\
             vendor_id 4098\ndevice_id {device}\nsimd_per_cu 2\nwave_front_size 32\n\
             local_mem_size 17163091968\ndrm_render_minor 128\n"
        )
    }

    #[test]
    fn default_root_is_the_kfd_sysfs_tree() {
        assert_eq!(default_root(), "/sys/class/kfd/kfd/topology");
    }

    #[test]
    fn finds_gpus_and_skips_cpu_nodes() {
        let t = Tree::new("two");
        t.node(0, CPU)
            .node(1, &gpu_props(100300, 0x73bf))
            .node(2, &gpu_props(110000, 0x744c));
        let gpus = read_topology(&t.0);
        assert_eq!(
            gpus,
            vec![
                Gpu {
                    node: 1,
                    gfx_target_version: 100300,
                    device_id: 0x73bf
                },
                Gpu {
                    node: 2,
                    gfx_target_version: 110000,
                    device_id: 0x744c
                },
            ]
        );
    }

    #[test]
    fn stops_at_the_first_missing_node() {
        let t = Tree::new("gap");
        t.node(0, CPU)
            .node(1, &gpu_props(100100, 0x731f))
            .node(3, &gpu_props(100300, 0x73bf));
        let gpus = read_topology(&t.0);
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].node, 1);
    }

    #[test]
    fn missing_root_or_nodes_gives_nothing() {
        assert!(read_topology(Path::new("/nonexistent/rocm-fix/topology")).is_empty());
        let t = Tree::new("empty");
        assert!(read_topology(&t.0).is_empty());
    }

    #[test]
    fn node_without_properties_is_skipped_but_scan_continues() {
        let t = Tree::new("noprops");
        fs::create_dir_all(t.0.join("nodes/0")).unwrap();
        t.node(1, &gpu_props(100302, 0x73ff));
        let gpus = read_topology(&t.0);
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].gfx_target_version, 100302);
    }

    #[test]
    fn reads_at_most_64_nodes() {
        let t = Tree::new("many");
        let props = gpu_props(100300, 1);
        for n in 0..70 {
            t.node(n, &props);
        }
        let gpus = read_topology(&t.0);
        assert_eq!(gpus.len(), 64);
        assert_eq!(gpus.last().map(|g| g.node), Some(63));
    }

    #[test]
    fn garbage_lines_are_ignored() {
        let t = Tree::new("garbage");
        let mut bytes = b"simd_count 40\n\xff\xfe junk\ngfx_target_version +100100\n".to_vec();
        bytes.extend_from_slice(
            b"gfx_target_version 100102\ndevice_id\ndevice_id 29504 extra\n\
              device_id 0x7340\nlocal_mem_size 99999999999999999999999\n\n   \n",
        );
        bytes.extend_from_slice(b"device_id 29504");
        fs::create_dir_all(t.0.join("nodes/0")).unwrap();
        fs::write(t.0.join("nodes/0/properties"), &bytes).unwrap();
        let gpus = read_topology(&t.0);
        assert_eq!(
            gpus,
            vec![Gpu {
                node: 0,
                gfx_target_version: 100102,
                device_id: 29504
            }]
        );
    }

    #[test]
    fn out_of_range_values_keep_zero() {
        assert_eq!(
            parse_properties(5, b"simd_count 4\ngfx_target_version 4294967296\n"),
            Some(Gpu {
                node: 5,
                gfx_target_version: 0,
                device_id: 0
            })
        );
        assert_eq!(parse_properties(5, b"gfx_target_version 100300\n"), None);
        assert_eq!(parse_properties(5, b""), None);
    }

    #[test]
    fn families() {
        for v in [100100, 100101, 100102, 100103] {
            assert_eq!(family(v), Family::Rdna1, "{v}");
        }
        for v in [
            100300, 100301, 100302, 100303, 100304, 100305, 100306, 100307,
        ] {
            assert_eq!(family(v), Family::Rdna2, "{v}");
        }
        for v in [
            110000, 110001, 110002, 110003, 110500, 110501, 110502, 110503,
        ] {
            assert_eq!(family(v), Family::Rdna3, "{v}");
        }
        for v in [120000, 120001] {
            assert_eq!(family(v), Family::Rdna4, "{v}");
        }
        for v in [90000, 90002, 90004, 90006, 90009, 90012] {
            assert_eq!(family(v), Family::Gcn5, "{v}");
        }
        for v in [90008, 90010, 90400, 90401, 90402, 90500] {
            assert_eq!(family(v), Family::Cdna, "{v}");
        }
        for v in [70000, 70001, 70002, 70003, 70004, 70005] {
            assert_eq!(family(v), Family::Gcn2, "{v}");
        }
        // gfx803 is Fiji (GCN3) and Polaris (GCN4): by ISA alone, GCN3.
        for v in [80001, 80002, 80003, 80005, 80100] {
            assert_eq!(family(v), Family::Gcn3, "{v}");
        }
        for v in [
            0,
            60000,
            60001,
            70006,
            80000,
            80101,
            90013,
            100000,
            100200,
            120500,
            u32::MAX,
        ] {
            assert_eq!(family(v), Family::Other, "{v}");
        }
    }

    #[test]
    fn family_names() {
        assert_eq!(Family::Rdna1.as_str(), "rdna1");
        assert_eq!(Family::Cdna.as_str(), "cdna");
        assert_eq!(Family::Other.as_str(), "other");
    }

    #[test]
    fn gfx_names() {
        assert_eq!(gfx_name(90010), "gfx90a");
        assert_eq!(gfx_name(90012), "gfx90c");
        assert_eq!(gfx_name(100300), "gfx1030");
        assert_eq!(gfx_name(100101), "gfx1011");
        assert_eq!(gfx_name(110501), "gfx1151");
        assert_eq!(gfx_name(120001), "gfx1201");
        assert_eq!(gfx_name(90402), "gfx942");
        assert_eq!(gfx_name(0), "gfx000");
        // Must not panic on any value.
        let _ = gfx_name(u32::MAX);
    }

    #[test]
    fn override_values() {
        assert_eq!(parse_override("10.3.0"), Some(100300));
        assert_eq!(parse_override("10.1.0"), Some(100100));
        assert_eq!(parse_override("11.0.0"), Some(110000));
        assert_eq!(parse_override("9.0.10"), Some(90010));
        assert_eq!(parse_override("9.4.2"), Some(90402));
        assert_eq!(parse_override("010.03.00"), Some(100300));
        assert_eq!(parse_override("0.0.0"), Some(0));
        assert_eq!(parse_override("429496.72.95"), Some(u32::MAX));
        assert_eq!(parse_override("429496.72.96"), None);
    }

    #[test]
    fn override_rejects_everything_else() {
        for s in [
            "",
            "10",
            "10.3",
            "10.3.",
            ".3.0",
            "10..0",
            "10.3.0.",
            "10.3.0.1",
            "10.3.0x",
            "10.3.0 ",
            " 10.3.0",
            "10.3.0\n",
            "+10.3.0",
            "-1.3.0",
            "10.100.0",
            "10.3.100",
            "gfx1030",
            "10,3,0",
            "a.b.c",
            "4294967296.0.0",
            "429497.0.0",
            "10.3.0_1",
            "１０.3.0",
        ] {
            assert_eq!(parse_override(s), None, "{s:?}");
        }
    }

    #[test]
    fn override_round_trips_through_family() {
        // The classic RDNA2 override maps to RDNA2, RDNA1's own value to RDNA1.
        assert_eq!(parse_override("10.3.0").map(family), Some(Family::Rdna2));
        assert_eq!(parse_override("10.1.0").map(family), Some(Family::Rdna1));
    }
}
