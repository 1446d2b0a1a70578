//! The bytes behind a `GgufFile`: a read-only memory map, or an owned aligned buffer.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use memmap2::Mmap;

use super::GgufError;

/// `O_NONBLOCK` of Linux (every architecture tinyrt builds for): opening a FIFO does not wait
/// for a writer.
const O_NONBLOCK: i32 = 0o4000;

pub(crate) enum Storage {
    Mapped(Mmap),
    /// `u128` words so that the bytes start 16-byte aligned (`Vec<u8>` promises only 1),
    /// which lets callers view f32/f16 tensor data in place; `len` is the byte length.
    Owned {
        words: Vec<u128>,
        len: usize,
    },
    Empty,
}

impl Storage {
    pub(crate) fn map(path: &Path) -> Result<Storage, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        // A FIFO or a device would block (or never end) in open/read: check the type first,
        // and open without blocking in case the path is swapped for one in between.
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(GgufError::NotAFile {
                path: path.to_owned(),
                kind: crate::files::kind_name(&meta),
            });
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(GgufError::NotAFile {
                path: path.to_owned(),
                kind: crate::files::kind_name(&meta),
            });
        }
        if meta.len() == 0 {
            // mmap(2) rejects zero-length maps; the parser reports the truncation.
            return Ok(Storage::Empty);
        }
        // SAFETY: the map is read-only and lives as long as the `GgufFile` that owns it. The
        // one thing Rust cannot rule out is another process truncating or rewriting the file
        // while it is mapped (this is the documented contract of every mmap-based GGUF loader:
        // model files are not modified while in use).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(Storage::Mapped(map))
    }

    pub(crate) fn owned(bytes: &[u8]) -> Storage {
        let mut words = vec![0u128; bytes.len().div_ceil(16)];
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        dst[..bytes.len()].copy_from_slice(bytes);
        Storage::Owned {
            words,
            len: bytes.len(),
        }
    }

    /// Drops the resident pages of `start..start + len` from this process (a mapped file only;
    /// the range is widened to whole pages): memory the caller will not read again soon, such
    /// as weights converted at load. A later read faults them back in from the file. Best
    /// effort: an error is ignored, the pages then simply stay.
    pub(crate) fn release(&self, start: usize, len: usize) {
        if let Storage::Mapped(m) = self {
            if start.checked_add(len).is_some_and(|end| end <= m.len()) && len > 0 {
                // SAFETY: the map is private, read-only and backed by a file: MADV_DONTNEED
                // only drops clean copies of file pages, which the next access reads again
                // from the file, so every live `&[u8]` into the map keeps seeing the same
                // bytes (under the map's own contract that the file is not modified).
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
                };
            }
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned { words, len } => &bytemuck::cast_slice(words)[..*len],
            Storage::Empty => &[],
        }
    }
}
