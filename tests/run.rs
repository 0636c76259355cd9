//! The `rocm-fix` command in real processes: `run` (`rocm-fix-run`) on the
//! simulated device, `kb`, `triage`, and the usual command-line contract.

mod common;
use common::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bin(name: &str) -> PathBuf {
    preload().parent().unwrap().join(name)
}

fn rocm_fix(spec: Option<&str>, args: &[&str]) -> Command {
    let mut c = match spec {
        Some(s) => sim_command(&bin("rocm-fix"), s),
        None => Command::new(bin("rocm-fix")),
    };
    c.args(args);
    c
}

#[test]
fn an_over_read_past_the_padding_crashes_once_then_completes() {
    let dir = tmpdir("run-retry");
    let report = dir.join("report.json");
    let simwork = program("simwork");
    let mut c = sim_command(&bin("rocm-fix-run"), "gfx1010");
    c.arg("--report")
        .arg(&report)
        .arg(&simwork)
        .args(["malloc:0x200000", "read:0:0:0x22e630"]);
    let run = Run::from(c.output().unwrap());
    assert_eq!(run.code, Some(0), "the second attempt completes: {run:#?}");
    assert_eq!(
        run.stderr
            .matches("Memory access fault by GPU node-1")
            .count(),
        1,
        "{}",
        run.stderr
    );
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("rocm-fix-run: attempt 1 died"))
        .expect("the paragraph");
    assert!(
        line.contains("65536 bytes past the end of a 2097152-byte device allocation"),
        "{line}"
    );
    assert!(
        line.contains("Next: attempt 2 with ROCM_FIX_PAD=2M"),
        "{line}"
    );
    assert_eq!(
        run.stdout.matches("read:0:0:0x22e630 -> 0").count(),
        1,
        "{}",
        run.stdout
    );
    let text = std::fs::read_to_string(&report).unwrap();
    let check = Command::new("python3")
        .args([
            "-c",
            "import json,sys; r=json.load(open(sys.argv[1])); a=r['attempts']; \
             assert len(a)==2, a; assert a[0]['exit']=={'signal':6}, a[0]; \
             assert a[0]['gpu_fault']['allocation']['size']==2097152; \
             assert a[1]['rung']=='pad-2m' and a[1]['env']['ROCM_FIX_PAD']=='2M', a[1]; \
             assert a[1]['exit']=={'code':0} and a[1]['gpu_fault'] is None",
        ])
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// ROCm 7 reports a GPU fault as hipErrorIllegalAddress (700, sticky) instead
/// of aborting, and PyTorch raises it as an exception (ROCm/pytorch#3336): the
/// process exits 1 with a traceback, no signal, no core. Here a real client,
/// hip-python 10 on the simulated gfx1010's .so.7, raises on a failed call as
/// PyTorch does. `rocm-fix run` must still recognise the faulted run from the
/// journal, pad on the retry, and tell the user.
#[test]
fn a_fault_reported_as_hip_error_illegal_address_is_retried_with_padding() {
    use std::os::unix::process::CommandExt;
    let py = root().join("target/clients/hip10/bin/python");
    assert!(
        py.exists(),
        "hip-python 10 is installed by scripts/install-clients; run it first"
    );
    let script = root().join("tests/programs/hip_python10_client.py");
    let dir = tmpdir("run-700");
    let report = dir.join("report.json");
    let mut c = clean_command(&bin("rocm-fix-run"));
    for (k, v) in simgpu_env_for("gfx1010", "7.2") {
        c.env(k, v);
    }
    c.arg("--report")
        .arg(&report)
        .arg(&py)
        .arg(&script)
        .args(["sim", "hip", "0x2e630", "--raise"])
        .env("HOME", &dir)
        .current_dir(&dir);
    // clr 7.x aborts instead when core dumps are on (Os::DumpCoreFile); with
    // RLIMIT_CORE 0, as on most desktops, the fault is returned as 700.
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &zero) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let run = Run::from(c.output().unwrap());
    assert_eq!(run.code, Some(0), "the second attempt completes: {run:#?}");
    // The first attempt: the runtime's 700, the exception, no ROCr abort.
    assert_eq!(
        run.stdout.matches("over-read -> 700").count(),
        1,
        "{run:#?}"
    );
    assert!(
        run.stderr
            .contains("RuntimeError: HIP error: an illegal memory access was encountered"),
        "{run:#?}"
    );
    assert!(run.rocr_message().is_none(), "{run:#?}");
    // The hint reaches the user, and run names the fault and how the attempt ended.
    assert!(
        run.stderr.contains("rocm-fix: the GPU faulted at 0x")
            && run
                .stderr
                .contains("65536 bytes past the end of a 2097152-byte device allocation at"),
        "{run:#?}"
    );
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("rocm-fix-run: attempt 1 "))
        .expect("the paragraph");
    assert!(
        line.starts_with(
            "rocm-fix-run: attempt 1 exited with status 1 after a GPU memory fault at 0x"
        ) && line
            .contains("on gfx1010 (65536 bytes past the end of a 2097152-byte device allocation)")
            && line.contains("Next: attempt 2 with ROCM_FIX_PAD=2M"),
        "{line}"
    );
    // The retry: padded, the over-read survived.
    assert_eq!(run.stdout.matches("over-read -> 0").count(), 1, "{run:#?}");
    assert!(run.stdout.contains("padded 1"), "{run:#?}");
    assert!(
        run.stderr
            .contains("rocm-fix-run: attempt 2 completed after 1 GPU memory fault"),
        "{run:#?}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let a = &r["attempts"];
    assert_eq!(a[0]["exit"], serde_json::json!({"code": 1}), "{r:#}");
    assert_eq!(a[0]["gpu_fault"]["allocation"]["size"], 2097152, "{r:#}");
    assert_eq!(a[0]["gpu_fault"]["allocation"]["past_end"], 65536, "{r:#}");
    assert_eq!(a[1]["rung"], "pad-2m", "{r:#}");
    assert_eq!(a[1]["exit"], serde_json::json!({"code": 0}), "{r:#}");
    assert!(a[1]["gpu_fault"].is_null(), "{r:#}");
    // No core file anywhere the child ran.
    let cores: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("core"))
        .collect();
    assert!(cores.is_empty(), "{cores:?}");
}

#[test]
fn a_fault_past_the_new_padding_pads_again_farther() {
    let dir = tmpdir("run-regrow");
    let report = dir.join("report.json");
    let simwork = program("simwork");
    // Reads 2 MiB + 1 byte past the end: the first fault is seen 64 KiB past it
    // (the end of the default sink), the next 2 MiB past it (the 2M padding).
    let mut c = sim_command(&bin("rocm-fix-run"), "gfx1010");
    c.arg("--report")
        .arg(&report)
        .arg(&simwork)
        .args(["malloc:0x200000", "read:0:0:0x400001"]);
    let run = Run::from(c.output().unwrap());
    assert_eq!(run.code, Some(0), "the third attempt completes: {run:#?}");
    assert!(
        run.stderr
            .contains("Next: attempt 2 with ROCM_FIX_PAD=2M — Pad past buffer ends"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "(2097152 bytes past the end of a 2097152-byte device allocation). \
             Next: attempt 3 with ROCM_FIX_PAD=4M"
        ),
        "{}",
        run.stderr
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["attempts"][2]["rung"], "pad-2m", "{r:#}");
    assert_eq!(r["attempts"][2]["exit"]["code"], 0, "{r:#}");
}

#[test]
fn no_retry_means_the_fault_is_the_exit_status() {
    let simwork = program("simwork");
    let mut c = sim_command(&bin("rocm-fix-run"), "gfx1010");
    c.arg("--no-retry")
        .arg(&simwork)
        .args(["malloc:0x200000", "read:0:0:0x400001"]);
    let run = Run::from(c.output().unwrap());
    assert!(run.aborted(), "died like the child: {run:#?}");
    assert!(
        run.stderr.contains("No retry left (--no-retry)"),
        "{}",
        run.stderr
    );
}

#[test]
fn other_failures_are_never_retried_and_the_status_is_passed_through() {
    let run = Run::from(
        rocm_fix(Some("gfx1010"), &["run", "sh", "-c", "echo once; exit 3"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert_eq!(run.stdout, "once\n");
    assert!(!run.stderr.contains("rocm-fix-run:"), "{}", run.stderr);
    // stdin is the child's own, and the preload is prepended to what was there.
    let mut c = rocm_fix(
        Some("gfx1010"),
        &["run", "--", "sh", "-c", "cat; echo \"$LD_PRELOAD\""],
    );
    c.env("LD_PRELOAD", "/lib/x86_64-linux-gnu/libc.so.6")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().next(), Some("hello"));
    assert!(
        text.contains(&format!(
            "{}:/lib/x86_64-linux-gnu/libc.so.6",
            preload().display()
        )),
        "{text}"
    );
}

#[test]
fn interrupts_reach_the_child() {
    let dir = tmpdir("run-int");
    let ready = dir.join("ready");
    let script = format!(
        "trap 'echo got INT; exit 42' INT; touch '{}'; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut c = rocm_fix(Some("gfx1010"), &["run", "sh", "-c", &script]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id() as i32;
    for _ in 0..200 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(ready.exists(), "the child started");
    // Sent to the supervisor alone (as `kill -INT`): it is forwarded.
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got INT\n");
}

#[test]
fn show_prints_the_plan_with_presets_and_evidence() {
    let dir = tmpdir("run-show");
    let yolo = dir.join("yolo");
    std::fs::write(&yolo, "#!/bin/sh\nexit 0\n").unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&yolo)
        .status()
        .unwrap();
    let yolo = yolo.to_str().unwrap();
    // An RX 6600 XT (gfx1032): the RDNA2 presets of the ultralytics entry apply.
    let run = Run::from(
        rocm_fix(Some("gfx1032"), &["run", "--show", "--json", yolo, "train"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    let check = |json: &str, code: &str| {
        let o = Command::new("python3")
            .args(["-c", code, json])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{json}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    check(
        &run.stdout,
        "import json,sys; p=json.loads(sys.argv[1]); assert p['preset']=='ultralytics', p; \
         s={x['name']:x for x in p['settings']}; \
         assert s['HSA_OVERRIDE_GFX_VERSION']['value']=='10.3.0' and s['HSA_OVERRIDE_GFX_VERSION']['evidence']=='helped'; \
         assert 'gfx1032' in p['chips']; assert p['environment']['LD_PRELOAD'].endswith('librocm_fix.so'); \
         assert 'cpu-fallback' not in [r['id'] for r in p['ladder']]",
    );
    // Your own setting wins; --no-presets applies none; the CPU rung needs its flag.
    let mut c = rocm_fix(Some("gfx1032"), &["run", "--show", yolo]);
    c.env("HSA_OVERRIDE_GFX_VERSION", "10.3.1");
    let run = Run::from(c.output().unwrap());
    assert!(
        run.stdout.contains("keep your HSA_OVERRIDE_GFX_VERSION"),
        "{}",
        run.stdout
    );
    let run = Run::from(
        rocm_fix(Some("gfx1032"), &["run", "--show", "--no-presets", yolo])
            .output()
            .unwrap(),
    );
    assert!(
        run.stdout.contains("preset: off (--no-presets)") && !run.stdout.contains("  set "),
        "{}",
        run.stdout
    );
    let run = Run::from(
        rocm_fix(
            Some("gfx1032"),
            &["run", "--show", "--allow-cpu-fallback", yolo],
        )
        .output()
        .unwrap(),
    );
    assert!(run.stdout.contains("cpu-fallback:"), "{}", run.stdout);
}

#[test]
fn rocm_fix_run_is_rocm_fix_run() {
    let a = Run::from(
        sim_command(&bin("rocm-fix-run"), "gfx1010")
            .args(["--show", "true"])
            .output()
            .unwrap(),
    );
    let b = Run::from(
        rocm_fix(Some("gfx1010"), &["run", "--show", "--", "true"])
            .output()
            .unwrap(),
    );
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(a.code, Some(0));
    let v = Run::from(
        Command::new(bin("rocm-fix-run"))
            .arg("--version")
            .output()
            .unwrap(),
    );
    assert_eq!(
        (v.code, v.stdout.trim()),
        (
            Some(0),
            format!("rocm-fix-run {}", env!("CARGO_PKG_VERSION")).as_str()
        )
    );
    let h = Run::from(rocm_fix(None, &["help", "report"]).output().unwrap());
    assert_eq!(h.code, Some(0));
    assert!(
        h.stdout.starts_with("Usage: rocm-fix report"),
        "{}",
        h.stdout
    );
}

#[test]
fn help_version_and_usage_errors() {
    let run = Run::from(rocm_fix(None, &["--help"]).output().unwrap());
    assert_eq!(run.code, Some(0));
    for cmd in ["run", "doctor", "triage", "kb", "Exit codes"] {
        assert!(run.stdout.contains(cmd), "{cmd}");
    }
    let run = Run::from(rocm_fix(None, &["--version"]).output().unwrap());
    assert_eq!(
        run.stdout.trim(),
        format!("rocm-fix {}", env!("CARGO_PKG_VERSION"))
    );
    for (args, msg) in [
        (&["frobnicate"][..], "unknown command 'frobnicate'"),
        (&["run"][..], "no command to run"),
        (&["run", "--retries", "many", "x"][..], "takes a number"),
        (
            &["kb", "show", "no-such-issue"][..],
            "no known issue 'no-such-issue'",
        ),
        (&["triage"][..], "exactly one FILE"),
        (&["doctor", "--frob"][..], "unknown option '--frob'"),
    ] {
        let run = Run::from(rocm_fix(None, args).output().unwrap());
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        assert!(run.stderr.contains(msg), "{args:?}: {}", run.stderr);
    }
    for sub in ["run", "doctor", "triage", "kb"] {
        let run = Run::from(rocm_fix(None, &[sub, "--help"]).output().unwrap());
        assert_eq!(run.code, Some(0), "{sub} --help");
        assert!(
            run.stdout.starts_with("Usage: rocm-fix"),
            "{sub}: {}",
            run.stdout
        );
    }
}

#[test]
fn kb_lists_and_shows_issues() {
    let run = Run::from(rocm_fix(None, &["kb", "list"]).output().unwrap());
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.lines().count() >= 15, "{}", run.stdout);
    assert!(
        run.stdout.contains("seed-coherent-memory"),
        "the seed hypothesis is listed"
    );
    let run = Run::from(
        rocm_fix(None, &["kb", "show", "seed-coherent-memory"])
            .output()
            .unwrap(),
    );
    assert!(
        run.stdout.to_lowercase().contains("hypothesis"),
        "{}",
        run.stdout
    );
    let run = Run::from(rocm_fix(None, &["kb", "list", "--json"]).output().unwrap());
    let o = Command::new("python3")
        .args([
            "-c",
            "import json,sys; d=json.loads(sys.stdin.read()); assert len(d)>=15",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut p| {
            p.stdin.take().unwrap().write_all(run.stdout.as_bytes())?;
            p.wait()
        })
        .unwrap();
    assert!(o.success(), "{}", run.stdout);
}

#[test]
fn triage_finds_the_real_chip_and_rejects_garbage() {
    let fixtures = root().join("tests/fixtures/triage");
    let mut checked = 0;
    for e in std::fs::read_dir(&fixtures).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "txt") {
            let want = path.with_extension("expected.json");
            let run = Run::from(
                rocm_fix(None, &["triage", "--json", path.to_str().unwrap()])
                    .output()
                    .unwrap(),
            );
            assert!(matches!(run.code, Some(0) | Some(1)), "{path:?}: {run:#?}");
            let same = Command::new("python3")
                .args([
                    "-c",
                    "import json,sys; assert json.loads(sys.argv[1])==json.load(open(sys.argv[2]))",
                ])
                .arg(&run.stdout)
                .arg(&want)
                .output()
                .unwrap();
            assert!(
                same.status.success(),
                "{path:?}\n{}",
                String::from_utf8_lossy(&same.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "{checked} fixtures");
    let mut c = rocm_fix(None, &["triage", "-"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"this is not rocminfo\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.is_empty());
}

#[test]
fn triage_decodes_pasted_kernel_logs() {
    const KEYS: [&str; 15] = [
        "hub",
        "vmid",
        "pasid",
        "process",
        "pid",
        "page",
        "retry",
        "status",
        "client",
        "client_id",
        "more_faults",
        "walker_error",
        "permission_faults",
        "mapping_error",
        "rw",
    ];
    let fixtures = root().join("tests/fixtures/kernel_log");
    let mut checked = 0;
    for e in std::fs::read_dir(&fixtures).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "txt") {
            continue;
        }
        let run = Run::from(
            rocm_fix(None, &["triage", "--json", path.to_str().unwrap()])
                .output()
                .unwrap(),
        );
        // A GPU page fault is a problem worth acting on.
        assert_eq!(run.code, Some(1), "{path:?}: {run:#?}");
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(v["source"], "kernel-log", "{path:?}");
        let faults = v["kernel_faults"].as_array().unwrap();
        assert!(!faults.is_empty(), "{path:?}");
        for f in faults {
            for k in KEYS {
                assert!(f.get(k).is_some(), "{path:?}: no {k} in {f}");
            }
            assert!(f["retry"].is_boolean() || f["retry"].is_null());
            assert!(f["page"].is_string() || f["page"].is_null());
        }
        checked += 1;
    }
    assert!(checked >= 8, "{checked} fixtures");
    // The text form says what the client means.
    let run = Run::from(
        rocm_fix(
            None,
            &[
                "triage",
                fixtures
                    .join("amdgpu172_gfx9_noretry_split_process.txt")
                    .to_str()
                    .unwrap(),
            ],
        )
        .output()
        .unwrap(),
    );
    assert!(
        run.stdout
            .starts_with("Kernel log: 2 amdgpu page-fault reports\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("[gfxhub0] no-retry page fault, vmid 3 pasid 32769, process pt_main_thread pid 12924, page 0x0000ae8570611000, status 0x00301031, client TCP (GPU 0000:c6:00.0)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("reading past the end of its buffer"));
    // amdgpu lines without a fault report are not a kernel log to triage.
    let dir = tmpdir("triage-kernel-junk");
    let junk = dir.join("junk.txt");
    std::fs::write(
        &junk,
        "[  563.230818] amdgpu 0000:44:00.0: amdgpu: ring comp_1.2.1 uses VM inv eng 9 on hub 0\n",
    )
    .unwrap();
    let run = Run::from(
        rocm_fix(None, &["triage", junk.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr
            .contains("nor a kernel log with amdgpu page-fault reports"),
        "{}",
        run.stderr
    );
}

#[test]
fn report_bundles_the_last_run_and_matches_the_kernel_fault_to_the_journal() {
    let dir = tmpdir("report");
    let state = dir.join("state");
    let runs = state.join("rocm-fix/runs");
    let simwork = program("simwork");
    let mut c = sim_command(&bin("rocm-fix-run"), "gfx1010");
    c.env("XDG_STATE_HOME", &state)
        .arg("--no-retry")
        .arg(&simwork)
        .args(["malloc:0x200000", "read:0:0:0x400001"]);
    let run = Run::from(c.output().unwrap());
    assert!(run.aborted(), "{run:#?}");
    let run_dir = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("run-"))
        .expect("the run folder");
    let journal = std::fs::read_to_string(run_dir.join("attempt-1.jsonl")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(journal.lines().next().unwrap()).unwrap();
    let addr = u64::from_str_radix(
        rec["address"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    // The kernel's report of the same fault, as a 6.x kernel prints it.
    let klog = dir.join("dmesg.txt");
    std::fs::write(
        &klog,
        format!(
            "[  629.844077] amdgpu 0000:0b:00.0: amdgpu: [gfxhub] page fault (src_id:0 ring:24 vmid:8 pasid:32770)\n\
             [  629.844078] amdgpu 0000:0b:00.0: amdgpu:  Process simwork pid 4242 thread simwork pid 4242\n\
             [  629.844087] amdgpu 0000:0b:00.0: amdgpu:   in page starting at address 0x{:016x} from client 10\n\
             [  629.844090] amdgpu 0000:0b:00.0: amdgpu: GCVM_L2_PROTECTION_FAULT_STATUS:0x00801031\n",
            addr & !0xfff
        ),
    )
    .unwrap();
    // What `run --log-level` leaves: clr's log, one file per process.
    let amd_log: String = (0..400)
        .map(|i| format!(":3:rocvirtual.cpp :1 : line {i}\n"))
        .collect();
    std::fs::write(run_dir.join("amd-log-attempt-1_4242"), amd_log).unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let run = Run::from(
        rocm_fix(
            None,
            &[
                "report",
                "--kernel-log",
                klog.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .env("XDG_STATE_HOME", &state)
        .env("HSA_OVERRIDE_GFX_VERSION", "10.3.0")
        .output()
        .unwrap(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("rocm-fix-report.md"), "{}", run.stdout);
    let md = std::fs::read_to_string(out.join("rocm-fix-report.md")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("rocm-fix-report.json")).unwrap())
            .unwrap();
    assert_eq!(json["kernel_faults"][0]["client"], "TCP", "{json:#}");
    assert_eq!(
        json["journal_matches"][0]["relation"],
        "the same page as the fault rocm-fix recorded"
    );
    assert!(md.contains("matches rocm-fix's journal: fault at"), "{md}");
    assert!(md.contains("HSA_OVERRIDE_GFX_VERSION=10.3.0"), "{md}");
    assert!(md.contains("## System (rocm-fix doctor)"), "{md}");
    assert!(
        md.contains("amd-log-attempt-1_4242: 400 lines, the last 300:"),
        "{md}"
    );
    assert!(
        md.contains("line 399\n") && !md.contains("line 99\n"),
        "{md}"
    );
    assert_eq!(json["amd_logs"][0]["lines"], 400, "{json:#}");
    assert!(
        json["run_report"]["attempts"][0]["gpu_fault"].is_object(),
        "{json:#}"
    );
    // A kernel log that cannot be read is said, not hidden.
    let run = Run::from(
        rocm_fix(
            None,
            &[
                "report",
                "--kernel-log",
                "/nonexistent/k.txt",
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .env("XDG_STATE_HOME", &state)
        .output()
        .unwrap(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout
            .contains("not read: kernel log /nonexistent/k.txt: No such file"),
        "{}",
        run.stdout
    );
    // A FIFO is refused at once, never waited on.
    let fifo = dir.join("klog.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let run = Run::from(
        rocm_fix(
            None,
            &[
                "report",
                "--kernel-log",
                fifo.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .env("XDG_STATE_HOME", &state)
        .output()
        .unwrap(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains("is not a regular file"),
        "{}",
        run.stdout
    );
    let run = Run::from(
        rocm_fix(None, &["report", "--run", "/nonexistent"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(2));
}

#[test]
fn a_command_that_cannot_start_exits_like_a_shell_and_leaves_no_folder() {
    let dir = tmpdir("run-127");
    let state = dir.join("state");
    let runs = state.join("rocm-fix/runs");
    let not_exec = dir.join("data.txt");
    std::fs::write(&not_exec, "not a program\n").unwrap();
    for (prog, code) in [
        ("/nonexistent/no-such-program", 127),
        (not_exec.to_str().unwrap(), 126),
    ] {
        let run = Run::from(
            sim_command(&bin("rocm-fix-run"), "gfx1010")
                .env("XDG_STATE_HOME", &state)
                .arg(prog)
                .output()
                .unwrap(),
        );
        assert_eq!(run.code, Some(code), "{prog}: {run:#?}");
        assert!(
            run.stderr.contains("rocm-fix-run: cannot run"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read_dir(&runs).map_or(0, |d| d.count()),
        0,
        "no empty run folders"
    );
}

#[test]
fn doctor_names_the_real_chip_and_a_harmful_override() {
    let sysfs = root().join("tests/fixtures/doctor/rx7900xtx_with_override/sys");
    let mut c = rocm_fix(
        None,
        &["doctor", "--json", "--sysfs", sysfs.to_str().unwrap()],
    );
    c.env("HSA_OVERRIDE_GFX_VERSION", "10.3.0");
    let run = Run::from(c.output().unwrap());
    assert_eq!(run.code, Some(1), "problems found: {run:#?}");
    let o = Command::new("python3")
        .args([
            "-c",
            "import json,sys; d=json.loads(sys.argv[1]); \
             assert {'gpus','kernel','amdgpu_parameters','rocm_version','firmware','risky_environment','rocm_fix','known_issues','findings'} <= set(d); \
             g=d['gpus'][0]; assert g['gfx']=='gfx1100' and g['reported_gfx']=='gfx1030', g; \
             assert g['override']['verdict']=='harmful', g['override']; \
             assert any(i['id']=='override-cross-family' for i in d['known_issues'])",
        ])
        .arg(&run.stdout)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        run.stdout,
        String::from_utf8_lossy(&o.stderr)
    );
    // The simulated RX 5700 XT, through the variable scripts/simgpu-env sets.
    let run = Run::from(rocm_fix(Some("gfx1010"), &["doctor"]).output().unwrap());
    assert!(
        run.stdout.contains("gfx1010") && run.stdout.contains("RDNA1"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("seed-coherent-memory"),
        "{}",
        run.stdout
    );
    // No GPU at all: said plainly, and the report still comes.
    let none = root().join("tests/fixtures/doctor/nogpu/sys");
    let run = Run::from(
        rocm_fix(None, &["doctor", "--sysfs", none.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout.contains("no AMD GPU found") && run.stdout.contains("kernel:"),
        "{}",
        run.stdout
    );
    let run = Run::from(
        rocm_fix(None, &["doctor", "--sysfs", "/nonexistent"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(2));
}

#[test]
fn ctrl_c_on_a_terminal_reaches_the_child_and_the_supervisor_waits_for_it() {
    // The child counts SIGINTs for a moment after the first, then exits 42.
    // (Whether it got one or two cannot be told: a second SIGINT that arrives
    // while the first is pending merges with it.)
    let script =
        "n=0; trap 'n=$((n+1))' INT; echo ready; while [ $n -eq 0 ]; do sleep 0.05; done; \
                  sleep 0.3; echo \"got $n INT\"; exit 42";
    let run = Run::from(
        sim_command(std::path::Path::new("python3"), "gfx1010")
            .arg(root().join("tests/programs/ctrl_c.py"))
            .arg(bin("rocm-fix-run"))
            .args(["sh", "-c", script])
            .output()
            .unwrap(),
    );
    assert!(
        run.stdout.contains("got 1 INT"),
        "exactly one SIGINT: {run:#?}"
    );
    assert!(
        run.stdout.contains("exit 42"),
        "the child's status is ours: {run:#?}"
    );
}

#[test]
fn a_command_that_succeeds_is_never_run_again() {
    // A child process faults, the command carries on and exits 0.
    let simwork = program("simwork");
    let script = format!(
        "'{}' malloc:0x200000 read:0:0:0x400001; echo finished; exit 0",
        simwork.display()
    );
    let run = Run::from(
        rocm_fix(Some("gfx1010"), &["run", "sh", "-c", &script])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        run.stdout.matches("finished").count(),
        1,
        "ran once: {run:#?}"
    );
    assert!(
        !run.stderr.contains("rocm-fix-run: attempt"),
        "{}",
        run.stderr
    );
}

#[test]
fn signals_ignored_at_start_stay_ignored() {
    // As under nohup: SIGHUP to the whole group must not kill the command.
    // (In a session of its own: `kill 0` reaches the whole process group.)
    let inner = "kill -HUP 0; echo survived";
    let outer = format!(
        "trap '' HUP; exec '{}' sh -c '{}'",
        bin("rocm-fix-run").display(),
        inner
    );
    let run = Run::from(
        sim_command(std::path::Path::new("setsid"), "gfx1010")
            .args(["--wait", "sh", "-c", &outer])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("survived"), "{run:#?}");
    // And a single-dash option before the command is a usage error, not a command.
    let run = Run::from(rocm_fix(None, &["run", "-v", "true"]).output().unwrap());
    assert_eq!(run.code, Some(2), "{run:#?}");
}

#[test]
fn a_reporting_command_whose_reader_goes_away_ends_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    // A pipe whose reader is already gone: every write fails with EPIPE.
    let mut fds = [0; 2];
    // SAFETY: a valid array for pipe(2).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] is ours; fds[1] is handed to an OwnedFd once.
    unsafe { libc::close(fds[0]) };
    let writer = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    let out = rocm_fix(None, &["kb", "list"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {err}",
        out.status
    );
}

/// A HOME of its own, so that run folders and the user's configuration
/// file land in the test's folder.
fn with_home(c: &mut Command, home: &std::path::Path) {
    c.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME");
}

#[test]
fn a_retry_that_worked_is_summed_up_and_kept_with_a_backup() {
    let home = tmpdir("run-keep");
    let simwork = program("simwork");
    let conf = home.join(".config/rocm-fix/rocm-fix.conf");
    let over_read = ["malloc:0x200000", "read:0:0:0x22e630"];
    // Without --keep: the summary says what changed and how to keep it.
    let mut c = sim_command(&bin("rocm-fix-run"), "gfx1010");
    c.arg(&simwork).args(over_read);
    with_home(&mut c, &home);
    let run = Run::from(c.output().unwrap());
    assert_eq!(run.code, Some(0), "{run:#?}");
    let summary = run
        .stderr
        .lines()
        .find(|l| l.starts_with("rocm-fix-run: attempt 2 completed"))
        .unwrap_or_else(|| panic!("no summary: {}", run.stderr));
    assert!(
        summary.contains("what changed from attempt 1: ROCM_FIX_PAD=2M (pad-2m)")
            && summary.contains("Run report: ")
            && summary.contains(
                &home
                    .join(".local/state/rocm-fix/runs")
                    .display()
                    .to_string()
            ),
        "{summary}"
    );
    assert!(
        run.stderr.contains(&format!(
            "to keep it: run again with --keep, which writes 'padding = 2M' to {}",
            conf.display()
        )),
        "{}",
        run.stderr
    );
    assert!(!conf.exists(), "nothing written without --keep");

    // --keep writes it, after a copy of the file it changes.
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(&conf, "# mine\nstats = 0\npadding = 128K\n").unwrap();
    let mut c = sim_command(&bin("rocm-fix-run"), "gfx1010");
    c.arg("--keep").arg(&simwork).args(over_read);
    with_home(&mut c, &home);
    let run = Run::from(c.output().unwrap());
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "kept: wrote 'padding = 2M' to {}; the previous file is {}.bak",
            conf.display(),
            conf.display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(format!("{}.bak", conf.display())).unwrap(),
        "# mine\nstats = 0\npadding = 128K\n"
    );
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.starts_with("# mine\nstats = 0\n") && text.ends_with("padding = 2M\n"),
        "{text}"
    );
    assert_eq!(text.matches("padding =").count(), 1, "{text}");

    // The preload reads the user's file: the next run survives at once.
    let mut c = sim_command(&bin("rocm-fix-run"), "gfx1010");
    c.arg(&simwork).args(over_read);
    with_home(&mut c, &home);
    let run = Run::from(c.output().unwrap());
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        !run.stderr.contains("a GPU memory fault at"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Memory access fault"),
        "{}",
        run.stderr
    );
}

#[test]
fn kept_environment_reaches_the_command_and_your_own_setting_wins() {
    let home = tmpdir("run-kept-env");
    let conf = home.join(".config/rocm-fix/rocm-fix.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(
        &conf,
        "env.MIOPEN_DEBUG_CONV_GEMM = 0\nenv.FOO_KEPT = kept\nunset = HSA_OVERRIDE_GFX_VERSION\n",
    )
    .unwrap();
    let mut c = rocm_fix(
        Some("gfx1010"),
        &[
            "run",
            "--",
            "sh",
            "-c",
            "echo \"[$MIOPEN_DEBUG_CONV_GEMM][$FOO_KEPT][${HSA_OVERRIDE_GFX_VERSION-unset}]\"",
        ],
    );
    with_home(&mut c, &home);
    c.env("FOO_KEPT", "mine")
        .env("HSA_OVERRIDE_GFX_VERSION", "10.3.0");
    let run = Run::from(c.output().unwrap());
    assert_eq!(run.stdout, "[0][mine][unset]\n", "{run:#?}");
}

#[test]
fn log_level_sends_the_runtime_log_to_files_of_the_run() {
    let home = tmpdir("run-log-level");
    let mut c = rocm_fix(
        Some("gfx1010"),
        &[
            "run",
            "--log-level",
            "4",
            "--",
            "sh",
            "-c",
            "echo \"$AMD_LOG_LEVEL $AMD_LOG_LEVEL_FILE\"",
        ],
    );
    with_home(&mut c, &home);
    let run = Run::from(c.output().unwrap());
    assert_eq!(run.code, Some(0), "{run:#?}");
    let runs = home.join(".local/state/rocm-fix/runs");
    let (level, file) = run.stdout.trim().split_once(' ').expect("two words");
    assert_eq!(level, "4");
    assert!(
        file.starts_with(&runs.display().to_string()) && file.ends_with("/amd-log-attempt-1"),
        "{file}"
    );
    assert!(
        std::path::Path::new(file).parent().unwrap().is_dir(),
        "the run folder stays for the log"
    );
    assert!(
        run.stderr.contains("AMD_LOG_LEVEL=4 output: "),
        "{}",
        run.stderr
    );
    let run = Run::from(
        rocm_fix(None, &["run", "--log-level", "9", "true"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(2), "{run:#?}");
}

#[test]
fn observe_mode_hints_turn_rocm_fix_on_rather_than_a_padding_it_ignores() {
    // An RX 7900 (gfx1100): run watches in observe mode; with no retry the
    // engine's own hint is all the user gets.
    let simwork = program("simwork");
    let mut c = sim_command(&bin("rocm-fix-run"), "gfx1100");
    c.arg("--no-retry")
        .arg(&simwork)
        .args(["malloc:0x200000", "read:0:0:0x22e630"]);
    let run = Run::from(c.output().unwrap());
    let hint = run
        .stderr
        .lines()
        .find(|l| l.starts_with("rocm-fix: the GPU faulted"))
        .unwrap_or_else(|| panic!("{run:#?}"));
    assert!(hint.contains("ROCM_FIX_MODE=on"), "{hint}");
    assert!(!hint.contains("ROCM_FIX_PAD"), "{hint}");
}

#[test]
fn retries_all_and_the_ladder_order_in_show() {
    let run = Run::from(
        rocm_fix(
            Some("gfx1010"),
            &["run", "--show", "--retries", "all", "python3", "train.py"],
        )
        .env("HSA_OVERRIDE_GFX_VERSION", "11.0.0")
        .output()
        .unwrap(),
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains("retries: all, climbing"),
        "{}",
        run.stdout
    );
    let ids: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains("(evidence: "))
        .filter_map(|l| l.trim().split(':').next())
        .filter(|id| !id.starts_with("set ") && !id.starts_with("kept"))
        .collect();
    assert_eq!(
        ids,
        [
            "drop-harmful-override",
            "pad-2m",
            "no-hip-caching",
            "miopen-solvers"
        ],
        "the harmful override goes first; {}",
        run.stdout
    );
    // One retry: the confirmed rung is the one kept.
    let run = Run::from(
        rocm_fix(
            Some("gfx1010"),
            &["run", "--show", "--retries", "1", "python3", "train.py"],
        )
        .env("HSA_OVERRIDE_GFX_VERSION", "11.0.0")
        .output()
        .unwrap(),
    );
    assert!(
        run.stdout.contains("drop-harmful-override:") && !run.stdout.contains("pad-2m:"),
        "{}",
        run.stdout
    );
}

#[test]
fn preload_status_speaks_json() {
    let root = tmpdir("preload-status-json");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/ld.so.preload"), "/lib/nowhere.so\n").unwrap();
    let run = Run::from(
        rocm_fix(
            None,
            &[
                "preload",
                "status",
                "--json",
                "--root",
                root.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(run.code, Some(1), "not enabled: {run:#?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect(&run.stdout);
    assert_eq!(v["enabled"], false);
    assert_eq!(v["exists"], true);
    assert_eq!(v["entries"][0]["entry"], "/lib/nowhere.so");
    assert_eq!(v["entries"][0]["state"], "missing");
}

/// An uncompressed clang offload bundle with these entry ids.
fn offload_bundle(ids: &[&str]) -> Vec<u8> {
    let mut b = b"__CLANG_OFFLOAD_BUNDLE__".to_vec();
    b.extend((ids.len() as u64).to_le_bytes());
    let mut off = (24 + 8 + ids.iter().map(|i| 24 + i.len()).sum::<usize>()) as u64;
    for id in ids {
        b.extend(off.to_le_bytes());
        b.extend(8u64.to_le_bytes());
        b.extend((id.len() as u64).to_le_bytes());
        b.extend(id.as_bytes());
        off += 8;
    }
    b.extend([0u8; 8].repeat(ids.len()));
    b
}

#[test]
fn doctor_says_when_a_hip_binary_has_no_code_for_the_real_chip() {
    let dir = tmpdir("doctor-binary");
    let so = dir.join("libkernels.so");
    std::fs::write(
        &so,
        offload_bundle(&[
            "host-x86_64-unknown-linux-gnu-",
            "hipv4-amdgcn-amd-amdhsa--gfx1030",
            "hipv4-amdgcn-amd-amdhsa--gfx1100",
        ]),
    )
    .unwrap();
    let sysfs = root().join("tests/fixtures/doctor/rx5700xt/sys");
    let run = Run::from(
        rocm_fix(
            None,
            &[
                "doctor",
                "--sysfs",
                sysfs.to_str().unwrap(),
                "--binary",
                so.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stdout.contains(&format!(
            "{} has no gfx1010 code ({}; it carries gfx1030, gfx1100)",
            so.display(),
            so.display()
        )),
        "{}",
        run.stdout
    );
    let run = Run::from(
        rocm_fix(None, &["doctor", "--binary", "/nonexistent/lib.so"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, Some(2), "{run:#?}");
}
