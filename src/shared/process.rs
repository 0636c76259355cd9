//! Facts about the process rocm-fix runs in: secure execution, where the
//! KFD topology is, and which GPUs HIP numbers.

use crate::topology::{self, Family, Gpu};

/// True in secure-execution processes (setuid, setgid, file capabilities):
/// the kernel's AT_SECURE. There rocm-fix ignores every environment setting
/// and writes no files.
pub fn secure_execution() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// The variable the simulated device sets (scripts/simgpu-env) to redirect
/// the KFD topology; ignored in secure-execution processes.
pub const TOPOLOGY_VAR: &str = "SIMGPU_KFD_TOPOLOGY";

pub fn topology_root(secure: bool) -> String {
    match std::env::var(TOPOLOGY_VAR) {
        Ok(r) if !secure && !r.is_empty() => r,
        _ => topology::default_root().to_string(),
    }
}

/// Indices of the GPUs the runtime shows, from ROCR_VISIBLE_DEVICES then
/// HIP_VISIBLE_DEVICES (comma-separated ordinals). None when neither is set
/// or a value is not a plain list of ordinals (UUIDs): then every device is
/// judged by whether any GPU is active.
pub fn visible_devices(env: &dyn Fn(&str) -> Option<String>, secure: bool) -> Option<Vec<usize>> {
    let parse =
        |v: &str| -> Option<Vec<usize>> { v.split(',').map(|t| t.trim().parse().ok()).collect() };
    let mut order: Option<Vec<usize>> = None;
    for var in ["ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"] {
        let Some(v) = env(var).filter(|_| !secure) else {
            continue;
        };
        let list = parse(&v)?;
        order = Some(match order {
            None => list,
            Some(prev) => list.iter().filter_map(|&i| prev.get(i).copied()).collect(),
        });
    }
    order
}

/// The real chip of each HIP device ordinal: GPUs in topology order, as ROCr
/// enumerates agents, filtered by the visible-devices list.
pub fn hip_devices(gpus: &[Gpu], visible: Option<&[usize]>) -> Vec<(u32, Family)> {
    let all = gpus
        .iter()
        .map(|g| (g.gfx_target_version, topology::family(g.gfx_target_version)));
    match visible {
        None => all.collect(),
        Some(v) => {
            let all: Vec<_> = all.collect();
            v.iter().filter_map(|&i| all.get(i).copied()).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn visible_devices_compose_rocr_then_hip() {
        let e = env_of(&[
            ("ROCR_VISIBLE_DEVICES", "2,0"),
            ("HIP_VISIBLE_DEVICES", "1"),
        ]);
        assert_eq!(visible_devices(&e, false), Some(vec![0]));
        assert_eq!(visible_devices(&e, true), None, "ignored under AT_SECURE");
        let e = env_of(&[("HIP_VISIBLE_DEVICES", "GPU-1234")]);
        assert_eq!(visible_devices(&e, false), None);
    }

    #[test]
    fn hip_devices_follow_the_topology_order() {
        let gpus = [
            Gpu {
                node: 1,
                gfx_target_version: 100300,
                device_id: 0x73bf,
            },
            Gpu {
                node: 2,
                gfx_target_version: 110000,
                device_id: 0x744c,
            },
        ];
        assert_eq!(
            hip_devices(&gpus, None),
            vec![(100300, Family::Rdna2), (110000, Family::Rdna3)]
        );
        assert_eq!(
            hip_devices(&gpus, Some(&[1])),
            vec![(110000, Family::Rdna3)]
        );
        assert_eq!(hip_devices(&gpus, Some(&[5])), vec![]);
    }
}
