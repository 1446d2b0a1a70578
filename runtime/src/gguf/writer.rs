//! Writes GGUF version 3 files: any metadata, tensors padded to `general.alignment`.
//!
//! Layout follows ggml's `gguf.cpp` writer (and the Python `gguf` package): the header, the
//! metadata in insertion order, the tensor infos with offsets relative to the data section,
//! padding to the alignment, then each tensor's data followed by padding to the alignment
//! (including after the last one, which llama.cpp's loader expects). A file without tensors
//! ends after the metadata.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use tinyrt_kernels::quant::GgmlType;

use super::reader::{tensor_byte_size, MAGIC};
use super::value::{Array, Metadata, Value};
use super::{GgufError, DEFAULT_ALIGNMENT, MAX_ALIGNMENT, MAX_TENSOR_NAME_LEN};

struct PendingTensor {
    name: String,
    ty: GgmlType,
    shape: Vec<u64>,
    data: Vec<u8>,
}

/// Builds a GGUF file in memory and writes it out.
pub struct GgufWriter {
    metadata: Metadata,
    tensors: Vec<PendingTensor>,
    names: HashSet<String>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter {
            metadata: Metadata::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// Sets a metadata key. Keys are written in the order they were first set; setting a key
    /// again replaces its value in place.
    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.set(key, value);
        self
    }

    /// Sets `general.alignment` (checked to be a power of two when written).
    pub fn alignment(&mut self, n: u32) -> &mut Self {
        self.set("general.alignment", Value::U32(n))
    }

    /// Copies every metadata pair of `metadata`, in order.
    pub fn set_all(&mut self, metadata: &Metadata) -> &mut Self {
        for (k, v) in metadata.iter() {
            self.metadata.set(k, v.clone());
        }
        self
    }

    /// Adds a tensor. `shape` is in ggml `ne` order (`shape[0]` is the row length); `data` must
    /// hold exactly the bytes that type and shape need.
    pub fn add_tensor(
        &mut self,
        name: &str,
        ty: GgmlType,
        shape: &[u64],
        data: impl Into<Vec<u8>>,
    ) -> Result<&mut Self, GgufError> {
        if name.len() > MAX_TENSOR_NAME_LEN {
            return Err(GgufError::TensorNameTooLong {
                name: name.to_owned(),
                len: name.len(),
            });
        }
        if self.names.contains(name) {
            return Err(GgufError::DuplicateTensor {
                name: name.to_owned(),
            });
        }
        let expected = tensor_byte_size(name, ty, shape)?;
        let data = data.into();
        if data.len() as u64 != expected {
            return Err(GgufError::TensorSizeMismatch {
                name: name.to_owned(),
                ty,
                shape: shape.to_vec(),
                expected,
                actual: data.len() as u64,
            });
        }
        self.names.insert(name.to_owned());
        self.tensors.push(PendingTensor {
            name: name.to_owned(),
            ty,
            shape: shape.to_vec(),
            data,
        });
        Ok(self)
    }

    fn alignment_value(&self) -> Result<usize, GgufError> {
        let Some(v) = self.metadata.get("general.alignment") else {
            return Ok(DEFAULT_ALIGNMENT as usize);
        };
        let Value::U32(a) = *v else {
            // ggml reads general.alignment with gguf_get_val_u32: it must be a u32.
            return Err(GgufError::WrongType {
                key: "general.alignment".to_owned(),
                expected: "u32",
                found: v.type_name(),
            });
        };
        if !a.is_power_of_two() || u64::from(a) > MAX_ALIGNMENT {
            return Err(GgufError::BadAlignment(a.into()));
        }
        Ok(a as usize)
    }

    /// The header: magic, version, counts, metadata, tensor infos and the padding before the
    /// data section.
    fn header_bytes(&self, alignment: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            put_str(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += t.data.len().next_multiple_of(alignment);
        }
        // The data section starts aligned. Without tensors there is no data section; the
        // vocabulary-only files of llama.cpp's `models/` end right after the header too.
        if !self.tensors.is_empty() {
            pad(&mut out, alignment);
        }
        out
    }

    /// Streams the file to `w` (the tensor data is not copied into one buffer first).
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), GgufError> {
        let alignment = self.alignment_value()?;
        w.write_all(&self.header_bytes(alignment))
            .map_err(GgufError::Write)?;
        let zeros = vec![0u8; alignment];
        for t in &self.tensors {
            let padding = t.data.len().next_multiple_of(alignment) - t.data.len();
            w.write_all(&t.data).map_err(GgufError::Write)?;
            w.write_all(&zeros[..padding]).map_err(GgufError::Write)?;
        }
        w.flush().map_err(GgufError::Write)
    }

    /// The complete file.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Writes the file at `path` through a temporary file renamed into place
    /// ([`crate::files::AtomicFile`]): a failure leaves what was there before.
    pub fn write_to_path(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let io = |e: std::io::Error| {
            GgufError::Write(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))
        };
        let file_err = |e: crate::files::FileError| match e {
            crate::files::FileError::Io { source, .. } => io(source),
            e => GgufError::Write(std::io::Error::other(e.to_string())),
        };
        // Check the alignment before creating the file.
        self.alignment_value()?;
        let mut w = crate::files::AtomicFile::create(path).map_err(file_err)?;
        self.write_to(&mut w).map_err(|e| match e {
            GgufError::Write(source) => io(source),
            e => e,
        })?;
        w.commit().map_err(file_err)
    }
}

fn pad(out: &mut Vec<u8>, alignment: usize) {
    out.resize(out.len().next_multiple_of(alignment), 0);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => {
            out.extend_from_slice(&a.element_type().id().to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            put_array(out, a);
        }
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    fn each<T: Copy, const N: usize>(out: &mut Vec<u8>, v: &[T], f: impl Fn(T) -> [u8; N]) {
        for &x in v {
            out.extend_from_slice(&f(x));
        }
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each(out, v, i8::to_le_bytes),
        Array::U16(v) => each(out, v, u16::to_le_bytes),
        Array::I16(v) => each(out, v, i16::to_le_bytes),
        Array::U32(v) => each(out, v, u32::to_le_bytes),
        Array::I32(v) => each(out, v, i32::to_le_bytes),
        Array::F32(v) => each(out, v, f32::to_le_bytes),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::U64(v) => each(out, v, u64::to_le_bytes),
        Array::I64(v) => each(out, v, i64::to_le_bytes),
        Array::F64(v) => each(out, v, f64::to_le_bytes),
    }
}
