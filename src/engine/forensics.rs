//! Fault forensics: a system event handler that, on a GPU memory fault,
//! names the allocation the address belongs to (or lies just past), appends
//! one JSON record to the fault journal and prints a short hint.
//!
//! It returns a failure status on purpose: ROCr then prints its own message
//! and aborts (ROCR-Runtime src/core/runtime/runtime.cpp `VMFaultHandler`,
//! rocm-6.2.4). The queues are already dead; hiding the fault
//! would leave the program hanging instead of letting it (or rocm-fix-run)
//! start over.

use crate::abi::*;
use crate::policy;
use crate::registry::Alloc;
use crate::state::{books, real, state};
use crate::stats::{self, Stat};
use std::ffi::c_void;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// hsa_amd_event_t (hsa_ext_amd.h, ROCR-Runtime rocm-6.2.4): type @0, then the fault info @8:
/// agent @8, virtual_address @16, fault_reason_mask @24.
#[repr(C)]
struct Event {
    event_type: u32,
    _pad: u32,
    agent: u64,
    virtual_address: u64,
    fault_reason_mask: u32,
}

const GPU_MEMORY_FAULT_EVENT: u32 = 0;

pub fn register_handler() {
    let Some(f) = (match real(RealFn::HsaRegisterSystemEventHandler) {
        0 => None,
        // SAFETY: the front resolved the real function of this signature.
        p => Some(unsafe { std::mem::transmute::<usize, HsaRegisterFn>(p) }),
    }) else {
        return;
    };
    // SAFETY: on_event matches the callback type and needs no data.
    let r = unsafe { f(on_event, std::ptr::null_mut()) };
    log::debug!("fault handler registered: status {r:#x}");
}

unsafe extern "C" fn on_event(event: *const c_void, _data: *mut c_void) -> u32 {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ROCr passes a valid hsa_amd_event_t for the call's duration.
        if let Some(ev) = unsafe { event.cast::<Event>().as_ref() } {
            if ev.event_type == GPU_MEMORY_FAULT_EVENT {
                stats::add(Stat::Faults, 1);
                report(ev.virtual_address, ev.fault_reason_mask, node_of(ev.agent));
            }
        }
    }));
    policy::HSA_STATUS_ERROR
}

fn node_of(agent: u64) -> Option<u32> {
    let f = match real(RealFn::HsaAgentGetInfo) {
        0 => return None,
        // SAFETY: the front resolved the real function of this signature.
        p => unsafe { std::mem::transmute::<usize, HsaAgentGetInfoFn>(p) },
    };
    let mut node: u32 = 0;
    // SAFETY: DRIVER_NODE_ID is a u32 attribute.
    let r = unsafe {
        f(
            agent,
            policy::HSA_AMD_AGENT_INFO_DRIVER_NODE_ID,
            (&mut node as *mut u32).cast(),
        )
    };
    (r == policy::HSA_STATUS_SUCCESS).then_some(node)
}

/// The fault as one JSON object (one line of the journal).
pub fn record_json(
    addr: u64,
    mask: u32,
    node: Option<u32>,
    gfx: Option<&str>,
    hit: Option<(Alloc, i64)>,
) -> String {
    let st = state();
    let alloc = match hit {
        Some((a, past)) => format!(
            "{{\"base\":\"{:#x}\",\"size\":{},\"padding\":{},\"kind\":\"{}\",\"device\":{},\"past_end\":{}}}",
            a.base,
            a.size,
            a.padding,
            a.kind.as_str(),
            a.device,
            past
        ),
        None => "null".to_string(),
    };
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{{\"event\":\"gpu-memory-fault\",\"time\":{time},\"pid\":{},\"address\":\"{addr:#x}\",\"reason_mask\":{mask},\"node\":{},\"gfx\":{},\"mode\":\"{}\",\"pad_bytes\":{},\"allocation\":{alloc},\"version\":\"{}\"}}",
        std::process::id(),
        node.map_or("null".to_string(), |n| n.to_string()),
        gfx.map_or("null".to_string(), |g| format!("\"{g}\"")),
        st.cfg.mode.as_str(),
        st.cfg.pad_bytes,
        crate::VERSION,
    )
}

/// The one-paragraph hint for stderr.
/// `observe`: rocm-fix changes nothing in this process (ROCM_FIX_MODE=observe),
/// so a padding size would not apply: the hint says how to turn it on.
pub fn hint(addr: u64, hit: Option<(Alloc, i64)>, observe: bool) -> String {
    match hit {
        Some((a, past)) if past >= 0 && observe => format!(
            "rocm-fix: the GPU faulted at {addr:#x}, {past} bytes past the end of a {}-byte {} allocation at {:#x}: \
             a kernel read past its buffer. rocm-fix only watches in observe mode; ROCM_FIX_MODE=on pads \
             allocations (rocm-fix-run retries so by itself).",
            a.size,
            a.kind.as_str(),
            a.base,
        ),
        Some((a, past)) if past >= 0 => format!(
            "rocm-fix: the GPU faulted at {addr:#x}, {past} bytes past the end of a {}-byte {} allocation at {:#x} \
             (padded by {} bytes): a kernel read past its buffer. A larger padding may keep this run alive: \
             ROCM_FIX_PAD={}.",
            a.size,
            a.kind.as_str(),
            a.base,
            a.padding,
            rocm_fix_shared::config::suggested_pad(past as u64)
        ),
        Some((a, past)) => format!(
            "rocm-fix: the GPU faulted at {addr:#x}, inside a {}-byte {} allocation at {:#x} ({} bytes from its \
             start): this is not an over-read that padding can absorb.",
            a.size,
            a.kind.as_str(),
            a.base,
            a.size as i64 + past
        ),
        None => format!(
            "rocm-fix: the GPU faulted at {addr:#x}, which is not in or just past any allocation rocm-fix saw."
        ),
    }
}

fn report(addr: u64, mask: u32, node: Option<u32>) {
    let st = state();
    let hit = books().and_then(|r| r.locate(addr));
    let gfx = node
        .and_then(|n| st.gpus.iter().find(|g| g.node == n))
        .map(|g| rocm_fix_shared::topology::gfx_name(g.gfx_target_version));
    let line = record_json(addr, mask, node, gfx.as_deref(), hit);
    if let (Some(path), false) = (&st.cfg.journal, st.secure) {
        if let Err(e) = append_journal(path, &line) {
            use std::os::unix::ffi::OsStrExt;
            eprintln!(
                "rocm-fix: cannot append to the fault journal {}: {}",
                rocm_fix_shared::config::shown_bytes(path.as_os_str().as_bytes()),
                rocm_fix_shared::config::shown(&e.to_string())
            );
        }
    }
    let observe = st.cfg.mode == rocm_fix_shared::config::Mode::Observe;
    eprintln!("{}", hint(addr, hit, observe));
}

/// Appends one line to the journal, which must be a regular file (or not
/// exist yet). This runs in the fault path, where blocking would turn the
/// abort the user gets without rocm-fix into a hang: a FIFO, a device or a
/// symbolic link is refused before anything is opened, the open never
/// blocks (O_NONBLOCK) nor follows a link (O_NOFOLLOW, against a swap after
/// the check), and what was opened is checked again before a byte is written.
fn append_journal(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = || Error::new(ErrorKind::InvalidInput, "not a regular file; not written");
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => return Err(not_regular()),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(not_regular());
    }
    // One write of the whole line: O_APPEND keeps concurrent writers' lines whole.
    f.write_all(format!("{line}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Kind;

    fn alloc() -> Alloc {
        Alloc {
            base: 0x7000_0000,
            size: 37_000,
            padding: 28_440,
            kind: Kind::Device,
            device: 0,
        }
    }

    #[test]
    fn the_hint_names_the_overshoot_and_a_larger_padding() {
        let h = hint(0x7001_0000, Some((alloc(), 0x1_0000 - 37_000)), false);
        assert!(
            h.contains("28536 bytes past the end of a 37000-byte device allocation at 0x70000000"),
            "{h}"
        );
        // Twice the distance, in whole 2 MiB blocks (a sink costs no VRAM per buffer).
        assert!(h.contains("ROCM_FIX_PAD=2M"), "{h}");
        let h = hint(0x7000_1000, Some((alloc(), 4096 - 37_000)), false);
        assert!(
            h.contains("inside a 37000-byte device allocation")
                && h.contains("4096 bytes from its start"),
            "{h}"
        );
        assert!(hint(0x10, None, false).contains("not in or just past any allocation"));
        // Observe mode applies no padding: the hint turns rocm-fix on instead.
        let h = hint(0x7001_0000, Some((alloc(), 0x1_0000 - 37_000)), true);
        assert!(h.contains("ROCM_FIX_MODE=on"), "{h}");
        assert!(!h.contains("ROCM_FIX_PAD"), "{h}");
    }
}
