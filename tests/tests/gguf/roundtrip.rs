//! Round trips.

use super::*;

pub(crate) fn every_value_type() -> Vec<(String, Value)> {
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
pub(crate) fn config(cases: u32) -> ProptestConfig {
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
