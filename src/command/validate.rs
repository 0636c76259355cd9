//! `rocm-fix validate`: evidence from real RX 5000/6000 cards, one command.
//!
//! Runs a fixed set of probes, each in its own child process (this program,
//! `rocm-fix validate --probe NAME`) with a timeout, once without rocm-fix
//! (`ROCM_FIX_MODE=off`, librocm_fix.so taken out of LD_PRELOAD) and once
//! with it (librocm_fix.so preloaded, found as `rocm-fix run` finds it). A
//! child opens the HIP runtime the machine has with dlopen, loads the probe
//! kernels' code objects ([`bundle`]) with hipModuleLoadData and launches
//! them with hipModuleLaunchKernel. The parent writes DIR/report.json and
//! DIR/report.md, redacted as `rocm-fix report` redacts, and nothing else.

pub mod bundle;

use crate::{doctor, kernel_log, report, run};
use serde_json::{json, Value};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the command was asked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub yes: bool,
    pub report_dir: PathBuf,
    pub json: bool,
    pub with_overrides: bool,
    /// Seconds each child may take (`ROCM_FIX_VALIDATE_TIMEOUT`, default 30).
    pub timeout: Duration,
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// How a probe gets the memory its kernels touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// hipHostMalloc with the default flags (coherent, fine-grained host memory).
    HostDefault,
    /// hipExtMallocWithFlags(hipDeviceMallocFinegrained).
    VramFine,
    /// hipExtMallocWithFlags(hipDeviceMallocUncached).
    VramUncached,
    /// hipMallocManaged(hipMemAttachGlobal).
    Managed,
}

/// One probe.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// hipMalloc(size) after a small buffer, then a kernel reads size + over bytes.
    OverRead { size: usize, over: usize },
    /// A kernel writes then reads 64 KiB of this memory; the host checks the data.
    Coherent(Memory),
    /// The host polls a flag in hipHostMalloc memory that a running kernel sets.
    PollFlag,
}

#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub name: &'static str,
    pub group: &'static str,
    pub what: &'static str,
    pub kind: Kind,
}

const fn over(name: &'static str, what: &'static str, size: usize, over: usize) -> Probe {
    Probe {
        name,
        group: "over-read",
        what,
        kind: Kind::OverRead { size, over },
    }
}

/// The fixed set, in the order they run.
pub const PROBES: &[Probe] = &[
    over("overread-2MiB-by-256B", "2 MiB buffer (ends at its block's end), read 256 B past its end", 2 * MIB, 256),
    over("overread-2MiB-by-4KiB", "2 MiB buffer (ends at its block's end), read 4 KiB past its end", 2 * MIB, 4 * KIB),
    over("overread-2MiB-by-64KiB", "2 MiB buffer (ends at its block's end), read 64 KiB past its end", 2 * MIB, 64 * KIB),
    over("overread-20MiB-by-256B", "20 MiB buffer (ends at its block's end), read 256 B past its end", 20 * MIB, 256),
    over("overread-20MiB-by-4KiB", "20 MiB buffer (ends at its block's end), read 4 KiB past its end", 20 * MIB, 4 * KIB),
    over("overread-20MiB-by-64KiB", "20 MiB buffer (ends at its block's end), read 64 KiB past its end", 20 * MIB, 64 * KIB),
    over("overread-2MiB+4KiB-by-256B", "2 MiB + 4 KiB buffer (its own 4 MiB block), read 256 B past its end", 2 * MIB + 4 * KIB, 256),
    over("overread-2MiB+4KiB-by-4KiB", "2 MiB + 4 KiB buffer (its own 4 MiB block), read 4 KiB past its end", 2 * MIB + 4 * KIB, 4 * KIB),
    over("overread-2MiB+4KiB-by-64KiB", "2 MiB + 4 KiB buffer (its own 4 MiB block), read 64 KiB past its end", 2 * MIB + 4 * KIB, 64 * KIB),
    over("overread-inside-64KiB-by-256B", "64 KiB buffer inside a 2 MiB block, read 256 B past its end", 64 * KIB, 256),
    over("overread-inside-64KiB-by-64KiB", "64 KiB buffer inside a 2 MiB block, read 64 KiB past its end", 64 * KIB, 64 * KIB),
    Probe {
        name: "coherent-hostmalloc-default",
        group: "coherent",
        what: "kernels write and read hipHostMalloc memory with the default (coherent) flags",
        kind: Kind::Coherent(Memory::HostDefault),
    },
    Probe {
        name: "coherent-vram-finegrained",
        group: "coherent",
        what: "kernels write and read hipExtMallocWithFlags(hipDeviceMallocFinegrained) VRAM",
        kind: Kind::Coherent(Memory::VramFine),
    },
    Probe {
        name: "coherent-vram-uncached",
        group: "coherent",
        what: "kernels write and read hipExtMallocWithFlags(hipDeviceMallocUncached) VRAM",
        kind: Kind::Coherent(Memory::VramUncached),
    },
    Probe {
        name: "coherent-managed",
        group: "coherent",
        what: "kernels write and read hipMallocManaged memory",
        kind: Kind::Coherent(Memory::Managed),
    },
    Probe {
        name: "poll-hostmalloc-flag",
        group: "poll",
        what: "the host polls a flag in hipHostMalloc memory that a running kernel sets, and answers it",
        kind: Kind::PollFlag,
    },
];

/// What the probes may do to the machine, said before they start.
pub const WARNING: &str = "\
rocm-fix validate runs small GPU kernels that read past the end of buffers and
use coherent memory, in child processes, with and without rocm-fix. That is
what makes the report worth having, and it means:
  - some probes are EXPECTED to cause GPU memory faults: the driver may reset
    the GPU, the screen may flicker or go black for a few seconds, and other
    programs using the GPU may fail; save your work and close GPU programs;
  - a probe that hangs is stopped after its timeout.
It writes only into the report folder.";

/// The HSA_OVERRIDE_GFX_VERSION values users try on a card of this real chip.
pub fn overrides_for(real_gfx: &str) -> Vec<&'static str> {
    match real_gfx {
        "gfx1010" | "gfx1011" | "gfx1012" | "gfx1013" => vec!["10.3.0"],
        "gfx1031" | "gfx1032" | "gfx1033" | "gfx1034" | "gfx1035" | "gfx1036" => vec!["10.3.0"],
        "gfx1101" | "gfx1102" | "gfx1103" => vec!["11.0.0"],
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// The child: one probe in this process
// ---------------------------------------------------------------------------

/// The line a child prints its result on.
const RESULT_TAG: &str = "ROCM_FIX_VALIDATE_RESULT ";

type HipFn0 = unsafe extern "C" fn() -> c_int;
type HipInit = unsafe extern "C" fn(c_uint) -> c_int;
type HipSetDevice = unsafe extern "C" fn(c_int) -> c_int;
type HipAlloc = unsafe extern "C" fn(*mut *mut c_void, usize) -> c_int;
type HipAllocFlags = unsafe extern "C" fn(*mut *mut c_void, usize, c_uint) -> c_int;
type HipFree = unsafe extern "C" fn(*mut c_void) -> c_int;
type HipMemset = unsafe extern "C" fn(*mut c_void, c_int, usize) -> c_int;
type HipMemcpy = unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int) -> c_int;
type HipModuleLoadData = unsafe extern "C" fn(*mut *mut c_void, *const c_void) -> c_int;
type HipModuleGetFunction =
    unsafe extern "C" fn(*mut *mut c_void, *mut c_void, *const c_char) -> c_int;
type HipModuleLaunchKernel = unsafe extern "C" fn(
    *mut c_void,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    *mut c_void,
    *mut *mut c_void,
    *mut *mut c_void,
) -> c_int;
type HipGetErrorName = unsafe extern "C" fn(c_int) -> *const c_char;
type HipVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type StatsFn = unsafe extern "C" fn(*mut RocmFixStats, usize) -> c_int;

/// `struct rocm_fix_stats` of include/rocm_fix.h.
#[repr(C)]
#[derive(Default)]
struct RocmFixStats {
    intercepted: u64,
    rewritten: u64,
    padded: u64,
    padded_bytes: u64,
    retried: u64,
    faults: u64,
    version: [u8; 16],
    live_allocations: u64,
}

const HIP_ERROR_ILLEGAL_ADDRESS: c_int = 700;
const HIP_ERROR_LAUNCH_FAILURE: c_int = 719;
const HIP_MEMCPY_DEVICE_TO_HOST: c_int = 2;

/// The HIP runtime, opened with dlopen: its functions are looked up with
/// dlsym on the global scope, so that a preloaded librocm_fix.so's hooks are
/// the ones called (as for any dlopen client).
struct Hip {
    path: String,
    init: HipInit,
    set_device: HipSetDevice,
    malloc: HipAlloc,
    free: HipFree,
    host_malloc: HipAllocFlags,
    host_free: HipFree,
    ext_malloc: HipAllocFlags,
    managed: HipAllocFlags,
    memset: HipMemset,
    memcpy: HipMemcpy,
    sync: HipFn0,
    load: HipModuleLoadData,
    get_function: HipModuleGetFunction,
    launch: HipModuleLaunchKernel,
    error_name: HipGetErrorName,
    runtime_version: HipVersion,
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

impl Hip {
    fn open() -> Result<Hip, String> {
        let names = [
            "libamdhip64.so",
            "libamdhip64.so.7",
            "libamdhip64.so.6",
            "libamdhip64.so.5",
            "/opt/rocm/lib/libamdhip64.so",
        ];
        let mut tried = Vec::new();
        let mut handle = std::ptr::null_mut();
        for n in names {
            let c = CString::new(n).unwrap_or_default();
            // SAFETY: a NUL-terminated name; RTLD_GLOBAL so that dlsym(RTLD_DEFAULT) finds it.
            handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if !handle.is_null() {
                break;
            }
            tried.push(format!("{n}: {}", dl_error()));
        }
        if handle.is_null() {
            return Err(format!(
                "cannot load the HIP runtime ({})",
                tried.join("; ")
            ));
        }
        fn sym<T: Copy>(name: &str) -> Result<T, String> {
            let c = CString::new(name).unwrap_or_default();
            // SAFETY: a NUL-terminated name; the global scope.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
            if p.is_null() {
                return Err(format!("the HIP runtime has no {name}"));
            }
            // SAFETY: T is the function pointer type of `name` (HIP's headers).
            Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
        }
        let init: HipInit = sym("hipInit")?;
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        let real: *mut c_void = {
            let c = CString::new("hipInit").unwrap_or_default();
            // SAFETY: the library's own hipInit, not a hook of ours.
            unsafe { libc::dlsym(handle, c.as_ptr()) }
        };
        // SAFETY: dladdr fills info for an address inside a loaded object.
        let path = if unsafe { libc::dladdr(real, &mut info) } != 0 && !info.dli_fname.is_null() {
            // SAFETY: dli_fname is NUL-terminated.
            let p = unsafe { CStr::from_ptr(info.dli_fname) }
                .to_string_lossy()
                .into_owned();
            std::fs::canonicalize(&p)
                .map(|c| c.display().to_string())
                .unwrap_or(p)
        } else {
            String::new()
        };
        Ok(Hip {
            path,
            init,
            set_device: sym("hipSetDevice")?,
            malloc: sym("hipMalloc")?,
            free: sym("hipFree")?,
            host_malloc: sym("hipHostMalloc")?,
            host_free: sym("hipHostFree")?,
            ext_malloc: sym("hipExtMallocWithFlags")?,
            managed: sym("hipMallocManaged")?,
            memset: sym("hipMemset")?,
            memcpy: sym("hipMemcpy")?,
            sync: sym("hipDeviceSynchronize")?,
            load: sym("hipModuleLoadData")?,
            get_function: sym("hipModuleGetFunction")?,
            launch: sym("hipModuleLaunchKernel")?,
            error_name: sym("hipGetErrorName")?,
            runtime_version: sym("hipRuntimeGetVersion")?,
        })
    }

    fn name(&self, e: c_int) -> String {
        // SAFETY: hipGetErrorName returns a static NUL-terminated string (or NULL).
        let p = unsafe { (self.error_name)(e) };
        if p.is_null() {
            format!("error {e}")
        } else {
            // SAFETY: non-null, NUL-terminated.
            format!("{} ({e})", unsafe { CStr::from_ptr(p) }.to_string_lossy())
        }
    }
}

/// How a step of a probe failed: the outcome it means and what happened.
struct Failed(&'static str, String);

struct Child<'a> {
    hip: &'a Hip,
    funcs: [*mut c_void; 3],
}

impl Child<'_> {
    fn check(&self, what: &str, e: c_int) -> Result<(), Failed> {
        match e {
            0 => Ok(()),
            HIP_ERROR_ILLEGAL_ADDRESS | HIP_ERROR_LAUNCH_FAILURE => {
                Err(Failed("fault", format!("{what}: {}", self.hip.name(e))))
            }
            _ => Err(Failed("error", format!("{what}: {}", self.hip.name(e)))),
        }
    }

    fn alloc(
        &self,
        what: &str,
        f: impl FnOnce(*mut *mut c_void) -> c_int,
    ) -> Result<*mut c_void, Failed> {
        let mut p = std::ptr::null_mut();
        let e = f(&mut p);
        if e != 0 || p.is_null() {
            return Err(Failed("error", format!("{what}: {}", self.hip.name(e))));
        }
        Ok(p)
    }

    /// Launches kernel `k` (bundle::KERNELS order) on one workgroup of 256.
    fn launch(&self, k: usize, args: &mut [*mut c_void]) -> Result<(), Failed> {
        // SAFETY: a function of the loaded module and its arguments' addresses.
        let e = unsafe {
            (self.hip.launch)(
                self.funcs[k],
                1,
                1,
                1,
                256,
                1,
                1,
                0,
                std::ptr::null_mut(),
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.check(&format!("hipModuleLaunchKernel({})", bundle::KERNELS[k]), e)
    }

    fn sync(&self) -> Result<(), Failed> {
        // SAFETY: no arguments.
        self.check("hipDeviceSynchronize", unsafe { (self.hip.sync)() })
    }

    fn over_read(&self, size: usize, over: usize) -> Result<Value, Failed> {
        let h = self.hip;
        // SAFETY (every HIP call below): valid out-pointers and sizes.
        let out = self.alloc("hipMalloc(4 KiB)", |p| unsafe { (h.malloc)(p, 4096) })?;
        let buf = self.alloc(&format!("hipMalloc({size})"), |p| unsafe {
            (h.malloc)(p, size)
        })?;
        self.check("hipMemset", unsafe { (h.memset)(buf, 0, size) })?;
        self.check("hipMemset", unsafe { (h.memset)(out, 0, 4) })?;
        let (mut a0, mut a1, mut a2) = (buf, ((size + over) / 4) as u64, out);
        let mut args = [
            &mut a0 as *mut _ as *mut c_void,
            &mut a1 as *mut _ as *mut c_void,
            &mut a2 as *mut _ as *mut c_void,
        ];
        self.launch(0, &mut args)?;
        self.sync()?;
        unsafe { (h.free)(buf) };
        unsafe { (h.free)(out) };
        Ok(json!({"buffer_bytes": size, "read_past_end_bytes": over}))
    }

    fn coherent(&self, m: Memory) -> Result<Value, Failed> {
        let h = self.hip;
        let size = 64 * KIB;
        // SAFETY (every HIP call below): valid out-pointers and sizes.
        let (call, buf) = match m {
            Memory::HostDefault => (
                "hipHostMalloc(0)",
                self.alloc("hipHostMalloc", |p| unsafe { (h.host_malloc)(p, size, 0) })?,
            ),
            Memory::VramFine => (
                "hipExtMallocWithFlags(hipDeviceMallocFinegrained)",
                self.alloc("hipExtMallocWithFlags", |p| unsafe {
                    (h.ext_malloc)(p, size, 1)
                })?,
            ),
            Memory::VramUncached => (
                "hipExtMallocWithFlags(hipDeviceMallocUncached)",
                self.alloc("hipExtMallocWithFlags", |p| unsafe {
                    (h.ext_malloc)(p, size, 3)
                })?,
            ),
            Memory::Managed => (
                "hipMallocManaged(hipMemAttachGlobal)",
                self.alloc("hipMallocManaged", |p| unsafe { (h.managed)(p, size, 1) })?,
            ),
        };
        let out = self.alloc("hipMalloc(4 KiB)", |p| unsafe { (h.malloc)(p, 4096) })?;
        let value: u32 = 0x5a17_c0de;
        let (mut a0, mut a1, mut a2) = (buf, (size / 4) as u64, value);
        let mut args = [
            &mut a0 as *mut _ as *mut c_void,
            &mut a1 as *mut _ as *mut c_void,
            &mut a2 as *mut _ as *mut c_void,
        ];
        self.launch(1, &mut args)?;
        self.sync()?;
        let mut r2 = out;
        args[2] = &mut r2 as *mut _ as *mut c_void;
        self.launch(0, &mut args)?;
        self.sync()?;
        let mut back = vec![0u32; size / 4];
        self.check("hipMemcpy", unsafe {
            (h.memcpy)(
                back.as_mut_ptr().cast(),
                buf,
                size,
                HIP_MEMCPY_DEVICE_TO_HOST,
            )
        })?;
        let data_ok = back.iter().all(|&w| w == value);
        match m {
            Memory::HostDefault => unsafe { (h.host_free)(buf) },
            _ => unsafe { (h.free)(buf) },
        };
        unsafe { (h.free)(out) };
        Ok(json!({"allocation": call, "bytes": size, "data_ok": data_ok}))
    }

    fn poll_flag(&self, limit: Duration) -> Result<Value, Failed> {
        let h = self.hip;
        // SAFETY: valid out-pointer and size.
        let mem = self.alloc("hipHostMalloc(0)", |p| unsafe {
            (h.host_malloc)(p, 4096, 0)
        })?;
        let flag = mem.cast::<u32>();
        // SAFETY: two words of the 4 KiB just allocated, host-accessible.
        let answer = unsafe { flag.add(1) };
        unsafe {
            flag.write_volatile(0);
            answer.write_volatile(0);
        }
        let (mut a0, mut a1, mut a2) = (flag.cast::<c_void>(), answer.cast::<c_void>(), 1u64 << 22);
        let mut args = [
            &mut a0 as *mut _ as *mut c_void,
            &mut a1 as *mut _ as *mut c_void,
            &mut a2 as *mut _ as *mut c_void,
        ];
        let start = Instant::now();
        self.launch(2, &mut args)?;
        let (mut seen_running, mut answered) = (false, false);
        let mut last;
        loop {
            // SAFETY: the flag word, written by the kernel.
            last = unsafe { flag.read_volatile() };
            if last == 1 && !answered {
                seen_running = true;
                unsafe { answer.write_volatile(1) };
                answered = true;
            }
            if last >= 2 || start.elapsed() > limit {
                break;
            }
            std::hint::spin_loop();
        }
        let seen_ms = start.elapsed().as_millis() as u64;
        if last == 0 || (last == 1 && !answered) {
            // The host never saw the flag: a program polling it would hang.
            return Err(Failed(
                "timeout",
                format!(
                    "the host did not see the kernel's flag within {} s",
                    limit.as_secs()
                ),
            ));
        }
        self.sync()?;
        // SAFETY: as above.
        let fin = unsafe { flag.read_volatile() };
        unsafe { (h.host_free)(mem) };
        Ok(json!({
            "host_saw_flag_while_kernel_ran": seen_running || fin == 2,
            "kernel_saw_host_answer": fin == 2,
            "final_flag": fin,
            "milliseconds": seen_ms,
        }))
    }
}

fn stats() -> Value {
    let c = CString::new("rocm_fix_get_stats").unwrap_or_default();
    // SAFETY: the global scope; the symbol, when there, is include/rocm_fix.h's.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    if p.is_null() {
        return Value::Null;
    }
    // SAFETY: the C API's signature.
    let f: StatsFn = unsafe { std::mem::transmute::<*mut c_void, StatsFn>(p) };
    let mut s = RocmFixStats::default();
    // SAFETY: a buffer of the size given.
    unsafe { f(&mut s, std::mem::size_of::<RocmFixStats>()) };
    let v = s.version.iter().position(|&b| b == 0).unwrap_or(16);
    json!({
        "intercepted": s.intercepted, "rewritten": s.rewritten, "padded": s.padded,
        "padded_bytes": s.padded_bytes, "retried": s.retried, "faults": s.faults,
        "live_allocations": s.live_allocations,
        "version": String::from_utf8_lossy(&s.version[..v]),
    })
}

/// `rocm-fix validate --probe NAME`: runs one probe here and prints its
/// result on one line of stdout. The exit status is 0 unless NAME is unknown.
pub fn child(name: &str) -> i32 {
    let Some(probe) = PROBES.iter().find(|p| p.name == name) else {
        eprintln!("rocm-fix: validate: unknown probe '{name}'");
        return crate::exit::EXIT_USAGE;
    };
    let mut result = json!({"outcome": "error"});
    let outcome = (|| -> Result<Value, Failed> {
        let hip = Hip::open().map_err(|e| Failed("error", e))?;
        result["runtime"] = json!(hip.path);
        let mut v = 0;
        // SAFETY: valid out-pointer.
        if unsafe { (hip.runtime_version)(&mut v) } == 0 {
            result["hip_runtime_version"] = json!(v);
        }
        let c = Child {
            hip: &hip,
            funcs: [std::ptr::null_mut(); 3],
        };
        // SAFETY: no pointers.
        c.check("hipInit", unsafe { (hip.init)(0) })?;
        c.check("hipSetDevice(0)", unsafe { (hip.set_device)(0) })?;
        let path = bundle::find().map_err(|e| Failed("error", e))?;
        let (bytes, _) = bundle::load(&path).map_err(|e| Failed("error", e))?;
        let mut module = std::ptr::null_mut();
        // SAFETY: the bundle's bytes outlive the module's use.
        let e = unsafe { (hip.load)(&mut module, bytes.as_ptr().cast()) };
        c.check("hipModuleLoadData(probes.co)", e)?;
        let mut funcs = [std::ptr::null_mut(); 3];
        for (i, k) in bundle::KERNELS.iter().enumerate() {
            let n = CString::new(*k).unwrap_or_default();
            // SAFETY: a loaded module and a NUL-terminated name.
            let e = unsafe { (hip.get_function)(&mut funcs[i], module, n.as_ptr()) };
            c.check(&format!("hipModuleGetFunction({k})"), e)?;
        }
        let c = Child { hip: &hip, funcs };
        match probe.kind {
            Kind::OverRead { size, over } => c.over_read(size, over),
            Kind::Coherent(m) => c.coherent(m),
            Kind::PollFlag => c.poll_flag(Duration::from_secs(10)),
        }
    })();
    match outcome {
        Ok(detail) => {
            result["outcome"] = json!("completed");
            result["detail"] = detail;
        }
        Err(Failed(o, why)) => {
            result["outcome"] = json!(o);
            result["detail"] = json!(why);
        }
    }
    result["rocm_fix_stats"] = stats();
    println!("{RESULT_TAG}{result}");
    let _ = std::io::stdout().flush();
    crate::exit::EXIT_OK
}

// ---------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------

/// How one child ended.
#[derive(Debug, Clone)]
struct Ran {
    outcome: Value,
    pid: u32,
}

/// `LD_PRELOAD` without any librocm_fix.so entry.
fn preload_without(current: Option<&str>) -> Option<String> {
    let rest: Vec<&str> = current
        .unwrap_or_default()
        .split([':', ' '])
        .filter(|e| !e.is_empty() && !e.ends_with("librocm_fix.so"))
        .collect();
    (!rest.is_empty()).then(|| rest.join(":"))
}

fn run_child(
    probe: &Probe,
    with: Option<&Path>,
    gfx_override: Option<&str>,
    timeout: Duration,
) -> Ran {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("rocm-fix"));
    let mut cmd = Command::new(exe);
    cmd.args(["validate", "--probe", probe.name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let user_preload = std::env::var("LD_PRELOAD").ok();
    let rest = preload_without(user_preload.as_deref());
    match with {
        Some(lib) => {
            let mut v = lib.display().to_string();
            if let Some(r) = &rest {
                v = format!("{v}:{r}");
            }
            cmd.env("LD_PRELOAD", v)
                .env_remove("ROCM_FIX_MODE")
                .env("ROCM_FIX_STATS", "1");
        }
        None => {
            match &rest {
                Some(r) => cmd.env("LD_PRELOAD", r),
                None => cmd.env_remove("LD_PRELOAD"),
            };
            cmd.env("ROCM_FIX_MODE", "off").env_remove("ROCM_FIX_STATS");
        }
    }
    cmd.env_remove("ROCM_FIX_JOURNAL");
    match gfx_override {
        Some(v) => cmd.env("HSA_OVERRIDE_GFX_VERSION", v),
        None => cmd.env_remove("HSA_OVERRIDE_GFX_VERSION"),
    };
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                outcome: json!({"outcome": "error", "detail": format!("cannot start the probe: {e}")}),
                pid: 0,
            }
        }
    };
    let pid = child.id();
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.by_ref().take(1 << 20).read_to_end(&mut s);
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out_t = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err_t = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > timeout => {
                timed_out = true;
                // SAFETY: the child's own process group (process_group(0) above).
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let seconds = (start.elapsed().as_millis() as f64 / 1000.0 * 100.0).round() / 100.0;
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let mut v = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_TAG))
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| json!({"outcome": "error"}));
    let parsed = kernel_log::parse(&stderr);
    if let Some(f) = parsed.rocr_faults.first() {
        v["rocr_line"] = json!(f.line);
    }
    use std::os::unix::process::ExitStatusExt;
    let status_text = match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "unknown".into(),
        },
        None => "unknown".into(),
    };
    if timed_out {
        v["outcome"] = json!("timeout");
        v["detail"] = json!(format!("no result within {} s; stopped", timeout.as_secs()));
    } else if v.get("detail").is_none() {
        // No result line: the child died before printing one.
        if parsed.rocr_faults.is_empty() {
            v["outcome"] = json!("error");
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            v["detail"] = json!(format!(
                "the probe ended ({status_text}) without a result{}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    )
                }
            ));
        } else {
            v["outcome"] = json!("fault");
            v["detail"] = json!("ROCr reported a GPU memory fault and the process ended");
        }
    }
    v["status"] = json!(status_text);
    v["seconds"] = json!(seconds);
    if let Some(line) = stderr
        .lines()
        .find(|l| l.starts_with("rocm-fix") && l.contains("intercepted"))
    {
        v["rocm_fix_stats_line"] = json!(line);
    }
    Ran { outcome: v, pid }
}

/// The machine as doctor sees it.
fn identity(d: &doctor::Report, runtime: Option<&Value>) -> Value {
    let doc: Value = serde_json::from_str(&d.to_json()).unwrap_or(Value::Null);
    let first = doc["gpus"].get(0).cloned().unwrap_or(Value::Null);
    json!({
        "real_gfx": first["gfx"],
        "reported_gfx": first["reported_gfx"],
        "marketing_name": first["marketing_name"],
        "device_id": first["device_id"],
        "family": first["family"],
        "gpus": doc["gpus"],
        "rocm_version": doc["rocm_version"],
        "runtime_loaded_from": runtime.and_then(|r| r.get("runtime")).cloned().unwrap_or(Value::Null),
        "hip_runtime_version": runtime.and_then(|r| r.get("hip_runtime_version")).cloned().unwrap_or(Value::Null),
        "kernel": doc["kernel"],
        "firmware": doc["firmware"],
        "amdgpu_parameters": doc["amdgpu_parameters"],
        "rocm_fix_version": crate::VERSION,
        "rocm_fix_mode": doc["rocm_fix"]["mode"],
    })
}

fn confirm() -> Result<bool, String> {
    use std::io::IsTerminal;
    eprintln!("{WARNING}");
    if !std::io::stdin().is_terminal() {
        return Err(
            "validate: stdin is not a terminal, so it cannot ask; add --yes to run the probes"
                .into(),
        );
    }
    eprint!("Run the probes? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn cell(v: &Value) -> String {
    let o = v["outcome"].as_str().unwrap_or("error");
    match (o, v["detail"].get("data_ok")) {
        ("completed", Some(Value::Bool(false))) => "completed (wrong data)".into(),
        _ => o.to_string(),
    }
}

/// The Markdown summary of a report.
pub fn markdown(report: &Value) -> String {
    let id = &report["identity"];
    let s = |v: &Value| {
        v.as_str().map(str::to_string).unwrap_or_else(|| {
            if v.is_null() {
                "unknown".into()
            } else {
                v.to_string()
            }
        })
    };
    let mut m = String::new();
    m.push_str("# rocm-fix validate\n\n");
    m.push_str(&format!(
        "- GPU: {} (real chip {}, reported as {}, device {})\n- ROCm: {} (HIP runtime loaded from {})\n- Linux kernel: {}\n- rocm-fix: {} (mode {})\n\n",
        s(&id["marketing_name"]), s(&id["real_gfx"]), s(&id["reported_gfx"]), s(&id["device_id"]),
        s(&id["rocm_version"]["version"]), s(&id["runtime_loaded_from"]), s(&id["kernel"]),
        s(&id["rocm_fix_version"]), s(&id["rocm_fix_mode"]),
    ));
    m.push_str("| probe | override | without rocm-fix | with rocm-fix | what it does |\n|---|---|---|---|---|\n");
    for p in report["probes"].as_array().into_iter().flatten() {
        m.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            s(&p["name"]),
            p["override"].as_str().unwrap_or("-"),
            cell(&p["without"]),
            cell(&p["with"]),
            s(&p["what"]),
        ));
    }
    m.push_str("\nOutcomes: `completed` the kernels ran and the probe finished; `fault` a GPU memory fault (ROCr's line and, where readable, the kernel log's decoded report are in report.json); `timeout` stopped after the time limit (for the poll probe: the host never saw the kernel's flag, so a program polling it would hang); `error` something else failed (see report.json).\n");
    let faults: Vec<String> = report["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            ["without", "with"].map(|w| (p["name"].clone(), w, p[w]["rocr_line"].clone()))
        })
        .filter_map(|(n, w, l)| l.as_str().map(|l| format!("- {} ({w}): `{l}`", s(&n))))
        .collect();
    if !faults.is_empty() {
        m.push_str("\n## ROCr's fault lines\n\n");
        m.push_str(&faults.join("\n"));
        m.push('\n');
    }
    m.push_str("\nShare this folder (report.json and report.md) in a rocm-fix issue: home folders, user and host names are redacted.\n");
    m
}

/// `rocm-fix validate`. Returns the exit status.
pub fn validate(opts: &Options) -> i32 {
    if !opts.yes {
        match confirm() {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("rocm-fix: validate: nothing was run");
                return crate::exit::EXIT_OK;
            }
            Err(e) => {
                eprintln!("rocm-fix: {e}");
                return crate::exit::EXIT_USAGE;
            }
        }
    }
    let preload = match run::find_preload(None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return crate::exit::EXIT_ERROR;
        }
    };
    let bundle_path = match bundle::find().and_then(|p| bundle::load(&p).map(|(_, t)| (p, t))) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("rocm-fix: validate: {e}");
            return crate::exit::EXIT_ERROR;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&opts.report_dir) {
        eprintln!(
            "rocm-fix: validate: cannot create {}: {e}",
            opts.report_dir.display()
        );
        return crate::exit::EXIT_ERROR;
    }
    let doc = doctor::diagnose(&doctor::Options::from_system());
    let real_gfx = doc
        .gpus
        .first()
        .and_then(|g| g.gfx.clone())
        .unwrap_or_default();
    let mut overrides: Vec<Option<&str>> = vec![None];
    if opts.with_overrides {
        overrides.extend(overrides_for(&real_gfx).into_iter().map(Some));
    }
    let total = PROBES.len() * overrides.len();
    let mut probes = Vec::new();
    let mut runtime = None;
    let mut n = 0;
    for ov in &overrides {
        for p in PROBES {
            n += 1;
            // Progress on stderr; a closed stderr is no reason to stop.
            let _ = write!(
                std::io::stderr(),
                "rocm-fix: validate: [{n}/{total}] {}{} ",
                p.name,
                ov.map(|v| format!(" (HSA_OVERRIDE_GFX_VERSION={v})"))
                    .unwrap_or_default()
            );
            let without = run_child(p, None, *ov, opts.timeout);
            let with = run_child(p, Some(&preload), *ov, opts.timeout);
            let pids = [without.pid, with.pid];
            let (without, with) = (without.outcome, with.outcome);
            let _ = writeln!(
                std::io::stderr(),
                "without: {}, with: {}",
                cell(&without),
                cell(&with)
            );
            if runtime.is_none() && without.get("runtime").is_some() {
                runtime = Some(without.clone());
            }
            probes.push((
                pids,
                json!({
                    "name": p.name, "group": p.group, "what": p.what, "override": ov,
                    "without": without, "with": with,
                }),
            ));
        }
    }
    // The kernel's amdgpu fault reports, read once after every probe ran,
    // matched to the faulting child by its pid.
    let faulted = |v: &Value| v["outcome"] == "fault";
    let kernel_text = probes
        .iter()
        .any(|(_, p)| faulted(&p["without"]) || faulted(&p["with"]))
        .then(|| {
            let ro = report::Options {
                run: None,
                kernel_log: None,
                redact: true,
                out_dir: PathBuf::new(),
            };
            report::read_kernel_log(&ro, &mut Vec::new()).map(|(t, _)| kernel_log::parse(&t))
        });
    let probes: Vec<Value> = probes
        .into_iter()
        .map(|(pids, mut p)| {
            for (which, pid) in ["without", "with"].into_iter().zip(pids) {
                if !faulted(&p[which]) {
                    continue;
                }
                p[which]["kernel_log"] = match &kernel_text {
                    Some(Some(log)) => json!(log
                        .faults
                        .iter()
                        .filter(|f| f.pid == Some(pid) || f.thread_pid == Some(pid))
                        .filter_map(|f| serde_json::to_value(f).ok())
                        .collect::<Vec<_>>()),
                    _ => json!("not readable (dmesg and journalctl -k)"),
                };
            }
            p
        })
        .collect();
    let mut rep = json!({
        "identity": identity(&doc, runtime.as_ref()),
        "probes": probes,
        "code_objects": {"path": bundle_path.0.display().to_string(), "targets": bundle_path.1},
        "with_overrides": opts.with_overrides,
        "timeout_seconds": opts.timeout.as_secs(),
    });
    let rules = report::redactions();
    report::redact_value(&mut rep, &rules);
    let text = serde_json::to_string_pretty(&rep).unwrap_or_default() + "\n";
    let md = report::redact_text(&markdown(&rep), &rules);
    let write = |name: &str, body: &str| -> Result<PathBuf, String> {
        let p = opts.report_dir.join(name);
        std::fs::write(&p, body).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        Ok(p)
    };
    match write("report.json", &text).and_then(|j| write("report.md", &md).map(|m| (j, m))) {
        Ok((j, m)) => {
            if opts.json {
                print!("{text}");
            } else {
                println!("{md}");
            }
            eprintln!(
                "rocm-fix: validate: wrote {} and {}",
                j.display(),
                m.display()
            );
            crate::exit::EXIT_OK
        }
        Err(e) => {
            eprintln!("rocm-fix: validate: {e}");
            crate::exit::EXIT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_without_drops_only_rocm_fix() {
        assert_eq!(
            preload_without(Some("/a/librocm_fix.so:/b/x.so")),
            Some("/b/x.so".into())
        );
        assert_eq!(preload_without(Some("/a/librocm_fix.so")), None);
        assert_eq!(preload_without(None), None);
    }

    #[test]
    fn probe_names_are_unique() {
        let mut n: Vec<_> = PROBES.iter().map(|p| p.name).collect();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), PROBES.len());
    }
}
