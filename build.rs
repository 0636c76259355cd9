//! Build script.
//!
//! With the `abi-check` feature (scripts/test turns it on) it runs bindgen
//! twice: over the real ROCm headers that Debian's libamdhip64-dev and
//! libhsa-runtime-dev install, and over the simulated device's own header
//! (tests/simgpu/simgpu.h), so that tests/abi.rs can compare every constant
//! and layout the simulation relies on with the real ones.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "abi-check")]
    abi::generate();
}

#[cfg(feature = "abi-check")]
mod abi {
    use std::path::PathBuf;

    const REAL_WRAPPER: &str = "#define __HIP_PLATFORM_AMD__ 1\n\
        #include <hsa/hsa.h>\n#include <hsa/hsa_ext_amd.h>\n#include <hip/hip_runtime_api.h>\n";

    pub fn generate() {
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
        println!("cargo:rerun-if-changed=tests/simgpu/simgpu.h");
        for h in ["hsa/hsa.h", "hsa/hsa_ext_amd.h", "hip/hip_runtime_api.h"] {
            let p = PathBuf::from("/usr/include").join(h);
            if !p.exists() {
                panic!(
                    "abi-check needs the real ROCm headers ({}); scripts/test installs \
                     libamdhip64-dev and libhsa-runtime-dev",
                    p.display()
                );
            }
            println!("cargo:rerun-if-changed={}", p.display());
        }
        bindgen::Builder::default()
            .header_contents("real_rocm.h", REAL_WRAPPER)
            .layout_tests(false)
            .prepend_enum_name(false)
            .ignore_functions()
            .generate()
            .expect("bindgen over the Debian ROCm headers")
            .write_to_file(out.join("real_rocm.rs"))
            .expect("write real_rocm.rs");
        bindgen::Builder::default()
            .header("tests/simgpu/simgpu.h")
            .layout_tests(false)
            .prepend_enum_name(false)
            .ignore_functions()
            .generate()
            .expect("bindgen over tests/simgpu/simgpu.h")
            .write_to_file(out.join("simgpu_abi.rs"))
            .expect("write simgpu_abi.rs");
    }
}
