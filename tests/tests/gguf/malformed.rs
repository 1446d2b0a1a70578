//! Malformed input, one class at a time.

use super::*;

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
