//! Quant format references against outside oracles and against each other.
//!
//! - dequantization bit for bit against the Python `gguf` package
//!   (`kernels/scripts/gen_quant_fixtures.py` wrote `tests/data/dequant/`);
//! - quantization byte for byte against `llama-quantize` (`tests/data/quantize/`);
//! - round-trip error bounds, edge blocks, and dot products against dequantized dots.

use std::path::PathBuf;

use tinyrt_kernels::quant::{self, GgmlType};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn read_f32(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

const DEQUANT_FIXTURE_TYPES: [GgmlType; 13] = [
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
];

#[test]
fn dequantize_matches_python_gguf_bit_for_bit() {
    let dir = data_dir().join("dequant");
    for ty in DEQUANT_FIXTURE_TYPES {
        let raw = std::fs::read(dir.join(format!("{ty}.bin"))).expect("fixture");
        let expected = read_f32(&dir.join(format!("{ty}.f32")));
        assert_eq!(
            raw.len() / ty.type_size() * ty.block_size(),
            expected.len(),
            "{ty}"
        );
        let mut got = vec![0f32; expected.len()];
        quant::dequantize(ty, &raw, &mut got).unwrap();
        let mismatches = got
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        let first = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(
            mismatches,
            0,
            "{ty}: {mismatches} of {} values differ, first at {:?}: got {:?} expected {:?}",
            got.len(),
            first,
            first.map(|i| got[i]),
            first.map(|i| expected[i])
        );
    }
}
