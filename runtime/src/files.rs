//! The files the runtime reads and writes on a user's behalf, with the rules that keep a user's
//! data and the machine safe (`docs/LIMITS.md`):
//!
//! - [`AtomicFile`]: every file tinyrt writes (quantize, synth, chat `/save`, ...) is written to a
//!   temporary file in the target's folder, `fsync`ed and renamed over the target only when it is
//!   complete. A failure or a signal leaves the old file (or none), never a truncated one, and
//!   removes only the temporary. A target that exists and is not a regular file (a device node, a
//!   folder, a FIFO) is refused rather than replaced; a symbolic link is followed, so the file it
//!   points to is the one replaced.
//! - [`same_file`]: compares files (device and inode), not path spellings, so `quantize in.gguf
//!   ./in.gguf` (or a symlink, or a hard link) is refused instead of overwriting its own input.
//! - [`read_input`]: reads a prompt or text file with a size cap ([`MAX_INPUT_BYTES`]), so
//!   `/dev/zero` or a huge file is one clear error rather than memory exhaustion.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The largest prompt, text or conversation file read (64 MiB): far above any context (a
/// million tokens is a few MiB of text), small enough that reading and tokenizing it stays
/// within a few GiB.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

/// Errors of this module; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{} is larger than {limit} bytes (the most tinyrt reads as input)", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{} is the input file {} (under another name): write to another file", output.display(), input.display())]
    SameFile { input: PathBuf, output: PathBuf },
}

impl FileError {
    fn io(path: &Path, source: io::Error) -> FileError {
        FileError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What kind of non-regular file `m` is, for messages (here and in the GGUF reader, which
/// checks a model path's type before the otherwise blocking open of a FIFO).
pub(crate) fn kind_name(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// Whether `a` and `b` are the same file (device and inode, symbolic links followed). A path
/// that does not exist is no file, so it is the same as nothing.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Refuses to write `output` when it is `input` under any spelling (see [`same_file`]).
pub fn check_not_same(input: &Path, output: &Path) -> Result<(), FileError> {
    if same_file(input, output) {
        return Err(FileError::SameFile {
            input: input.to_owned(),
            output: output.to_owned(),
        });
    }
    Ok(())
}

/// Reads a whole input file (a prompt, a text, a saved conversation) of at most `limit` bytes.
/// Pipes and `/dev/stdin` are allowed (read up to the cap); folders are not.
pub fn read_input_capped(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let file = File::open(path).map_err(|e| FileError::io(path, e))?;
    let m = file.metadata().map_err(|e| FileError::io(path, e))?;
    if m.is_dir() {
        return Err(FileError::NotRegular {
            path: path.to_owned(),
            kind: "a folder",
        });
    }
    if m.is_file() && m.len() > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    let mut out = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| FileError::io(path, e))?;
    if out.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(out)
}

/// [`read_input_capped`] with [`MAX_INPUT_BYTES`].
pub fn read_input(path: &Path) -> Result<Vec<u8>, FileError> {
    read_input_capped(path, MAX_INPUT_BYTES)
}

/// Temporary files being written now, removed by [`remove_temporaries`] (a signal handler's
/// last act) so that an interrupted write leaves nothing behind.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes every temporary file an [`AtomicFile`] is writing now. For a SIGINT/SIGTERM handler
/// that then exits: the targets keep their old contents (or stay absent).
pub fn remove_temporaries() {
    for p in pending().drain(..) {
        let _ = fs::remove_file(p);
    }
}

/// A file written under a temporary name and renamed over its target by
/// [`AtomicFile::commit`]; dropped without a commit, it removes the temporary and leaves the
/// target as it was.
pub struct AtomicFile {
    target: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `target`. Refused when `target` exists and is not a regular file; a
    /// symbolic link is followed (the file it names is replaced, the link stays).
    pub fn create(target: &Path) -> Result<AtomicFile, FileError> {
        let mut target = target.to_owned();
        let mut mode = None;
        match fs::symlink_metadata(&target) {
            Ok(m) => {
                if m.file_type().is_symlink() {
                    target = fs::canonicalize(&target).map_err(|e| FileError::io(&target, e))?;
                }
                let m = fs::metadata(&target).map_err(|e| FileError::io(&target, e))?;
                if !m.is_file() {
                    return Err(FileError::NotRegular {
                        kind: kind_name(&m),
                        path: target,
                    });
                }
                mode = Some(m.permissions());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FileError::io(&target, e)),
        }
        let Some(name) = target.file_name() else {
            return Err(FileError::NotRegular {
                path: target,
                kind: "a folder",
            });
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(
            ".{}.tinyrt-{}-{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // Registered before it exists, so a signal between the two still removes it.
        pending().push(tmp.clone());
        let file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => f,
            Err(e) => {
                pending().retain(|p| p != &tmp);
                return Err(FileError::io(&target, e));
            }
        };
        if let Some(perm) = mode {
            // Keep the replaced file's permissions; failing to is not worth failing the write.
            let _ = file.set_permissions(perm);
        }
        Ok(AtomicFile {
            target,
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The file being replaced (symbolic links resolved).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes, `fsync`s and renames the temporary over the target.
    pub fn commit(mut self) -> Result<(), FileError> {
        let out = self.out.take().expect("an AtomicFile is committed once");
        let file = out
            .into_inner()
            .map_err(|e| FileError::io(&self.target, e.into_error()))?;
        file.sync_all()
            .map_err(|e| FileError::io(&self.target, e))?;
        drop(file);
        fs::rename(&self.tmp, &self.target).map_err(|e| FileError::io(&self.target, e))?;
        pending().retain(|p| p != &self.tmp);
        // The rename is durable once the folder is synced; a folder that cannot be opened for
        // that (some file systems) still has the complete file.
        if let Some(dir) = self.target.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.as_mut().expect("written after commit").write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out
            .as_mut()
            .expect("written after commit")
            .write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("written after commit").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
            pending().retain(|p| p != &self.tmp);
        }
    }
}

/// Writes `bytes` to `target` through an [`AtomicFile`].
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let mut f = AtomicFile::create(target)?;
    f.write_all(bytes)
        .map_err(|e| FileError::io(f.target(), e))?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tinyrt-files-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn a_dropped_write_keeps_the_old_file_and_leaves_no_temporary() {
        let d = scratch("drop");
        let t = d.join("out.bin");
        fs::write(&t, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&t).unwrap();
            f.write_all(b"new but unfinished").unwrap();
        }
        assert_eq!(fs::read(&t).unwrap(), b"old");
        assert!(leftovers(&d).is_empty());
        write_atomic(&t, b"new").unwrap();
        assert_eq!(fs::read(&t).unwrap(), b"new");
        assert!(leftovers(&d).is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_symlink_target_replaces_the_file_it_names() {
        let d = scratch("link");
        let real = d.join("real.bin");
        let link = d.join("link.bin");
        fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(same_file(&real, &link));
        write_atomic(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn special_files_are_refused_not_replaced() {
        let d = scratch("special");
        assert!(matches!(
            AtomicFile::create(&d),
            Err(FileError::NotRegular { .. })
        ));
        assert!(matches!(
            AtomicFile::create(Path::new("/dev/null")),
            Err(FileError::NotRegular { .. })
        ));
        assert!(matches!(
            crate::gguf::GgufFile::open("/dev/zero"),
            Err(crate::gguf::GgufError::NotAFile {
                kind: "a character device",
                ..
            })
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn hard_links_and_other_spellings_are_the_same_file() {
        let d = scratch("same");
        let a = d.join("a.bin");
        fs::write(&a, b"x").unwrap();
        fs::hard_link(&a, d.join("b.bin")).unwrap();
        assert!(same_file(&a, &d.join("b.bin")));
        assert!(same_file(&a, &d.join(".").join("a.bin")));
        assert!(!same_file(&a, &d.join("missing.bin")));
        assert!(check_not_same(&a, &d.join("b.bin")).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn input_reads_are_capped() {
        let d = scratch("cap");
        let p = d.join("t.txt");
        fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_input_capped(&p, 10).unwrap(), b"0123456789");
        assert!(matches!(
            read_input_capped(&p, 9),
            Err(FileError::TooLarge { .. })
        ));
        // A device that never ends stops at the cap.
        assert!(matches!(
            read_input_capped(Path::new("/dev/zero"), 1 << 16),
            Err(FileError::TooLarge { .. })
        ));
        fs::remove_dir_all(&d).unwrap();
    }
}
