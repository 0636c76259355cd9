//! glibc's own `dlvsym`, found without calling `dlvsym`.
//!
//! The front exports a `dlvsym` hook (clients that ask for
//! `dlvsym(handle, "hipMalloc", "hip_4.2")`), so it cannot import glibc's: the
//! front is linked `-Bsymbolic`, and even a versioned reference
//! (`dlvsym@GLIBC_2.34`) would bind at run time to the first definition in the
//! global scope, this preload (glibc's `check_match` in elf/dl-lookup.c accepts
//! an unversioned definition for a versioned reference). So the address is read
//! from libc's own dynamic symbol table, once, on the first lookup: the loaded
//! objects through `dl_iterate_phdr`, then a lookup of `dlvsym` (elfhash.rs:
//! the GNU hash table, or the System V one where there is none) in
//! `libc.so.6` (glibc 2.34+, where libdl was merged into libc) or, failing that,
//! in `libdl.so.2`. Only the default version is taken (`dlvsym@@GLIBC_2.34`;
//! the compat `dlvsym@GLIBC_2.2.5` is the same function today, but only the
//! default one is promised to stay the current implementation).

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

pub use crate::elfhash::same;
use crate::elfhash::{self, Tables};

const DT_NULL: i64 = 0;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
const DT_VERSYM: i64 = 0x6fff_fff0;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;

#[repr(C)]
struct Dyn {
    tag: i64,
    val: u64,
}

/// glibc's dlvsym; 0 until found (and while it cannot be found).
static REAL_DLVSYM: AtomicUsize = AtomicUsize::new(0);

/// The real `dlvsym`, cached after the first successful lookup.
pub fn real_dlvsym() -> usize {
    let cached = REAL_DLVSYM.load(Ordering::Acquire);
    if cached != 0 {
        return cached;
    }
    let p = libc_symbol(b"dlvsym");
    if p != 0 {
        REAL_DLVSYM.store(p, Ordering::Release);
    }
    p
}

/// The default-version function `name` of libc.so.6, else of libdl.so.2
/// (glibc before 2.34 kept the dl functions there); 0 if neither has it.
pub fn libc_symbol(name: &'static [u8]) -> usize {
    let mut found = Search {
        name,
        libs: [b"libc.so.6", b"libdl.so.2"],
        addr: [0; 2],
    };
    // SAFETY: the callback only reads the loader's data for each object,
    // and `found` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each_object), (&mut found as *mut Search).cast()) };
    if found.addr[0] != 0 {
        found.addr[0]
    } else {
        found.addr[1]
    }
}

/// Calls `f` for each loaded object, in the loader's order, until it
/// returns true.
pub fn each_object_until(f: &mut dyn FnMut(&libc::dl_phdr_info) -> bool) {
    unsafe extern "C" fn call(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info, and data is the
        // closure below, alive for the whole iteration.
        let (info, f) = unsafe {
            (
                &*info,
                &mut *data.cast::<&mut dyn FnMut(&libc::dl_phdr_info) -> bool>(),
            )
        };
        c_int::from(f(info))
    }
    let mut f = f;
    // SAFETY: the callback only reads the loader's data for each object.
    unsafe {
        libc::dl_iterate_phdr(
            Some(call),
            (&mut f as *mut &mut dyn FnMut(&libc::dl_phdr_info) -> bool).cast(),
        )
    };
}

/// The basename of a loaded object's name (empty for the executable).
pub fn object_name(info: &libc::dl_phdr_info) -> &[u8] {
    if info.dlpi_name.is_null() {
        return &[];
    }
    // SAFETY: the loader's NUL-terminated file name.
    unsafe { cstr(info.dlpi_name) }
}

/// Whether an object whose basename is `lib` is loaded.
pub fn is_loaded(lib: &[u8]) -> bool {
    let mut found = false;
    each_object_until(&mut |info| {
        found = same(basename(object_name(info)), lib);
        found
    });
    found
}

/// Whether `addr` lies in one of the loadable segments of `info`'s object.
fn contains(info: &libc::dl_phdr_info, addr: usize) -> bool {
    let base = info.dlpi_addr as usize;
    (0..usize::from(info.dlpi_phnum)).any(|i| {
        // SAFETY: dlpi_phnum headers at dlpi_phdr.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        let lo = base.wrapping_add(ph.p_vaddr as usize);
        ph.p_type == PT_LOAD && addr >= lo && addr - lo < ph.p_memsz as usize
    })
}

/// The position, in the loader's order, of the object holding `addr`.
pub fn position_of(addr: usize) -> Option<usize> {
    let (mut i, mut at) = (0, None);
    each_object_until(&mut |info| {
        if contains(info, addr) {
            at = Some(i);
        }
        i += 1;
        at.is_some()
    });
    at
}

/// Whether the object holding `addr` defines the function `name`.
pub fn object_defines(addr: usize, name: &[u8]) -> bool {
    let mut yes = false;
    each_object_until(&mut |info| {
        if !contains(info, addr) {
            return false;
        }
        // SAFETY: a loaded object's headers and dynamic section.
        yes = unsafe { lookup(info, name) } != 0;
        true
    });
    yes
}

struct Search {
    name: &'static [u8],
    /// Where to look, in order of preference (basenames).
    libs: [&'static [u8]; 2],
    addr: [usize; 2],
}

/// The last path component of a NUL-terminated name.
pub fn basename(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'/') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info and our Search.
    let (info, search) = unsafe { (&*info, &mut *data.cast::<Search>()) };
    if info.dlpi_name.is_null() {
        return 0;
    }
    // SAFETY: the loader's NUL-terminated file name.
    let name = unsafe { cstr(info.dlpi_name) };
    let Some(slot) = search.libs.iter().position(|l| same(l, basename(name))) else {
        return 0;
    };
    if search.addr[slot] != 0 {
        return 0;
    }
    // SAFETY: the program headers and dynamic section of a loaded object.
    search.addr[slot] = unsafe { lookup(info, search.name) };
    // Stop once the preferred one is known.
    c_int::from(search.addr[0] != 0)
}

/// A NUL-terminated string as bytes (without the NUL).
unsafe fn cstr<'a>(s: *const c_char) -> &'a [u8] {
    // SAFETY: the caller's promise.
    unsafe { elfhash::cstr(s) }
}

/// The address of the default-version function `name` defined by the object
/// of `info`, or 0.
unsafe fn lookup(info: &libc::dl_phdr_info, name: &[u8]) -> usize {
    let base = info.dlpi_addr as usize;
    // glibc rewrites these d_ptr values to run-time addresses where the
    // dynamic section is writable (x86_64), and leaves them as offsets where
    // it is not: either way below `base` means an offset.
    let at = |v: u64| -> usize {
        let v = v as usize;
        if v < base {
            base.wrapping_add(v)
        } else {
            v
        }
    };
    let mut dynamic: *const Dyn = core::ptr::null();
    for i in 0..usize::from(info.dlpi_phnum) {
        // SAFETY: dlpi_phnum headers at dlpi_phdr.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type == PT_DYNAMIC {
            dynamic = base.wrapping_add(ph.p_vaddr as usize) as *const Dyn;
        }
    }
    if dynamic.is_null() {
        return 0;
    }
    let mut t = Tables {
        base,
        strtab: 0,
        symtab: 0,
        gnu_hash: 0,
        hash: 0,
        versym: 0,
    };
    let mut d = dynamic;
    loop {
        // SAFETY: the dynamic section ends with DT_NULL.
        let e = unsafe { &*d };
        match e.tag {
            DT_NULL => break,
            DT_STRTAB => t.strtab = at(e.val),
            DT_SYMTAB => t.symtab = at(e.val),
            DT_GNU_HASH => t.gnu_hash = at(e.val),
            DT_HASH => t.hash = at(e.val),
            DT_VERSYM => t.versym = at(e.val),
            _ => {}
        }
        // SAFETY: still inside the section (not past DT_NULL).
        d = unsafe { d.add(1) };
    }
    // SAFETY: the loaded object's own tables.
    unsafe { elfhash::lookup(&t, name) }
}
