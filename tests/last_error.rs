//! HIP's last-error state around rocm-fix's own calls (issue 11), on each
//! release's semantics: the simulated 6.4 stores every result (a success
//! clears an earlier error), 7.2 stores only errors in hipGetLastError's
//! slot and every result in hipExtGetLastError's. With 2 MiB of VRAM a
//! 2 MiB hipMalloc fits only unpadded: rocm-fix's padded attempt fails and
//! it retries as asked; the application's next hipGetLastError must be what
//! it is without the preload.

mod common;
use common::*;

fn last_error_runs(version: &str, steps: &[&str]) -> (Run, Run) {
    let prog = program_with("simwork", &[&format!("--simgpu={version}")]);
    both(
        || {
            let mut c = clean_command(&prog);
            for (k, v) in simgpu_env_for("gfx1010:vram=2M", version) {
                c.env(k, v);
            }
            c.args(steps);
            c
        },
        &[("ROCM_FIX_STATS", "1")],
    )
}

#[test]
fn a_retried_padded_allocation_leaves_hip_get_last_error_as_without_the_preload() {
    for version in ["6.4", "7.2"] {
        for steps in [
            &["malloc:0x200000", "lasterror"][..],
            &["malloc:0x1000", "lasterror"][..],
            &["setdev:99", "malloc:0x1000", "lasterror"][..],
            &[
                "malloc:0x200000",
                "malloc:0x400000",
                "lasterror",
                "lasterror",
            ][..],
        ] {
            let (without, with) = last_error_runs(version, steps);
            assert_eq!(with.code, without.code, "{version} {steps:?}: {with:#?}");
            assert_eq!(without.stdout, with.stdout, "{version} {steps:?}");
            assert!(with.stdout.contains("last error "), "{with:#?}");
        }
        // The padded attempt really failed and was retried (else this proves nothing).
        let (_, with) = last_error_runs(version, &["malloc:0x200000", "lasterror"]);
        assert!(with.stderr.contains(" retried 1 "), "{version}: {with:#?}");
    }
}

/// With an error pending (left unread by the application) the 6.x semantics
/// are safe: the allocation's own success overwrites it either way.
#[test]
fn on_6_x_semantics_a_pending_error_is_overwritten_with_or_without_the_preload() {
    let (without, with) = last_error_runs("6.4", &["setdev:99", "malloc:0x200000", "lasterror"]);
    assert_eq!(without.stdout, with.stdout);
    assert!(with.stdout.contains("last error 0"), "{with:#?}");
}

/// On 7.x semantics an error the application left unread stays pending: a
/// failed padded attempt of ours must not replace it, so rocm-fix makes none
/// while one is pending (the buffer is kept exactly as asked).
#[test]
fn on_7_x_semantics_a_pending_error_survives_our_attempts() {
    let steps = ["setdev:99", "malloc:0x200000", "lasterror"];
    let (without, with) = last_error_runs("7.2", &steps);
    assert!(without.stdout.contains("last error 101"), "{without:#?}");
    assert_eq!(without.stdout, with.stdout, "{with:#?}");
}
