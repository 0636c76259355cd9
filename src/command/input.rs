//! Reading what the user points the command at, safely: only regular files,
//! opened without blocking, and never more than a bound (issue 13). A FIFO
//! would block the command forever, `/dev/zero` would be read until memory
//! runs out; both are refused with a clear message before anything is read.

use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Part of every refusal of a file that is not a regular file, so that the
/// command can exit with the usage status for it.
pub const NOT_REGULAR: &str = "is not a regular file";

/// The bytes of the regular file `path` (a symbolic link is followed only to
/// one), at most `cap` of them; `NotFound` when it does not exist. A FIFO,
/// device, socket or folder is never opened: it is `InvalidInput`, with
/// [`NOT_REGULAR`] in the message; a larger file is `InvalidData`.
pub fn read_regular(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    read_capped(&mut open_regular(path)?, cap)
}

/// The regular file `path`, opened for reading, for a caller that streams it;
/// refused as [`read_regular`] refuses.
pub fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    let before = std::fs::metadata(path)?;
    if !before.is_file() {
        return Err(not_regular(&before));
    }
    // O_NONBLOCK: were the file swapped for a FIFO after the stat, the open
    // returns at once and the fstat below refuses it.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let now = f.metadata()?;
    if !now.is_file() || now.dev() != before.dev() || now.ino() != before.ino() {
        return Err(not_regular(&now));
    }
    Ok(f)
}

/// At most `cap` bytes of `r`; more is `InvalidData`.
pub fn read_capped(r: &mut dyn Read, cap: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is larger than {cap} bytes, more than it could be"),
        ));
    }
    Ok(buf)
}

fn not_regular(m: &std::fs::Metadata) -> io::Error {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    let what = if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_dir() {
        "a folder"
    } else {
        "not a file"
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{NOT_REGULAR} ({what})"),
    )
}

/// A user's text made safe for one line of output: control characters
/// escaped, at most 200 characters.
pub fn shown(s: &str) -> String {
    rocm_fix_shared::config::shown(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_and_never_past_the_cap() {
        let dir = std::env::temp_dir().join(format!("rocm-fix-input-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, "hello").unwrap();
        assert_eq!(read_regular(&f, 5).unwrap(), b"hello");
        let e = read_regular(&f, 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for (p, what) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a device"),
            (dir.as_path(), "a folder"),
        ] {
            let e = read_regular(p, 1 << 20).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{p:?}");
            assert_eq!(e.to_string(), format!("is not a regular file ({what})"));
        }
        assert_eq!(
            read_regular(&dir.join("none"), 1).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
