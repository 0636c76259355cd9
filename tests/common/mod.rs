//! Shared helpers for the process-level tests: the simulated device's
//! environment, C test programs built with gcc, and running them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The environment `eval "$(scripts/simgpu-env SPEC)"` would set.
type EnvVars = Vec<(String, String)>;

pub fn simgpu_env(spec: &str) -> EnvVars {
    simgpu_env_for(spec, "6.4")
}

/// The environment of `SIMGPU_ROCM_VERSION=version scripts/simgpu-env SPEC`.
pub fn simgpu_env_for(spec: &str, version: &str) -> EnvVars {
    static CACHE: OnceLock<Mutex<HashMap<String, EnvVars>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = format!("{spec}@{version}");
    if let Some(v) = cache.lock().unwrap().get(&key) {
        return v.clone();
    }
    // "7.2-amd": AMD's build of 7.2 (SIMGPU_BUILD=amd).
    let (release, build) = match version.strip_suffix("-amd") {
        Some(r) => (r, "amd"),
        None => (version, ""),
    };
    let out = Command::new(root().join("scripts/simgpu-env"))
        .arg(spec)
        .env("SIMGPU_ROCM_VERSION", release)
        .env("SIMGPU_BUILD", build)
        .output()
        .expect("run scripts/simgpu-env");
    assert!(
        out.status.success(),
        "simgpu-env {spec}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut vars = Vec::new();
    for line in text.lines() {
        let rest = line.strip_prefix("export ").expect("export line");
        let (k, v) = rest.split_once('=').unwrap();
        // Values are single-quoted; LD_LIBRARY_PATH appends the caller's value.
        let v = v.split('\'').nth(1).unwrap().to_string();
        vars.push((k.to_string(), v));
    }
    cache.lock().unwrap().insert(key, vars.clone());
    vars
}

/// target/simgpu/lib: the 6.4 build.
pub fn simgpu_lib() -> PathBuf {
    simgpu_lib_at(None)
}

/// target/simgpu/lib-VERSION (5.2, 6.4, 7.2; 6.4-amd, 7.2-amd: AMD's builds).
pub fn simgpu_lib_for(version: &str) -> PathBuf {
    simgpu_lib_at(Some(version))
}

fn simgpu_lib_at(version: Option<&str>) -> PathBuf {
    let out = Command::new(root().join("scripts/simgpu-build"))
        .args(version)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Builds tests/programs/NAME.c (or a path relative to the repository) once per test process.
pub fn program(name: &str) -> PathBuf {
    program_with(name, &[])
}

pub fn program_with(name: &str, extra: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let key = format!("{name}{extra:?}");
    let mut map = built.lock().unwrap();
    if let Some(p) = map.get(&key) {
        return p.clone();
    }
    // "--simgpu=VERSION": linked against that build (target/simgpu/lib-VERSION).
    let version = extra
        .iter()
        .find_map(|a| a.strip_prefix("--simgpu="))
        .map(str::to_string);
    let lib = match &version {
        Some(v) => simgpu_lib_for(v),
        None => simgpu_lib(),
    };
    let src = if name.contains('/') {
        root().join(name)
    } else {
        root().join("tests/programs").join(format!("{name}.c"))
    };
    let dir = root().join("target/test-programs");
    std::fs::create_dir_all(&dir).unwrap();
    let stem = Path::new(name)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let shared = extra.contains(&"-shared");
    // "--real-rocm": built against Debian's ROCm headers and libamdhip64.so.5.
    let real = extra.contains(&"--real-rocm");
    let extra: Vec<&str> = extra
        .iter()
        .copied()
        .filter(|a| *a != "--real-rocm")
        .collect();
    let extra: Vec<&str> = extra
        .iter()
        .copied()
        .filter(|a| !a.starts_with("--simgpu="))
        .collect();
    let out = dir.join(format!(
        "{}{}{}{}",
        if shared { "lib" } else { "" },
        stem,
        version
            .as_deref()
            .map(|v| format!("-{v}"))
            .unwrap_or_default(),
        if shared { ".so" } else { "" }
    ));
    let tmp = dir.join(format!("{stem}.{}.tmp", std::process::id()));
    let mut cmd = Command::new("gcc");
    // A simulated device in the caller's shell must not leak into the link.
    cmd.env_remove("LD_LIBRARY_PATH").env_remove("LD_PRELOAD");
    cmd.args([
        "-std=gnu11",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pthread",
    ]);
    if real {
        cmd.arg("-Wno-deprecated-declarations");
    } else {
        cmd.arg("-I").arg(root().join("tests/simgpu"));
    }
    cmd.arg("-I").arg(root().join("include"));
    cmd.args(&extra).arg("-o").arg(&tmp).arg(&src);
    if real {
        cmd.args(["-lamdhip64", "-ldl"]);
    } else if !shared {
        cmd.arg("-L")
            .arg(&lib)
            .args(["-lamdhip64", "-lhsa-runtime64", "-ldl"]);
    } else {
        cmd.args(["-fPIC", "-ldl"]);
    }
    let o = cmd.output().expect("gcc");
    assert!(
        o.status.success(),
        "gcc {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    map.insert(key, out.clone());
    out
}

#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        Run {
            code: o.status.code(),
            signal: o.status.signal(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    pub fn aborted(&self) -> bool {
        self.signal == Some(libc_sigabrt())
    }
    /// The ROCr fault line, if the process printed one.
    pub fn rocr_message(&self) -> Option<&str> {
        self.stderr
            .lines()
            .find(|l| l.starts_with("Memory access fault by GPU node-"))
    }
}

fn libc_sigabrt() -> i32 {
    6
}

/// `prog` without any setting of ours, ROCm's or the dynamic linker's that
/// the calling shell may carry (a simulated device, an override, a preload).
pub fn clean_command(prog: &Path) -> Command {
    let mut cmd = Command::new(prog);
    for (k, _) in std::env::vars() {
        if ["SIMGPU_", "HSA_", "HIP_", "ROCM_FIX", "LD_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A clean environment with the simulated device `spec` in front.
pub fn sim_command(prog: &Path, spec: &str) -> Command {
    let mut cmd = clean_command(prog);
    for (k, v) in simgpu_env(spec) {
        cmd.env(k, v);
    }
    cmd
}

/// Runs simwork with `steps` on the simulated `spec`, extra env applied last.
pub fn simwork(spec: &str, env: &[(&str, &str)], steps: &[&str]) -> Run {
    let prog = program("simwork");
    let mut cmd = sim_command(&prog, spec);
    cmd.envs(env.iter().copied()).args(steps);
    Run::from(cmd.output().expect("run simwork"))
}

/// The exact ROCr message shape (ROCR-Runtime runtime.cpp `VMFaultHandler`), with the node number.
pub fn assert_rocr_page_fault(run: &Run, node: u32) {
    let line = run
        .rocr_message()
        .unwrap_or_else(|| panic!("no ROCr message in {run:#?}"));
    let prefix = format!("Memory access fault by GPU node-{node} (Agent handle: 0x");
    assert!(line.starts_with(&prefix), "{line}");
    assert!(line.contains(") on address 0x"), "{line}");
    assert!(
        line.ends_with(". Reason: Page not present or supervisor privilege."),
        "{line}"
    );
    assert!(run.aborted(), "ROCr aborts after the message: {run:#?}");
}

/// Lines of a call log as (fn, line).
pub fn call_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rocm-fix-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// target/rocm-fix/librocm_fix.so, built once per test process by scripts/build.
pub fn preload() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new(root().join("scripts/build"))
                .output()
                .expect("scripts/build");
            assert!(
                out.status.success(),
                "scripts/build: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("librocm_fix.so")
        })
        .clone()
}

/// Runs `cmd` twice, without and with the preload, after `env`.
pub fn both(mut make: impl FnMut() -> Command, env: &[(&str, &str)]) -> (Run, Run) {
    let mut a = make();
    a.envs(env.iter().copied());
    let without = Run::from(a.output().unwrap());
    let mut b = make();
    b.envs(env.iter().copied()).env("LD_PRELOAD", preload());
    let with = Run::from(b.output().unwrap());
    (without, with)
}

/// A call log with every "0x…" value replaced, for comparing runs.
pub fn masked_log(path: &Path) -> Vec<String> {
    call_log(path)
        .into_iter()
        .map(|l| {
            let mut out = String::new();
            let mut rest = l.as_str();
            while let Some(i) = rest.find("\"0x") {
                out.push_str(&rest[..i]);
                let tail = &rest[i + 1..];
                let end = tail.find('"').map(|e| i + 1 + e + 1).unwrap_or(rest.len());
                out.push_str("\"PTR\"");
                rest = &rest[end..];
            }
            out.push_str(rest);
            out
        })
        .collect()
}

/// Runs `cmd` (stdin from /dev/null, output captured), killing it after
/// `limit`: a hang is a test failure, never a hung test run. Returns the run
/// and whether it had to be killed.
pub fn run_with_timeout(mut cmd: Command, limit: Duration) -> (Run, bool) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let start = Instant::now();
    let mut killed = false;
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (Run::from(child.wait_with_output().expect("output")), killed)
}

/// An image root (a fresh temporary folder) with rocm-fix's libraries
/// installed where the package puts them, and an empty etc/.
pub fn image(tag: &str) -> PathBuf {
    let root = tmpdir(tag);
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let built = preload().parent().unwrap().to_path_buf();
    for f in ["librocm_fix.so", "librocm_fix_engine.so"] {
        std::fs::copy(built.join(f), libdir.join(f)).unwrap();
    }
    root
}

/// Copies the tree under `from` into `to` (`cp -a from/. to`).
pub fn copy_tree(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}
