//! GGUF files: a zero-copy reader over a memory map, typed metadata access, and a writer.
//!
//! The format is ggml's GGUF (versions 2 and 3, little-endian), specified in ggml's
//! `docs/gguf.md`. Every malformed input gives a specific [`GgufError`], never a panic, an
//! out-of-bounds read or an allocation the file does not justify.

mod error;
mod reader;
mod storage;
mod value;
mod writer;

use std::path::Path;

pub use tinyrt_kernels::quant::GgmlType;

pub use error::GgufError;
pub use value::{Array, Metadata, Value, ValueType};
pub use writer::GgufWriter;

use storage::Storage;

/// `general.alignment` when the key is absent (ggml's `GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The largest `general.alignment` accepted; real files use 32.
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// ggml's `GGML_MAX_NAME` (64) less the terminating NUL.
pub const MAX_TENSOR_NAME_LEN: usize = 63;

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// ggml `ne` order: `shape[0]` is the row length (the contiguous dimension).
    pub shape: Vec<u64>,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
    /// The segment holding the data (0 for a file; see [`GgufFile::from_parts`]).
    pub(crate) segment: u32,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        // The reader checked that this product fits in i64.
        self.shape.iter().product()
    }
}

/// A zero-copy view of one tensor's data.
#[derive(Clone, Copy, Debug)]
pub struct Tensor<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    /// ggml `ne` order: `shape[0]` is the row length.
    pub shape: &'a [u64],
    pub data: &'a [u8],
}

impl<'a> Tensor<'a> {
    /// The data as f32 values when the type is F32; `None` for other types, or when the data
    /// is not 4-byte aligned (only possible in files whose `general.alignment` is below 4:
    /// both the map and the [`GgufFile::from_bytes`] buffer start 16-byte aligned).
    pub fn as_f32(&self) -> Option<&'a [f32]> {
        self.typed(GgmlType::F32)
    }
    /// The data as f16 values when the type is F16.
    pub fn as_f16(&self) -> Option<&'a [half::f16]> {
        self.typed(GgmlType::F16)
    }
    /// The data as bf16 values when the type is BF16.
    pub fn as_bf16(&self) -> Option<&'a [half::bf16]> {
        self.typed(GgmlType::BF16)
    }

    fn typed<T: bytemuck::Pod>(&self, ty: GgmlType) -> Option<&'a [T]> {
        if self.ty != ty {
            return None;
        }
        bytemuck::try_cast_slice(self.data).ok()
    }

    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
    /// The product of `shape[1..]`.
    pub fn n_rows(&self) -> u64 {
        self.shape.iter().skip(1).product()
    }
    pub fn row_len(&self) -> u64 {
        self.shape.first().copied().unwrap_or(0)
    }
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        // The reader checked that shape[0] is a multiple of the block size and the total fits.
        (self.row_len() / self.ty.block_size() as u64 * self.ty.type_size() as u64) as usize
    }
}

/// Bytes that hold tensors of an in-memory GGUF ([`GgufFile::from_parts`]): a read-only
/// memory map of a file (a safetensors shard) or an owned, 16-byte-aligned buffer.
pub struct Segment(Storage);

impl Segment {
    /// Memory-maps `path` (a regular file; never blocks on a FIFO).
    pub fn map(path: impl AsRef<Path>) -> Result<Segment, GgufError> {
        Storage::map(path.as_ref()).map(Segment)
    }

    /// A copy of `bytes` in an aligned buffer.
    pub fn owned(bytes: &[u8]) -> Segment {
        Segment(Storage::owned(bytes))
    }

    /// f32 values, stored little-endian.
    pub fn from_f32(values: &[f32]) -> Segment {
        Segment::owned(bytemuck::cast_slice(values))
    }

    pub fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// One tensor of [`GgufFile::from_parts`]: its data is `segments[segment][offset..]`, of the
/// size its type and shape give.
#[derive(Clone, Debug)]
pub struct PartTensor {
    pub name: String,
    pub ty: GgmlType,
    /// ggml `ne` order.
    pub shape: Vec<u64>,
    pub segment: usize,
    pub offset: u64,
}

/// A parsed, validated GGUF file. Tensor data is borrowed from the map without copying.
pub struct GgufFile {
    storage: Storage,
    /// Segments 1.. of a file made [`GgufFile::from_parts`] (segment 0 is `storage`).
    extra: Vec<Storage>,
    /// Made from parts rather than parsed from one file.
    from_parts: bool,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    /// Indices into `tensors`, sorted by name.
    tensor_index: Vec<u32>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("file_size", &self.file_size())
            .field("metadata_len", &self.metadata.len())
            .field("tensor_count", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps the file at `path`, parses and validates it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        GgufFile::with_storage(Storage::map(path.as_ref())?)
    }

    /// Parses bytes held in memory, with the same checks as [`GgufFile::open`]. The bytes are
    /// copied into a 16-byte-aligned buffer so that tensor data can be viewed as f32/f16.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::from_slice(&bytes)
    }

    /// Like [`GgufFile::from_bytes`], from a borrowed slice (copied).
    pub fn from_slice(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        // Parse first, so that malformed input costs no copy.
        let parsed = reader::parse(bytes)?;
        Ok(GgufFile::assemble(Storage::owned(bytes), parsed))
    }

    /// Parses and validates `bytes` without keeping them (for fuzzing and quick checks).
    pub fn validate(bytes: &[u8]) -> Result<(), GgufError> {
        reader::parse(bytes).map(|_| ())
    }

    fn with_storage(storage: Storage) -> Result<GgufFile, GgufError> {
        let parsed = reader::parse(storage.bytes())?;
        Ok(GgufFile::assemble(storage, parsed))
    }

    /// An in-memory GGUF of `metadata` and `tensors` (in this order) whose data lies in
    /// `segments`: a Hugging Face folder's tensors in place in its mapped safetensors shards,
    /// with the few it converts in owned buffers. The same checks as a file's tensor table
    /// (names, shapes, block sizes, bounds), and the same accessors; [`GgufFile::bytes`] is
    /// empty, [`GgufFile::file_size`] the segments' total.
    pub fn from_parts(
        metadata: Metadata,
        tensors: Vec<PartTensor>,
        segments: Vec<Segment>,
    ) -> Result<GgufFile, GgufError> {
        let mut infos = Vec::with_capacity(tensors.len());
        for t in tensors {
            if t.name.len() > MAX_TENSOR_NAME_LEN {
                return Err(GgufError::TensorNameTooLong {
                    len: t.name.len(),
                    name: t.name,
                });
            }
            let size = reader::tensor_byte_size(&t.name, t.ty, &t.shape)?;
            let seg_len = segments
                .get(t.segment)
                .map_or(0, |s| s.bytes().len() as u64);
            if t.segment >= segments.len() || t.offset.checked_add(size).is_none_or(|e| e > seg_len)
            {
                return Err(GgufError::TensorOutOfBounds {
                    name: t.name,
                    offset: t.offset,
                    size,
                    file_size: seg_len,
                });
            }
            infos.push(TensorInfo {
                name: t.name,
                ty: t.ty,
                shape: t.shape,
                offset: t.offset,
                size,
                segment: t.segment as u32,
            });
        }
        let mut tensor_index: Vec<u32> = (0..infos.len() as u32).collect();
        tensor_index.sort_by(|&a, &b| infos[a as usize].name.cmp(&infos[b as usize].name));
        if let Some(w) = tensor_index
            .windows(2)
            .find(|w| infos[w[0] as usize].name == infos[w[1] as usize].name)
        {
            return Err(GgufError::DuplicateTensor {
                name: infos[w[0] as usize].name.clone(),
            });
        }
        let mut segs = segments.into_iter().map(|s| s.0);
        Ok(GgufFile {
            storage: segs.next().unwrap_or(Storage::Empty),
            extra: segs.collect(),
            from_parts: true,
            version: 3,
            metadata,
            tensors: infos,
            tensor_index,
            alignment: DEFAULT_ALIGNMENT,
            data_offset: 0,
        })
    }

    /// Whether this model was made [`GgufFile::from_parts`] (a Hugging Face folder).
    pub fn is_from_parts(&self) -> bool {
        self.from_parts
    }

    fn segment(&self, i: u32) -> &[u8] {
        match i {
            0 => self.storage.bytes(),
            i => self.extra[i as usize - 1].bytes(),
        }
    }

    /// Whether a tensor's data lies in a memory-mapped file (the GGUF file, or a safetensors
    /// shard of a model made [`GgufFile::from_parts`]) rather than in an owned buffer.
    pub fn is_mapped(&self, info: &TensorInfo) -> bool {
        let storage = match info.segment {
            0 => &self.storage,
            i => &self.extra[i as usize - 1],
        };
        matches!(storage, Storage::Mapped(_))
    }

    /// The data of a tensor of this file's table.
    pub fn data_of(&self, info: &TensorInfo) -> &[u8] {
        // Bounds checked by the parser / `from_parts`.
        let start = info.offset as usize;
        &self.segment(info.segment)[start..start + info.size as usize]
    }

    /// Tells the OS that a tensor's bytes will not be read again soon (weights converted at
    /// load): a memory-mapped tensor's pages leave the process's resident memory, and come
    /// back from the file if read later. Owned data is unaffected.
    pub fn release_pages(&self, info: &TensorInfo) {
        let storage = match info.segment {
            0 => &self.storage,
            i => &self.extra[i as usize - 1],
        };
        storage.release(info.offset as usize, info.size as usize);
    }

    fn assemble(storage: Storage, p: reader::Parsed) -> GgufFile {
        GgufFile {
            storage,
            extra: Vec::new(),
            from_parts: false,
            version: p.version,
            metadata: p.metadata,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
            alignment: p.alignment,
            data_offset: p.data_offset,
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The tensor table in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        let p = self
            .tensor_index
            .binary_search_by(|&i| self.tensors[i as usize].name.as_str().cmp(name))
            .ok()?;
        Some(&self.tensors[self.tensor_index[p] as usize])
    }

    /// A zero-copy view of the named tensor, or `None` when the file has no such tensor.
    pub fn tensor(&self, name: &str) -> Option<Tensor<'_>> {
        let info = self.tensor_info(name)?;
        Some(self.view(info))
    }

    /// Views of all tensors in file order.
    pub fn tensors(&self) -> impl Iterator<Item = Tensor<'_>> {
        self.tensors.iter().map(|t| self.view(t))
    }

    fn view<'a>(&'a self, info: &'a TensorInfo) -> Tensor<'a> {
        Tensor {
            name: &info.name,
            ty: info.ty,
            shape: &info.shape,
            data: self.data_of(info),
        }
    }

    /// The file's size; for a model made from parts, the total of its segments.
    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
            + self
                .extra
                .iter()
                .map(|s| s.bytes().len() as u64)
                .sum::<u64>()
    }

    /// The whole file (empty for a model made from parts).
    pub fn bytes(&self) -> &[u8] {
        if self.from_parts {
            &[]
        } else {
            self.storage.bytes()
        }
    }

    /// `general.alignment`, or the default 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// `general.architecture`, if present and a string.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.metadata.get_str("general.architecture")
    }
}

#[cfg(test)]
mod tests;
