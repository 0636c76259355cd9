//! `rocm-fix preload enable|disable|status`: our line in /etc/ld.so.preload.
//!
//! That file loads a library into every process on the machine, setuid ones
//! included; a bad line there makes every program complain, a bad library
//! can break them all. So: the library is validated before it is listed
//! (an ELF of this machine's architecture that a test process runs cleanly
//! with), the file is rewritten atomically (temp file, fsync, rename) after
//! a backup, every other byte of it is kept, and a state file records
//! exactly what was added so that `disable` restores the file byte for byte.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where things live under a root ("/" normally).
pub struct Paths {
    pub root: PathBuf,
    pub preload: PathBuf,
    pub backup: PathBuf,
    pub state: PathBuf,
    /// The folder whose flock serialises edits (etc/): a folder that is
    /// there anyway, so that an edit leaves no lock file behind.
    pub lock: PathBuf,
}

impl Paths {
    pub fn new(root: &Path) -> Paths {
        Paths {
            root: root.to_path_buf(),
            preload: root.join("etc/ld.so.preload"),
            backup: root.join("etc/ld.so.preload.rocm-fix.bak"),
            state: root.join("var/lib/rocm-fix/preload.state"),
            lock: root.join("etc"),
        }
    }

    /// A path as seen inside the root, as it appears on the host.
    pub fn host(&self, inside: &Path) -> PathBuf {
        match inside.strip_prefix("/") {
            Ok(rel) => self.root.join(rel),
            Err(_) => self.root.join(inside),
        }
    }
}

/// Whether a word of ld.so.preload (separated by whitespace or ':') names
/// rocm-fix's library.
pub fn is_ours(word: &str) -> bool {
    word.rsplit('/').next() == Some("librocm_fix.so")
}

/// The words the dynamic linker reads from ld.so.preload's text.
///
/// glibc (2.36, checked in a Debian 12 chroot) blanks `#` comments to the
/// end of their line, but its loop never advances its start pointer: each
/// search for the next '#' covers only the first `rest` bytes of the file,
/// so later comments survive as words ("#three" in "#one\n#two\n#three").
/// This is that loop, so that `status` shows what the linker really reads.
/// Words are then split on space, tab, newline and ':' (not '\r': a CRLF
/// line's path ends in '\r').
pub fn entries(text: &str) -> Vec<String> {
    let mut file = text.as_bytes().to_vec();
    let mut rest = file.len();
    while rest > 0 {
        let Some(start) = file.iter().take(rest).position(|&b| b == b'#') else {
            break;
        };
        rest -= start;
        let mut i = start;
        loop {
            if let Some(b) = file.get_mut(i) {
                *b = b' ';
            }
            rest -= 1;
            i += 1;
            if rest == 0 || file.get(i).is_none_or(|&b| b == b'\n') {
                break;
            }
        }
    }
    String::from_utf8_lossy(&file)
        .split([' ', '\t', '\n', ':'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The text with `line` appended, and the exact bytes appended. Always "\n"
/// as separator: in a file with CRLF line ends, "\r" would become part of
/// our path and the linker would fail to preload it.
pub fn with_line(text: &str, line: &str) -> (String, String) {
    let mut added = String::new();
    if !text.is_empty() && !text.ends_with('\n') {
        added.push('\n');
    }
    added.push_str(line);
    added.push('\n');
    (format!("{text}{added}"), added)
}

/// The text without our entry: first the exact bytes `enable` appended (so
/// that the file comes back byte for byte), else every line that is ours.
pub fn without_ours(text: &str, added: Option<&str>) -> String {
    if let Some(a) = added.filter(|a| !a.is_empty()) {
        if let Some(before) = text.strip_suffix(a) {
            if !entries(before).iter().any(|w| is_ours(w)) {
                return before.to_string();
            }
        }
    }
    without_words(text, &|w| is_ours(w))
}

/// The text without the words `remove` picks: a line of such words only
/// goes whole, a shared line loses only those words; comments stay.
pub fn without_words(text: &str, remove: &dyn Fn(&str) -> bool) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        if body.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let words: Vec<&str> = body
            .split([' ', '\t', ':'])
            .filter(|w| !w.is_empty())
            .collect();
        if !words.iter().any(|w| remove(w)) {
            out.push_str(line);
        } else if words.iter().all(|w| remove(w)) {
            // A line of ours only: the whole line goes.
        } else {
            // Shared with other entries: only our word goes.
            let kept: Vec<&str> = words.into_iter().filter(|w| !remove(w)).collect();
            out.push_str(&kept.join(" "));
            out.push_str(ending);
        }
    }
    out
}

/// ELF of this machine's architecture (x86_64: class 64, little-endian, EM_X86_64).
pub fn check_elf(path: &Path) -> Result<(), String> {
    let mut head = [0u8; 20];
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.read_exact(&mut head)
        .map_err(|_| format!("{} is not an ELF file (too short)", path.display()))?;
    if &head[..4] != b"\x7fELF" {
        return Err(format!("{} is not an ELF file", path.display()));
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    if head[4] != 2 || head[5] != 1 || machine != 62 {
        return Err(format!(
            "{} is an ELF file for another architecture (this machine is x86_64)",
            path.display()
        ));
    }
    Ok(())
}

/// What /bin/true prints on stderr (the dynamic linker's complaints about
/// an already broken ld.so.preload, say), and whether it succeeded.
fn run_true(preload: Option<&Path>) -> Result<(bool, Vec<u8>), String> {
    let mut cmd = Command::new("/bin/true");
    cmd.env_remove("LD_PRELOAD").env_remove("ROCM_FIX_LOG");
    if let Some(p) = preload {
        cmd.env("LD_PRELOAD", p);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run a test process: {e}"))?;
    Ok((out.status.success(), out.stderr))
}

/// A test process with the library preloaded runs cleanly: /bin/true exits
/// 0 and prints nothing more than it prints without it (an ld.so.preload
/// that is already broken is not ours to judge).
pub fn check_loads(host_path: &Path) -> Result<(), String> {
    let (_, baseline) = run_true(None)?;
    let (ok, stderr) = run_true(Some(host_path))?;
    if !ok || stderr != baseline {
        return Err(format!(
            "a test process with {} preloaded did not run cleanly: {}",
            host_path.display(),
            String::from_utf8_lossy(&stderr).trim()
        ));
    }
    Ok(())
}

/// Writes `text` to `path` atomically: a temp file in the same folder,
/// fsync, rename, fsync of the folder. Mode 0644, as ld.so.preload has.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = path.parent().ok_or("no parent folder")?;
    // The file keeps its mode and owner (a umask of 077 must not make
    // ld.so.preload unreadable, which the linker would silently skip).
    let (mode, owner) = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(format!(
                "{} is a symbolic link; edit its target instead",
                path.display()
            ))
        }
        Ok(m) => (m.mode() & 0o7777, Some((m.uid(), m.gid()))),
        Err(_) => (0o644, None),
    };
    let tmp = dir.join(format!(
        ".{}.rocm-fix.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// An exclusive lock on the preload file's editing, so that two `enable`s
/// at once do not interleave. Released when dropped.
/// The folder is only held: closing it (on drop) releases the flock.
pub struct EditLock(#[allow(dead_code)] File);

pub fn lock(paths: &Paths) -> Result<EditLock, String> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(&paths.lock)
        .map_err(|e| format!("cannot lock {}: {e}", paths.lock.display()))?;
    use std::os::fd::AsRawFd;
    for _ in 0..100 {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(EditLock(f));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(format!(
        "another rocm-fix is editing {} (lock {} held for 10 s)",
        paths.preload.display(),
        paths.lock.display()
    ))
}

/// What `enable` recorded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct State {
    pub existed: bool,
    pub added: String,
    pub line: String,
    /// Folders `enable` created for the state file, outermost first,
    /// relative to the root: `disable` removes them again (when empty).
    pub dirs: Vec<String>,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn read_state(paths: &Paths) -> Option<State> {
    let text = read_optional(&paths.state).ok()??;
    let mut st = State::default();
    for l in text.lines() {
        match l.split_once('=') {
            Some(("existed", v)) => st.existed = v == "1",
            Some(("added", v)) => st.added = unescape(v),
            Some(("line", v)) => st.line = v.to_string(),
            Some(("dirs", v)) => {
                // Only the folders enable creates, whatever the file says.
                st.dirs = v
                    .split(',')
                    .filter(|d| STATE_DIRS.contains(d))
                    .map(str::to_string)
                    .collect()
            }
            _ => {}
        }
    }
    Some(st)
}

/// The folders of the state file, outermost first.
const STATE_DIRS: [&str; 3] = ["var", "var/lib", "var/lib/rocm-fix"];

/// Creates the state file's missing folders; returns those it created.
fn create_state_dirs(paths: &Paths) -> Result<Vec<String>, String> {
    let mut created = Vec::new();
    for d in STATE_DIRS {
        let p = paths.root.join(d);
        if fs::symlink_metadata(&p).is_err() {
            if let Err(e) = fs::create_dir(&p) {
                remove_dirs(paths, &created);
                return Err(format!("cannot create {}: {e}", p.display()));
            }
            created.push(d.to_string());
        }
    }
    Ok(created)
}

/// Removes folders `enable` created, innermost first, if they are empty.
fn remove_dirs(paths: &Paths, dirs: &[String]) {
    for d in dirs.iter().rev() {
        let _ = fs::remove_dir(paths.root.join(d));
    }
}

fn write_state(paths: &Paths, st: &State) -> Result<(), String> {
    write_atomic(
        &paths.state,
        &format!(
            "existed={}\nadded={}\nline={}\ndirs={}\n",
            u8::from(st.existed),
            escape(&st.added),
            st.line,
            st.dirs.join(",")
        ),
    )
}

/// The outcome of enable/disable, for the user.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Changed(String),
    Unchanged(String),
}

/// The largest ld.so.preload or state file read: real ones are a few lines.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The text of a regular file, `None` if it does not exist; never blocks
/// (a FIFO) nor reads without end (a link to /dev/zero).
pub fn read_optional(path: &Path) -> Result<Option<String>, String> {
    match crate::input::read_regular(path, MAX_FILE_BYTES) {
        Ok(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| format!("{} is not text; not touching it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Every process on the machine, setuid ones included, will load the
/// library and the engine beside it: both, and every folder from the root
/// down to them, must be owned by root and writable by nobody else (a
/// sticky folder such as /tmp is allowed: others cannot replace our files
/// there). Otherwise whoever can replace them gets root.
pub fn check_trusted(paths: &Paths, library: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let engine = library.with_file_name("librocm_fix_engine.so");
    let mut to_check = vec![paths.host(library), paths.host(&engine)];
    let mut dir = library.parent();
    while let Some(d) = dir {
        to_check.push(paths.host(d));
        dir = d.parent();
    }
    for p in to_check {
        let m = fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let writable_by_others = m.mode() & 0o022 != 0 && !(m.is_dir() && m.mode() & 0o1000 != 0);
        if m.uid() != 0 || writable_by_others {
            return Err(format!(
                "{} is {}: a library listed in ld.so.preload is loaded into setuid programs too, so it and \
                 its folders must be root's alone (install the package, or copy both libraries to a root-owned folder)",
                p.display(),
                if m.uid() != 0 { "not owned by root" } else { "writable by others" }
            ));
        }
    }
    Ok(())
}

/// Lists `library` (a path as seen inside the root) in ROOT/etc/ld.so.preload.
pub fn enable(paths: &Paths, library: &Path) -> Result<Outcome, String> {
    if !library.is_absolute() {
        return Err(format!(
            "the library path must be absolute, not {}",
            library.display()
        ));
    }
    let host_lib = paths.host(library);
    if !host_lib.is_file() {
        return Err(format!("{} does not exist", host_lib.display()));
    }
    check_elf(&host_lib)?;
    check_trusted(paths, library)?;
    check_loads(&host_lib)?;
    let line = library.to_string_lossy().to_string();
    if line
        .chars()
        .any(|c| c.is_whitespace() || c == ':' || c == '#')
    {
        return Err(format!(
            "{line}: ld.so.preload cannot list a path with spaces, ':' or '#'"
        ));
    }
    let _lock = lock(paths)?;
    let (_, baseline) = run_true(None)?;
    let old = read_optional(&paths.preload)?;
    let text = old.clone().unwrap_or_default();
    if entries(&text).contains(&line) {
        return Ok(Outcome::Unchanged(format!(
            "{} already lists {line}",
            paths.preload.display()
        )));
    }
    if let Some(other) = entries(&text).into_iter().find(|w| is_ours(w)) {
        return Err(format!(
            "{} already lists another librocm_fix.so ({other}); run 'rocm-fix preload disable' first",
            paths.preload.display()
        ));
    }
    let (new, added) = with_line(&text, &line);
    // From here on, a failure puts back everything this enable touched: the
    // backup as it was, no state file, no folder it created.
    let previous_backup = read_optional(&paths.backup)?;
    let mut dirs = Vec::new();
    let undo = |dirs: &[String]| {
        let _ = match &previous_backup {
            Some(b) => write_atomic(&paths.backup, b),
            None => fs::remove_file(&paths.backup).or(Ok(())),
        };
        let _ = fs::remove_file(&paths.state);
        remove_dirs(paths, dirs);
    };
    let written = (|| {
        if let Some(old) = &old {
            write_atomic(&paths.backup, old)?;
        }
        dirs = create_state_dirs(paths)?;
        write_state(
            paths,
            &State {
                existed: old.is_some(),
                added,
                line: line.clone(),
                dirs: dirs.clone(),
            },
        )?;
        write_atomic(&paths.preload, &new)
    })();
    if let Err(e) = written {
        undo(&dirs);
        return Err(e);
    }
    // On the live system, every new process now loads it: prove it still works,
    // or put the file back as it was.
    if paths.root == Path::new("/") {
        let live = run_true(None)?;
        if !live.0 || live.1 != baseline {
            restore(paths, old.as_deref())?;
            undo(&dirs);
            return Err(format!(
                "a test process did not run cleanly with the new {}: {}; it was restored",
                paths.preload.display(),
                String::from_utf8_lossy(&live.1).trim()
            ));
        }
    }
    Ok(Outcome::Changed(format!(
        "{} now lists {line} (backup: {})",
        paths.preload.display(),
        if old.is_some() {
            paths.backup.display().to_string()
        } else {
            "none, the file is new".to_string()
        }
    )))
}

fn restore(paths: &Paths, old: Option<&str>) -> Result<(), String> {
    let r = match old {
        Some(t) => write_atomic(&paths.preload, t),
        None => fs::remove_file(&paths.preload)
            .map_err(|e| format!("cannot remove {}: {e}", paths.preload.display())),
    };
    let _ = fs::remove_file(&paths.state);
    r
}

/// Removes only what `enable` added; the file comes back byte for byte as
/// it was before `enable` (removed again if `enable` created it), and so do
/// the folders `enable` created and its backup (once the file is back as
/// the backup holds it). Other librocm_fix.so entries (a user's own
/// install) are left alone and named; `force` removes them too, saying which.
pub fn disable(paths: &Paths, force: bool) -> Result<Outcome, String> {
    let _lock = lock(paths)?;
    let state = read_state(paths);
    let forget = |state: &Option<State>| {
        let _ = fs::remove_file(&paths.state);
        if let Some(st) = state {
            remove_dirs(paths, &st.dirs);
        }
    };
    let Some(text) = read_optional(&paths.preload)? else {
        forget(&state);
        return Ok(Outcome::Unchanged(format!(
            "{} does not exist: nothing to disable",
            paths.preload.display()
        )));
    };
    if !entries(&text).iter().any(|w| is_ours(w)) {
        forget(&state);
        return Ok(Outcome::Unchanged(format!(
            "{} does not list librocm_fix.so",
            paths.preload.display()
        )));
    }
    // What enable added: its exact bytes if the file still ends with them,
    // else its entry wherever it is now.
    let mut new = match &state {
        Some(st) => match text.strip_suffix(st.added.as_str()) {
            Some(before) if !st.added.is_empty() && !entries(before).contains(&st.line) => {
                before.to_string()
            }
            _ => without_words(&text, &|w| w == st.line),
        },
        None => text.clone(),
    };
    let others: Vec<String> = entries(&new).into_iter().filter(|w| is_ours(w)).collect();
    let others_shown = others
        .iter()
        .map(|w| crate::input::shown(w))
        .collect::<Vec<_>>()
        .join(", ");
    let mut note = String::new();
    if !others.is_empty() {
        if force {
            new = without_words(&new, &|w| is_ours(w));
            note = format!(" (and, with --force, {others_shown}, which enable had not added)");
        } else if new == text {
            return Err(format!(
                "{} lists {others_shown}, which 'rocm-fix preload enable' did not add; \
                 not removing it (--force removes it)",
                paths.preload.display()
            ));
        } else {
            note = format!(
                "; kept {others_shown}, which 'rocm-fix preload enable' did not add \
                 (--force removes it)"
            );
        }
    }
    if force && entries(&new).iter().any(|w| is_ours(w)) {
        return Err(format!(
            "{} lists librocm_fix.so in a way rocm-fix cannot take apart; edit it by hand",
            paths.preload.display()
        ));
    }
    let created_by_us = state.as_ref().is_some_and(|s| !s.existed);
    if created_by_us && new.is_empty() {
        fs::remove_file(&paths.preload)
            .map_err(|e| format!("cannot remove {}: {e}", paths.preload.display()))?;
    } else {
        write_atomic(&paths.preload, &new)?;
    }
    // enable's backup is the file as it is again now: nothing left to keep.
    if read_optional(&paths.backup).ok().flatten().as_deref() == Some(new.as_str()) {
        let _ = fs::remove_file(&paths.backup);
    }
    forget(&state);
    let removed = state
        .as_ref()
        .filter(|st| !entries(&new).contains(&st.line) && entries(&text).contains(&st.line))
        .map_or_else(|| "librocm_fix.so".to_string(), |st| st.line.clone());
    Ok(Outcome::Changed(format!(
        "removed {removed} from {}{note}",
        paths.preload.display()
    )))
}

/// Where the dynamic linker finds a bare library name listed in
/// ld.so.preload (a path as seen inside the root): the root's ld.so.cache
/// (`ldconfig -p -C`, entries of this machine's ABI), then the default
/// folders. (The program's own RPATH, RUNPATH and LD_LIBRARY_PATH come
/// first for the linker; they differ per program, so status cannot know them.)
pub fn find_soname(paths: &Paths, name: &str) -> Option<PathBuf> {
    let cache = paths.root.join("etc/ld.so.cache");
    if cache.is_file() {
        let out = Command::new("ldconfig")
            .arg("-p")
            .arg("-C")
            .arg(&cache)
            .env("LC_ALL", "C")
            .output();
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let Some((left, path)) = line.split_once(" => ") else {
                    continue;
                };
                let mut left = left.trim().splitn(2, ' ');
                let (soname, flags) = (left.next(), left.next().unwrap_or(""));
                if soname == Some(name) && flags.contains("x86-64") {
                    let p = PathBuf::from(path.trim());
                    if paths.host(&p).is_file() {
                        return Some(p);
                    }
                }
            }
        }
    }
    [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| paths.host(p).is_file())
}

/// `status`: what the file lists, and whether our library is there and loads.
/// One line of the preload list, as `status` judges it.
struct StatusEntry {
    entry: String,
    /// "missing", "present", "rocm-fix" or "rocm-fix-broken".
    state: &'static str,
    verdict: String,
    found_as: Option<PathBuf>,
}

/// What `status` found: the list's entries, or why there are none.
struct StatusData {
    /// None: the file does not exist; Err: it cannot be read.
    entries: Option<Result<Vec<StatusEntry>, String>>,
    ours_ok: bool,
}

fn status_data(paths: &Paths) -> StatusData {
    let text = match read_optional(&paths.preload) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return StatusData {
                entries: None,
                ours_ok: false,
            }
        }
        Err(e) => {
            return StatusData {
                entries: Some(Err(e)),
                ours_ok: false,
            }
        }
    };
    let mut ours_ok = false;
    let mut out = Vec::new();
    for w in entries(&text) {
        // A bare name is searched for, as the dynamic linker does.
        let (host, found_as) = if w.contains('/') {
            (paths.host(Path::new(&w)), None)
        } else {
            match find_soname(paths, &w) {
                Some(inside) => (paths.host(&inside), Some(inside)),
                None => (PathBuf::new(), None),
            }
        };
        let (state, verdict) = if !host.is_file() {
            (
                "missing",
                "MISSING: every program will warn about it".to_string(),
            )
        } else if let (Some(inside), false) = (&found_as, is_ours(&w)) {
            (
                "present",
                format!("present (found as {})", inside.display()),
            )
        } else if is_ours(&w) {
            match check_elf(&host).and_then(|_| check_loads(&host)) {
                Ok(()) => {
                    ours_ok = true;
                    ("rocm-fix", "rocm-fix, loads cleanly".to_string())
                }
                Err(e) => ("rocm-fix-broken", format!("rocm-fix, BROKEN: {e}")),
            }
        } else {
            ("present", "present".to_string())
        };
        out.push(StatusEntry {
            entry: w,
            state,
            verdict,
            found_as,
        });
    }
    StatusData {
        entries: Some(Ok(out)),
        ours_ok,
    }
}

/// `preload status`: the text, and whether rocm-fix is enabled and loads.
pub fn status(paths: &Paths) -> (String, bool) {
    let data = status_data(paths);
    let list = match data.entries {
        None => {
            return (
                format!(
                    "{} does not exist: rocm-fix is not enabled system-wide\n",
                    paths.preload.display()
                ),
                false,
            )
        }
        Some(Err(e)) => return (format!("{e}\n"), false),
        Some(Ok(list)) => list,
    };
    let mut out = format!("{}:\n", paths.preload.display());
    for e in &list {
        out.push_str(&format!("  {}: {}\n", e.entry.escape_debug(), e.verdict));
    }
    if !list.iter().any(|e| is_ours(&e.entry)) {
        out.push_str("  (no librocm_fix.so line: rocm-fix is not enabled system-wide)\n");
    }
    (out, data.ours_ok)
}

/// `preload status --json`: `{"file", "exists", "error", "enabled", "entries":
/// [{"entry", "state", "detail", "found_as"}]}`; `enabled` is true when
/// rocm-fix's line is there and its library loads.
pub fn status_json(paths: &Paths) -> (String, bool) {
    let data = status_data(paths);
    let (exists, error, list) = match data.entries {
        None => (false, None, Vec::new()),
        Some(Err(e)) => (true, Some(e), Vec::new()),
        Some(Ok(l)) => (true, None, l),
    };
    let entries: Vec<serde_json::Value> = list
        .iter()
        .map(|e| {
            serde_json::json!({
                "entry": e.entry,
                "state": e.state,
                "detail": e.verdict,
                "found_as": e.found_as.as_ref().map(|p| p.display().to_string()),
            })
        })
        .collect();
    let v = serde_json::json!({
        "file": paths.preload.display().to_string(),
        "exists": exists,
        "error": error,
        "enabled": data.ours_ok,
        "entries": entries,
    });
    (format!("{v}\n"), data.ours_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appending_and_removing_gives_the_same_bytes_back() {
        for original in [
            "",
            "/lib/a.so\n",
            "/lib/a.so",
            "# comment\r\n/lib/b.so\r\n",
            "  \n",
        ] {
            let (with, added) = with_line(original, "/usr/lib/x86_64-linux-gnu/librocm_fix.so");
            assert!(
                with.contains("\n/usr/lib/x86_64-linux-gnu/librocm_fix.so\n")
                    || original.is_empty()
            );
            assert!(!added.contains('\r'), "never a CR in our line");
            assert_eq!(without_ours(&with, Some(&added)), original);
        }
    }

    #[test]
    fn our_word_leaves_a_shared_line() {
        let text = "/lib/a.so /opt/x/librocm_fix.so\n/lib/b.so:/opt/x/librocm_fix.so\r\n";
        assert_eq!(without_ours(text, None), "/lib/a.so\n/lib/b.so\r\n");
    }

    #[test]
    fn without_a_record_only_our_lines_go() {
        let text = "/lib/a.so\n/opt/x/librocm_fix.so\n# /opt/x/librocm_fix.so kept as a comment\n/lib/b.so\n";
        assert_eq!(
            without_ours(text, None),
            "/lib/a.so\n# /opt/x/librocm_fix.so kept as a comment\n/lib/b.so\n"
        );
        assert_eq!(
            entries("a.so b.so:c.so\n\td.so"),
            vec!["a.so", "b.so", "c.so", "d.so"]
        );
    }

    #[test]
    fn state_survives_escaping() {
        let s = State {
            existed: true,
            added: "\n/x/librocm_fix.so\n".into(),
            line: "/x/librocm_fix.so".into(),
            dirs: vec![],
        };
        assert_eq!(unescape(&escape(&s.added)), s.added);
    }
}
