//! The front's symbol lookup (src/preload/src/elfhash.rs) on synthetic
//! dynamic symbol tables: the GNU hash table, and the System V one an object
//! linked with `--hash-style=sysv` has instead (before, such a libc left the
//! front without glibc's dlvsym, and then without dlsym: every dlsym lookup
//! of the process answered NULL).

#[path = "../src/preload/src/elfhash.rs"]
#[allow(dead_code)]
mod elfhash;
use elfhash::*;

/// Symbols 0 (undefined), then `names` as functions at 0x1000 * i.
struct Synthetic {
    strtab: Vec<u8>,
    syms: Vec<Sym>,
    versym: Vec<u16>,
}

fn synthetic(names: &[&str]) -> Synthetic {
    let mut strtab = vec![0u8];
    let mut syms = vec![Sym {
        st_name: 0,
        st_info: 0,
        st_other: 0,
        st_shndx: 0,
        st_value: 0,
        st_size: 0,
    }];
    for (i, n) in names.iter().enumerate() {
        syms.push(Sym {
            st_name: strtab.len() as u32,
            st_info: 0x10 | STT_FUNC, // GLOBAL FUNC
            st_other: 0,
            st_shndx: 12,
            st_value: 0x1000 * (i as u64 + 1),
            st_size: 16,
        });
        strtab.extend_from_slice(n.as_bytes());
        strtab.push(0);
    }
    let versym = vec![1u16; syms.len()];
    Synthetic {
        strtab,
        syms,
        versym,
    }
}

/// A System V hash table over all symbols, `nbucket` buckets.
fn sysv_table(s: &Synthetic, names: &[&str], nbucket: u32) -> Vec<u32> {
    let nchain = s.syms.len() as u32;
    let mut buckets = vec![0u32; nbucket as usize];
    let mut chains = vec![0u32; nchain as usize];
    for (i, n) in names.iter().enumerate() {
        let idx = i as u32 + 1;
        let b = (sysv_hash(n.as_bytes()) % nbucket) as usize;
        chains[idx as usize] = buckets[b];
        buckets[b] = idx;
    }
    let mut t = vec![nbucket, nchain];
    t.extend(buckets);
    t.extend(chains);
    t
}

/// A GNU hash table with one bucket (symbols from 1 on, in order).
fn gnu_table(names: &[&str]) -> Vec<u32> {
    let mut t = vec![1, 1, 1, 0, 0xffff_ffff, 0xffff_ffff, 1];
    for (i, n) in names.iter().enumerate() {
        let h = gnu_hash(n.as_bytes()) & !1;
        t.push(if i + 1 == names.len() { h | 1 } else { h });
    }
    t
}

fn tables(s: &Synthetic, gnu: Option<&[u32]>, sysv: Option<&[u32]>, versym: bool) -> Tables {
    Tables {
        base: 0x7000_0000,
        strtab: s.strtab.as_ptr() as usize,
        symtab: s.syms.as_ptr() as usize,
        gnu_hash: gnu.map_or(0, |g| g.as_ptr() as usize),
        hash: sysv.map_or(0, |h| h.as_ptr() as usize),
        versym: if versym {
            s.versym.as_ptr() as usize
        } else {
            0
        },
    }
}

const NAMES: [&str; 4] = ["dlsym", "dlvsym", "dladdr", "getauxval"];

#[test]
fn hash_functions_match_the_abi_s_reference_values() {
    // The System V ABI's elf_hash and the GNU hash (dl_new_hash) of "" and
    // of a known name.
    assert_eq!(sysv_hash(b""), 0);
    assert_eq!(gnu_hash(b""), 5381);
    assert_eq!(sysv_hash(b"printf"), 0x077905a6);
    assert_eq!(gnu_hash(b"printf"), 0x156b2bb8);
}

#[test]
fn every_function_is_found_through_either_hash_table() {
    let s = synthetic(&NAMES);
    let gnu = gnu_table(&NAMES);
    for nbucket in [1, 3, 17] {
        let sysv = sysv_table(&s, &NAMES, nbucket);
        for (i, n) in NAMES.iter().enumerate() {
            let want = 0x7000_0000 + 0x1000 * (i + 1);
            // SAFETY: tables built above, alive for the call.
            unsafe {
                assert_eq!(
                    lookup(&tables(&s, Some(&gnu), None, true), n.as_bytes()),
                    want
                );
                assert_eq!(
                    lookup(&tables(&s, None, Some(&sysv), true), n.as_bytes()),
                    want,
                    "{n} in {nbucket}"
                );
                // Both present: the GNU one is read.
                assert_eq!(
                    lookup(&tables(&s, Some(&gnu), Some(&sysv), false), n.as_bytes()),
                    want
                );
            }
        }
        // SAFETY: as above.
        unsafe {
            assert_eq!(lookup(&tables(&s, None, Some(&sysv), true), b"dlopen"), 0);
            assert_eq!(lookup(&tables(&s, Some(&gnu), None, true), b"dlopen"), 0);
            // Neither table: nothing, never a guess.
            assert_eq!(lookup(&tables(&s, None, None, true), b"dlsym"), 0);
        }
    }
}

#[test]
fn hidden_versions_undefined_and_non_function_symbols_are_not_taken() {
    let mut s = synthetic(&NAMES);
    s.versym[2] = 0x8003; // dlvsym@GLIBC_2.2.5: not the default version
    s.syms[1].st_shndx = 0; // dlsym: undefined here
    s.syms[3].st_info = 0x11; // dladdr: an object, not a function
    let sysv = sysv_table(&s, &NAMES, 3);
    let gnu = gnu_table(&NAMES);
    for t in [
        tables(&s, None, Some(&sysv), true),
        tables(&s, Some(&gnu), None, true),
    ] {
        // SAFETY: tables built above.
        unsafe {
            assert_eq!(lookup(&t, b"dlvsym"), 0);
            assert_eq!(lookup(&t, b"dlsym"), 0);
            assert_eq!(lookup(&t, b"dladdr"), 0);
            assert_eq!(lookup(&t, b"getauxval"), 0x7000_4000);
        }
    }
}

#[test]
fn a_cyclic_system_v_chain_ends() {
    let s = synthetic(&NAMES);
    let mut sysv = sysv_table(&s, &NAMES, 1);
    // Every chain entry points at symbol 1: a cycle.
    for c in sysv.iter_mut().skip(3) {
        *c = 1;
    }
    // SAFETY: tables built above.
    assert_eq!(
        unsafe { lookup(&tables(&s, None, Some(&sysv), true), b"missing") },
        0
    );
}
