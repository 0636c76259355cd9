//! glibc's own `dlvsym`, found without calling `dlvsym`.
//!
//! The front exports a `dlvsym` hook (clients that ask for
//! `dlvsym(handle, "hipMalloc", "hip_4.2")`), so it cannot import glibc's: the
//! front is linked `-Bsymbolic`, and even a versioned reference
//! (`dlvsym@GLIBC_2.34`) would bind at run time to the first definition in the
//! global scope, this preload (glibc's `check_match` in elf/dl-lookup.c accepts
//! an unversioned definition for a versioned reference). So the address is read
//! from libc's own dynamic symbol table, once, on the first lookup: the loaded
//! objects through `dl_iterate_phdr`, then a GNU-hash lookup of `dlvsym` in
//! `libc.so.6` (glibc 2.34+, where libdl was merged into libc) or, failing that,
//! in `libdl.so.2`. Only the default version is taken (`dlvsym@@GLIBC_2.34`;
//! the compat `dlvsym@GLIBC_2.2.5` is the same function today, but only the
//! default one is promised to stay the current implementation).

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

const DT_NULL: i64 = 0;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
const DT_VERSYM: i64 = 0x6fff_fff0;
const PT_DYNAMIC: u32 = 2;
const STT_FUNC: u8 = 2;

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
    let mut found = Search {
        name: b"dlvsym",
        libs: [b"libc.so.6", b"libdl.so.2"],
        addr: [0; 2],
    };
    // SAFETY: the callback only reads the loader's data for each object,
    // and `found` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each_object), (&mut found as *mut Search).cast()) };
    let p = if found.addr[0] != 0 {
        found.addr[0]
    } else {
        found.addr[1]
    };
    if p != 0 {
        REAL_DLVSYM.store(p, Ordering::Release);
    }
    p
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

/// The first definition of the function `name` (default version) in a
/// loaded object, in the loader's order, other than the address `not`; 0
/// if none.
pub fn find_elsewhere(name: &[u8], not: usize) -> usize {
    let mut addr = 0;
    each_object_until(&mut |info| {
        // The vDSO: the kernel's, read-only, defines nothing of ours.
        if object_name(info).starts_with(b"linux-vdso") {
            return false;
        }
        // SAFETY: a loaded object's headers and dynamic section.
        let a = unsafe { lookup(info, name) };
        if a != 0 && a != not {
            addr = a;
        }
        addr != 0
    });
    addr
}

struct Search {
    name: &'static [u8],
    /// Where to look, in order of preference (basenames).
    libs: [&'static [u8]; 2],
    addr: [usize; 2],
}

/// Byte equality without a libc import (a slice `==` becomes a call to
/// `bcmp`, one more symbol to resolve in every process).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && (0..a.len()).all(|i| {
            // SAFETY: i < len of both slices.
            unsafe {
                core::ptr::read_volatile(a.as_ptr().add(i))
                    == core::ptr::read_volatile(b.as_ptr().add(i))
            }
        })
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
    let mut n = 0;
    // SAFETY: s is NUL-terminated (the caller's promise).
    while unsafe { core::ptr::read_volatile(s.add(n)) } != 0 {
        n += 1;
    }
    // SAFETY: n readable bytes at s.
    unsafe { core::slice::from_raw_parts(s.cast::<u8>(), n) }
}

/// The GNU hash of a symbol name (the `DT_GNU_HASH` function: h*33 + c).
fn gnu_hash(name: &[u8]) -> u32 {
    name.iter().fold(5381u32, |h, &c| {
        h.wrapping_mul(33).wrapping_add(u32::from(c))
    })
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
    let (mut strtab, mut symtab, mut gnu_hash_at, mut versym) = (0, 0, 0, 0);
    let mut d = dynamic;
    loop {
        // SAFETY: the dynamic section ends with DT_NULL.
        let e = unsafe { &*d };
        match e.tag {
            DT_NULL => break,
            DT_STRTAB => strtab = at(e.val),
            DT_SYMTAB => symtab = at(e.val),
            DT_GNU_HASH => gnu_hash_at = at(e.val),
            DT_VERSYM => versym = at(e.val),
            _ => {}
        }
        // SAFETY: still inside the section (not past DT_NULL).
        d = unsafe { d.add(1) };
    }
    if strtab == 0 || symtab == 0 || gnu_hash_at == 0 {
        return 0;
    }
    // DT_GNU_HASH: nbuckets, symoffset, bloom_size, bloom_shift, the bloom
    // words (64-bit), the buckets, then one chain word per symbol from
    // symoffset on; the low bit of a chain word ends its chain.
    let words = gnu_hash_at as *const u32;
    // SAFETY: the header of the loaded object's hash table.
    let (nbuckets, symoffset, bloom_size) =
        unsafe { (*words, *words.add(1), *words.add(2) as usize) };
    if nbuckets == 0 {
        return 0;
    }
    let buckets = (gnu_hash_at + 16 + bloom_size * 8) as *const u32;
    let chains = buckets.wrapping_add(nbuckets as usize);
    let h = gnu_hash(name);
    // SAFETY: h % nbuckets indexes the buckets.
    let mut i = unsafe { *buckets.add((h % nbuckets) as usize) };
    if i < symoffset {
        return 0;
    }
    loop {
        // SAFETY: i >= symoffset is a symbol of this chain.
        let ch = unsafe { *chains.add((i - symoffset) as usize) };
        if ch | 1 == h | 1 {
            // SAFETY: symbol i of the object's table (Elf64_Sym).
            let sym = unsafe { &*(symtab as *const libc::Elf64_Sym).add(i as usize) };
            // SAFETY: st_name indexes the string table.
            let sname = unsafe { cstr((strtab + sym.st_name as usize) as *const c_char) };
            // The hidden bit marks a non-default version (dlvsym@GLIBC_2.2.5).
            let hidden =
                versym != 0 && unsafe { *(versym as *const u16).add(i as usize) } & 0x8000 != 0;
            if same(sname, name)
                && sym.st_shndx != 0
                && sym.st_value != 0
                && sym.st_info & 0xf == STT_FUNC
                && !hidden
            {
                return base.wrapping_add(sym.st_value as usize);
            }
        }
        if ch & 1 != 0 {
            return 0;
        }
        i += 1;
    }
}
