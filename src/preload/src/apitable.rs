//! The API-table route: on AMD's and TheRock's builds of libamdhip64, every
//! exported HIP function dispatches through a table the runtime hands to
//! rocprofiler-register the first time it is used (ROCm/clr
//! `hipamd/src/hip_table_interface.cpp` and `hip_api_trace.cpp`
//! `GetHipDispatchTable`/`ToolInit`, commit f9f995c6d0ae), so a table entry
//! sees calls the PLT hooks cannot: those of a library opened with
//! `RTLD_DEEPBIND`, which bind the runtime before any preload. Debian's builds
//! do not link rocprofiler-register and never call any of this.
//!
//! How rocprofiler-register picks a receiver (ROCm/rocm-systems
//! `projects/rocprofiler-register/source/lib/rocprofiler-register/rocprofiler_register.cpp`,
//! commit 1b1610fc2b2a): a tool is present if a `rocprofiler_configure`
//! symbol is visible (or its environment says so); the one receiver is then
//! the first visible `rocprofiler_set_api_table`, else librocprofiler-sdk.so,
//! loaded on the spot, and a tool without any receiver aborts the process. So
//! the front exports both (neither costs anything at load time), and:
//!
//! - `rocprofiler_configure` configures nothing (NULL: rocprofiler-sdk, which
//!   calls every `rocprofiler_configure` it finds, then leaves us out);
//! - `rocprofiler_set_api_table` takes over a few entries of the HIP table of
//!   the runtime copy our hooks forward to, then passes every table on to a
//!   profiler's receiver if one is in the global scope (or would have been
//!   loaded by rocprofiler-register's own rules), never another rocm-fix
//!   front's before it, and answers as that receiver does; with no profiler
//!   it answers each library what its caller treats as "no tools"
//!   (`unprofiled_answer`).
//!
//! A second rocm-fix front in the process (another install's
//! librocm_fix.so) stays inert (lib.rs `inert`) and takes no table.
//!
//! No call is handled twice: once the table entry is ours, the PLT hook of
//! that function jumps straight to the exported function (which dispatches
//! through the table, past a profiler's wrapper if one was installed over
//! ours, to our entry), and the engine's "real" function becomes the
//! runtime's own implementation that the entry held. That switch is only made
//! before any of those eight functions has been looked up (the engine keeps
//! what it gets): the first lookup of one of them (in a HIP call, see
//! [`decide_route`]) first calls `hipGetErrorName` (which initialises
//! nothing: clr `hip_error.cpp`), so that the runtime builds and hands over
//! its table, then decides the route for good. Only entries whose hooks do not need their
//! caller's return address are taken (the entry is called by the runtime, not
//! by the application). Another copy of the runtime (a torch/lib-like private
//! one) keeps its table untouched: the engine forwards to one runtime.

use super::*;

/// 0: undecided; 1: the engine came first (no table route in this process);
/// 2: the table route is on; any other value: a thread (its thread pointer)
/// is taking the table over, and no engine may load until it is done: the
/// engine caches the real functions it looks up, and one looked up while the
/// entries are switched could be the exported function, which dispatches
/// through the table back to the engine (endless recursion).
static ROUTE: AtomicUsize = AtomicUsize::new(0);
const UNDECIDED: usize = 0;
const ENGINE_FIRST: usize = 1;
const TABLE_ROUTE: usize = 2;
/// The registrations under way in `rocprofiler_set_api_table`, as (thread,
/// tables) pairs: a receiver that calls us back with the same tables on the
/// same thread (another rocm-fix front, an older one that passes tables on to
/// any receiver it finds) is answered at once; another thread's
/// registration, or another library's nested in a profiler's receiver, is
/// not. Eight at once at most; beyond that a call goes on unguarded.
static FORWARDING: [(AtomicUsize, AtomicUsize); 8] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 8];

/// Whether this thread is already passing `tables` on.
fn forwarding(me: usize, tables: usize) -> bool {
    FORWARDING
        .iter()
        .any(|(t, x)| t.load(Ordering::Acquire) == me && x.load(Ordering::Acquire) == tables)
}

/// Records that this thread passes `tables` on; the slot to free, if any.
fn start_forwarding(me: usize, tables: usize) -> Option<&'static (AtomicUsize, AtomicUsize)> {
    let slot = FORWARDING.iter().find(|(t, _)| {
        t.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })?;
    slot.1.store(tables, Ordering::Release);
    Some(slot)
}
static REAL_SCHED_YIELD: AtomicUsize = AtomicUsize::new(0);
static REAL_GETENV: AtomicUsize = AtomicUsize::new(0);

/// rocprofiler_set_api_table's answer when no profiler took the table.
const NOT_TAKEN: c_int = 1;

/// The answer, with no profiler, for the table of library `name`. Any
/// answer makes rocprofiler-register return SUCCESS (0) or
/// ROCP_REG_ROCPROFILER_ERROR (non-zero) where it would have returned
/// ROCP_REG_NO_TOOLS (ROCm/rocm-systems
/// projects/rocprofiler-register/source/lib/rocprofiler-register/rocprofiler_register.cpp,
/// commit 492f029de653). So each library gets the one its caller treats as
/// it treats NO_TOOLS: "hsa" non-zero (ROCr's `Runtime::LoadTools`,
/// projects/rocr-runtime/runtime/hsa-runtime/core/runtime/runtime.cpp,
/// commit 1b1610fc2b2a, skips the HSA_TOOLS_LIB tools on SUCCESS alone);
/// "hip" and "hip_compiler" 0 (clr ignores the status, hip_api_trace.cpp),
/// "roctx" 0 (logged only), "rccl" 0 (RCCL WARNs on anything but SUCCESS
/// and NO_TOOLS, ROCm/rccl src/misc/api_trace.cc, commit e6d2dfbbcc40,
/// `RcclGetFunctionTable_impl`); any other library
/// non-zero, its caller unread.
fn unprofiled_answer(name: &[u8]) -> c_int {
    let zero: [&[u8]; 4] = [b"hip", b"hip_compiler", b"roctx", b"rccl"];
    if zero.iter().any(|z| realdl::same(z, name)) {
        0
    } else {
        NOT_TAKEN
    }
}

/// The calling thread's thread pointer (x86_64: %fs:0 holds it, the TLS
/// ABI's promise), an id no other live thread has. The front cannot import
/// pthread_self.
#[inline(always)]
pub fn thread_id() -> usize {
    let tp: usize;
    // SAFETY: reads the TCB's self pointer, always mapped.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

/// The process id, by the system call itself (no libc symbol to look up:
/// the waiting loop in decide_route calls it).
#[inline(always)]
fn getpid() -> usize {
    let pid: usize;
    // SAFETY: getpid(2) (x86_64 number 39) takes nothing and cannot fail.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") 39usize => pid, out("rcx") _, out("r11") _, options(nostack, preserves_flags))
    };
    pid
}

/// The process that holds the claim on the route (set just before it).
static CLAIM_PID: AtomicUsize = AtomicUsize::new(0);
static REAL_SIGPROCMASK: AtomicUsize = AtomicUsize::new(0);

/// Every signal blocked on this thread until dropped (sigprocmask, looked
/// up when made); does nothing if glibc's sigprocmask cannot be found. The
/// old mask lives in the caller's frame (returning it by value would be
/// copied with memcpy, an import the front must not have).
struct SignalsBlocked<'a> {
    old: &'a [u64; 16],
    set: bool,
}

type SigprocmaskFn = unsafe extern "C" fn(c_int, *const u64, *mut u64) -> c_int;

impl<'a> SignalsBlocked<'a> {
    fn new(old: &'a mut [u64; 16]) -> SignalsBlocked<'a> {
        // SAFETY: a NUL-terminated constant; glibc's sigprocmask.
        let f = unsafe { libc_fn_at(&REAL_SIGPROCMASK, b"sigprocmask\0", b"GLIBC_2.2.5\0") };
        let mut set = false;
        if f != 0 {
            let all = [u64::MAX; 16];
            // SAFETY: sigset_t is 128 bytes in glibc; both point to 16 u64.
            set = unsafe {
                core::mem::transmute::<usize, SigprocmaskFn>(f)(
                    libc::SIG_BLOCK,
                    all.as_ptr(),
                    old.as_mut_ptr(),
                )
            } == 0;
        }
        SignalsBlocked { old, set }
    }
}

impl Drop for SignalsBlocked<'_> {
    fn drop(&mut self) {
        let f = REAL_SIGPROCMASK.load(Ordering::Acquire);
        if self.set && f != 0 {
            // SAFETY: restores the mask new() saved.
            unsafe {
                core::mem::transmute::<usize, SigprocmaskFn>(f)(
                    libc::SIG_SETMASK,
                    self.old.as_ptr(),
                    core::ptr::null_mut(),
                )
            };
        }
    }
}

/// Lets another thread run (sched_yield), or spins once if it is unknown.
fn pause() {
    type YieldFn = unsafe extern "C" fn() -> c_int;
    // SAFETY: a NUL-terminated constant; glibc's sched_yield.
    match unsafe { libc_fn_at(&REAL_SCHED_YIELD, b"sched_yield\0", b"GLIBC_2.2.5\0") } {
        0 => core::hint::spin_loop(),
        // SAFETY: sched_yield takes nothing.
        f => {
            let _ = unsafe { core::mem::transmute::<usize, YieldFn>(f)() };
        }
    }
}

/// Whether `id` is one of the functions whose table entry the route takes.
pub fn is_table_function(id: RealFn) -> bool {
    is_table_function_id(id as u32)
}

/// The same for a raw id.
pub fn is_table_function_id(id: u32) -> bool {
    entries().iter().any(|e| e.1 as u32 == id)
}

/// Called by `engine()` when this front stays inert: no table is taken over.
pub fn refuse() {
    let _ = ROUTE.compare_exchange(UNDECIDED, ENGINE_FIRST, Ordering::AcqRel, Ordering::Acquire);
}

/// HipDispatchTable positions (clr `hipamd/src/hip_api_trace.cpp`,
/// `HIP_ENFORCE_ABI(HipDispatchTable, …)`; frozen: new entries only go at the
/// end; all eight in `HIP_RUNTIME_API_TABLE_STEP_VERSION == 0`, the table's
/// first layout, and each exported function of the eight dispatches through
/// its entry in `hip_table_interface.cpp`), each with the real function it
/// stands for, the hook's direct slot and our entry. An entry the table's
/// `size` does not cover, or that is null, is left to the PLT hook.
fn entries() -> [(usize, RealFn, &'static AtomicUsize, usize); 8] {
    [
        (
            90,
            RealFn::HipFree,
            &D_HIP_FREE,
            t_hip_free as *const () as usize,
        ),
        (
            92,
            RealFn::HipFreeAsync,
            &D_HIP_FREE_ASYNC,
            t_hip_free_async as *const () as usize,
        ),
        (
            215,
            RealFn::HipMalloc,
            &D_HIP_MALLOC,
            t_hip_malloc as *const () as usize,
        ),
        (
            216,
            RealFn::HipMalloc3D,
            &D_HIP_MALLOC_3D,
            t_hip_malloc_3d as *const () as usize,
        ),
        (
            219,
            RealFn::HipMallocAsync,
            &D_HIP_MALLOC_ASYNC,
            t_hip_malloc_async as *const () as usize,
        ),
        (
            220,
            RealFn::HipMallocFromPoolAsync,
            &D_HIP_MALLOC_FROM_POOL,
            t_hip_malloc_from_pool as *const () as usize,
        ),
        (
            224,
            RealFn::HipMallocPitch,
            &D_HIP_MALLOC_PITCH,
            t_hip_malloc_pitch as *const () as usize,
        ),
        (
            229,
            RealFn::HipMemAllocPitch,
            &D_HIP_MEM_ALLOC_PITCH,
            t_hip_mem_alloc_pitch as *const () as usize,
        ),
    ]
}

// Our table entries: the engine's hooks, as the PLT hooks call them.
unsafe extern "C" fn t_hip_malloc(p: *mut *mut c_void, s: usize) -> c_int {
    unsafe { (engine().hip_malloc)(p, s) }
}
unsafe extern "C" fn t_hip_free(p: *mut c_void) -> c_int {
    unsafe { (engine().hip_free)(p) }
}
unsafe extern "C" fn t_hip_malloc_pitch(
    p: *mut *mut c_void,
    pitch: *mut usize,
    w: usize,
    h: usize,
) -> c_int {
    unsafe { (engine().hip_malloc_pitch)(p, pitch, w, h) }
}
unsafe extern "C" fn t_hip_malloc_3d(p: *mut HipPitchedPtr, e: HipExtent) -> c_int {
    unsafe { (engine().hip_malloc_3d)(p, e) }
}
unsafe extern "C" fn t_hip_mem_alloc_pitch(
    p: *mut *mut c_void,
    pitch: *mut usize,
    w: usize,
    h: usize,
    e: u32,
) -> c_int {
    unsafe { (engine().hip_mem_alloc_pitch)(p, pitch, w, h, e) }
}
unsafe extern "C" fn t_hip_malloc_async(p: *mut *mut c_void, s: usize, st: *mut c_void) -> c_int {
    unsafe { (engine().hip_malloc_async)(p, s, st) }
}
unsafe extern "C" fn t_hip_malloc_from_pool(
    p: *mut *mut c_void,
    s: usize,
    pool: *mut c_void,
    st: *mut c_void,
) -> c_int {
    unsafe { (engine().hip_malloc_from_pool_async)(p, s, pool, st) }
}
unsafe extern "C" fn t_hip_free_async(p: *mut c_void, st: *mut c_void) -> c_int {
    unsafe { (engine().hip_free_async)(p, st) }
}

/// Called by `resolve` before it first looks up one of the table's
/// functions (so in a HIP call: the engine looks them up in its HIP hooks
/// only, never when it loads, which an HSA call or a library constructor
/// holding the loader's lock may trigger): on AMD's builds
/// (rocprofiler-register loaded), makes the HIP runtime hand over its table
/// now, if it has not yet; then no table is taken over any more. While
/// another thread is taking a table over, waits for it to finish: that
/// thread is inside the runtime's once-guard of the table (clr's
/// `GetHipDispatchTable`), on which any HIP call of ours would wait too.
/// The taking thread itself is never made to wait (a profiler's receiver
/// may call a hook on it).
pub fn decide_route() {
    if ROUTE.load(Ordering::Acquire) == UNDECIDED
        && realdl::is_loaded(b"librocprofiler-register.so.0")
    {
        let f = find_by_name(b"hipGetErrorName\0", None, &HIP_SONAMES);
        if f != 0 {
            // SAFETY: clr's `const char *hipGetErrorName(hipError_t)`; 0 is hipSuccess.
            let _ = unsafe {
                core::mem::transmute::<usize, unsafe extern "C" fn(c_int) -> *const c_char>(f)(0)
            };
        }
    }
    let me = thread_id();
    loop {
        match ROUTE.load(Ordering::Acquire) {
            UNDECIDED => {
                if ROUTE
                    .compare_exchange(UNDECIDED, ENGINE_FIRST, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return;
                }
            }
            ENGINE_FIRST | TABLE_ROUTE => return,
            taker if taker == me => return,
            // A fork() caught the taking thread at work: it does not exist
            // in this process, and what it stored is consistent (see
            // take_hip_table); the route is decided as it stands.
            taker if CLAIM_PID.load(Ordering::Acquire) != getpid() => {
                let _ =
                    ROUTE.compare_exchange(taker, TABLE_ROUTE, Ordering::AcqRel, Ordering::Acquire);
            }
            _ => pause(),
        }
    }
}

/// The load address of the object holding `addr` (dladdr), 0 if unknown.
fn object_of(addr: usize) -> usize {
    let dladdr = unsafe { libc_fn(&REAL_DLADDR, b"dladdr\0") };
    if dladdr == 0 || addr == 0 {
        return 0;
    }
    let mut info = core::mem::MaybeUninit::<libc::Dl_info>::uninit();
    // SAFETY: glibc's dladdr fills info for any address.
    let ok = unsafe {
        core::mem::transmute::<usize, DladdrFn>(dladdr)(addr as *const c_void, info.as_mut_ptr())
    };
    if ok == 0 {
        return 0;
    }
    // SAFETY: dladdr returned non-zero, so info is filled.
    unsafe { info.assume_init() }.dli_fbase as usize
}

/// Takes over our entries of `table` if it is the table of the runtime copy
/// our hooks forward to and the engine has not looked any real function up.
/// The exported functions are looked up without the cache ([`find_real`]),
/// so the cache only ever holds what the engine may keep.
unsafe fn take_hip_table(table: *mut c_void) {
    if table.is_null() || ROUTE.load(Ordering::Acquire) != UNDECIDED {
        return;
    }
    // SAFETY: clr's HipDispatchTable: `size_t size` (bytes), then the entries.
    let size = unsafe { core::ptr::read_volatile(table.cast::<usize>()) };
    let slot = |pos: usize| -> Option<*mut usize> {
        (size >= 8 + 8 * (pos + 1))
            .then(|| table.cast::<u8>().wrapping_add(8 + 8 * pos).cast::<usize>())
    };
    // The copy our hooks forward to: its exported hipMalloc and the table's
    // hipMalloc entry live in the same object.
    let Some(malloc_slot) = slot(215) else { return };
    // SAFETY: inside the table (size checked).
    let entry = unsafe { core::ptr::read_volatile(malloc_slot) };
    let exported = find_real(RealFn::HipMalloc as u32);
    let base = object_of(entry);
    if entry == 0 || base == 0 || base != object_of(exported) {
        return;
    }
    // Every lookup first (dlsym, dlvsym and dladdr take the loader's lock):
    // a thread waiting for the claim below may hold that lock (a library
    // constructor making its first HIP call inside dlopen), so the claim is
    // held only for plain stores.
    // Per entry: the runtime's own function and the exported one (0: not
    // taken). Plain word arrays: an array of tuples would be copied with
    // memcpy, an import the front must not have (each costs start-up).
    let table = entries();
    let mut own = [0usize; 8];
    let mut exported = [0usize; 8];
    for (i, &(pos, id, _, ours)) in table.iter().enumerate() {
        let (Some(s), Some(o), Some(x)) = (slot(pos), own.get_mut(i), exported.get_mut(i)) else {
            continue;
        };
        // SAFETY: inside the table.
        let entry = unsafe { core::ptr::read_volatile(s) };
        let real = find_real(id as u32);
        if entry == 0 || entry == ours || real == 0 || object_of(entry) != base {
            continue;
        }
        (*o, *x) = (entry, real);
    }
    if own.iter().all(|&o| o == 0) {
        return;
    }
    // No signal handler of this thread runs while it holds the claim (it
    // would wait for itself); looked up before the claim too.
    let mut old_mask = [0u64; 16];
    let mask = SignalsBlocked::new(&mut old_mask);
    // Claimed by this thread: engine() waits until the route is decided.
    CLAIM_PID.store(getpid(), Ordering::Release);
    if ROUTE
        .compare_exchange(UNDECIDED, thread_id(), Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    // The engine's real functions first, all of them, then the hooks'
    // direct jumps and the entries: whatever point a fork() in another
    // thread catches this at, every path in the child stays valid
    // (decide_route lets the child go on).
    for (&(_, id, _, _), &o) in table.iter().zip(own.iter()) {
        if let (true, Some(cache)) = (o != 0, REAL_CACHE.get(id as usize)) {
            cache.store(o, Ordering::Release);
        }
    }
    for ((&(pos, _, direct, ours), &o), &x) in table.iter().zip(own.iter()).zip(exported.iter()) {
        if let (true, Some(s)) = (o != 0, slot(pos)) {
            direct.store(x, Ordering::Release);
            // SAFETY: inside the table; the runtime reads it with plain loads.
            unsafe { core::ptr::write_volatile(s, ours) };
        }
    }
    ROUTE.store(TABLE_ROUTE, Ordering::Release);
    drop(mask);
}

/// AT_SECURE (unknown counts as secure).
fn secure() -> bool {
    type GetauxvalFn = unsafe extern "C" fn(u64) -> u64;
    // SAFETY: NUL-terminated constants; glibc's getauxval.
    let getauxval = unsafe { libc_fn_at(&REAL_GETAUXVAL, b"getauxval\0", b"GLIBC_2.16\0") };
    getauxval == 0
        || unsafe { core::mem::transmute::<usize, GetauxvalFn>(getauxval)(libc::AT_SECURE) } != 0
}

/// getenv(name) as bytes; None when unset.
fn env(name: &[u8]) -> Option<&'static [u8]> {
    type GetenvFn = unsafe extern "C" fn(*const c_char) -> *const c_char;
    // SAFETY: NUL-terminated constants; glibc's getenv.
    let getenv = unsafe { libc_fn_at(&REAL_GETENV, b"getenv\0", b"GLIBC_2.2.5\0") };
    if getenv == 0 {
        return None;
    }
    let v = unsafe { core::mem::transmute::<usize, GetenvFn>(getenv)(name.as_ptr().cast()) };
    // SAFETY: the environment's NUL-terminated value.
    (!v.is_null()).then(|| unsafe { core::slice::from_raw_parts(v.cast::<u8>(), c_strlen(v)) })
}

/// rocprofiler-register's reading of a boolean setting (common::get_env<bool>:
/// digits are a number, off/false/no/n/f false, other text true).
fn env_bool(name: &[u8], fallback: bool) -> bool {
    match env(name) {
        None | Some([]) => fallback,
        Some(v) if v.iter().all(u8::is_ascii_digit) => v.iter().any(|&d| d != b'0'),
        Some(v) => ![&b"off"[..], b"false", b"no", b"n", b"f"].iter().any(|no| {
            no.len() == v.len() && no.iter().zip(v).all(|(a, b)| a.eq_ignore_ascii_case(b))
        }),
    }
}

/// Whether `addr` is in a rocm-fix front (this one or another copy: every
/// front defines `rocm_fix_get_stats`, the engine does not).
pub fn in_a_front(addr: usize) -> bool {
    realdl::object_defines(addr, b"rocm_fix_get_stats")
}

/// The definition of `name` (NUL-terminated) rocprofiler-register would see
/// without rocm-fix: the first in the global scope (its weak reference and
/// `dlsym(RTLD_DEFAULT)`) that is not a rocm-fix front's, else the first
/// after this library (RTLD_NEXT); 0 if none. A definition after this library
/// that is another front's is taken only if `later_front` (that front then
/// looks past itself the same way). Never an object outside the global scope
/// (a library opened with RTLD_LOCAL, another dlmopen namespace):
/// rocprofiler-register does not see those either.
fn global_definition(name: &[u8], later_front: bool) -> usize {
    // SAFETY: a NUL-terminated constant; the program's handle.
    let first = unsafe { real_dlsym(global_scope(), name.as_ptr().cast()) } as usize;
    if first != 0 && !in_a_front(first) {
        return first;
    }
    // SAFETY: as above; RTLD_NEXT is relative to this library, a preload.
    let next = unsafe { real_dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
    if next != 0 && (later_front || !in_a_front(next)) {
        next
    } else {
        0
    }
}

/// The profiler's receiver, if one is loaded, or would have been loaded by
/// rocprofiler-register had we not been there (its rocp_load_rocprofiler_lib);
/// 0 if none. Nothing is loaded in a secure-execution process. Another
/// rocm-fix front's receiver only if it comes after this one (it passes the
/// table on past itself; one that passes it back, an older front, is
/// answered at once by the re-entry guard).
fn next_receiver() -> usize {
    let found = global_definition(b"rocprofiler_set_api_table\0", true);
    if found != 0 || secure() {
        return found;
    }
    let tool_libs = env(b"ROCP_TOOL_LIBRARIES\0").is_some_and(|v| !v.is_empty());
    let reg_lib = env(b"ROCPROFILER_REGISTER_LIBRARY\0").filter(|v| !v.is_empty());
    let force = env_bool(
        b"ROCPROFILER_REGISTER_FORCE_LOAD\0",
        tool_libs || reg_lib.is_some(),
    );
    let other_tool = global_definition(b"rocprofiler_configure\0", false) != 0;
    if !(force || other_tool) {
        return 0;
    }
    // Not zeroed: a 4 KiB memset would import memset from libc.
    let mut buf = core::mem::MaybeUninit::<[u8; 4096]>::uninit();
    let name = buf.as_mut_ptr().cast::<u8>();
    let lib = reg_lib.unwrap_or(b"librocprofiler-sdk.so");
    let base = realdl::basename(lib);
    let mut h: *mut c_void = core::ptr::null_mut();
    for (candidate, flags) in [
        (lib, libc::RTLD_NOLOAD | libc::RTLD_LAZY),
        (lib, libc::RTLD_GLOBAL | libc::RTLD_LAZY),
        (base, libc::RTLD_GLOBAL | libc::RTLD_LAZY),
    ] {
        if h.is_null() && !candidate.is_empty() && candidate.len() < 4096 {
            // SAFETY: candidate.len() bytes and a NUL fit in the buffer.
            unsafe {
                copy_bytes(name, candidate.as_ptr(), candidate.len());
                core::ptr::write_volatile(name.add(candidate.len()), 0);
            }
            // SAFETY: a NUL-terminated name.
            h = unsafe { real_dlopen(name.cast(), flags) };
        }
    }
    if h.is_null() {
        return 0;
    }
    // SAFETY: a handle from dlopen, a NUL-terminated constant.
    let f = unsafe { real_dlsym(h, c"rocprofiler_set_api_table".as_ptr()) as usize };
    if in_a_front(f) {
        0
    } else {
        f
    }
}

/// rocprofiler-sdk's tool entry point: rocm-fix is not an SDK tool (NULL).
#[no_mangle]
pub unsafe extern "C" fn rocprofiler_configure(
    _version: u32,
    _runtime_version: *const c_char,
    _priority: u32,
    _client_id: *mut c_void,
) -> *mut c_void {
    core::ptr::null_mut()
}

/// rocprofiler-register's receiver: see the module's documentation.
#[no_mangle]
pub unsafe extern "C" fn rocprofiler_set_api_table(
    name: *const c_char,
    lib_version: u64,
    lib_instance: u64,
    tables: *mut *mut c_void,
    num_tables: u64,
) -> c_int {
    let me = thread_id();
    if forwarding(me, tables as usize) {
        // Called back from the receiver we passed these tables on to.
        return NOT_TAKEN;
    }
    let guard = start_forwarding(me, tables as usize);
    let n: &[u8] = if name.is_null() {
        &[]
    } else {
        // SAFETY: the library's NUL-terminated name.
        unsafe { core::slice::from_raw_parts(name.cast::<u8>(), c_strlen(name)) }
    };
    if !tables.is_null() && num_tables >= 1 && realdl::same(n, b"hip") && !inert() {
        // SAFETY: the library's array of tables.
        unsafe { take_hip_table(*tables) };
    }
    type SetApiTableFn =
        unsafe extern "C" fn(*const c_char, u64, u64, *mut *mut c_void, u64) -> c_int;
    let answer = match next_receiver() {
        0 => unprofiled_answer(n),
        // SAFETY: a profiler's rocprofiler_set_api_table, of this signature.
        f => unsafe {
            core::mem::transmute::<usize, SetApiTableFn>(f)(
                name,
                lib_version,
                lib_instance,
                tables,
                num_tables,
            )
        },
    };
    if let Some((t, x)) = guard {
        x.store(0, Ordering::Release);
        t.store(0, Ordering::Release);
    }
    answer
}
