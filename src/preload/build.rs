//! Link flags that keep the front cheap to load into every process
//! (measured in BENCHMARKS.md): lazy binding, no RELRO mprotect, and no C
//! start files (the front has no constructors, so crt's _init/_fini and
//! their relocations are dead weight).
fn main() {
    for arg in [
        "-Wl,-z,lazy",
        "-Wl,-z,norelro",
        "-nostartfiles",
        "-Wl,--hash-style=gnu",
        "-Wl,-Bsymbolic",
    ] {
        println!("cargo:rustc-cdylib-link-arg={arg}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
