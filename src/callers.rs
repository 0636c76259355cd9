//! Who called `hsa_amd_memory_pool_allocate`: the ROCm runtime itself
//! (HIP's allocations and its own hostcall/signal/kernarg buffers, which
//! must never be rewritten) or the application.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Sonames of the runtime's own libraries.
const RUNTIME_LIBS: [&[u8]; 4] = [
    b"libamdhip64",
    b"libhsa-runtime64",
    b"libhsakmt",
    b"librocprofiler",
];

/// Whether a library path (as dladdr reports it) is part of the runtime.
pub fn is_runtime_path(path: &[u8]) -> bool {
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    RUNTIME_LIBS.iter().any(|lib| base.starts_with(lib))
}

/// A small direct-mapped cache of verdicts by return address: the runtime
/// calls from a handful of places, and dladdr is too slow for every call.
/// Each slot packs the address (user space, < 2^47) with the verdict in bit 63.
static CACHE: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
const RUNTIME_BIT: u64 = 1 << 63;

pub fn is_runtime(caller: usize) -> bool {
    let addr = caller as u64;
    let slot = &CACHE[((addr >> 4) % 64) as usize];
    let seen = slot.load(Ordering::Relaxed);
    if seen & !RUNTIME_BIT == addr && addr != 0 {
        return seen & RUNTIME_BIT != 0;
    }
    let verdict = lookup(caller);
    slot.store(
        addr | if verdict { RUNTIME_BIT } else { 0 },
        Ordering::Relaxed,
    );
    verdict
}

fn lookup(caller: usize) -> bool {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::uninit();
    // SAFETY: dladdr only reads loader data for this address.
    if caller == 0 || unsafe { libc::dladdr(caller as *const libc::c_void, info.as_mut_ptr()) } == 0
    {
        return false;
    }
    // SAFETY: dladdr succeeded, so info is filled.
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return false;
    }
    // SAFETY: a NUL-terminated path owned by the loader.
    is_runtime_path(unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_libraries_are_recognised_by_file_name() {
        assert!(is_runtime_path(b"/opt/rocm/lib/libamdhip64.so.6"));
        assert!(is_runtime_path(
            b"/usr/lib/x86_64-linux-gnu/libhsa-runtime64.so.1.5.0"
        ));
        assert!(!is_runtime_path(b"/usr/lib/python3/libffi.so.8"));
        assert!(!is_runtime_path(b"/home/u/libamdhip64-wrapper/app"));
        assert!(!is_runtime_path(b""));
    }

    #[test]
    fn an_address_in_this_test_binary_is_not_the_runtime() {
        let here = an_address_in_this_test_binary_is_not_the_runtime as *const () as usize;
        assert!(!is_runtime(here));
        assert!(!is_runtime(here), "cached verdict");
        assert!(!is_runtime(0));
    }
}
