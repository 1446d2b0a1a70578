//! Never panic, never over-allocate.

use super::*;
use crate::roundtrip::{config, every_value_type};

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
        let mut rng = tinyrt::kernels::rng::SplitMix64::new(0x2545_F491_4F6C_DD1D);
        let mut lengths: Vec<usize> = (0..256).collect();
        lengths.extend((0..40).map(|_| rng.below(header as u64) as usize));
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
