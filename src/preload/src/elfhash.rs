//! Symbol lookup in a loaded object's dynamic symbol table, by its
//! `DT_GNU_HASH` table or, where an object has none (linked with
//! `--hash-style=sysv`), its `DT_HASH` table (the System V ABI, "Hash
//! Table"; glibc's loader accepts either: elf/dl-lookup.c, elf/dl-setup_hash.c).
//! Plain memory reads, no libc: the front (realdl.rs) uses it on live
//! objects, and tests/front_elf.rs on synthetic tables.

use core::ffi::c_char;

pub const STT_FUNC: u8 = 2;

/// Elf64_Sym.
#[repr(C)]
pub struct Sym {
    pub st_name: u32,
    pub st_info: u8,
    pub st_other: u8,
    pub st_shndx: u16,
    pub st_value: u64,
    pub st_size: u64,
}

/// Where an object's tables are (run-time addresses; 0: absent).
pub struct Tables {
    pub base: usize,
    pub strtab: usize,
    pub symtab: usize,
    pub gnu_hash: usize,
    pub hash: usize,
    pub versym: usize,
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

/// A NUL-terminated string as bytes (without the NUL).
///
/// # Safety
/// `s` is NUL-terminated.
pub unsafe fn cstr<'a>(s: *const c_char) -> &'a [u8] {
    let mut n = 0;
    // SAFETY: s is NUL-terminated (the caller's promise).
    while unsafe { core::ptr::read_volatile(s.add(n)) } != 0 {
        n += 1;
    }
    // SAFETY: n readable bytes at s.
    unsafe { core::slice::from_raw_parts(s.cast::<u8>(), n) }
}

/// The GNU hash of a symbol name (the `DT_GNU_HASH` function: h*33 + c).
pub fn gnu_hash(name: &[u8]) -> u32 {
    name.iter().fold(5381u32, |h, &c| {
        h.wrapping_mul(33).wrapping_add(u32::from(c))
    })
}

/// The System V ELF hash (`DT_HASH`).
pub fn sysv_hash(name: &[u8]) -> u32 {
    name.iter().fold(0u32, |h, &c| {
        let h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        (h ^ (g >> 24)) & !g
    })
}

/// Whether symbol `i` is the default-version function `name`.
///
/// # Safety
/// `i` indexes the symbol table of `t`.
unsafe fn matches(t: &Tables, i: usize, name: &[u8]) -> bool {
    // SAFETY: symbol i of the object's table.
    let sym = unsafe { &*(t.symtab as *const Sym).add(i) };
    // SAFETY: st_name indexes the string table.
    let sname = unsafe { cstr((t.strtab + sym.st_name as usize) as *const c_char) };
    // The hidden bit marks a non-default version (dlvsym@GLIBC_2.2.5).
    // SAFETY: one versym entry per symbol.
    let hidden = t.versym != 0 && unsafe { *(t.versym as *const u16).add(i) } & 0x8000 != 0;
    same(sname, name)
        && sym.st_shndx != 0
        && sym.st_value != 0
        && sym.st_info & 0xf == STT_FUNC
        && !hidden
}

/// The address of the default-version function `name` defined by the
/// object whose tables are `t`, or 0.
///
/// # Safety
/// `t` describes readable, well-formed tables.
pub unsafe fn lookup(t: &Tables, name: &[u8]) -> usize {
    if t.strtab == 0 || t.symtab == 0 {
        return 0;
    }
    let found = if t.gnu_hash != 0 {
        // SAFETY: the caller's promise.
        unsafe { lookup_gnu(t, name) }
    } else if t.hash != 0 {
        // SAFETY: the caller's promise.
        unsafe { lookup_sysv(t, name) }
    } else {
        None
    };
    match found {
        Some(i) => {
            // SAFETY: i indexes the symbol table.
            let sym = unsafe { &*(t.symtab as *const Sym).add(i) };
            t.base.wrapping_add(sym.st_value as usize)
        }
        None => 0,
    }
}

/// DT_GNU_HASH: nbuckets, symoffset, bloom_size, bloom_shift, the bloom
/// words (64-bit), the buckets, then one chain word per symbol from
/// symoffset on; the low bit of a chain word ends its chain.
unsafe fn lookup_gnu(t: &Tables, name: &[u8]) -> Option<usize> {
    let words = t.gnu_hash as *const u32;
    // SAFETY: the header of the hash table.
    let (nbuckets, symoffset, bloom_size) =
        unsafe { (*words, *words.add(1), *words.add(2) as usize) };
    if nbuckets == 0 {
        return None;
    }
    let buckets = (t.gnu_hash + 16 + bloom_size * 8) as *const u32;
    let chains = buckets.wrapping_add(nbuckets as usize);
    let h = gnu_hash(name);
    // SAFETY: h % nbuckets indexes the buckets.
    let mut i = unsafe { *buckets.add((h % nbuckets) as usize) };
    if i < symoffset {
        return None;
    }
    loop {
        // SAFETY: i >= symoffset is a symbol of this chain.
        let ch = unsafe { *chains.add((i - symoffset) as usize) };
        // SAFETY: i indexes the symbol table.
        if ch | 1 == h | 1 && unsafe { matches(t, i as usize, name) } {
            return Some(i as usize);
        }
        if ch & 1 != 0 {
            return None;
        }
        i += 1;
    }
}

/// DT_HASH: nbucket, nchain (the number of symbols), the buckets, the
/// chains; index 0 (STN_UNDEF) ends a chain.
unsafe fn lookup_sysv(t: &Tables, name: &[u8]) -> Option<usize> {
    let words = t.hash as *const u32;
    // SAFETY: the header of the hash table.
    let (nbucket, nchain) = unsafe { (*words, *words.add(1)) };
    if nbucket == 0 {
        return None;
    }
    let buckets = words.wrapping_add(2);
    let chains = buckets.wrapping_add(nbucket as usize);
    // SAFETY: the hash modulo nbucket indexes the buckets.
    let mut i = unsafe { *buckets.add((sysv_hash(name) % nbucket) as usize) };
    // At most nchain steps: a malformed (cyclic) chain cannot hang us.
    for _ in 0..nchain {
        if i == 0 || i >= nchain {
            return None;
        }
        // SAFETY: i < nchain indexes the symbol table.
        if unsafe { matches(t, i as usize, name) } {
            return Some(i as usize);
        }
        // SAFETY: i < nchain indexes the chains.
        i = unsafe { *chains.add(i as usize) };
    }
    None
}
