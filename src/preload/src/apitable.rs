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
//!   profiler's receiver if one is loaded (or would have been loaded by
//!   rocprofiler-register's own rules), and answers as that receiver does; with
//!   no profiler it answers non-zero ("not taken"): ROCr's `LoadTools`
//!   (`projects/rocr-runtime/runtime/hsa-runtime/core/runtime/runtime.cpp`)
//!   skips the HSA_TOOLS_LIB tools (the ROCm debug agent, rocprofiler v1)
//!   when the "hsa" registration succeeds, so answering success would change
//!   what other tools the user runs get.
//!
//! No call is handled twice: once the table entry is ours, the PLT hook of
//! that function jumps straight to the exported function (which dispatches
//! through the table, past a profiler's wrapper if one was installed over
//! ours, to our entry), and the engine's "real" function becomes the
//! runtime's own implementation that the entry held. That switch is only made
//! before the engine has looked any real function up (the engine caches them):
//! the first time the engine is about to load, a call to `hipGetErrorName`
//! (which initialises nothing: clr `hip_error.cpp`) makes the runtime build
//! and hand over its table first. Only entries whose hooks do not need their
//! caller's return address are taken (the entry is called by the runtime, not
//! by the application). Another copy of the runtime (a torch/lib-like private
//! one) keeps its table untouched: the engine forwards to one runtime.

use super::*;

/// 0: undecided; 1: the engine came first (no table route in this process);
/// 2: the table route is on.
static ROUTE: AtomicUsize = AtomicUsize::new(0);
static REAL_GETENV: AtomicUsize = AtomicUsize::new(0);

/// rocprofiler_set_api_table's answer when no profiler took the table.
const NOT_TAKEN: c_int = 1;

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

/// Called by `engine()` before it first loads the engine: on AMD's builds
/// (rocprofiler-register loaded), makes the HIP runtime hand over its table
/// now, if it has not yet; then no table is taken over any more.
pub fn before_engine() {
    if ROUTE.load(Ordering::Acquire) == 0 && realdl::is_loaded(b"librocprofiler-register.so.0") {
        let f = hip_function(b"hipGetErrorName\0");
        if f != 0 {
            // SAFETY: clr's `const char *hipGetErrorName(hipError_t)`; 0 is hipSuccess.
            let _ = unsafe {
                core::mem::transmute::<usize, unsafe extern "C" fn(c_int) -> *const c_char>(f)(0)
            };
        }
    }
    let _ = ROUTE.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
}

/// The runtime's exported function `name` (NUL-terminated), found as
/// [`resolve`] finds the hooked ones, without caching.
fn hip_function(name: &[u8]) -> usize {
    let n = name.as_ptr().cast::<c_char>();
    // SAFETY: NUL-terminated names; handles come from the loader.
    let mut p = unsafe { real_dlsym(libc::RTLD_NEXT, n) } as usize;
    for so in HIP_SONAMES {
        if p != 0 {
            break;
        }
        // SAFETY: as above; the NOLOAD reference keeps the runtime loaded.
        let h = unsafe { real_dlopen(so.as_ptr().cast(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if !h.is_null() {
            p = unsafe { real_dlsym(h, n) } as usize;
        }
    }
    p
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
unsafe fn take_hip_table(table: *mut c_void) {
    if table.is_null() || ROUTE.load(Ordering::Acquire) != 0 {
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
    let exported = unsafe { resolve(RealFn::HipMalloc as u32) };
    let base = object_of(entry);
    if entry == 0 || base == 0 || base != object_of(exported) {
        return;
    }
    if ROUTE
        .compare_exchange(0, 2, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    for (pos, id, direct, ours) in entries() {
        let Some(s) = slot(pos) else { continue };
        // SAFETY: inside the table.
        let own = unsafe { core::ptr::read_volatile(s) };
        // SAFETY: resolve takes any id.
        let exported = unsafe { resolve(id as u32) };
        let Some(cache) = REAL_CACHE.get(id as usize) else {
            continue;
        };
        if own == 0 || own == ours || exported == 0 || object_of(own) != base {
            continue;
        }
        // The engine's real function first, then the hook's direct jump,
        // then the entry: each step leaves every path valid.
        cache.store(own, Ordering::Release);
        direct.store(exported, Ordering::Release);
        // SAFETY: inside the table; the runtime reads it with plain loads.
        unsafe { core::ptr::write_volatile(s, ours) };
    }
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

/// The profiler's receiver, if one is loaded, or would have been loaded by
/// rocprofiler-register had we not been there (its rocp_load_rocprofiler_lib);
/// 0 if none. Nothing is loaded in a secure-execution process.
fn next_receiver() -> usize {
    let ours = rocprofiler_set_api_table as *const () as usize;
    let found = realdl::find_elsewhere(b"rocprofiler_set_api_table", ours);
    if found != 0 || secure() {
        return found;
    }
    let tool_libs = env(b"ROCP_TOOL_LIBRARIES\0").is_some_and(|v| !v.is_empty());
    let reg_lib = env(b"ROCPROFILER_REGISTER_LIBRARY\0").filter(|v| !v.is_empty());
    let force = env_bool(
        b"ROCPROFILER_REGISTER_FORCE_LOAD\0",
        tool_libs || reg_lib.is_some(),
    );
    let other_tool = realdl::find_elsewhere(
        b"rocprofiler_configure",
        rocprofiler_configure as *const () as usize,
    ) != 0;
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
    unsafe { real_dlsym(h, c"rocprofiler_set_api_table".as_ptr()) as usize }
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
    if !name.is_null() && !tables.is_null() && num_tables >= 1 {
        // SAFETY: the library's NUL-terminated name and its array of tables.
        let n = unsafe { core::slice::from_raw_parts(name.cast::<u8>(), c_strlen(name)) };
        if realdl::same(n, b"hip") {
            unsafe { take_hip_table(*tables) };
        }
    }
    type SetApiTableFn =
        unsafe extern "C" fn(*const c_char, u64, u64, *mut *mut c_void, u64) -> c_int;
    match next_receiver() {
        0 => NOT_TAKEN,
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
    }
}
