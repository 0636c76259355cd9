//! A small mutational fuzzer over the parsers that read what users paste or
//! configure: triage's rocminfo/KFD `properties` reader, the configuration
//! (file bytes and environment values, including ROCM_FIX_LOG filters), and
//! the ld.so.preload word splitter. It runs on stable, in `cargo test`, for
//! a bounded time with a fixed seed, so CI is repeatable and short:
//! `ROCM_FIX_FUZZ_SECS` (default 4 per target) and `ROCM_FIX_FUZZ_SEED`
//! change both. A panic or a broken invariant fails the test with the input
//! (hex) and writes it to target/fuzz-failures/ for a regression test.
//!
//! The mutations are libFuzzer's simplest: flip, insert, delete, duplicate,
//! splice another seed, and insert tokens the parsers look for.

use rocm_fix_command::{preload, triage};
use rocm_fix_shared::config;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// xorshift64*: a fixed, dependency-free generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b"=",
    b"#",
    b" ",
    b":",
    b"\xff",
    b"\xc3\xa9",
    b"\xef\xbb\xbf",
    b"\0",
    b"Agent ",
    b"*******\n",
    b"  Name:                    gfx1030\n",
    b"  Chip ID:                 29631(0x73bf)\n",
    b"  Device Type:             GPU\n",
    b"  Compute Unit:            40\n",
    b"  SIMDs per CU:            2\n",
    b"gfx_target_version 100100\n",
    b"simd_count 80\n",
    b"device_id 29631\n",
    b"0x",
    b"99999999999999999999999",
    b"mode = ",
    b"padding = ",
    b"log = ",
    b"journal = /",
    b"debug,",
    b"a=b=c",
    b"/",
    b"librocm_fix.so",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                input.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(256)).min(len);
                let piece = input[a..b].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, piece);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + 1 + rng.below(512)).min(other.len());
                    let at = rng.below(input.len() + 1);
                    input.splice(at..at, other[a..b].iter().copied());
                }
            }
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(input.len() + 1);
                input.splice(at..at, t.iter().copied());
            }
        }
    }
    // Bounded, like every real input (the readers cap theirs).
    input.truncate(256 << 10);
}

/// Runs `check` on mutants of `seeds` for the time budget; any panic or
/// `Err` fails with the input.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, check: impl Fn(&[u8]) -> Result<(), String>) {
    let secs = std::env::var("ROCM_FIX_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4.0);
    let seed = std::env::var("ROCM_FIX_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1357_u64);
    let mut rng = Rng(seed ^ name.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut corpus = seeds.clone();
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let mut input = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut input, &seeds);
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("panicked".to_string()),
        };
        if let Some(why) = failure {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{runs}"));
            let _ = std::fs::write(&file, &input);
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!(
                "fuzz {name}: {why} after {runs} runs (seed {seed}); input in {}: {hex}",
                file.display()
            );
        }
        // Keep a few mutants as new starting points (a poor man's coverage).
        if corpus.len() < 256 && rng.below(16) == 0 {
            corpus.push(input);
        }
        runs += 1;
    }
    assert!(runs > 100, "fuzz {name}: only {runs} runs");
    eprintln!("fuzz {name}: {runs} runs, no failure");
}

fn triage_seeds() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/triage");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.sort();
    seeds.push(b"gfx_target_version 100100\nsimd_count 80\ndevice_id 29631\n".to_vec());
    seeds.push(Vec::new());
    seeds
}

#[test]
fn fuzz_triage() {
    fuzz("triage", triage_seeds(), |bytes| {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(report) = triage::triage(&text) {
            let json = report.to_json();
            serde_json::from_str::<serde_json::Value>(&json)
                .map_err(|e| format!("triage JSON does not parse: {e}"))?;
            let _ = report.to_text();
        }
        Ok(())
    });
}

/// Every warning is one prefixed line of bounded length.
fn check_warnings(w: &[String]) -> Result<(), String> {
    for line in w {
        if !line.starts_with("rocm-fix: ") || line.contains('\n') || line.contains('\r') {
            return Err(format!("a warning that is not one prefixed line: {line:?}"));
        }
        if line.chars().count() > 1200 {
            return Err(format!(
                "an unbounded warning: {} chars",
                line.chars().count()
            ));
        }
    }
    Ok(())
}

#[test]
fn fuzz_config() {
    let example =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/rocm-fix.conf"))
            .unwrap();
    let seeds = vec![
        example,
        b"mode = off\npadding = 2M\nstats = 1\njournal = /tmp/j\nlog = debug,rocm_fix_engine=trace/x\n"
            .to_vec(),
        b"# r\xe9glages\nmode = on # \xe9t\xe9\n".to_vec(),
    ];
    fuzz("config", seeds, |bytes| {
        // The same bytes as the file, and split as environment values.
        let mut parts = bytes.splitn(5, |&b| b == b'\n');
        let values: Vec<OsString> = (0..5)
            .map(|_| OsString::from_vec(parts.next().unwrap_or(b"").to_vec()))
            .collect();
        let env = |k: &str| {
            let i = [
                "ROCM_FIX_MODE",
                "ROCM_FIX_PAD",
                "ROCM_FIX_JOURNAL",
                "ROCM_FIX_STATS",
                "ROCM_FIX_LOG",
            ]
            .iter()
            .position(|v| *v == k)?;
            values.get(i).cloned()
        };
        let (cfg, w) = config::from_raw_sources(Some(bytes), &env, false);
        check_warnings(&w)?;
        if cfg.pad_bytes > config::MAX_PAD {
            return Err(format!("padding {} above the maximum", cfg.pad_bytes));
        }
        if cfg.journal.as_ref().is_some_and(|j| !j.is_absolute()) {
            return Err("a relative journal".into());
        }
        if let Some(f) = &cfg.log_filter {
            // What reaches env_logger is clean: checking it again rejects nothing.
            let (again, rejected) = config::log_filter(f);
            if !rejected.is_empty() || &again != f {
                return Err(format!("log filter {f:?} is not clean: {rejected:?}"));
            }
        }
        let (_, w) = config::from_raw_sources(Some(bytes), &env, true);
        check_warnings(&w)
    });
}

#[test]
fn fuzz_preload_list() {
    let seeds = vec![
        b"# site\r\n/usr/lib/libeatmydata.so\r\n/usr/lib/x86_64-linux-gnu/librocm_fix.so\n"
            .to_vec(),
        b"/lib/a.so /opt/x/librocm_fix.so\n/lib/b.so:/opt/x/librocm_fix.so\r\n#one\n#two\n"
            .to_vec(),
    ];
    fuzz("preload", seeds, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        let words = preload::entries(&text);
        if words.iter().any(|w| w.is_empty()) {
            return Err("an empty word".into());
        }
        let (with, added) = preload::with_line(&text, "/usr/lib/x86_64-linux-gnu/librocm_fix.so");
        if !text.contains("librocm_fix.so") && preload::without_ours(&with, Some(&added)) != text {
            return Err("enable then disable is not byte-identical".into());
        }
        let stripped = preload::without_words(&text, &|w| preload::is_ours(w));
        if stripped.lines().count() > text.lines().count() {
            return Err("removing words added lines".into());
        }
        Ok(())
    });
}
