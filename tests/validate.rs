//! `rocm-fix validate`: the probe kernels' bundle, and the whole command on
//! the simulated RX 5700 XT (gfx1010), RX 6800 (gfx1030) and RX 7900 (gfx1100).

mod common;

use rocm_fix_command::validate::bundle;

/// The bundle scripts/build puts next to the command holds a code object for
/// every target the toolchain supports among gfx1010-1012, gfx1030-1036 and
/// gfx1100-1103 (bookworm's clang-15 supports all of them), each with every
/// probe kernel, and TARGETS says so.
#[test]
fn the_probe_bundle_holds_every_rdna1_2_3_target_with_every_kernel() {
    let dir = common::preload().parent().unwrap().join("probes");
    let (bytes, targets) = bundle::load(&dir.join("probes.co")).unwrap();
    let mut got = targets.clone();
    got.sort();
    assert_eq!(got, bundle::WANTED.to_vec(), "targets in the bundle");
    let listed = std::fs::read_to_string(dir.join("TARGETS")).unwrap();
    let listed: Vec<&str> = listed.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(listed, bundle::WANTED.to_vec(), "TARGETS");
    // Each entry is a code object for its own target: EF_AMDGPU_MACH of e_flags.
    let mach = |t: &str| match t {
        "gfx1010" => 0x33,
        "gfx1011" => 0x34,
        "gfx1012" => 0x35,
        "gfx1030" => 0x36,
        "gfx1031" => 0x37,
        "gfx1032" => 0x38,
        "gfx1033" => 0x39,
        "gfx1035" => 0x3d,
        "gfx1034" => 0x3e,
        "gfx1100" => 0x41,
        "gfx1103" => 0x44,
        "gfx1036" => 0x45,
        "gfx1101" => 0x46,
        "gfx1102" => 0x47,
        _ => 0,
    };
    for e in bundle::entries(&bytes).unwrap() {
        let flags = u32::from_le_bytes(bytes[e.offset + 0x30..e.offset + 0x34].try_into().unwrap());
        assert_eq!(
            flags & 0xff,
            mach(&e.target),
            "{}: e_flags {flags:#x}",
            e.id
        );
    }
}
