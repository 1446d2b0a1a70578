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

/// A parsed, validated GGUF file. Tensor data is borrowed from the map without copying.
pub struct GgufFile {
    storage: Storage,
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

    fn assemble(storage: Storage, p: reader::Parsed) -> GgufFile {
        GgufFile {
            storage,
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
        // offset + size <= file size was checked by the parser.
        let start = info.offset as usize;
        let end = start + info.size as usize;
        Tensor {
            name: &info.name,
            ty: info.ty,
            shape: &info.shape,
            data: &self.storage.bytes()[start..end],
        }
    }

    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
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
