//! AMD PCI device ids → the real chip behind them.
//!
//! `HSA_OVERRIDE_GFX_VERSION` rewrites the gfx name that HSA reports, never
//! the PCI device id (rocminfo's "Chip ID"), so the id is what tells the real
//! chip in a pasted report. The table is data, `kb/pci_ids.txt`; its header
//! names the driver and PCI-database commits it was built from.

use crate::topology::{self, Family};
use std::sync::OnceLock;

/// The compiled-in table.
const TABLE: &str = include_str!("kb/pci_ids.txt");

/// One PCI device id of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chip {
    /// PCI device id (vendor 0x1002).
    pub device_id: u16,
    /// `major*10000 + minor*100 + stepping`, as KFD publishes it.
    pub gfx_target_version: u32,
    /// The chip's generation, from the table (gfx803 is GCN3 on Fiji and
    /// GCN4 on Polaris and Vega M, which the gfx version cannot tell apart).
    pub family: Family,
    /// Codename, e.g. "Navi23".
    pub codename: &'static str,
    /// Marketing name from the PCI id database, if it gives one.
    pub marketing_name: Option<&'static str>,
}

impl Chip {
    /// LLVM target name, e.g. "gfx1032".
    pub fn gfx(&self) -> String {
        topology::gfx_name(self.gfx_target_version)
    }

    /// The chip's family.
    pub fn family(&self) -> Family {
        self.family
    }
}

/// The chip with this PCI device id, if the table knows it.
pub fn lookup(device_id: u16) -> Option<Chip> {
    table().iter().find(|c| c.device_id == device_id).copied()
}

/// Every chip of the table, in file order.
pub fn all() -> &'static [Chip] {
    table()
}

fn table() -> &'static [Chip] {
    static CHIPS: OnceLock<Vec<Chip>> = OnceLock::new();
    // A malformed line is a bug in the data; the unit test rejects it, and at
    // run time it is skipped rather than taking the process down.
    CHIPS.get_or_init(|| parse(TABLE).unwrap_or_else(|(good, _)| good))
}

/// Parses the table; on error returns the good lines and the messages.
fn parse(text: &'static str) -> Result<Vec<Chip>, (Vec<Chip>, Vec<String>)> {
    let mut chips = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(chip) => chips.push(chip),
            Err(e) => errors.push(format!("pci_ids.txt:{}: {e}", i + 1)),
        }
    }
    if errors.is_empty() {
        Ok(chips)
    } else {
        Err((chips, errors))
    }
}

fn parse_line(line: &'static str) -> Result<Chip, String> {
    let mut rest = line;
    let mut next = || -> Option<&'static str> {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (word, after) = t.split_at(end);
        rest = after;
        (!word.is_empty()).then_some(word)
    };
    let id = next().ok_or("missing device id")?;
    let version = next().ok_or("missing gfx_target_version")?;
    let family = next().ok_or("missing family")?;
    let codename = next().ok_or("missing codename")?;
    let name = rest.trim();
    let device_id = u16::from_str_radix(id, 16).map_err(|_| format!("bad device id {id:?}"))?;
    let gfx_target_version = version
        .parse::<u32>()
        .ok()
        .filter(|_| version.bytes().all(|b| b.is_ascii_digit()))
        .filter(|&v| v >= 10000 && (v / 100) % 100 < 10 && v % 100 < 16)
        .ok_or_else(|| format!("bad gfx_target_version {version:?}"))?;
    // The upper-case label exactly ("GCN4"), as reports print it.
    let family = family_from_label(family)
        .filter(|&f| family_label(f) == family)
        .ok_or_else(|| format!("bad family {family:?}"))?;
    Ok(Chip {
        device_id,
        gfx_target_version,
        family,
        codename,
        marketing_name: (!name.is_empty() && name != "-").then_some(name),
    })
}

/// Parses an LLVM gfx target name ("gfx1030", "gfx90a", "gfx1151", with or
/// without ":xnack-"-style feature suffixes) into a `gfx_target_version`.
///
/// The last digit is the stepping (hex), the one before it the minor
/// (decimal), the rest the major: the inverse of [`topology::gfx_name`].
pub fn parse_gfx_name(name: &str) -> Option<u32> {
    let name = name.trim();
    let base = name.split(':').next().unwrap_or(name);
    let digits = base.strip_prefix("gfx")?;
    if !(3..=5).contains(&digits.len()) || !digits.is_ascii() {
        return None;
    }
    let (head, stepping) = digits.split_at(digits.len() - 1);
    let (major, minor) = head.split_at(head.len() - 1);
    if !major.bytes().all(|b| b.is_ascii_digit()) || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let major: u32 = major.parse().ok()?;
    let minor: u32 = minor.parse().ok()?;
    let stepping = u32::from_str_radix(stepping, 16).ok()?;
    Some(major * 10000 + minor * 100 + stepping)
}

/// Normalises a gfx name as rocminfo prints it ("gfx1030", or an ISA name
/// "amdgcn-amd-amdhsa--gfx1030:xnack-") to the bare target ("gfx1030").
pub fn normalize_gfx_name(name: &str) -> Option<String> {
    let name = name.trim();
    let name = name.rsplit("--").next().unwrap_or(name);
    parse_gfx_name(name).map(topology::gfx_name)
}

/// Upper-case family label for reports ("RDNA2", "GCN5", "CDNA").
pub fn family_label(f: Family) -> &'static str {
    match f {
        Family::Rdna1 => "RDNA1",
        Family::Rdna2 => "RDNA2",
        Family::Rdna3 => "RDNA3",
        Family::Rdna4 => "RDNA4",
        Family::Gcn2 => "GCN2",
        Family::Gcn3 => "GCN3",
        Family::Gcn4 => "GCN4",
        Family::Gcn5 => "GCN5",
        Family::Cdna => "CDNA",
        Family::Other => "other",
    }
}

/// The family named by a lower- or upper-case label ("rdna2", "RDNA2").
pub fn family_from_label(s: &str) -> Option<Family> {
    [
        Family::Rdna1,
        Family::Rdna2,
        Family::Rdna3,
        Family::Rdna4,
        Family::Gcn2,
        Family::Gcn3,
        Family::Gcn4,
        Family::Gcn5,
        Family::Cdna,
    ]
    .into_iter()
    .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parses_without_errors() {
        let chips = parse(TABLE).expect("pci_ids.txt has errors");
        assert!(chips.len() > 100, "{}", chips.len());
        let mut ids: Vec<u16> = chips.iter().map(|c| c.device_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), chips.len(), "duplicate device ids");
    }

    #[test]
    fn every_requested_chip_is_covered() {
        // One id per chip the brief asks for, checked against the driver/pci.ids.
        for (id, gfx, family) in [
            (0x687f, "gfx900", Family::Gcn5),   // Vega10, RX Vega 56/64
            (0x66af, "gfx906", Family::Gcn5),   // Vega20, Radeon VII
            (0x15dd, "gfx902", Family::Gcn5),   // Raven
            (0x1638, "gfx90c", Family::Gcn5),   // Cezanne (Renoir family)
            (0x738c, "gfx908", Family::Cdna),   // MI100
            (0x740f, "gfx90a", Family::Cdna),   // MI210
            (0x74a1, "gfx942", Family::Cdna),   // MI300X
            (0x731f, "gfx1010", Family::Rdna1), // Navi10, RX 5700 XT
            (0x7360, "gfx1011", Family::Rdna1), // Navi12
            (0x7340, "gfx1012", Family::Rdna1), // Navi14
            (0x73bf, "gfx1030", Family::Rdna2), // Navi21
            (0x73df, "gfx1031", Family::Rdna2), // Navi22
            (0x73ff, "gfx1032", Family::Rdna2), // Navi23
            (0x163f, "gfx1033", Family::Rdna2), // Van Gogh
            (0x743f, "gfx1034", Family::Rdna2), // Navi24
            (0x1681, "gfx1035", Family::Rdna2), // Rembrandt
            (0x164e, "gfx1036", Family::Rdna2), // Raphael
            (0x744c, "gfx1100", Family::Rdna3), // Navi31
            (0x747e, "gfx1101", Family::Rdna3), // Navi32
            (0x7480, "gfx1102", Family::Rdna3), // Navi33
            (0x15bf, "gfx1103", Family::Rdna3), // Phoenix
            (0x150e, "gfx1150", Family::Rdna3), // Strix
            (0x1586, "gfx1151", Family::Rdna3), // Strix Halo
            (0x7550, "gfx1201", Family::Rdna4), // Navi48
            (0x7590, "gfx1200", Family::Rdna4), // Navi44
        ] {
            let c = lookup(id).unwrap_or_else(|| panic!("{id:#06x} missing"));
            assert_eq!(c.gfx(), gfx, "{id:#06x}");
            assert_eq!(c.family(), family, "{id:#06x}");
        }
    }

    #[test]
    fn family_boundaries() {
        // One id on each side of every generation the table spans, checked
        // against amdgpu_drv.c's pciidlist and kgd2kfd_probe (or pci.ids and
        // LLVM for IP-discovery parts).
        for (id, gfx, codename, family) in [
            (0x1304, "gfx700", "Kaveri", Family::Gcn2), // APU (AMD_IS_APU)
            (0x67b1, "gfx701", "Hawaii", Family::Gcn2), // R9 290/390
            (0x665c, "gfx704", "Bonaire", Family::Gcn2),
            (0x9830, "gfx703", "Kabini", Family::Gcn2), // APU
            (0x6900, "gfx802", "Topaz", Family::Gcn3),
            (0x6939, "gfx802", "Tonga", Family::Gcn3), // R9 285/380
            (0x9874, "gfx801", "Carrizo", Family::Gcn3), // APU
            (0x98e4, "gfx810", "Stoney", Family::Gcn3), // APU
            (0x7300, "gfx803", "Fiji", Family::Gcn3),  // R9 Fury/Nano
            (0x67df, "gfx803", "Polaris10", Family::Gcn4), // RX 470-590
            (0x67ef, "gfx803", "Polaris11", Family::Gcn4), // RX 460/560
            (0x699f, "gfx803", "Polaris12", Family::Gcn4), // RX 550
            (0x6fdf, "gfx803", "Polaris10", Family::Gcn4), // RX 580 2048SP
            (0x694c, "gfx803", "VegaM", Family::Gcn4),
            (0x6863, "gfx900", "Vega10", Family::Gcn5),
            (0x15dd, "gfx902", "Raven", Family::Gcn5), // APU
            (0x738c, "gfx908", "Arcturus", Family::Cdna),
            (0x740f, "gfx90a", "Aldebaran", Family::Cdna),
            (0x74a1, "gfx942", "AquaVanjaram", Family::Cdna),
            (0x74b6, "gfx942", "AquaVanjaram", Family::Cdna), // from amdgpu.ids
            (0x75a3, "gfx950", "AquaVanjaram", Family::Cdna),
            (0x731f, "gfx1010", "Navi10", Family::Rdna1),
            (0x13fe, "gfx1013", "CyanSkillfish", Family::Rdna1), // APU
            (0x73bf, "gfx1030", "Navi21", Family::Rdna2),
            (0x1506, "gfx1036", "Mendocino", Family::Rdna2), // APU
            (0x744c, "gfx1100", "Navi31", Family::Rdna3),
            (0x15bf, "gfx1103", "Phoenix", Family::Rdna3), // APU
            (0x1586, "gfx1151", "StrixHalo", Family::Rdna3), // APU
            (0x7550, "gfx1201", "Navi48", Family::Rdna4),
        ] {
            let c = lookup(id).unwrap_or_else(|| panic!("{id:#06x} missing"));
            assert_eq!(
                (c.gfx().as_str(), c.codename, c.family()),
                (gfx, codename, family),
                "{id:#06x}"
            );
        }
    }

    #[test]
    fn table_families_agree_with_the_gfx_versions() {
        // The FAMILY column may differ from the ISA's family only where the
        // ISA is shared: Polaris and Vega M are gfx803 like Fiji.
        for c in all() {
            let by_isa = topology::family(c.gfx_target_version);
            let ok = c.family == by_isa
                || (c.family == Family::Gcn4
                    && c.gfx_target_version == 80003
                    && (c.codename.starts_with("Polaris") || c.codename == "VegaM"));
            assert!(
                ok,
                "{:#06x} {} {:?} vs {:?}",
                c.device_id, c.codename, c.family, by_isa
            );
            assert_ne!(c.family, Family::Other, "{:#06x}", c.device_id);
        }
    }

    #[test]
    fn lookup_gives_names_and_none_for_unknown_ids() {
        let c = lookup(0x73ff).unwrap();
        assert_eq!(c.codename, "Navi23");
        assert_eq!(c.marketing_name, Some("Radeon RX 6600/6600 XT/6600M"));
        assert_eq!(lookup(0x686a).unwrap().marketing_name, None);
        assert_eq!(lookup(0x0000), None);
        assert_eq!(lookup(0xffff), None);
        let c = lookup(0x67df).unwrap();
        assert_eq!(c.codename, "Polaris10");
        assert_eq!(
            c.marketing_name,
            Some("Radeon RX 470/480/570/570X/580/580X/590")
        );
        // Southern Islands (GCN1) never had KFD support: not in the table.
        assert_eq!(lookup(0x6798), None); // Tahiti, HD 7970
    }

    #[test]
    fn gfx_names_round_trip() {
        assert_eq!(parse_gfx_name("gfx1030"), Some(100300));
        assert_eq!(parse_gfx_name("gfx90a"), Some(90010));
        assert_eq!(parse_gfx_name("gfx90c:xnack-"), Some(90012));
        assert_eq!(parse_gfx_name("gfx1151"), Some(110501));
        assert_eq!(parse_gfx_name("gfx942"), Some(90402));
        for c in all() {
            assert_eq!(parse_gfx_name(&c.gfx()), Some(c.gfx_target_version));
        }
        for bad in [
            "",
            "gfx",
            "gfx1",
            "gfx10",
            "gfx1x30",
            "GFX1030",
            "gfx123456",
            "gfxé1",
            "1030",
        ] {
            assert_eq!(parse_gfx_name(bad), None, "{bad:?}");
        }
        assert_eq!(
            normalize_gfx_name("amdgcn-amd-amdhsa--gfx1030").as_deref(),
            Some("gfx1030")
        );
        assert_eq!(
            normalize_gfx_name("gfx1010:xnack-").as_deref(),
            Some("gfx1010")
        );
        assert_eq!(normalize_gfx_name("AMD Ryzen 7 2700"), None);
    }

    #[test]
    fn family_labels() {
        assert_eq!(family_label(Family::Rdna2), "RDNA2");
        assert_eq!(family_from_label("rdna1"), Some(Family::Rdna1));
        assert_eq!(family_from_label("CDNA"), Some(Family::Cdna));
        assert_eq!(family_from_label("gcn4"), Some(Family::Gcn4));
        assert_eq!(family_label(Family::Gcn2), "GCN2");
        assert_eq!(family_from_label("other"), None);
        assert_eq!(family_from_label("gfx1030"), None);
    }

    #[test]
    fn malformed_lines_are_reported_with_line_numbers() {
        let (good, errs) = parse(
            "# c\n73FF 100302 RDNA2 Navi23 x\nZZZZ 1 RDNA2 a b\n73BF 10030 RDNA2 Navi21 -\n\
             67DF 80003 gcn4 Polaris10 -\n67DF 80003 Polaris10\n",
        )
        .expect_err("should fail");
        assert_eq!(good.len(), 1);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].starts_with("pci_ids.txt:3:"), "{errs:?}");
        assert!(errs[1].starts_with("pci_ids.txt:4:"), "{errs:?}");
        assert!(errs[2].contains("bad family"), "{errs:?}");
        assert!(errs[3].starts_with("pci_ids.txt:6:"), "{errs:?}");
    }
}
