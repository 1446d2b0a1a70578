//! The GGUF parser: header, metadata, tensor table and their validation.
//!
//! Format: ggml's `docs/gguf.md` and `ggml/src/gguf.cpp` (all little-endian):
//! magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata pairs
//! (string key, u32 value type, value), the tensor infos (string name, u32 n_dims, n_dims × u64
//! dims, u32 ggml type, u64 offset relative to the data section), padding to `general.alignment`,
//! then the data section.
//!
//! Nothing is allocated from a count in the file before the count is checked against the bytes
//! left, and every size is computed with checked arithmetic.

use tinyrt_kernels::quant::GgmlType;

use super::value::{Array, Metadata, Value, ValueType};
use super::{
    GgufError, TensorInfo, DEFAULT_ALIGNMENT, MAX_ALIGNMENT, MAX_DIMS, MAX_TENSOR_NAME_LEN,
};

pub(crate) const MAGIC: [u8; 4] = *b"GGUF";

/// Smallest encoding of one tensor info: empty name (8), n_dims (4), one dim (8), type (4), offset (8).
const MIN_TENSOR_INFO_SIZE: u64 = 32;
/// Smallest encoding of one metadata pair: empty key (8), type (4), a u8 value (1).
const MIN_KV_SIZE: u64 = 13;

pub(crate) struct Parsed {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    /// Tensor indices sorted by name.
    pub tensor_index: Vec<u32>,
    pub alignment: u64,
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], GgufError> {
        let available = self.remaining();
        if n > available {
            return Err(GgufError::Truncated {
                what,
                offset: self.pos as u64,
                needed: n,
                available,
            });
        }
        // n <= remaining <= usize::MAX, so the cast is lossless.
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let b = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &'static str) -> Result<&'a str, GgufError> {
        let offset = self.pos as u64;
        let len = self.u64(what)?;
        let available = self.remaining();
        if len > available {
            return Err(GgufError::StringTooLong {
                what,
                offset,
                len,
                available,
            });
        }
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 { what, offset })
    }
}

struct Header {
    version: u32,
    n_tensors: u64,
    n_kv: u64,
}

fn read_header(c: &mut Cursor<'_>) -> Result<Header, GgufError> {
    let buf = c.buf;
    let magic_len = buf.len().min(4);
    if buf[..magic_len] != MAGIC[..magic_len] {
        return Err(GgufError::BadMagic {
            found: buf[..magic_len].to_vec(),
        });
    }
    c.take(4, "magic")?;
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        if matches!(version.swap_bytes(), 2 | 3) {
            return Err(GgufError::BigEndian);
        }
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;

    let available = c.remaining();
    let tensor_bytes = n_tensors
        .checked_mul(MIN_TENSOR_INFO_SIZE)
        .filter(|&b| b <= available)
        .ok_or(GgufError::TooManyTensors {
            count: n_tensors,
            available,
        })?;
    if n_kv
        .checked_mul(MIN_KV_SIZE)
        .is_none_or(|b| b > available - tensor_bytes)
    {
        return Err(GgufError::TooManyMetadata {
            count: n_kv,
            available,
        });
    }
    Ok(Header {
        version,
        n_tensors,
        n_kv,
    })
}

/// The first pass: walks the whole header (metadata and tensor table), checking every length,
/// type, UTF-8 string, shape and type id, without allocating. Truncated or corrupt files are
/// rejected here cheaply, before the second pass builds anything.
fn scan(buf: &[u8]) -> Result<(), GgufError> {
    let mut c = Cursor { buf, pos: 0 };
    let h = read_header(&mut c)?;
    for _ in 0..h.n_kv {
        let key = c.string("metadata key")?;
        let type_id = c.u32("metadata value type")?;
        skip_value(&mut c, key, type_id)?;
    }
    for _ in 0..h.n_tensors {
        read_raw_tensor_info(&mut c)?;
    }
    Ok(())
}

/// Parses and validates a whole file held in `buf`.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
    scan(buf)?;
    let mut c = Cursor { buf, pos: 0 };
    let Header {
        version,
        n_tensors,
        n_kv,
    } = read_header(&mut c)?;

    // Both counts are now bounded by the file length, so these allocations are justified.
    let mut entries = Vec::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let type_id = c.u32("metadata value type")?;
        let value = read_value(&mut c, key, type_id)?;
        entries.push((key.to_owned(), value));
    }
    let metadata = Metadata::from_entries(entries)?;

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => {
            let a = v.as_integer().ok_or_else(|| GgufError::WrongType {
                key: "general.alignment".to_owned(),
                expected: "u32",
                found: v.type_name(),
            })?;
            match u64::try_from(a) {
                Ok(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a,
                _ => return Err(GgufError::BadAlignment(a)),
            }
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        tensors.push(read_tensor_info(&mut c)?);
    }
    // Indices sorted by name: the lookup table, and adjacent equal names are duplicates.
    let mut tensor_index: Vec<u32> = (0..tensors.len() as u32).collect();
    tensor_index.sort_unstable_by(|&a, &b| tensors[a as usize].name.cmp(&tensors[b as usize].name));
    if let Some(w) = tensor_index
        .windows(2)
        .find(|w| tensors[w[0] as usize].name == tensors[w[1] as usize].name)
    {
        return Err(GgufError::DuplicateTensor {
            name: tensors[w[0] as usize].name.clone(),
        });
    }

    let file_size = buf.len() as u64;
    // The data section starts at the next multiple of the alignment. A file without tensors
    // may end before it (nothing is read from it), so only tensors are checked against the end.
    let data_offset = (c.pos as u64)
        .checked_next_multiple_of(alignment)
        .ok_or(GgufError::BadAlignment(alignment.into()))?;
    for t in &mut tensors {
        let relative = t.offset;
        if relative % alignment != 0 {
            return Err(GgufError::OffsetNotAligned {
                name: t.name.clone(),
                offset: relative,
                alignment,
            });
        }
        let out_of_bounds = || GgufError::TensorOutOfBounds {
            name: t.name.clone(),
            offset: relative,
            size: t.size,
            file_size,
        };
        let start = data_offset
            .checked_add(relative)
            .ok_or_else(out_of_bounds)?;
        let end = start.checked_add(t.size).ok_or_else(out_of_bounds)?;
        if end > file_size {
            return Err(out_of_bounds());
        }
        t.offset = start;
    }

    // Tensors may be stored in any order, but their byte ranges must not overlap.
    let mut by_offset: Vec<usize> = (0..tensors.len()).collect();
    by_offset.sort_unstable_by_key(|&i| tensors[i].offset);
    for w in by_offset.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        // Both ends were checked against the file size above, so this cannot overflow.
        if a.offset + a.size > b.offset {
            return Err(GgufError::TensorOverlap {
                first: a.name.clone(),
                second: b.name.clone(),
            });
        }
    }

    Ok(Parsed {
        version,
        metadata,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}

/// A validated tensor info borrowing its name from the file.
struct RawTensorInfo<'a> {
    name: &'a str,
    dims: [u64; MAX_DIMS],
    n_dims: usize,
    ty: GgmlType,
    offset: u64,
    size: u64,
}

fn read_raw_tensor_info<'a>(c: &mut Cursor<'a>) -> Result<RawTensorInfo<'a>, GgufError> {
    let name = c.string("tensor name")?;
    if name.len() > MAX_TENSOR_NAME_LEN {
        return Err(GgufError::TensorNameTooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    let n_dims = c.u32("tensor dimension count")?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            name: name.to_owned(),
            n_dims,
        });
    }
    let n_dims = n_dims as usize;
    let mut dims = [0u64; MAX_DIMS];
    for d in &mut dims[..n_dims] {
        *d = c.u64("tensor dimension")?;
    }
    let type_id = c.u32("tensor type")?;
    let offset = c.u64("tensor offset")?;
    let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
        name: name.to_owned(),
        id: type_id,
    })?;
    let size = tensor_byte_size(name, ty, &dims[..n_dims])?;
    Ok(RawTensorInfo {
        name,
        dims,
        n_dims,
        ty,
        offset,
        size,
    })
}

fn read_tensor_info(c: &mut Cursor<'_>) -> Result<TensorInfo, GgufError> {
    let raw = read_raw_tensor_info(c)?;
    Ok(TensorInfo {
        name: raw.name.to_owned(),
        ty: raw.ty,
        shape: raw.dims[..raw.n_dims].to_vec(),
        offset: raw.offset,
        size: raw.size,
        segment: 0,
    })
}

/// Validates a shape (1 to 4 dims, each in 1..=i64::MAX, element count fits in i64, row length
/// a multiple of the block size) and returns the tensor's size in bytes.
pub(crate) fn tensor_byte_size(name: &str, ty: GgmlType, shape: &[u64]) -> Result<u64, GgufError> {
    if shape.is_empty() || shape.len() > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            name: name.to_owned(),
            n_dims: shape.len() as u32,
        });
    }
    for (index, &value) in shape.iter().enumerate() {
        if value == 0 || value > i64::MAX as u64 {
            return Err(GgufError::BadDimension {
                name: name.to_owned(),
                index,
                value,
            });
        }
    }
    let overflow = || GgufError::ShapeOverflow {
        name: name.to_owned(),
        shape: shape.to_vec(),
    };
    // ggml stores element counts and byte sizes as int64_t / size_t: keep both within i64.
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(overflow)?;
    let block_size = ty.block_size() as u64;
    if !shape[0].is_multiple_of(block_size) {
        return Err(GgufError::BlockMisaligned {
            name: name.to_owned(),
            ty,
            row_len: shape[0],
            block_size,
        });
    }
    let row_bytes = ty.row_bytes(shape[0]).ok_or_else(overflow)?;
    shape[1..]
        .iter()
        .try_fold(row_bytes, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(overflow)
}

fn value_type(key: &str, type_id: u32) -> Result<ValueType, GgufError> {
    ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_owned(),
        type_id,
    })
}

/// Checks one value and moves past it without building it.
fn skip_value(c: &mut Cursor<'_>, key: &str, type_id: u32) -> Result<(), GgufError> {
    match value_type(key, type_id)? {
        ValueType::Bool => {
            read_bool(c, key)?;
        }
        ValueType::String => {
            c.string("metadata string")?;
        }
        ValueType::Array => {
            let (ty, count) = read_array_header(c, key)?;
            match ty {
                ValueType::Bool => {
                    for _ in 0..count {
                        read_bool(c, key)?;
                    }
                }
                ValueType::String => {
                    for _ in 0..count {
                        c.string("array string")?;
                    }
                }
                // Fixed-size elements: the header check proved count × size fits.
                fixed => {
                    c.take(count * fixed.min_size(), "array data")?;
                }
            }
        }
        fixed => {
            c.take(fixed.min_size(), "metadata value")?;
        }
    }
    Ok(())
}

/// An array's element type and count, with the count checked against the bytes left.
fn read_array_header(c: &mut Cursor<'_>, key: &str) -> Result<(ValueType, u64), GgufError> {
    let ty = value_type(key, c.u32("array element type")?)?;
    if ty == ValueType::Array {
        return Err(GgufError::NestedArray {
            key: key.to_owned(),
        });
    }
    let count = c.u64("array length")?;
    let available = c.remaining();
    let fits = count
        .checked_mul(ty.min_size())
        .is_some_and(|b| b <= available);
    if !fits {
        return Err(GgufError::ArrayTooLong {
            key: key.to_owned(),
            count,
            available,
        });
    }
    Ok((ty, count))
}

fn read_value(c: &mut Cursor<'_>, key: &str, type_id: u32) -> Result<Value, GgufError> {
    let ty = value_type(key, type_id)?;
    Ok(match ty {
        ValueType::U8 => Value::U8(c.array::<1>("metadata value").map(u8::from_le_bytes)?),
        ValueType::I8 => Value::I8(c.array::<1>("metadata value").map(i8::from_le_bytes)?),
        ValueType::U16 => Value::U16(c.array("metadata value").map(u16::from_le_bytes)?),
        ValueType::I16 => Value::I16(c.array("metadata value").map(i16::from_le_bytes)?),
        ValueType::U32 => Value::U32(c.array("metadata value").map(u32::from_le_bytes)?),
        ValueType::I32 => Value::I32(c.array("metadata value").map(i32::from_le_bytes)?),
        ValueType::F32 => Value::F32(c.array("metadata value").map(f32::from_le_bytes)?),
        ValueType::U64 => Value::U64(c.array("metadata value").map(u64::from_le_bytes)?),
        ValueType::I64 => Value::I64(c.array("metadata value").map(i64::from_le_bytes)?),
        ValueType::F64 => Value::F64(c.array("metadata value").map(f64::from_le_bytes)?),
        ValueType::Bool => Value::Bool(read_bool(c, key)?),
        ValueType::String => Value::String(c.string("metadata string")?.to_owned()),
        ValueType::Array => Value::Array(read_array(c, key)?),
    })
}

fn read_bool(c: &mut Cursor<'_>, key: &str) -> Result<bool, GgufError> {
    match c.take(1, "metadata value")?[0] {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(GgufError::InvalidBool {
            key: key.to_owned(),
            byte,
        }),
    }
}

fn read_array(c: &mut Cursor<'_>, key: &str) -> Result<Array, GgufError> {
    let (ty, count) = read_array_header(c, key)?;
    // `count` elements fit in the bytes left, so it is a justified capacity.
    let n = count as usize;
    fn fixed<const N: usize, T>(
        c: &mut Cursor<'_>,
        n: usize,
        f: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, GgufError> {
        let bytes = c.take((n * N) as u64, "array data")?;
        Ok(bytes
            .chunks_exact(N)
            .map(|ch| {
                let mut a = [0u8; N];
                a.copy_from_slice(ch);
                f(a)
            })
            .collect())
    }
    Ok(match ty {
        ValueType::U8 => Array::U8(c.take(count, "array data")?.to_vec()),
        ValueType::I8 => Array::I8(fixed(c, n, i8::from_le_bytes)?),
        ValueType::U16 => Array::U16(fixed(c, n, u16::from_le_bytes)?),
        ValueType::I16 => Array::I16(fixed(c, n, i16::from_le_bytes)?),
        ValueType::U32 => Array::U32(fixed(c, n, u32::from_le_bytes)?),
        ValueType::I32 => Array::I32(fixed(c, n, i32::from_le_bytes)?),
        ValueType::F32 => Array::F32(fixed(c, n, f32::from_le_bytes)?),
        ValueType::U64 => Array::U64(fixed(c, n, u64::from_le_bytes)?),
        ValueType::I64 => Array::I64(fixed(c, n, i64::from_le_bytes)?),
        ValueType::F64 => Array::F64(fixed(c, n, f64::from_le_bytes)?),
        ValueType::Bool => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_bool(c, key)?);
            }
            Array::Bool(v)
        }
        ValueType::String => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(c.string("array string")?.to_owned());
            }
            Array::String(v)
        }
        ValueType::Array => {
            return Err(GgufError::NestedArray {
                key: key.to_owned(),
            })
        }
    })
}
