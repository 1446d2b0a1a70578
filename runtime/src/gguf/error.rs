//! Errors of the GGUF reader, writer and metadata accessors.

use std::path::PathBuf;

use tinyrt_kernels::quant::GgmlType;

/// Everything that can go wrong reading or writing a GGUF file.
///
/// Each class of malformed input (see `shared/design/PITFALLS.md`) has its own variant, so
/// tests can check that a bad file is rejected for the right reason. `Display` is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write GGUF: {0}")]
    Write(#[source] std::io::Error),
    #[error("{} is {kind}, not a regular file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },

    // Header.
    #[error("not a GGUF file: the first bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: Vec<u8> },
    #[error("GGUF version {0} is not supported (only versions 2 and 3 are)")]
    UnsupportedVersion(u32),
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error("truncated GGUF file: {what} at byte {offset} needs {needed} bytes, only {available} are left")]
    Truncated {
        what: &'static str,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("tensor count {count} is impossible: only {available} bytes are left in the file")]
    TooManyTensors { count: u64, available: u64 },
    #[error("metadata count {count} is impossible: only {available} bytes are left in the file")]
    TooManyMetadata { count: u64, available: u64 },

    // Metadata.
    #[error("{what} at byte {offset} has length {len}, but only {available} bytes are left")]
    StringTooLong {
        what: &'static str,
        offset: u64,
        len: u64,
        available: u64,
    },
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str, offset: u64 },
    #[error("metadata key '{key}' has unknown value type {type_id}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("metadata key '{key}' is an array of arrays, which GGUF does not allow")]
    NestedArray { key: String },
    #[error("metadata key '{key}': an array of {count} elements cannot fit in the {available} bytes left")]
    ArrayTooLong {
        key: String,
        count: u64,
        available: u64,
    },
    #[error("metadata key '{key}' has boolean byte {byte}, expected 0 or 1")]
    InvalidBool { key: String, byte: u8 },
    #[error("duplicate metadata key '{key}'")]
    DuplicateKey { key: String },
    #[error("general.alignment {0} is invalid: it must be a power of two no larger than {max}", max = crate::gguf::MAX_ALIGNMENT)]
    BadAlignment(i128),

    // Tensor table.
    #[error("tensor name '{name}' is {len} bytes long; GGUF allows at most {max}", max = crate::gguf::MAX_TENSOR_NAME_LEN)]
    TensorNameTooLong { name: String, len: usize },
    #[error("duplicate tensor name '{name}'")]
    DuplicateTensor { name: String },
    #[error("tensor '{name}' has {n_dims} dimensions; GGUF allows 1 to 4")]
    BadDimCount { name: String, n_dims: u32 },
    #[error("tensor '{name}' dimension {index} is {value}; it must be between 1 and 2^63-1")]
    BadDimension {
        name: String,
        index: usize,
        value: u64,
    },
    #[error("tensor '{name}' of shape {shape:?}: element count or byte size overflows")]
    ShapeOverflow { name: String, shape: Vec<u64> },
    #[error("tensor '{name}' has unknown ggml type id {id}")]
    UnknownTensorType { name: String, id: u32 },
    #[error("tensor '{name}': row length {row_len} is not a multiple of the {ty} block size {block_size}")]
    BlockMisaligned {
        name: String,
        ty: GgmlType,
        row_len: u64,
        block_size: u64,
    },
    #[error("tensor '{name}': offset {offset} is not a multiple of the alignment {alignment}")]
    OffsetNotAligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor '{name}': data at offset {offset} ({size} bytes) runs past the end of the {file_size}-byte file")]
    TensorOutOfBounds {
        name: String,
        offset: u64,
        size: u64,
        file_size: u64,
    },
    #[error("tensors '{first}' and '{second}' overlap in the data section")]
    TensorOverlap { first: String, second: String },

    // Typed access.
    #[error("metadata key '{key}' is missing")]
    MissingKey { key: String },
    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("metadata key '{key}' has value {value}, which does not fit in {target}")]
    OutOfRange {
        key: String,
        value: String,
        target: &'static str,
    },
    #[error("type {0} is not supported yet")]
    UnsupportedType(GgmlType),

    // Writer.
    #[error(
        "tensor '{name}' of type {ty} and shape {shape:?} needs {expected} bytes, got {actual}"
    )]
    TensorSizeMismatch {
        name: String,
        ty: GgmlType,
        shape: Vec<u64>,
        expected: u64,
        actual: u64,
    },
}
