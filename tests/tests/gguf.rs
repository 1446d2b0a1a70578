//! The GGUF reader and writer against malformed input, the Python `gguf` oracle and themselves.
//!
//! - one handcrafted file per malformed-input class of `shared/design/PITFALLS.md`, each
//!   rejected with its specific `GgufError` variant;
//! - property tests: arbitrary bytes, every truncation of phi2-tiny's header, sampled
//!   truncations of the real models' headers, random bit flips → `Ok` or `Err`, never a panic,
//!   and never more memory than a small multiple of the input (a counting global allocator);
//! - writer → reader round trips for every value type and every tensor type;
//! - every fixture and real model parsed and compared with `tests/data/gguf_oracle.json`
//!   (made by `tests/scripts/gguf_oracle.py` with the Python `gguf` package).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use serde_json::Value as Json;
use tinyrt::gguf::{
    Array, GgmlType, GgufError, GgufFile, GgufWriter, Metadata, Value, MAX_TENSOR_NAME_LEN,
};
use tinyrt_tests::{fixture, fixtures, gguf_oracle, model, REAL_MODELS};

// ---------------------------------------------------------------------------------------------
// Allocation accounting: bytes live per thread, and the peak since the last reset.

struct CountingAllocator;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn track(delta: i64) {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to the system allocator with the caller's arguments, which
// satisfy GlobalAlloc's contract; the bookkeeping touches only const-initialised thread-locals
// (no allocation, no re-entrancy).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract (see the impl).
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as i64));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the peak number of bytes it had allocated at once
/// (on this thread, beyond what was live before).
fn peak_allocation<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get) - base;
    (r, peak.max(0) as u64)
}

/// Allocation allowed while parsing `len` bytes: the parsed form of metadata and tensor
/// tables takes a few times their encoded size (a `String` header per 8-byte length, ...).
fn allocation_budget(len: usize) -> u64 {
    8 * len as u64 + 16 * 1024
}

/// Parses `bytes` (no copy), checking the allocation bound; never panics by contract.
fn parse_bounded(bytes: &[u8]) -> Result<(), GgufError> {
    let (r, peak) = peak_allocation(|| GgufFile::validate(bytes));
    assert!(
        peak <= allocation_budget(bytes.len()),
        "parsing {} bytes allocated {peak} bytes at peak ({r:?})",
        bytes.len()
    );
    r
}

// ---------------------------------------------------------------------------------------------
// A raw GGUF byte builder for handcrafted (possibly invalid) files.

#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    /// A metadata pair with a u32 value.
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    /// A tensor info: name, dims, ggml type id, offset relative to the data section.
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(&mut self, n: usize) -> &mut Self {
        let len = self.0.len().next_multiple_of(32);
        self.0.resize(len + n, 0xAB);
        self
    }
    fn parse(&self) -> Result<(), GgufError> {
        parse_bounded(&self.0)
    }
}

/// A file with one metadata pair "k" of the given value type id and raw value bytes.
fn one_kv(type_id: u32, value: &[u8]) -> Raw {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(type_id).bytes(value);
    r
}

/// A file with no metadata and the given tensor infos, followed by `data` bytes.
fn tensors(infos: &[(&str, &[u64], u32, u64)], data: usize) -> Raw {
    let mut r = Raw::header(3, infos.len() as u64, 0);
    for &(name, dims, ty, offset) in infos {
        r.tensor(name, dims, ty, offset);
    }
    r.data(data);
    r
}

macro_rules! assert_err {
    ($r:expr, $pat:pat $(if $guard:expr)?) => {
        match $r {
            Err($pat) $(if $guard)? => {}
            other => panic!("expected {}, got {:?}", stringify!($pat), other),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Malformed input, one class at a time.

#[test]
fn header_classes() {
    assert_err!(
        parse_bounded(b""),
        GgufError::Truncated { what: "magic", .. }
    );
    assert_err!(
        parse_bounded(b"GG"),
        GgufError::Truncated { what: "magic", .. }
    );
    assert_err!(parse_bounded(b"GGML\x03\0\0\0"), GgufError::BadMagic { .. });
    assert_err!(parse_bounded(b"\x7fELF"), GgufError::BadMagic { .. });
    assert_err!(
        Raw::header(1, 0, 0).parse(),
        GgufError::UnsupportedVersion(1)
    );
    assert_err!(
        Raw::header(4, 0, 0).parse(),
        GgufError::UnsupportedVersion(4)
    );
    assert_err!(
        Raw::header(3u32.swap_bytes(), 0, 0).parse(),
        GgufError::BigEndian
    );
    assert_err!(
        parse_bounded(b"GGUF\x03\0\0\0\0\0"),
        GgufError::Truncated {
            what: "tensor count",
            ..
        }
    );
    let mut r = Raw::header(3, 0, 0);
    r.0.truncate(20);
    assert_err!(
        r.parse(),
        GgufError::Truncated {
            what: "metadata count",
            ..
        }
    );
    assert_err!(
        Raw::header(3, u64::MAX, 0).parse(),
        GgufError::TooManyTensors { .. }
    );
    assert_err!(
        Raw::header(3, 1 << 40, 0).parse(),
        GgufError::TooManyTensors { .. }
    );
    assert_err!(
        Raw::header(3, 0, u64::MAX).parse(),
        GgufError::TooManyMetadata { .. }
    );
    // Counts that each fit but together do not.
    let mut r = Raw::header(3, 1, 2);
    r.bytes(&[0; 40]);
    assert_err!(r.parse(), GgufError::TooManyMetadata { .. });
    // Both versions 2 and 3 are read; a file of nothing but a header is valid.
    assert!(Raw::header(2, 0, 0).parse().is_ok());
    assert!(Raw::header(3, 0, 0).parse().is_ok());
}

#[test]
fn metadata_classes() {
    // Key length beyond the bytes left, including lengths that wrap when converted.
    for len in [u64::MAX, 1 << 63, u32::MAX as u64 + 1, 100] {
        let mut r = Raw::header(3, 0, 1);
        r.u64(len).bytes(b"abcdefghijklmn");
        assert_err!(
            r.parse(),
            GgufError::StringTooLong {
                what: "metadata key",
                ..
            }
        );
    }
    // String value too long.
    let mut v = u64::MAX.to_le_bytes().to_vec();
    v.extend_from_slice(b"xyz");
    assert_err!(
        one_kv(8, &v).parse(),
        GgufError::StringTooLong {
            what: "metadata string",
            ..
        }
    );
    // Invalid UTF-8 in a key and in a value.
    let mut r = Raw::header(3, 0, 1);
    r.u64(2).bytes(&[0xC3, 0x28]).u32(4).u32(1);
    assert_err!(
        r.parse(),
        GgufError::InvalidUtf8 {
            what: "metadata key",
            ..
        }
    );
    assert_err!(
        one_kv(8, &[1, 0, 0, 0, 0, 0, 0, 0, 0xFF]).parse(),
        GgufError::InvalidUtf8 { .. }
    );
    // Unknown value types, as a value and as an array element.
    for t in [13u32, 100, u32::MAX] {
        assert_err!(
            one_kv(t, &[0; 16]).parse(),
            GgufError::UnknownValueType { type_id, .. } if type_id == t
        );
        let mut v = t.to_le_bytes().to_vec();
        v.extend_from_slice(&1u64.to_le_bytes());
        v.extend_from_slice(&[0; 8]);
        assert_err!(one_kv(9, &v).parse(), GgufError::UnknownValueType { .. });
    }
    // Arrays of arrays.
    let mut v = 9u32.to_le_bytes().to_vec();
    v.extend_from_slice(&1u64.to_le_bytes());
    v.extend_from_slice(&4u32.to_le_bytes());
    v.extend_from_slice(&1u64.to_le_bytes());
    v.extend_from_slice(&7u32.to_le_bytes());
    assert_err!(one_kv(9, &v).parse(), GgufError::NestedArray { .. });
    // Array count × element size beyond the file, or overflowing.
    for (elem, count) in [
        (4u32, u64::MAX),
        (4, u64::MAX / 4 + 1),
        (12, 1 << 61),
        (8, 3),
        (0, 1000),
        (7, 17),
    ] {
        let mut v = elem.to_le_bytes().to_vec();
        v.extend_from_slice(&count.to_le_bytes());
        v.extend_from_slice(&[0; 16]);
        assert_err!(
            one_kv(9, &v).parse(),
            GgufError::ArrayTooLong { .. } | GgufError::StringTooLong { .. }
        );
    }
    // Truncated scalar value.
    assert_err!(one_kv(10, &[1, 2, 3]).parse(), GgufError::Truncated { .. });
    // A bool that is neither 0 nor 1.
    assert_err!(
        one_kv(7, &[2]).parse(),
        GgufError::InvalidBool { byte: 2, .. }
    );
    // Duplicate keys.
    let mut r = Raw::header(3, 0, 3);
    r.kv_u32("a", 1).kv_u32("b", 2).kv_u32("a", 3);
    assert_err!(r.parse(), GgufError::DuplicateKey { key } if key == "a");
}

#[test]
fn alignment_classes() {
    let with_alignment = |v: u32| {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", v);
        r
    };
    for bad in [0u32, 3, 48, 1 << 21, 1 << 31, u32::MAX] {
        assert_err!(with_alignment(bad).parse(), GgufError::BadAlignment(_));
    }
    for good in [1u32, 8, 32, 64, 4096] {
        let f = GgufFile::from_bytes(with_alignment(good).0).unwrap();
        assert_eq!(f.alignment(), u64::from(good));
    }
    // The wrong type.
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(8).str("32");
    assert_err!(r.parse(), GgufError::WrongType { .. });
    // A negative alignment (as i32).
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(5).u32((-32i32) as u32);
    assert_err!(r.parse(), GgufError::BadAlignment(-32));
}

#[test]
fn tensor_table_classes() {
    const F32: u32 = 0;
    const Q4_0: u32 = 2;
    // The valid base case.
    assert!(tensors(&[("a", &[4], F32, 0)], 32).parse().is_ok());
    // Duplicate names.
    assert_err!(
        tensors(&[("a", &[4], F32, 0), ("a", &[4], F32, 32)], 64).parse(),
        GgufError::DuplicateTensor { name } if name == "a"
    );
    // Names up to 63 bytes are allowed, 64 is too long.
    let ok = "n".repeat(MAX_TENSOR_NAME_LEN);
    assert!(tensors(&[(&ok, &[4], F32, 0)], 32).parse().is_ok());
    let long = "n".repeat(MAX_TENSOR_NAME_LEN + 1);
    assert_err!(
        tensors(&[(&long, &[4], F32, 0)], 32).parse(),
        GgufError::TensorNameTooLong { len: 64, .. }
    );
    // Dimension counts 0 and 5 (and a huge one that must not drive an allocation).
    assert_err!(
        tensors(&[("a", &[], F32, 0)], 32).parse(),
        GgufError::BadDimCount { n_dims: 0, .. }
    );
    assert_err!(
        tensors(&[("a", &[1, 1, 1, 1, 1], F32, 0)], 32).parse(),
        GgufError::BadDimCount { n_dims: 5, .. }
    );
    let mut r = Raw::header(3, 1, 0);
    r.str("a").u32(u32::MAX).bytes(&[0; 64]);
    assert_err!(r.parse(), GgufError::BadDimCount { .. });
    // A dimension of 0, or negative as i64.
    assert_err!(
        tensors(&[("a", &[4, 0], F32, 0)], 32).parse(),
        GgufError::BadDimension {
            index: 1,
            value: 0,
            ..
        }
    );
    assert_err!(
        tensors(&[("a", &[1 << 63], F32, 0)], 32).parse(),
        GgufError::BadDimension { .. }
    );
    assert_err!(
        tensors(&[("a", &[u64::MAX], F32, 0)], 32).parse(),
        GgufError::BadDimension { .. }
    );
    // Element count overflow, and byte-size overflow with a representable element count.
    assert_err!(
        tensors(&[("a", &[1 << 32, 1 << 32], F32, 0)], 32).parse(),
        GgufError::ShapeOverflow { .. }
    );
    assert_err!(
        tensors(&[("a", &[1 << 31, 1 << 31, 4], F32, 0)], 32).parse(),
        GgufError::ShapeOverflow { .. }
    );
    assert_err!(
        tensors(&[("a", &[(1 << 62) + 32], F32, 0)], 32).parse(),
        GgufError::ShapeOverflow { .. }
    );
    // Row length not a multiple of the block size.
    assert_err!(
        tensors(&[("a", &[16, 2], Q4_0, 0)], 32).parse(),
        GgufError::BlockMisaligned {
            row_len: 16,
            block_size: 32,
            ..
        }
    );
    // Unknown and removed type ids.
    for id in [4u32, 5, 31, 40, u32::MAX] {
        assert_err!(
            tensors(&[("a", &[32], id, 0)], 64).parse(),
            GgufError::UnknownTensorType { id: got, .. } if got == id
        );
    }
    // Offset not aligned.
    assert_err!(
        tensors(&[("a", &[4], F32, 4)], 64).parse(),
        GgufError::OffsetNotAligned {
            offset: 4,
            alignment: 32,
            ..
        }
    );
    // Overlapping tensors (in either table order).
    assert_err!(
        tensors(&[("a", &[16], F32, 0), ("b", &[4], F32, 32)], 96).parse(),
        GgufError::TensorOverlap { .. }
    );
    assert_err!(
        tensors(&[("b", &[4], F32, 32), ("a", &[16], F32, 0)], 96).parse(),
        GgufError::TensorOverlap { .. }
    );
    // Tensors stored out of table order but not overlapping are fine.
    assert!(tensors(&[("b", &[4], F32, 32), ("a", &[4], F32, 0)], 64)
        .parse()
        .is_ok());
    // Past the end of the file, and offsets that overflow when added to the data start.
    assert_err!(
        tensors(&[("a", &[16], F32, 0)], 63).parse(),
        GgufError::TensorOutOfBounds { .. }
    );
    assert_err!(
        tensors(&[("a", &[4], F32, 1 << 40)], 32).parse(),
        GgufError::TensorOutOfBounds { .. }
    );
    assert_err!(
        tensors(&[("a", &[4], F32, u64::MAX - 31)], 32).parse(),
        GgufError::TensorOutOfBounds { .. }
    );
    // A tensor whose data would start before the padding ends is impossible by construction
    // (offsets are relative to the aligned data section); one ending exactly at EOF is fine.
    assert!(tensors(&[("a", &[8], F32, 0)], 32).parse().is_ok());
}

#[test]
fn typed_accessors_name_the_key_and_the_types() {
    let mut md = Metadata::new();
    md.set("u8", Value::U8(200));
    md.set("i64", Value::I64(-5));
    md.set("big", Value::U64(u64::MAX));
    md.set("f64", Value::F64(0.25));
    md.set("s", Value::String("x".into()));
    md.set("ids", Value::Array(Array::String(vec!["1".into()])));
    md.set("scores", Value::Array(Array::F32(vec![1.0, 2.0])));
    md.set("types", Value::Array(Array::I32(vec![1, 3])));
    md.set("flag", Value::Bool(true));
    assert_eq!(md.get_u32("u8").unwrap(), 200);
    assert_eq!(md.get_i32("u8").unwrap(), 200);
    assert_eq!(md.get_i32("i64").unwrap(), -5);
    assert_eq!(md.get_u64("big").unwrap(), u64::MAX);
    assert_err!(md.get_u64("i64"), GgufError::OutOfRange { .. });
    assert_err!(md.get_u32("big"), GgufError::OutOfRange { .. });
    assert_eq!(md.get_f32("f64").unwrap(), 0.25);
    assert!(md.get_bool("flag").unwrap());
    assert_eq!(md.get_f32_array("scores").unwrap(), [1.0, 2.0]);
    assert_eq!(md.get_i32_array("types").unwrap(), [1, 3]);
    // Token ids stored as strings: the error names the key and both types.
    let e = md.get_u32("s").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key 's' has type string, expected u32"
    );
    let e = md.get_i32_array("ids").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key 'ids' has type array of string, expected array of i32"
    );
    assert_err!(md.get_f32("s"), GgufError::WrongType { .. });
    assert_err!(md.get_bool("u8"), GgufError::WrongType { .. });
    assert_err!(md.get_str_array("scores"), GgufError::WrongType { .. });
    assert_err!(md.get_str("absent"), GgufError::MissingKey { key } if key == "absent");
    assert_eq!(md.opt_u32("absent").unwrap(), None);
    assert_eq!(md.opt_str_array("absent").unwrap(), None);
    assert_eq!(md.opt_u32("u8").unwrap(), Some(200));
    assert_err!(md.opt_f32_array("ids"), GgufError::WrongType { .. });
    assert_err!(md.opt_bool("s"), GgufError::WrongType { .. });
    let keys: Vec<&str> = md.iter().map(|(k, _)| k).collect();
    assert_eq!(keys[..3], ["u8", "i64", "big"]);
}

#[test]
fn errors_display_as_one_line() {
    let cases = [
        parse_bounded(b"GGML").unwrap_err(),
        Raw::header(3, u64::MAX, 0).parse().unwrap_err(),
        tensors(&[("a", &[16, 2], 2, 0)], 32).parse().unwrap_err(),
        one_kv(9, &[9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
            .parse()
            .unwrap_err(),
    ];
    for e in cases {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.contains('\n'), "{s:?}");
    }
    assert_eq!(
        GgufError::UnsupportedType(GgmlType::IQ2_XXS).to_string(),
        "type IQ2_XXS is not supported yet"
    );
}

// ---------------------------------------------------------------------------------------------
// Round trips.

fn every_value_type() -> Vec<(String, Value)> {
    vec![
        ("u8".into(), Value::U8(255)),
        ("i8".into(), Value::I8(-128)),
        ("u16".into(), Value::U16(65535)),
        ("i16".into(), Value::I16(-32768)),
        ("u32".into(), Value::U32(u32::MAX)),
        ("i32".into(), Value::I32(i32::MIN)),
        ("f32".into(), Value::F32(-1.5e-7)),
        ("bool".into(), Value::Bool(true)),
        ("string".into(), Value::String("héllo ✓ 🦀".into())),
        ("empty".into(), Value::String(String::new())),
        ("u64".into(), Value::U64(u64::MAX)),
        ("i64".into(), Value::I64(i64::MIN)),
        ("f64".into(), Value::F64(std::f64::consts::PI)),
        ("a.u8".into(), Value::Array(Array::U8(vec![0, 1, 255]))),
        ("a.i8".into(), Value::Array(Array::I8(vec![-1, 2]))),
        ("a.u16".into(), Value::Array(Array::U16(vec![7]))),
        ("a.i16".into(), Value::Array(Array::I16(vec![-7, 7]))),
        ("a.u32".into(), Value::Array(Array::U32(vec![1, 2, 3]))),
        ("a.i32".into(), Value::Array(Array::I32(vec![-1, 0, 1]))),
        (
            "a.f32".into(),
            Value::Array(Array::F32(vec![0.5, -0.0, 1e30])),
        ),
        (
            "a.bool".into(),
            Value::Array(Array::Bool(vec![true, false])),
        ),
        (
            "a.string".into(),
            Value::Array(Array::String(vec!["".into(), "ab".into(), "Ġthe".into()])),
        ),
        ("a.u64".into(), Value::Array(Array::U64(vec![u64::MAX]))),
        ("a.i64".into(), Value::Array(Array::I64(vec![i64::MIN, 3]))),
        ("a.f64".into(), Value::Array(Array::F64(vec![1e-300]))),
        ("a.empty".into(), Value::Array(Array::U32(vec![]))),
    ]
}

#[test]
fn every_value_type_and_tensor_type_round_trips() {
    let mut w = GgufWriter::new();
    let values = every_value_type();
    for (k, v) in &values {
        w.set(k, v.clone());
    }
    let mut expected_tensors = Vec::new();
    for (i, ty) in GgmlType::ALL.iter().copied().enumerate() {
        let shape = [ty.block_size() as u64 * 2, 3];
        let size = ty.row_bytes(shape[0]).unwrap() as usize * 3;
        let data: Vec<u8> = (0..size).map(|j| (j * 31 + i * 7) as u8).collect();
        let name = format!("t.{}", ty.name());
        w.add_tensor(&name, ty, &shape, data.as_slice()).unwrap();
        expected_tensors.push((name, ty, shape, data));
    }
    let bytes = w.to_bytes().unwrap();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.version(), 3);
    let got: Vec<(String, Value)> = f
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
    assert_eq!(got, values);
    assert_eq!(f.tensor_infos().len(), expected_tensors.len());
    for (info, (name, ty, shape, data)) in f.tensor_infos().iter().zip(&expected_tensors) {
        assert_eq!(
            (&info.name, info.ty, &info.shape[..]),
            (name, *ty, &shape[..])
        );
        assert_eq!(info.offset % 32, 0);
        let t = f.tensor(name).unwrap();
        assert_eq!(t.data, &data[..], "{name}");
        assert_eq!(t.n_rows(), 3);
        assert_eq!(t.row_len(), shape[0]);
    }
    // Reading and writing again gives the same bytes.
    let mut again = GgufWriter::new();
    again.set_all(f.metadata());
    for t in f.tensors() {
        again.add_tensor(t.name, t.ty, t.shape, t.data).unwrap();
    }
    assert!(again.to_bytes().unwrap() == bytes);
    // Version 2 has the same layout as version 3 (only version 1 used 32-bit counts).
    let mut v2 = bytes.clone();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    let f2 = GgufFile::from_bytes(v2).unwrap();
    assert_eq!(f2.version(), 2);
    assert_eq!(f2.metadata(), f.metadata());
    assert_eq!(f2.tensor_infos(), f.tensor_infos());
    // And through a file on disk (mmap).
    let dir = tinyrt_tests::TempDir::new("gguf-roundtrip");
    let path = dir.path().join("all.gguf");
    w.write_to_path(&path).unwrap();
    let mapped = GgufFile::open(&path).unwrap();
    assert!(mapped.bytes() == &bytes[..]);
}

/// Failures are reported with their minimal input; nothing is written next to the sources.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn arb_value() -> impl Strategy<Value = Value> {
    let s = || "\\PC{0,12}";
    let f32s = || prop::num::f32::NORMAL | prop::num::f32::ZERO | prop::num::f32::SUBNORMAL;
    let f64s = || prop::num::f64::NORMAL | prop::num::f64::ZERO;
    let v = || 0..6usize;
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        f32s().prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        s().prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        f64s().prop_map(Value::F64),
        prop::collection::vec(any::<u8>(), v()).prop_map(|a| Value::Array(Array::U8(a))),
        prop::collection::vec(any::<i8>(), v()).prop_map(|a| Value::Array(Array::I8(a))),
        prop::collection::vec(any::<u16>(), v()).prop_map(|a| Value::Array(Array::U16(a))),
        prop::collection::vec(any::<i16>(), v()).prop_map(|a| Value::Array(Array::I16(a))),
        prop::collection::vec(any::<u32>(), v()).prop_map(|a| Value::Array(Array::U32(a))),
        prop::collection::vec(any::<i32>(), v()).prop_map(|a| Value::Array(Array::I32(a))),
        prop::collection::vec(f32s(), v()).prop_map(|a| Value::Array(Array::F32(a))),
        prop::collection::vec(any::<bool>(), v()).prop_map(|a| Value::Array(Array::Bool(a))),
        prop::collection::vec(s(), v()).prop_map(|a| Value::Array(Array::String(a))),
        prop::collection::vec(any::<u64>(), v()).prop_map(|a| Value::Array(Array::U64(a))),
        prop::collection::vec(any::<i64>(), v()).prop_map(|a| Value::Array(Array::I64(a))),
        prop::collection::vec(f64s(), v()).prop_map(|a| Value::Array(Array::F64(a))),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_metadata_round_trips(
        pairs in prop::collection::vec(("[a-z.]{1,12}", arb_value()), 0..12),
        alignment_log2 in 0u32..8,
    ) {
        let mut w = GgufWriter::new();
        let mut expected = Metadata::new();
        for (k, v) in &pairs {
            if k == "general.alignment" {
                continue;
            }
            w.set(k, v.clone());
            expected.set(k, v.clone());
        }
        w.alignment(1 << alignment_log2);
        expected.set("general.alignment", Value::U32(1 << alignment_log2));
        w.add_tensor("w", GgmlType::F16, &[3], vec![1, 2, 3, 4, 5, 6]).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        prop_assert_eq!(f.metadata(), &expected);
        prop_assert_eq!(f.tensor("w").unwrap().data, &[1u8, 2, 3, 4, 5, 6][..]);
        prop_assert_eq!(f.tensor_infos()[0].offset % (1 << alignment_log2), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Never panic, never over-allocate.

/// A few-KB valid file with every value type and several tensors, to mutate.
fn small_valid_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in every_value_type() {
        w.set(&k, v);
    }
    w.add_tensor("a", GgmlType::F32, &[8, 2], vec![0u8; 64])
        .unwrap();
    w.add_tensor("b", GgmlType::Q4_0, &[64], vec![0u8; 36])
        .unwrap();
    w.add_tensor("c", GgmlType::Q6_K, &[256, 1, 1, 2], vec![0u8; 420])
        .unwrap();
    w.to_bytes().unwrap()
}

/// When parsing succeeds, every tensor view is usable.
fn exercise(bytes: &[u8]) {
    if let Ok(f) = GgufFile::from_slice(bytes) {
        let total: u64 = f.tensors().map(|t| t.data.len() as u64).sum();
        assert!(total <= f.file_size());
        for (_, v) in f.metadata().iter() {
            let _ = v.type_name();
        }
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_bounded(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_header_never_panic(
        version in 2u32..4,
        n_tensors in prop_oneof![0u64..4, any::<u64>()],
        n_kv in prop_oneof![0u64..8, any::<u64>()],
        rest in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let mut r = Raw::header(version, n_tensors, n_kv);
        r.bytes(&rest);
        let _ = r.parse();
        exercise(&r.0);
    }

    #[test]
    fn bit_flips_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8)) {
        let mut bytes = small_valid_file();
        for (at, bit) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        let _ = parse_bounded(&bytes);
        exercise(&bytes);
    }

    #[test]
    fn byte_overwrites_in_the_header_never_panic(
        writes in prop::collection::vec((0usize..400, any::<u64>()), 1..4),
    ) {
        // Overwrite 8-byte windows with arbitrary values: lengths and counts become huge.
        let mut bytes = small_valid_file();
        for (at, v) in writes {
            let end = (at + 8).min(bytes.len());
            bytes[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
        }
        let _ = parse_bounded(&bytes);
        exercise(&bytes);
    }
}

#[test]
fn every_truncation_of_a_small_file_is_an_error() {
    let bytes = small_valid_file();
    let f = GgufFile::from_slice(&bytes).unwrap();
    // Only the padding after the last tensor's data may be cut off.
    let data_end = f
        .tensor_infos()
        .iter()
        .map(|t| t.offset + t.size)
        .max()
        .unwrap() as usize;
    for n in 0..=bytes.len() {
        let r = parse_bounded(&bytes[..n]);
        assert_eq!(r.is_ok(), n >= data_end, "prefix of {n} bytes: {r:?}");
    }
}

#[test]
fn every_truncation_of_phi2_tiny_header_is_an_error() {
    let bytes = std::fs::read(fixture("phi2-tiny-f32.gguf")).unwrap();
    let f = GgufFile::from_slice(&bytes).unwrap();
    let header = f.data_offset() as usize;
    // Every prefix through the end of the header (≈62 KB), then a sample of the data section.
    let started = std::time::Instant::now();
    for n in 0..=header {
        assert!(
            parse_bounded(&bytes[..n]).is_err(),
            "prefix of {n} bytes parsed"
        );
    }
    for n in (header..bytes.len()).step_by(9973) {
        assert_err!(
            parse_bounded(&bytes[..n]),
            GgufError::TensorOutOfBounds { .. }
        );
    }
    assert_err!(
        parse_bounded(&bytes[..bytes.len() - 1]),
        GgufError::TensorOutOfBounds { .. }
    );
    eprintln!(
        "parsed {} prefixes of phi2-tiny in {:.2?}",
        header + 1,
        started.elapsed()
    );
}

#[test]
fn sampled_truncations_of_real_model_headers_are_errors() {
    for name in REAL_MODELS {
        let Some(path) = model(name) else { continue };
        let f = GgufFile::open(&path).unwrap();
        let bytes = f.bytes();
        let header = f.data_offset() as usize;
        // Deterministic sample: the first 256 lengths, then 40 spread over the header.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut lengths: Vec<usize> = (0..256).collect();
        lengths.extend((0..40).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % header as u64) as usize
        }));
        lengths.push(header - 1);
        for n in lengths {
            assert!(
                parse_bounded(&bytes[..n]).is_err(),
                "{name}: prefix {n} parsed"
            );
        }
        assert!(parse_bounded(bytes).is_ok());
    }
}

// ---------------------------------------------------------------------------------------------
// Real files against the Python gguf oracle.

fn fnv1a64_strings(strings: &[String]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for s in strings {
        for &b in s.as_bytes().iter().chain(&[0xFF]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn scalar_json(v: &Value) -> (&'static str, Json) {
    match v {
        Value::U8(x) => ("u8", (*x).into()),
        Value::I8(x) => ("i8", (*x).into()),
        Value::U16(x) => ("u16", (*x).into()),
        Value::I16(x) => ("i16", (*x).into()),
        Value::U32(x) => ("u32", (*x).into()),
        Value::I32(x) => ("i32", (*x).into()),
        Value::U64(x) => ("u64", (*x).into()),
        Value::I64(x) => ("i64", (*x).into()),
        // Python's float(np.float32(x)) is exact, like `as f64`.
        Value::F32(x) => ("f32", f64::from(*x).into()),
        Value::F64(x) => ("f64", (*x).into()),
        Value::Bool(x) => ("bool", (*x).into()),
        Value::String(s) => ("string", s.clone().into()),
        Value::Array(_) => ("array", Json::Null),
    }
}

fn array_elements(a: &Array) -> Vec<Value> {
    match a {
        Array::U8(v) => v.iter().map(|&x| Value::U8(x)).collect(),
        Array::I8(v) => v.iter().map(|&x| Value::I8(x)).collect(),
        Array::U16(v) => v.iter().map(|&x| Value::U16(x)).collect(),
        Array::I16(v) => v.iter().map(|&x| Value::I16(x)).collect(),
        Array::U32(v) => v.iter().map(|&x| Value::U32(x)).collect(),
        Array::I32(v) => v.iter().map(|&x| Value::I32(x)).collect(),
        Array::F32(v) => v.iter().map(|&x| Value::F32(x)).collect(),
        Array::Bool(v) => v.iter().map(|&x| Value::Bool(x)).collect(),
        Array::String(v) => v.iter().map(|x| Value::String(x.clone())).collect(),
        Array::U64(v) => v.iter().map(|&x| Value::U64(x)).collect(),
        Array::I64(v) => v.iter().map(|&x| Value::I64(x)).collect(),
        Array::F64(v) => v.iter().map(|&x| Value::F64(x)).collect(),
    }
}

fn check_against_oracle(name: &str, f: &GgufFile, oracle: &Json) {
    assert_eq!(f.version() as u64, oracle["version"], "{name}");
    assert_eq!(f.file_size(), oracle["file_size"], "{name}");
    assert_eq!(f.alignment(), oracle["alignment"], "{name}");
    assert_eq!(f.data_offset(), oracle["data_offset"], "{name}");

    let want = oracle["metadata"].as_object().unwrap();
    let got: Vec<(&str, &Value)> = f.metadata().iter().collect();
    let want_keys: Vec<&str> = oracle["metadata_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let got_keys: Vec<&str> = got.iter().map(|(k, _)| *k).collect();
    assert_eq!(got_keys, want_keys, "{name}: keys in file order");
    for (key, value) in got {
        let w = &want[key];
        match value {
            Value::Array(a) => {
                assert_eq!(w["type"], "array", "{name} {key}");
                assert_eq!(a.len() as u64, w["len"], "{name} {key}");
                let elems = array_elements(a);
                let (elem_type, _) = elems
                    .first()
                    .map(scalar_json)
                    .unwrap_or((a.type_name().trim_start_matches("array of "), Json::Null));
                assert_eq!(elem_type, w["element_type"], "{name} {key}");
                let first: Vec<Json> = elems.iter().take(3).map(|v| scalar_json(v).1).collect();
                assert_eq!(Json::Array(first), w["first"], "{name} {key}");
                let last = elems.last().map_or(Json::Null, |v| scalar_json(v).1);
                assert_eq!(last, w["last"], "{name} {key}");
                if let Array::String(s) = a {
                    assert_eq!(
                        fnv1a64_strings(s).to_string(),
                        w["checksum"],
                        "{name} {key}"
                    );
                } else {
                    // numpy sums pairwise; compare with a relative tolerance.
                    let sum: f64 = elems
                        .iter()
                        .map(|v| scalar_json(v).1.as_f64().unwrap_or(0.0))
                        .sum();
                    let want_sum = w["sum"].as_f64().unwrap();
                    assert!(
                        (sum - want_sum).abs() <= 1e-9 * want_sum.abs().max(1.0),
                        "{name} {key}: sum {sum} vs {want_sum}"
                    );
                }
            }
            v => {
                let (ty, json) = scalar_json(v);
                assert_eq!(ty, w["type"], "{name} {key}");
                assert_eq!(json, w["value"], "{name} {key}");
            }
        }
    }

    let want_tensors = oracle["tensors"].as_array().unwrap();
    assert_eq!(f.tensor_infos().len(), want_tensors.len(), "{name}");
    for (t, w) in f.tensor_infos().iter().zip(want_tensors) {
        assert_eq!(t.name, w["name"].as_str().unwrap(), "{name}");
        assert_eq!(
            t.ty.name(),
            w["type"].as_str().unwrap(),
            "{name} {}",
            t.name
        );
        assert_eq!(Json::from(t.shape.clone()), w["shape"], "{name} {}", t.name);
        assert_eq!(t.offset, w["offset"], "{name} {}", t.name);
        assert_eq!(t.size, w["size"], "{name} {}", t.name);
        let view = f.tensor(&t.name).unwrap();
        assert_eq!(view.data.len() as u64, t.size);
        assert_eq!(view.n_elements(), t.n_elements());
    }
    let params: u64 = f.tensor_infos().iter().map(|t| t.n_elements()).sum();
    assert_eq!(params, oracle["parameter_count"], "{name}");
}

#[test]
fn fixtures_match_the_oracle() {
    let oracle = gguf_oracle();
    let all = fixtures();
    assert!(all.len() >= 16, "fixtures missing: {all:?}");
    for path in all {
        let name = path.file_name().unwrap().to_str().unwrap();
        let f = GgufFile::open(&path).unwrap();
        check_against_oracle(name, &f, &oracle[name]);
    }
}

#[test]
fn real_models_match_the_oracle() {
    let oracle = gguf_oracle();
    for name in REAL_MODELS {
        let Some(path) = model(name) else { continue };
        let (f, peak) = peak_allocation(|| GgufFile::open(&path).unwrap());
        check_against_oracle(name, &f, &oracle[name]);
        // The parsed header costs a small multiple of its encoded size (mmap is not counted).
        assert!(
            peak <= allocation_budget(f.data_offset() as usize),
            "{name}: {peak} bytes for a {}-byte header",
            f.data_offset()
        );
        eprintln!(
            "{name}: header {} bytes, parse allocated {peak} bytes at peak",
            f.data_offset()
        );
    }
}

#[test]
fn real_model_hyperparameters() {
    // Values from tests/data/gguf_oracle.json (Python gguf 0.19.0), read through the typed API.
    if let Some(path) = model(tinyrt_tests::SMOLLM2) {
        let f = GgufFile::open(path).unwrap();
        let md = f.metadata();
        assert_eq!(f.architecture().unwrap(), "llama");
        assert_eq!(md.get_u32("llama.block_count").unwrap(), 30);
        assert_eq!(md.get_u32("llama.attention.head_count").unwrap(), 9);
        assert_eq!(md.get_u32("llama.attention.head_count_kv").unwrap(), 3);
        assert_eq!(md.get_u32("llama.embedding_length").unwrap(), 576);
        assert_eq!(md.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
        assert_eq!(
            md.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
            49152
        );
        assert_eq!(md.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
        assert_eq!(f.tensor_infos().len(), 272);
        let embd = f.tensor("token_embd.weight").unwrap();
        assert_eq!(embd.ty, GgmlType::Q8_0);
        assert_eq!((embd.row_len(), embd.n_rows()), (576, 49152));
    }
    if let Some(path) = model(tinyrt_tests::GEMMA3) {
        let f = GgufFile::open(path).unwrap();
        let md = f.metadata();
        assert_eq!(f.architecture().unwrap(), "gemma3");
        assert_eq!(md.get_u32("gemma3.block_count").unwrap(), 18);
        assert_eq!(md.get_u32("gemma3.attention.key_length").unwrap(), 256);
        assert_eq!(
            md.get_f32_array("tokenizer.ggml.scores").unwrap().len(),
            262144
        );
        assert_eq!(md.opt_u32("gemma3.rope.dimension_count").unwrap(), None);
    }
}

// ---------------------------------------------------------------------------------------------
// llama.cpp reads what the writer writes.

/// Builds a new llama-architecture model with the writer: the tokenizer and hyperparameters of
/// the llama-tiny fixture, fresh deterministic F32 weights (output.weight kept as Q8_0 blocks),
/// alignment 64 and extra keys of unusual types; then runs llama.cpp's `llama-simple` on it.
#[test]
fn llama_cpp_loads_a_model_written_by_the_writer() {
    let Some(llama_simple) = tinyrt_tests::reference_tool("llama-simple") else {
        return;
    };
    let src = GgufFile::open(fixture("llama-tiny-q8_0.gguf")).unwrap();
    let mut w = GgufWriter::new();
    w.set_all(src.metadata())
        .set("general.name", Value::String("tinyrt-writer-test".into()))
        .set("general.file_type", Value::U32(0))
        .set("tinyrt.test.f64", Value::F64(0.5))
        .set("tinyrt.test.u16s", Value::Array(Array::U16(vec![1, 2, 3])))
        .set("tinyrt.test.bools", Value::Array(Array::Bool(vec![true])))
        .alignment(64);
    let mut x = 0x853C_49E6_748F_EA9Bu64;
    for t in src.tensors() {
        let keep = t.name == "output.weight" || t.name == "rope_freqs.weight";
        if keep {
            w.add_tensor(t.name, t.ty, t.shape, t.data).unwrap();
            continue;
        }
        let n = t.n_elements() as usize;
        let data: Vec<u8> = (0..n)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = if t.shape.len() == 1 {
                    1.0 // norm weights
                } else {
                    ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
                };
                v.to_le_bytes()
            })
            .collect();
        w.add_tensor(t.name, GgmlType::F32, t.shape, data).unwrap();
    }
    let dir = tinyrt_tests::TempDir::new("gguf-llamacpp");
    let path = dir.path().join("written.gguf");
    w.write_to_path(&path).unwrap();
    let ours = GgufFile::open(&path).unwrap();
    assert_eq!(ours.alignment(), 64);

    let out = std::process::Command::new(llama_simple)
        .args(["-m", path.to_str().unwrap(), "-n", "4", "Hello world"])
        .output()
        .expect("run llama-simple");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "llama-simple failed ({:?}): {}",
        out.status,
        stderr.lines().rev().take(8).collect::<Vec<_>>().join("\n")
    );
    // llama.cpp's loader reports what it read: our key count and tensor count.
    let expected_kv = format!(
        "loaded meta data with {} key-value pairs and {} tensors",
        ours.metadata().len(),
        ours.tensor_infos().len()
    );
    assert!(
        stderr.contains(&expected_kv),
        "llama.cpp log lacks {expected_kv:?}"
    );
    assert!(!out.stdout.is_empty());
    eprintln!(
        "llama-simple: {expected_kv}; output {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}
