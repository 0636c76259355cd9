//! Who called a hook, from its return address: the ROCm runtime itself
//! (HIP's allocations and its own hostcall/signal/kernarg buffers, which
//! must never be rewritten), a library that needs coherent memory to work
//! (RCCL's proxy and flag buffers, OpenMP offload's RPC buffers: a kernel
//! polls what another agent writes), or the application.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// What kind of code made a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The ROCm runtime's own libraries: never rewritten, nor recorded.
    Runtime,
    /// Libraries whose buffers must stay coherent: padded, not rewritten.
    NeedsCoherence,
    /// Everything else.
    App,
}

/// File-name prefixes of the runtime's own libraries.
const RUNTIME_LIBS: [&[u8]; 4] = [
    b"libamdhip64",
    b"libhsa-runtime64",
    b"libhsakmt",
    b"librocprofiler",
];

/// Libraries that synchronise with the GPU through memory both sides poll.
const COHERENT_LIBS: [&[u8]; 4] = [b"librccl", b"libomptarget", b"librocshmem", b"libmscclpp"];

/// The kind of library at this path (as dladdr reports it).
pub fn classify_path(path: &[u8]) -> Caller {
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    if RUNTIME_LIBS.iter().any(|lib| base.starts_with(lib)) {
        Caller::Runtime
    } else if COHERENT_LIBS.iter().any(|lib| base.starts_with(lib)) {
        Caller::NeedsCoherence
    } else {
        Caller::App
    }
}

/// A small direct-mapped cache of verdicts by return address: calls come
/// from a handful of places, and dladdr is too slow for every call. Each
/// slot packs the address (user space, < 2^47) with the verdict in bits 62-63.
static CACHE: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
const RUNTIME_BIT: u64 = 1 << 63;
const COHERENT_BIT: u64 = 1 << 62;

pub fn classify(caller: usize) -> Caller {
    let addr = caller as u64;
    let slot = &CACHE[((addr >> 4) % 64) as usize];
    let seen = slot.load(Ordering::Relaxed);
    if seen & !(RUNTIME_BIT | COHERENT_BIT) == addr && addr != 0 {
        return match (seen & RUNTIME_BIT != 0, seen & COHERENT_BIT != 0) {
            (true, _) => Caller::Runtime,
            (_, true) => Caller::NeedsCoherence,
            _ => Caller::App,
        };
    }
    let verdict = lookup(caller);
    let bits = match verdict {
        Caller::Runtime => RUNTIME_BIT,
        Caller::NeedsCoherence => COHERENT_BIT,
        Caller::App => 0,
    };
    slot.store(addr | bits, Ordering::Relaxed);
    verdict
}

pub fn is_runtime(caller: usize) -> bool {
    classify(caller) == Caller::Runtime
}

/// Whether memory this caller asks for may be rewritten to non-coherent.
pub fn may_rewrite(caller: usize) -> bool {
    classify(caller) == Caller::App
}

fn lookup(caller: usize) -> Caller {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::uninit();
    // SAFETY: dladdr only reads loader data for this address.
    if caller == 0 || unsafe { libc::dladdr(caller as *const libc::c_void, info.as_mut_ptr()) } == 0
    {
        return Caller::App;
    }
    // SAFETY: dladdr succeeded, so info is filled.
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return Caller::App;
    }
    // SAFETY: a NUL-terminated path owned by the loader.
    classify_path(unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes())
}

/// The executable segment of the loaded object that holds `addr`:
/// `[start, end)`, from the loader's program headers.
pub fn text_range(addr: usize) -> Option<(usize, usize)> {
    struct Find {
        addr: usize,
        found: Option<(usize, usize)>,
    }
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid info; data is our Find.
        let (info, find) = unsafe { (&*info, &mut *(data as *mut Find)) };
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        // SAFETY: dlpi_phnum headers at dlpi_phdr.
        let headers =
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        for h in headers {
            if h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0 {
                let start = (info.dlpi_addr as usize).wrapping_add(h.p_vaddr as usize);
                let end = start.wrapping_add(h.p_memsz as usize);
                if (start..end).contains(&find.addr) {
                    find.found = Some((start, end));
                    return 1;
                }
            }
        }
        0
    }
    let mut find = Find { addr, found: None };
    // SAFETY: each only reads the loader's headers and writes our Find.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut find as *mut Find).cast()) };
    // Only the runtime's own code: never our own or the application's.
    find.found.filter(|_| classify(addr) == Caller::Runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_recognised_by_file_name() {
        assert_eq!(
            classify_path(b"/opt/rocm/lib/libamdhip64.so.6"),
            Caller::Runtime
        );
        assert_eq!(
            classify_path(b"/usr/lib/x86_64-linux-gnu/libhsa-runtime64.so.1.5.0"),
            Caller::Runtime
        );
        assert_eq!(
            classify_path(b"/opt/rocm/lib/librccl.so.1"),
            Caller::NeedsCoherence
        );
        assert_eq!(
            classify_path(b"/opt/rocm/llvm/lib/libomptarget.so"),
            Caller::NeedsCoherence
        );
        assert_eq!(classify_path(b"/usr/lib/python3/libffi.so.8"), Caller::App);
        assert_eq!(
            classify_path(b"/home/u/libamdhip64-wrapper/app"),
            Caller::App
        );
        assert_eq!(classify_path(b""), Caller::App);
    }

    #[test]
    fn an_address_in_this_test_binary_is_the_application() {
        let here = an_address_in_this_test_binary_is_the_application as *const () as usize;
        assert_eq!(classify(here), Caller::App);
        assert_eq!(classify(here), Caller::App, "cached verdict");
        assert!(may_rewrite(here) && !is_runtime(here));
        assert_eq!(classify(0), Caller::App);
    }
}
