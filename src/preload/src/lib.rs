//! librocm_fix.so — the front that the dynamic linker preloads.
//!
//! Every `extern "C"` hook of rocm-fix is here, and each is one line: it
//! hands the call to the engine (`librocm_fix_engine.so`, the std crate at
//! the repository root), which this front opens with dlopen on the first
//! HIP/HSA call. Until then the front does nothing at all: no constructor,
//! no allocation, no file, no thread, one imported symbol (dl_iterate_phdr,
//! through which glibc's own dlvsym is found on the first lookup: realdl.rs).
//! If the engine cannot be loaded, every hook forwards to the real function.
//!
//! Three hooks are naked trampolines: `dlsym` and `dlvsym` (so that
//! `dlsym(RTLD_NEXT, …)` from other libraries reaches glibc with *their*
//! return address, the recursion trap of interposers that wrap dlsym) and
//! `hsa_amd_memory_pool_allocate` (which passes its caller's return address
//! on, so the engine can tell the runtime's own allocations from the
//! application's).
#![no_std]
#![allow(non_snake_case, clippy::missing_safety_doc)]

mod apitable;
mod elfhash;
mod realdl;

#[path = "../../engine/abi.rs"]
#[allow(dead_code)]
mod engine_abi;

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use engine_abi::*;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // The front is written not to panic; if it ever does, stop here rather
    // than unwind through C frames.
    // SAFETY: ud2 raises SIGILL; nothing follows.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}

const HIP_ERROR_NOT_INITIALIZED: c_int = 3;
const HSA_STATUS_ERROR_NOT_INITIALIZED: u32 = 0x100B;

// ---- byte helpers -----------------------------------------------------------
// Volatile, so that LLVM does not turn them into memcpy/strlen calls: each
// libc import is a symbol lookup (an IFUNC resolution for these) in every
// process at start-up.

unsafe fn c_strlen(s: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: s is NUL-terminated (callers pass loader/caller strings).
    while unsafe { core::ptr::read_volatile(s.add(n)) } != 0 {
        n += 1;
    }
    n
}

unsafe fn copy_bytes(dst: *mut u8, src: *const u8, n: usize) {
    for i in 0..n {
        // SAFETY: the caller guarantees n readable/writable bytes.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
}

// ---- real functions -------------------------------------------------------

type DlsymFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;
type DlopenFn = unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void;
type DladdrFn = unsafe extern "C" fn(*const c_void, *mut libc::Dl_info) -> c_int;
type DlvsymFn = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> *mut c_void;

/// glibc's dlvsym (the front's own `dlvsym` is the hook below); null when
/// it cannot be found.
unsafe fn real_dlvsym(handle: *mut c_void, name: *const c_char, ver: *const c_char) -> *mut c_void {
    match realdl::real_dlvsym() {
        0 => core::ptr::null_mut(),
        // SAFETY: glibc's dlvsym, read from libc's symbol table.
        f => unsafe { core::mem::transmute::<usize, DlvsymFn>(f)(handle, name, ver) },
    }
}

static REAL_DLSYM: AtomicUsize = AtomicUsize::new(0);
static REAL_DLOPEN: AtomicUsize = AtomicUsize::new(0);
static REAL_DLADDR: AtomicUsize = AtomicUsize::new(0);
static REAL_CACHE: [AtomicUsize; REAL.len()] = [const { AtomicUsize::new(0) }; REAL.len()];

/// glibc's own function `name`, found past this library (RTLD_NEXT), cached.
unsafe fn libc_fn(cache: &AtomicUsize, name: &[u8]) -> usize {
    // SAFETY: NUL-terminated constants (the callers' and these).
    unsafe { libc_fn_at(cache, name, b"GLIBC_2.34\0") }
}

/// The same, at version node `ver`, else at GLIBC_2.2.5 (x86_64's first).
unsafe fn libc_fn_at(cache: &AtomicUsize, name: &[u8], ver: &[u8]) -> usize {
    let cached = cache.load(Ordering::Acquire);
    if cached != 0 {
        return cached;
    }
    let mut p = 0;
    for ver in [ver, b"GLIBC_2.2.5\0"] {
        // SAFETY: both strings are NUL-terminated constants.
        p = unsafe { real_dlvsym(libc::RTLD_NEXT, name.as_ptr().cast(), ver.as_ptr().cast()) }
            as usize;
        if p != 0 {
            break;
        }
    }
    cache.store(p, Ordering::Release);
    p
}

/// Called from the naked `dlsym` when the real one is not known yet.
/// glibc's dlsym: through glibc's dlvsym, else read from libc's own symbol
/// table as dlvsym is (realdl.rs), so that a failure of one route never
/// leaves every dlsym lookup of the process answering NULL.
unsafe extern "C" fn resolve_real_dlsym() -> usize {
    // SAFETY: a NUL-terminated constant name.
    match unsafe { libc_fn(&REAL_DLSYM, b"dlsym\0") } {
        0 => {
            let p = realdl::libc_symbol(b"dlsym");
            if p != 0 {
                REAL_DLSYM.store(p, Ordering::Release);
            }
            p
        }
        p => p,
    }
}

unsafe fn real_dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    // SAFETY: the address came from glibc's dlvsym for "dlsym".
    match unsafe { resolve_real_dlsym() } {
        0 => core::ptr::null_mut(),
        f => unsafe { core::mem::transmute::<usize, DlsymFn>(f)(handle, name) },
    }
}

unsafe fn real_dlopen(name: *const c_char, mode: c_int) -> *mut c_void {
    // SAFETY: the address came from glibc's dlvsym for "dlopen".
    match unsafe { libc_fn(&REAL_DLOPEN, b"dlopen\0") } {
        0 => core::ptr::null_mut(),
        f => unsafe { core::mem::transmute::<usize, DlopenFn>(f)(name, mode) },
    }
}

/// The real function `id`: the next definition after this library, at its
/// version node or unversioned; failing that, the runtime opened with
/// dlopen(RTLD_LOCAL), through an RTLD_NOLOAD handle (checked on Debian 12, glibc 2.36).
/// Only successes are cached: the runtime may be loaded later.
unsafe extern "C" fn resolve(id: u32) -> usize {
    let Some(cache) = REAL_CACHE.get(id as usize) else {
        return 0;
    };
    let cached = cache.load(Ordering::Acquire);
    if cached != 0 {
        return cached;
    }
    // A function AMD's builds dispatch through their API table: the route is
    // decided before it is first looked up (the engine keeps what it gets).
    if apitable::is_table_function_id(id) {
        apitable::decide_route();
        let now = cache.load(Ordering::Acquire);
        if now != 0 {
            return now;
        }
    }
    let p = find_real(id);
    // Only into an empty slot: the API-table route stores the runtime's own
    // implementation there (apitable.rs), and a lookup that raced with it
    // must not put the exported function back.
    if p != 0 {
        return match cache.compare_exchange(0, p, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => p,
            Err(now) => now,
        };
    }
    p
}

/// [`resolve`]'s lookup, without the cache: the exported function.
fn find_real(id: u32) -> usize {
    let Some(&(name, ver, lib)) = REAL.get(id as usize) else {
        return 0;
    };
    let sonames: &[&[u8]] = match lib {
        Lib::Hip => &HIP_SONAMES,
        Lib::Hsa => &HSA_SONAMES,
    };
    find_by_name(name, Some(ver), sonames)
}

/// The runtime's function `name` (NUL-terminated), at version `ver` where
/// given: the next definition after this library, else in the first of
/// `sonames` already loaded (opened with dlopen(RTLD_LOCAL), found through
/// an RTLD_NOLOAD handle). Not cached.
fn find_by_name(name: &[u8], ver: Option<&[u8]>, sonames: &[&[u8]]) -> usize {
    let n = name.as_ptr().cast::<c_char>();
    let v = ver.map(|v| v.as_ptr().cast::<c_char>());
    // Unversioned first: dlvsym skips unversioned definitions, so another
    // interposer listed after us (a shim of the user's) would be bypassed.
    // SAFETY: NUL-terminated constants; handles come from the loader.
    let mut p = unsafe { real_dlsym(libc::RTLD_NEXT, n) } as usize;
    // Another rocm-fix front after this one (inert, or an older one that
    // is not): look past it, to the runtime (its hooks are unversioned).
    if p != 0 && apitable::in_a_front(p) {
        p = 0;
    }
    if let (0, Some(v)) = (p, v) {
        p = unsafe { real_dlvsym(libc::RTLD_NEXT, n, v) } as usize;
    }
    for so in sonames {
        if p != 0 {
            break;
        }
        // SAFETY: as above. The NOLOAD reference is kept: the runtime stays loaded.
        let h = unsafe { real_dlopen(so.as_ptr().cast(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if !h.is_null() {
            if let Some(v) = v {
                p = unsafe { real_dlvsym(h, n, v) } as usize;
            }
            if p == 0 {
                p = unsafe { real_dlsym(h, n) } as usize;
            }
        }
    }
    p
}

/// The hot path of [`resolve`]: a constant index, so no bounds check, and no
/// call once the real function is known.
#[inline(always)]
fn real_fast(id: RealFn) -> usize {
    const { assert!(REAL.len() == REAL_CACHE.len()) };
    let cached = match REAL_CACHE.get(id as usize) {
        Some(c) => c.load(Ordering::Acquire),
        None => 0,
    };
    if cached != 0 {
        return cached;
    }
    // SAFETY: resolve accepts any id.
    unsafe { resolve(id as u32) }
}

// ---- the engine -------------------------------------------------------------

static SERVICES: FrontServices = FrontServices {
    abi_version: ABI_VERSION,
    resolve,
    passthrough: &FALLBACK,
    set_runtime,
};

/// The HIP runtime's code and the real HSA allocate/free (set_runtime).
static RT_LO: AtomicUsize = AtomicUsize::new(0);
static RT_HI: AtomicUsize = AtomicUsize::new(0);
static RT_POOL_ALLOCATE: AtomicUsize = AtomicUsize::new(0);
static RT_POOL_FREE: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn set_runtime(lo: usize, hi: usize, pool_allocate: usize, pool_free: usize) {
    // The functions first: a range is only used once they are there.
    RT_POOL_ALLOCATE.store(pool_allocate, Ordering::Release);
    RT_POOL_FREE.store(pool_free, Ordering::Release);
    RT_LO.store(lo, Ordering::Release);
    RT_HI.store(hi, Ordering::Release);
}
static ENGINE: AtomicPtr<EngineHooks> = AtomicPtr::new(core::ptr::null_mut());

/// Passthrough: once the engine has decided it has nothing to do in this
/// process (or cannot be loaded), each hook jumps straight to the real
/// function (a load, a test and a jump), instead of going through the table.
/// With a working engine, the hooks of the same signature jump straight to
/// the engine's (arm_engine).
static D_HIP_MALLOC: AtomicUsize = AtomicUsize::new(0);
static D_HIP_FREE: AtomicUsize = AtomicUsize::new(0);
static D_HIP_HOST_MALLOC: AtomicUsize = AtomicUsize::new(0);
static D_HIP_HOST_ALLOC: AtomicUsize = AtomicUsize::new(0);
static D_HIP_HOST_FREE: AtomicUsize = AtomicUsize::new(0);
static D_HIP_FREE_HOST: AtomicUsize = AtomicUsize::new(0);
static D_HIP_MALLOC_MANAGED: AtomicUsize = AtomicUsize::new(0);
static D_HIP_EXT_MALLOC: AtomicUsize = AtomicUsize::new(0);
static D_HIP_MEM_ADVISE: AtomicUsize = AtomicUsize::new(0);
static D_HSA_INIT: AtomicUsize = AtomicUsize::new(0);
static D_HSA_POOL_ALLOCATE: AtomicUsize = AtomicUsize::new(0);
static D_HSA_POOL_FREE: AtomicUsize = AtomicUsize::new(0);
static D_HSA_SVM_SET: AtomicUsize = AtomicUsize::new(0);
static D_HIP_MALLOC_PITCH: AtomicUsize = AtomicUsize::new(0);
static D_HIP_MALLOC_3D: AtomicUsize = AtomicUsize::new(0);
static D_HIP_MEM_ALLOC_PITCH: AtomicUsize = AtomicUsize::new(0);
static D_HIP_MALLOC_ASYNC: AtomicUsize = AtomicUsize::new(0);
static D_HIP_MALLOC_FROM_POOL: AtomicUsize = AtomicUsize::new(0);
static D_HIP_FREE_ASYNC: AtomicUsize = AtomicUsize::new(0);

/// Points every hook at its real function, where that can be found now.
fn arm_direct() {
    let slots: [(&AtomicUsize, RealFn); 19] = [
        (&D_HIP_MALLOC, RealFn::HipMalloc),
        (&D_HIP_FREE, RealFn::HipFree),
        (&D_HIP_HOST_MALLOC, RealFn::HipHostMalloc),
        (&D_HIP_HOST_ALLOC, RealFn::HipHostAlloc),
        (&D_HIP_HOST_FREE, RealFn::HipHostFree),
        (&D_HIP_FREE_HOST, RealFn::HipFreeHost),
        (&D_HIP_MALLOC_MANAGED, RealFn::HipMallocManaged),
        (&D_HIP_EXT_MALLOC, RealFn::HipExtMallocWithFlags),
        (&D_HIP_MEM_ADVISE, RealFn::HipMemAdvise),
        (&D_HSA_INIT, RealFn::HsaInit),
        (&D_HSA_POOL_ALLOCATE, RealFn::HsaPoolAllocate),
        (&D_HSA_POOL_FREE, RealFn::HsaPoolFree),
        (&D_HSA_SVM_SET, RealFn::HsaSvmAttributesSet),
        (&D_HIP_MALLOC_PITCH, RealFn::HipMallocPitch),
        (&D_HIP_MALLOC_3D, RealFn::HipMalloc3D),
        (&D_HIP_MEM_ALLOC_PITCH, RealFn::HipMemAllocPitch),
        (&D_HIP_MALLOC_ASYNC, RealFn::HipMallocAsync),
        (&D_HIP_MALLOC_FROM_POOL, RealFn::HipMallocFromPoolAsync),
        (&D_HIP_FREE_ASYNC, RealFn::HipFreeAsync),
    ];
    for (slot, id) in slots {
        // The API-table functions: their first call arms them (forward_armed).
        if apitable::is_table_function(id) {
            continue;
        }
        // SAFETY: resolve takes any id and returns 0 when unknown.
        let f = unsafe { resolve(id as u32) };
        // A slot already set is the API-table route's (apitable.rs).
        if f != 0 && slot.load(Ordering::Acquire) == 0 {
            slot.store(f, Ordering::Release);
        }
    }
}

fn engine() -> &'static EngineHooks {
    let p = ENGINE.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: only ever set to a 'static table (the engine is never closed).
        return unsafe { &*p };
    }
    let table = if inert() {
        // Another rocm-fix front comes first: it handles every call, and
        // ours (reached through its real functions) go on unchanged.
        apitable::refuse();
        &FALLBACK
    } else {
        // SAFETY: load_engine only calls the loader and the engine's entry point.
        match unsafe { load_engine() } {
            Some(t) => t,
            None => {
                // SAFETY: only glibc's getauxval and write, on constants.
                unsafe { say_no_engine() };
                &FALLBACK
            }
        }
    };
    // Two threads may race here; both tables are valid, the first one wins.
    let table = match ENGINE.compare_exchange(
        core::ptr::null_mut(),
        table as *const EngineHooks as *mut EngineHooks,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => table,
        // SAFETY: as above.
        Err(winner) => unsafe { &*winner },
    };
    if core::ptr::eq(table, &FALLBACK) {
        arm_direct();
    } else {
        arm_engine(table);
    }
    table
}

static MAIN_HANDLE: AtomicUsize = AtomicUsize::new(0);

/// A handle whose dlsym searches the global scope: the program's own
/// (`dlopen(NULL)`; glibc looks a handle's symbols up in its map's local
/// scope, and the program's is the global one). Not RTLD_DEFAULT: the front
/// is linked `-Bsymbolic`, and glibc puts a DT_SYMBOLIC object first in its
/// own scope, so RTLD_DEFAULT from here would find the front's own symbols.
fn global_scope() -> *mut c_void {
    let h = MAIN_HANDLE.load(Ordering::Acquire);
    if h != 0 {
        return h as *mut c_void;
    }
    // SAFETY: dlopen(NULL) opens nothing: the program's handle.
    let h = unsafe { real_dlopen(core::ptr::null(), libc::RTLD_LAZY) };
    if h.is_null() {
        return libc::RTLD_DEFAULT;
    }
    MAIN_HANDLE.store(h as usize, Ordering::Release);
    h
}

/// 0: not known yet; 1: this is the first rocm-fix front in the global
/// scope; 2: another one comes first (two different librocm_fix.so files
/// preloaded: a distro package's in /etc/ld.so.preload and another install's
/// in LD_PRELOAD).
static INERT: AtomicUsize = AtomicUsize::new(0);

/// Whether this front stays inert: another front's `rocm_fix_get_stats` is
/// the first in the global scope (where the application's calls bind).
/// That front's hooks reach ours as their real functions (RTLD_NEXT), so
/// ours forward unchanged, or each call would be handled twice. Decided on
/// the first HIP call, never at load time.
fn inert() -> bool {
    match INERT.load(Ordering::Acquire) {
        1 => false,
        2 => true,
        _ => {
            // SAFETY: a NUL-terminated constant; the program's handle.
            let first = unsafe { real_dlsym(global_scope(), c"rocm_fix_get_stats".as_ptr()) };
            let mine = rocm_fix_get_stats as *const () as usize;
            let inert = !first.is_null() && first as usize != mine;
            INERT.store(if inert { 2 } else { 1 }, Ordering::Release);
            inert
        }
    }
}

/// An engine that works in this process: the hooks whose engine function
/// has the real function's signature (no caller address to pass) jump to it
/// straight, as passthrough jumps to the real one, without asking for the
/// table on every call (the hot path: hipMalloc and hipFree, scripts/bench;
/// those arm themselves, table_hook_slow).
fn arm_engine(t: &'static EngineHooks) {
    // The API-table functions' slots arm themselves on their first call
    // (table_hook_slow), after the route is decided.
    for (slot, f) in [
        (&D_HIP_HOST_FREE, t.hip_host_free as usize),
        (&D_HIP_FREE_HOST, t.hip_free_host as usize),
    ] {
        let _ = slot.compare_exchange(0, f, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// The engine, in the folder this library was loaded from. `$ORIGIN` in a
/// dlopen name is expanded by the dynamic linker to that folder as an
/// absolute path, fixed when the front was loaded (glibc joins a relative
/// `LD_PRELOAD=./librocm_fix.so` to the directory current *then*): a program
/// that changes directory before its first HIP call can neither lose the
/// engine nor load one planted in its new directory. dladdr's file name
/// would not do: for a relative preload it is the relative name as given.
/// In secure-execution processes glibc accepts `$ORIGIN` only at the start
/// of the name, which it is.
const ENGINE_AT_ORIGIN: &[u8] = b"$ORIGIN/librocm_fix_engine.so\0";

/// Said once, on stderr, when the engine cannot be loaded: a fixed text (no
/// path, no dlerror text), so there is nothing to escape or truncate.
const NO_ENGINE_MESSAGE: &[u8] = b"rocm-fix: cannot load librocm_fix_engine.so from the folder of \
librocm_fix.so (missing, unreadable or from another version): rocm-fix does nothing in this \
process, every call goes to the runtime unchanged\n";

static SAID_NO_ENGINE: AtomicUsize = AtomicUsize::new(0);
static REAL_GETAUXVAL: AtomicUsize = AtomicUsize::new(0);
static REAL_WRITE: AtomicUsize = AtomicUsize::new(0);

/// Tells the user, once per process, that protection is off: not in a
/// secure-execution process (setuid and the like print nothing of ours).
unsafe fn say_no_engine() {
    if SAID_NO_ENGINE.swap(1, Ordering::AcqRel) != 0 {
        return;
    }
    type GetauxvalFn = unsafe extern "C" fn(u64) -> u64;
    type WriteFn = unsafe extern "C" fn(c_int, *const c_void, usize) -> isize;
    // SAFETY: NUL-terminated constants; the addresses are glibc's functions
    // of these signatures (getauxval since 2.16, write since 2.2.5).
    let getauxval = unsafe { libc_fn_at(&REAL_GETAUXVAL, b"getauxval\0", b"GLIBC_2.16\0") };
    // Unknown whether the process is secure: say nothing.
    if getauxval == 0
        || unsafe { core::mem::transmute::<usize, GetauxvalFn>(getauxval)(libc::AT_SECURE) } != 0
    {
        return;
    }
    let write = unsafe { libc_fn_at(&REAL_WRITE, b"write\0", b"GLIBC_2.2.5\0") };
    if write != 0 {
        // One write(2) of a constant; a short write or an error is ignored
        // (stderr may be closed: the program must not notice us).
        let _ = unsafe {
            core::mem::transmute::<usize, WriteFn>(write)(
                2,
                NO_ENGINE_MESSAGE.as_ptr().cast(),
                NO_ENGINE_MESSAGE.len(),
            )
        };
    }
}

/// Opens librocm_fix_engine.so from the folder this library was loaded
/// from: the folder of the absolute file name the loader gives for an
/// address of ours, else (a relative name) through `$ORIGIN`. Never a
/// name without a folder: that would be searched for, or found in the
/// current directory.
unsafe fn load_engine() -> Option<&'static EngineHooks> {
    let dladdr = unsafe { libc_fn(&REAL_DLADDR, b"dladdr\0") };
    let mut info = core::mem::MaybeUninit::<libc::Dl_info>::uninit();
    // SAFETY: dladdr fills info for an address of ours.
    let found = dladdr != 0
        && unsafe {
            core::mem::transmute::<usize, DladdrFn>(dladdr)(
                engine as *const () as *const c_void,
                info.as_mut_ptr(),
            )
        } != 0;
    // Not zeroed: a 4 KiB memset would import memset from libc.
    let mut buf = core::mem::MaybeUninit::<[u8; 4096]>::uninit();
    let path = buf.as_mut_ptr().cast::<u8>();
    let mut name: *const c_char = ENGINE_AT_ORIGIN.as_ptr().cast();
    // SAFETY: dladdr returned non-zero, so info is filled.
    let fname = if found {
        unsafe { info.assume_init() }.dli_fname
    } else {
        core::ptr::null()
    };
    if !fname.is_null() {
        // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
        let n = unsafe { c_strlen(fname) };
        let file = unsafe { core::slice::from_raw_parts(fname.cast::<u8>(), n) };
        if let (Some(b'/'), Some(slash)) = (file.first(), file.iter().rposition(|&b| b == b'/')) {
            let len = slash + 1;
            if len + ENGINE_FILE.len() <= 4096 {
                // SAFETY: len bytes, then the NUL-terminated file name, fit in path.
                unsafe {
                    copy_bytes(path, file.as_ptr(), len);
                    copy_bytes(path.add(len), ENGINE_FILE.as_ptr(), ENGINE_FILE.len());
                }
                name = path.cast();
            }
        }
    }
    // SAFETY: name is NUL-terminated; for $ORIGIN the loader expands it for
    // the calling object, this library.
    let h = unsafe { real_dlopen(name, libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        return None;
    }
    let init = unsafe { real_dlsym(h, ENGINE_ENTRY.as_ptr().cast()) };
    if init.is_null() {
        return None;
    }
    // SAFETY: the engine exports this entry point with the EngineInit signature.
    let hooks = unsafe { core::mem::transmute::<*mut c_void, EngineInit>(init)(&SERVICES) };
    // SAFETY: the engine returns a pointer to a 'static table, or null.
    let hooks = unsafe { hooks.as_ref() }?;
    (hooks.abi_version == ABI_VERSION).then_some(hooks)
}

// ---- the fallback: forward everything unchanged --------------------------------

macro_rules! forward {
    ($name:ident, $id:expr, $err:expr, fn($($a:ident: $t:ty),*) -> $r:ty) => {
        unsafe extern "C" fn $name($($a: $t),*) -> $r {
            // SAFETY: resolve returns the real function of this exact signature.
            match real_fast($id) {
                0 => $err,
                f => unsafe { core::mem::transmute::<usize, unsafe extern "C" fn($($t),*) -> $r>(f)($($a),*) },
            }
        }
    };
}
/// The same for the functions AMD's builds dispatch through their API table:
/// arm_direct leaves their hook's direct slot to the first call, which looks
/// the real function up (and so decides the table route, apitable.rs) in a
/// HIP call, not when the engine loads.
macro_rules! forward_armed {
    ($name:ident, $id:expr, $slot:ident, $err:expr, fn($($a:ident: $t:ty),*) -> $r:ty) => {
        unsafe extern "C" fn $name($($a: $t),*) -> $r {
            match real_fast($id) {
                0 => $err,
                f => {
                    // A slot already set is the API-table route's.
                    let _ = $slot.compare_exchange(0, f, Ordering::AcqRel, Ordering::Relaxed);
                    // SAFETY: resolve returns the real function of this exact signature.
                    unsafe { core::mem::transmute::<usize, unsafe extern "C" fn($($t),*) -> $r>(f)($($a),*) }
                }
            }
        }
    };
}
/// The same, for hooks that also receive their caller's return address.
macro_rules! forward_with_caller {
    ($name:ident, $id:expr, $err:expr, fn($($a:ident: $t:ty),*) -> $r:ty) => {
        unsafe extern "C" fn $name($($a: $t,)* _caller: usize) -> $r {
            // SAFETY: resolve returns the real function of this exact signature.
            match real_fast($id) {
                0 => $err,
                f => unsafe { core::mem::transmute::<usize, unsafe extern "C" fn($($t),*) -> $r>(f)($($a),*) },
            }
        }
    };
}
forward_armed!(
    fb_hip_malloc,
    RealFn::HipMalloc,
    D_HIP_MALLOC,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut *mut c_void, s: usize) -> c_int
);
forward_armed!(
    fb_hip_free,
    RealFn::HipFree,
    D_HIP_FREE,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut c_void) -> c_int
);
forward_with_caller!(
    fb_hip_host_malloc,
    RealFn::HipHostMalloc,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut *mut c_void, s: usize, f: u32) -> c_int
);
forward_with_caller!(
    fb_hip_host_alloc,
    RealFn::HipHostAlloc,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut *mut c_void, s: usize, f: u32) -> c_int
);
forward!(
    fb_hip_host_free,
    RealFn::HipHostFree,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut c_void) -> c_int
);
forward!(
    fb_hip_free_host,
    RealFn::HipFreeHost,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut c_void) -> c_int
);
forward_with_caller!(
    fb_hip_malloc_managed,
    RealFn::HipMallocManaged,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut *mut c_void, s: usize, f: u32) -> c_int
);
forward_with_caller!(
    fb_hip_ext_malloc,
    RealFn::HipExtMallocWithFlags,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut *mut c_void, s: usize, f: u32) -> c_int
);
forward_with_caller!(
    fb_hip_mem_advise,
    RealFn::HipMemAdvise,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *const c_void, c: usize, a: c_int, d: c_int) -> c_int
);
forward!(
    fb_hsa_init,
    RealFn::HsaInit,
    HSA_STATUS_ERROR_NOT_INITIALIZED,
    fn() -> u32
);
forward_with_caller!(
    fb_hsa_pool_free,
    RealFn::HsaPoolFree,
    HSA_STATUS_ERROR_NOT_INITIALIZED,
    fn(ptr: *mut c_void) -> u32
);
forward_with_caller!(
    fb_hsa_svm_set,
    RealFn::HsaSvmAttributesSet,
    HSA_STATUS_ERROR_NOT_INITIALIZED,
    fn(ptr: *mut c_void, size: usize, list: *mut [u64; 2], n: usize) -> u32
);
forward_with_caller!(
    fb_hsa_pool_allocate,
    RealFn::HsaPoolAllocate,
    HSA_STATUS_ERROR_NOT_INITIALIZED,
    fn(pool: u64, size: usize, flags: u32, ptr: *mut *mut c_void) -> u32
);

forward_armed!(
    fb_hip_malloc_pitch,
    RealFn::HipMallocPitch,
    D_HIP_MALLOC_PITCH,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut *mut c_void, pitch: *mut usize, w: usize, h: usize) -> c_int
);
forward_armed!(
    fb_hip_malloc_3d,
    RealFn::HipMalloc3D,
    D_HIP_MALLOC_3D,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut HipPitchedPtr, e: HipExtent) -> c_int
);
forward_armed!(
    fb_hip_mem_alloc_pitch,
    RealFn::HipMemAllocPitch,
    D_HIP_MEM_ALLOC_PITCH,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut *mut c_void, pitch: *mut usize, w: usize, h: usize, e: u32) -> c_int
);
forward_armed!(
    fb_hip_malloc_async,
    RealFn::HipMallocAsync,
    D_HIP_MALLOC_ASYNC,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut *mut c_void, s: usize, st: *mut c_void) -> c_int
);
forward_armed!(
    fb_hip_malloc_from_pool,
    RealFn::HipMallocFromPoolAsync,
    D_HIP_MALLOC_FROM_POOL,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut *mut c_void, s: usize, pool: *mut c_void, st: *mut c_void) -> c_int
);
forward_armed!(
    fb_hip_free_async,
    RealFn::HipFreeAsync,
    D_HIP_FREE_ASYNC,
    HIP_ERROR_NOT_INITIALIZED,
    fn(p: *mut c_void, st: *mut c_void) -> c_int
);

unsafe extern "C" fn fb_get_stats(out: *mut c_void, size: usize) -> c_int {
    let mut s = Stats {
        intercepted: 0,
        rewritten: 0,
        padded: 0,
        padded_bytes: 0,
        retried: 0,
        faults: 0,
        version: [0; 16],
        live_allocations: 0,
    };
    let v = env!("CARGO_PKG_VERSION").as_bytes();
    // SAFETY: at most 15 bytes into a 16-byte array.
    unsafe { copy_bytes(s.version.as_mut_ptr(), v.as_ptr(), v.len().min(15)) };
    if !out.is_null() {
        // SAFETY: the caller provides `size` writable bytes at `out`.
        unsafe {
            copy_bytes(
                out.cast::<u8>(),
                (&s as *const Stats).cast::<u8>(),
                size.min(core::mem::size_of::<Stats>()),
            )
        };
    }
    0
}

static FALLBACK: EngineHooks = EngineHooks {
    abi_version: ABI_VERSION,
    hip_malloc: fb_hip_malloc,
    hip_free: fb_hip_free,
    hip_host_malloc: fb_hip_host_malloc,
    hip_host_alloc: fb_hip_host_alloc,
    hip_host_free: fb_hip_host_free,
    hip_free_host: fb_hip_free_host,
    hip_malloc_managed: fb_hip_malloc_managed,
    hip_ext_malloc_with_flags: fb_hip_ext_malloc,
    hip_mem_advise: fb_hip_mem_advise,
    hsa_init: fb_hsa_init,
    hsa_pool_allocate: fb_hsa_pool_allocate,
    hsa_pool_free: fb_hsa_pool_free,
    hsa_svm_attributes_set: fb_hsa_svm_set,
    get_stats: fb_get_stats,
    hip_malloc_pitch: fb_hip_malloc_pitch,
    hip_malloc_3d: fb_hip_malloc_3d,
    hip_mem_alloc_pitch: fb_hip_mem_alloc_pitch,
    hip_malloc_async: fb_hip_malloc_async,
    hip_malloc_from_pool_async: fb_hip_malloc_from_pool,
    hip_free_async: fb_hip_free_async,
};

/// The first call of a hook of one of the functions AMD's builds dispatch
/// through their API table (its direct slot still empty): loads the engine,
/// decides the table route now that a HIP call is under way (apitable.rs),
/// and arms the slot with the engine's hook, unless the route set it to the
/// exported function (then this call, too, passes a profiler's wrapper on
/// its way to our table entry). Returns what to call. In passthrough the
/// fallback arms the slot with the real function (forward_armed).
#[cold]
#[inline(never)]
fn table_hook_slow(slot: &AtomicUsize, hook: impl Fn(&'static EngineHooks) -> usize) -> usize {
    let e = engine();
    apitable::decide_route();
    if !core::ptr::eq(e, &FALLBACK) {
        let _ = slot.compare_exchange(0, hook(e), Ordering::AcqRel, Ordering::Acquire);
    }
    match slot.load(Ordering::Acquire) {
        0 => hook(e),
        f => f,
    }
}

// ---- the hooks ---------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn hipMalloc(ptr: *mut *mut c_void, size: usize) -> c_int {
    let f = match D_HIP_MALLOC.load(Ordering::Relaxed) {
        0 => table_hook_slow(&D_HIP_MALLOC, |e| e.hip_malloc as usize),
        f => f,
    };
    // SAFETY: the real function, the engine's hook or its fallback, all of
    // this exact signature (arm_direct, table_hook_slow, apitable).
    unsafe { core::mem::transmute::<usize, HipAlloc>(f)(ptr, size) }
}
/// The allocation entry points beyond hipMalloc that reach VRAM (issue 10).
macro_rules! hook {
    ($name:ident, $field:ident, $d:ident, $ty:ty, fn($($a:ident: $t:ty),*)) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> c_int {
            let f = match $d.load(Ordering::Relaxed) {
                0 => table_hook_slow(&$d, |e| e.$field as usize),
                f => f,
            };
            // SAFETY: as in hipMalloc.
            unsafe { core::mem::transmute::<usize, $ty>(f)($($a),*) }
        }
    };
}
hook!(
    hipMallocPitch,
    hip_malloc_pitch,
    D_HIP_MALLOC_PITCH,
    HipMallocPitchFn,
    fn(ptr: *mut *mut c_void, pitch: *mut usize, width: usize, height: usize)
);
hook!(
    hipMalloc3D,
    hip_malloc_3d,
    D_HIP_MALLOC_3D,
    HipMalloc3DFn,
    fn(p: *mut HipPitchedPtr, extent: HipExtent)
);
hook!(
    hipMemAllocPitch,
    hip_mem_alloc_pitch,
    D_HIP_MEM_ALLOC_PITCH,
    HipMemAllocPitchFn,
    fn(ptr: *mut *mut c_void, pitch: *mut usize, width: usize, height: usize, elem: u32)
);
hook!(
    hipMallocAsync,
    hip_malloc_async,
    D_HIP_MALLOC_ASYNC,
    HipMallocAsyncFn,
    fn(ptr: *mut *mut c_void, size: usize, stream: *mut c_void)
);
hook!(
    hipMallocFromPoolAsync,
    hip_malloc_from_pool_async,
    D_HIP_MALLOC_FROM_POOL,
    HipMallocFromPoolFn,
    fn(ptr: *mut *mut c_void, size: usize, pool: *mut c_void, stream: *mut c_void)
);
hook!(
    hipFreeAsync,
    hip_free_async,
    D_HIP_FREE_ASYNC,
    HipFreeAsyncFn,
    fn(ptr: *mut c_void, stream: *mut c_void)
);

#[no_mangle]
pub unsafe extern "C" fn hipFree(ptr: *mut c_void) -> c_int {
    let f = match D_HIP_FREE.load(Ordering::Relaxed) {
        0 => table_hook_slow(&D_HIP_FREE, |e| e.hip_free as usize),
        f => f,
    };
    // SAFETY: as in hipMalloc.
    unsafe { core::mem::transmute::<usize, HipFreeFn>(f)(ptr) }
}
/// A hook that passes its caller's return address to the engine as one more
/// argument, in register `$reg` (the first free argument register): a naked
/// trampoline (the return address is at [rsp] on entry) that jumps straight
/// to the direct slot's function when it is set, else to `$imp`, which
/// calls the engine's hook.
macro_rules! caller_hook {
    ($(#[$m:meta])* $name:ident($($a:ident: $t:ty),*) -> $r:ty,
     $d:ident, $reg:literal, $imp:ident, $field:ident) => {
        $(#[$m])*
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            core::arch::naked_asm!(
                "mov rax, qword ptr [rip + {d}]",
                "test rax, rax",
                "jnz 2f",
                concat!("mov ", $reg, ", qword ptr [rsp]"),
                "jmp {imp}",
                "2:",
                "jmp rax",
                d = sym $d,
                imp = sym $imp
            )
        }
        unsafe extern "C" fn $imp($($a: $t,)* caller: usize) -> $r {
            unsafe { (engine().$field)($($a,)* caller) }
        }
    };
}
/// The same for the HSA allocate/free hooks, which every hipMalloc and
/// hipFree reach again from inside the runtime: a call from the HIP
/// runtime's own code (its range set by the engine, set_runtime) goes
/// straight to the real function, before anything else is done.
macro_rules! runtime_caller_hook {
    ($(#[$m:meta])* $name:ident($($a:ident: $t:ty),*) -> $r:ty,
     $d:ident, $reg:literal, $real:ident, $imp:ident, $field:ident) => {
        $(#[$m])*
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            core::arch::naked_asm!(
                "mov rax, qword ptr [rip + {d}]",
                "test rax, rax",
                "jnz 2f",
                concat!("mov ", $reg, ", qword ptr [rsp]"),
                concat!("cmp ", $reg, ", qword ptr [rip + {lo}]"),
                "jb 3f",
                concat!("cmp ", $reg, ", qword ptr [rip + {hi}]"),
                "jae 3f",
                "mov rax, qword ptr [rip + {real}]",
                "test rax, rax",
                "jnz 2f",
                "3:",
                "jmp {imp}",
                "2:",
                "jmp rax",
                d = sym $d,
                lo = sym RT_LO,
                hi = sym RT_HI,
                real = sym $real,
                imp = sym $imp
            )
        }
        unsafe extern "C" fn $imp($($a: $t,)* caller: usize) -> $r {
            unsafe { (engine().$field)($($a,)* caller) }
        }
    };
}
caller_hook!(
    /// hipHostMalloc, hipHostAlloc, hipMallocManaged, hipExtMallocWithFlags
    /// (ptr, size, flags): the caller's return address as a fourth argument
    /// (rcx), so that memory RCCL or OpenMP offload asked for stays coherent.
    hipHostMalloc(p: *mut *mut c_void, s: usize, f: u32) -> c_int,
    D_HIP_HOST_MALLOC, "rcx", host_malloc_impl, hip_host_malloc
);
caller_hook!(
    hipHostAlloc(p: *mut *mut c_void, s: usize, f: u32) -> c_int,
    D_HIP_HOST_ALLOC, "rcx", host_alloc_impl, hip_host_alloc
);
caller_hook!(
    hipMallocManaged(p: *mut *mut c_void, s: usize, f: u32) -> c_int,
    D_HIP_MALLOC_MANAGED, "rcx", managed_impl, hip_malloc_managed
);
caller_hook!(
    hipExtMallocWithFlags(p: *mut *mut c_void, s: usize, f: u32) -> c_int,
    D_HIP_EXT_MALLOC, "rcx", ext_malloc_impl, hip_ext_malloc_with_flags
);
caller_hook!(
    /// hipMemAdvise(ptr, count, advice, device): the caller's return address
    /// as a fifth argument (r8).
    hipMemAdvise(p: *const c_void, c: usize, a: c_int, d: c_int) -> c_int,
    D_HIP_MEM_ADVISE, "r8", mem_advise_impl, hip_mem_advise
);
#[no_mangle]
pub unsafe extern "C" fn hipHostFree(ptr: *mut c_void) -> c_int {
    match D_HIP_HOST_FREE.load(Ordering::Relaxed) {
        // SAFETY: the engine's hook of this exact signature.
        0 => unsafe { (engine().hip_host_free)(ptr) },
        // SAFETY: the real function or the engine's hook, of this exact
        // signature (arm_direct, arm_engine).
        f => unsafe { core::mem::transmute::<usize, HipFreeFn>(f)(ptr) },
    }
}
#[no_mangle]
pub unsafe extern "C" fn hipFreeHost(ptr: *mut c_void) -> c_int {
    match D_HIP_FREE_HOST.load(Ordering::Relaxed) {
        // SAFETY: the engine's hook of this exact signature.
        0 => unsafe { (engine().hip_free_host)(ptr) },
        // SAFETY: the real function or the engine's hook, of this exact
        // signature (arm_direct, arm_engine).
        f => unsafe { core::mem::transmute::<usize, HipFreeFn>(f)(ptr) },
    }
}
#[no_mangle]
pub unsafe extern "C" fn hsa_init() -> u32 {
    match D_HSA_INIT.load(Ordering::Relaxed) {
        // SAFETY: the engine's hook of this exact signature.
        0 => unsafe { (engine().hsa_init)() },
        f => unsafe { core::mem::transmute::<usize, HsaInitFn>(f)() },
    }
}
runtime_caller_hook!(
    /// hsa_amd_memory_pool_free(ptr): the caller's return address as a second
    /// argument (rsi), so frees the runtime makes itself (hipFree's own free:
    /// already off the books) go straight on.
    hsa_amd_memory_pool_free(ptr: *mut c_void) -> u32,
    D_HSA_POOL_FREE, "rsi", RT_POOL_FREE, pool_free_impl, hsa_pool_free
);

caller_hook!(
    /// hsa_amd_svm_attributes_set(ptr, size, list, count): the caller's return
    /// address as a fifth argument (r8).
    hsa_amd_svm_attributes_set(ptr: *mut c_void, size: usize, list: *mut [u64; 2], n: usize) -> u32,
    D_HSA_SVM_SET, "r8", svm_set_impl, hsa_svm_attributes_set
);
/// The C API (include/rocm_fix.h).
#[no_mangle]
pub unsafe extern "C" fn rocm_fix_get_stats(out: *mut c_void, size: usize) -> c_int {
    // Stats never load the engine: a process without HIP calls reads zeros.
    let p = ENGINE.load(Ordering::Acquire);
    // SAFETY: a 'static table when set.
    let table = unsafe { p.as_ref() }.unwrap_or(&FALLBACK);
    unsafe { (table.get_stats)(out, size) }
}

runtime_caller_hook!(
    /// hsa_amd_memory_pool_allocate(pool, size, flags, ptr): the caller's
    /// return address as a fifth argument (r8); the runtime's own calls
    /// (every hipMalloc) go straight to the real function.
    hsa_amd_memory_pool_allocate(pool: u64, size: usize, flags: u32, ptr: *mut *mut c_void) -> u32,
    D_HSA_POOL_ALLOCATE, "r8", RT_POOL_ALLOCATE, pool_allocate_impl, hsa_pool_allocate
);

// ---- clients that bind without the dynamic linker -------------------------------------

/// The hooked names and the real function each stands for.
fn hook_for(name: &[u8]) -> Option<(RealFn, usize)> {
    let h: (RealFn, usize) = match name {
        b"hipMalloc" => (RealFn::HipMalloc, hipMalloc as *const () as usize),
        b"hipFree" => (RealFn::HipFree, hipFree as *const () as usize),
        b"hipHostMalloc" => (RealFn::HipHostMalloc, hipHostMalloc as *const () as usize),
        b"hipHostAlloc" => (RealFn::HipHostAlloc, hipHostAlloc as *const () as usize),
        b"hipHostFree" => (RealFn::HipHostFree, hipHostFree as *const () as usize),
        b"hipFreeHost" => (RealFn::HipFreeHost, hipFreeHost as *const () as usize),
        b"hipMallocManaged" => (
            RealFn::HipMallocManaged,
            hipMallocManaged as *const () as usize,
        ),
        b"hipExtMallocWithFlags" => (
            RealFn::HipExtMallocWithFlags,
            hipExtMallocWithFlags as *const () as usize,
        ),
        b"hipMemAdvise" => (RealFn::HipMemAdvise, hipMemAdvise as *const () as usize),
        b"hipGetProcAddress" => (
            RealFn::HipGetProcAddress,
            hipGetProcAddress as *const () as usize,
        ),
        b"hipMallocPitch" => (RealFn::HipMallocPitch, hipMallocPitch as *const () as usize),
        b"hipMalloc3D" => (RealFn::HipMalloc3D, hipMalloc3D as *const () as usize),
        b"hipMemAllocPitch" => (
            RealFn::HipMemAllocPitch,
            hipMemAllocPitch as *const () as usize,
        ),
        b"hipMallocAsync" => (RealFn::HipMallocAsync, hipMallocAsync as *const () as usize),
        b"hipMallocFromPoolAsync" => (
            RealFn::HipMallocFromPoolAsync,
            hipMallocFromPoolAsync as *const () as usize,
        ),
        b"hipFreeAsync" => (RealFn::HipFreeAsync, hipFreeAsync as *const () as usize),
        b"hsa_init" => (RealFn::HsaInit, hsa_init as *const () as usize),
        b"hsa_amd_memory_pool_allocate" => (
            RealFn::HsaPoolAllocate,
            hsa_amd_memory_pool_allocate as *const () as usize,
        ),
        b"hsa_amd_memory_pool_free" => (
            RealFn::HsaPoolFree,
            hsa_amd_memory_pool_free as *const () as usize,
        ),
        b"hsa_amd_svm_attributes_set" => (
            RealFn::HsaSvmAttributesSet,
            hsa_amd_svm_attributes_set as *const () as usize,
        ),
        _ => return None,
    };
    Some(h)
}

/// If `found` is the real runtime's `name`, our hook instead.
unsafe fn swap_for_hook(name: *const c_char, found: *mut c_void) -> *mut c_void {
    if found.is_null() || name.is_null() {
        return found;
    }
    // SAFETY: name is a NUL-terminated string from the caller.
    let n = unsafe { core::slice::from_raw_parts(name.cast::<u8>(), c_strlen(name)) };
    if !(n.starts_with(b"hip") || n.starts_with(b"hsa_")) {
        return found;
    }
    let Some((id, hook)) = hook_for(n) else {
        return found;
    };
    // The API-table functions: compared with the exported function, not
    // through resolve, which decides the table route (a HIP call): a lookup
    // may run under the loader's lock (a library constructor), where waiting
    // for the runtime's table once-guard can deadlock (apitable.rs).
    let real = if apitable::is_table_function(id) {
        find_real(id as u32)
    } else {
        // SAFETY: resolve takes any id.
        unsafe { resolve(id as u32) }
    };
    if real == found as usize {
        hook as *mut c_void
    } else {
        found
    }
}

/// dlsym: RTLD_NEXT and RTLD_DEFAULT go straight to glibc with the original
/// return address (glibc finds "next", and the scope RTLD_DEFAULT searches,
/// from the caller: a library opened with RTLD_LOCAL must still find its own
/// symbols); lookups on a handle go through dlsym_impl.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn dlsym(_handle: *mut c_void, _name: *const c_char) -> *mut c_void {
    core::arch::naked_asm!(
        "cmp rdi, -1",
        "je 2f",
        "test rdi, rdi",
        "jz 2f",
        "jmp {imp}",
        "2:",
        "mov rax, qword ptr [rip + {real}]",
        "test rax, rax",
        "jz 3f",
        "jmp rax",
        "3:",
        "push rdi",
        "push rsi",
        "sub rsp, 8",
        "call {resolve}",
        "add rsp, 8",
        "pop rsi",
        "pop rdi",
        "test rax, rax",
        "jz 4f",
        "jmp rax",
        "4:",
        "xor eax, eax",
        "ret",
        imp = sym dlsym_impl,
        real = sym REAL_DLSYM,
        resolve = sym resolve_real_dlsym,
    )
}

unsafe extern "C" fn dlsym_impl(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    // SAFETY: forwarding the caller's own arguments (a real handle: the
    // naked entry sent RTLD_DEFAULT and RTLD_NEXT to glibc directly).
    let found = unsafe { real_dlsym(handle, name) };
    unsafe { swap_for_hook(name, found) }
}

/// dlvsym: a lookup on a handle (`dlvsym(h, "hipMalloc", "hip_4.2")`) goes
/// through dlvsym_impl, which hands back our hook where glibc found the
/// function our hooks forward to (so a private copy's own function, found on
/// its own handle, stays its own). RTLD_DEFAULT and RTLD_NEXT go to glibc
/// with the original return address (the caller's scope), except where
/// dlvsym_swap answers first: glibc's versioned lookup passes over the
/// front's unversioned hooks (dlvsym asks for an exact version), so without
/// it `dlvsym(RTLD_DEFAULT, "hipMalloc", "hip_4.2")` would find the runtime
/// itself, unlike dlsym.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn dlvsym(
    _handle: *mut c_void,
    _name: *const c_char,
    _version: *const c_char,
) -> *mut c_void {
    core::arch::naked_asm!(
        "cmp rdi, -1",
        "je 2f",
        "test rdi, rdi",
        "jz 2f",
        "jmp {imp}",
        "2:",
        "push rdi",
        "push rsi",
        "push rdx",
        "mov rcx, qword ptr [rsp + 24]",
        "call {swap}",
        "test rax, rax",
        "jz 3f",
        "add rsp, 24",
        "ret",
        "3:",
        "call {resolve}",
        "pop rdx",
        "pop rsi",
        "pop rdi",
        "test rax, rax",
        "jz 4f",
        "jmp rax",
        "4:",
        "xor eax, eax",
        "ret",
        imp = sym dlvsym_impl,
        swap = sym dlvsym_swap,
        resolve = sym resolve_real_dlvsym,
    )
}

/// `dlvsym(RTLD_DEFAULT or RTLD_NEXT, name, version)` from `caller` (its
/// return address): our hook where the front, had it defined `name` at
/// `version`, would be what glibc finds, and glibc finds the function our
/// hooks forward to; else 0 (glibc answers). RTLD_DEFAULT: the front comes
/// before the runtime in the global scope. RTLD_NEXT means "after the
/// caller": only a caller loaded before the front (the executable, an
/// earlier preload) would find the front; one after it (a wrapper of the
/// user's that forwards with RTLD_NEXT) gets glibc's answer, or our hook
/// would call it back forever.
unsafe extern "C" fn dlvsym_swap(
    handle: *mut c_void,
    name: *const c_char,
    version: *const c_char,
    caller: usize,
) -> usize {
    if name.is_null() || version.is_null() {
        return 0;
    }
    // SAFETY: the caller's NUL-terminated name.
    let n = unsafe { core::slice::from_raw_parts(name.cast::<u8>(), c_strlen(name)) };
    if !(n.starts_with(b"hip") || n.starts_with(b"hsa_")) {
        return 0;
    }
    let Some((id, hook)) = hook_for(n) else {
        return 0;
    };
    if handle == libc::RTLD_NEXT {
        let ours = realdl::position_of(dlvsym_swap as *const () as usize);
        match (realdl::position_of(caller), ours) {
            (Some(c), Some(o)) if c < o => {}
            _ => return 0,
        }
    }
    // What glibc finds past this front, at that version.
    // SAFETY: the caller's NUL-terminated strings.
    let found = unsafe { real_dlvsym(libc::RTLD_NEXT, name, version) } as usize;
    if found != 0 && found == find_real(id as u32) {
        hook
    } else {
        0
    }
}

/// Called from the naked `dlvsym`: three pushes after the call keep the
/// stack 16-byte aligned for this call (and for dlvsym_swap's).
unsafe extern "C" fn resolve_real_dlvsym() -> usize {
    realdl::real_dlvsym()
}

unsafe extern "C" fn dlvsym_impl(
    handle: *mut c_void,
    name: *const c_char,
    version: *const c_char,
) -> *mut c_void {
    // SAFETY: forwarding the caller's own arguments (a real handle).
    let found = unsafe { real_dlvsym(handle, name, version) };
    unsafe { swap_for_hook(name, found) }
}

/// hipGetProcAddress (ROCm 6.2+) looks symbols up on its own dlopen handle,
/// past any preload (clr hipamd/src/hip_platform.cpp): hand back our hook for the names we
/// hook.
#[no_mangle]
pub unsafe extern "C" fn hipGetProcAddress(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    hip_version: c_int,
    flags: u64,
    status: *mut c_int,
) -> c_int {
    // SAFETY: resolve returns the real function of this exact signature.
    let r = match unsafe { resolve(RealFn::HipGetProcAddress as u32) } {
        0 => return HIP_ERROR_NOT_INITIALIZED,
        f => unsafe {
            core::mem::transmute::<usize, HipGetProcAddressFn>(f)(
                symbol,
                pfn,
                hip_version,
                flags,
                status,
            )
        },
    };
    if r == 0 && !pfn.is_null() {
        // SAFETY: the real call succeeded and wrote *pfn.
        unsafe { *pfn = swap_for_hook(symbol, *pfn) };
    }
    r
}
