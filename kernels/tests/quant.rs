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

/// Types whose quantizer this crate reproduces; the fixtures come from `llama-quantize`.
const QUANTIZE_FIXTURE_TYPES: [GgmlType; 13] = [
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

fn rmse(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    (s / a.len() as f64).sqrt()
}

#[test]
fn quantize_matches_llama_quantize_byte_for_byte() {
    let dir = data_dir().join("quantize");
    let input = read_f32(&dir.join("input.f32"));
    for ty in QUANTIZE_FIXTURE_TYPES {
        let expected = std::fs::read(dir.join(format!("{ty}.bin"))).expect("fixture");
        let mut got = vec![0u8; expected.len()];
        quant::quantize(ty, &input, &mut got).unwrap();
        let ts = ty.type_size();
        let bad: Vec<usize> = got
            .chunks_exact(ts)
            .zip(expected.chunks_exact(ts))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i)
            .collect();
        if !bad.is_empty() {
            let mut ours = vec![0f32; input.len()];
            let mut theirs = vec![0f32; input.len()];
            quant::dequantize(ty, &got, &mut ours).unwrap();
            quant::dequantize(ty, &expected, &mut theirs).unwrap();
            panic!(
                "{ty}: {} of {} blocks differ (first {:?}); rmse ours {:e} llama.cpp {:e}",
                bad.len(),
                got.len() / ts,
                &bad[..bad.len().min(8)],
                rmse(&input, &ours),
                rmse(&input, &theirs)
            );
        }
    }
}

// ---------------------------------------------------------------- self-consistency

use tinyrt_kernels::quant::QuantFormat;

/// Every format with a quantizer and a dequantizer, with the relative RMSE bound its round
/// trip must meet on Gaussian data (about 1.25x what it measured when written, see
/// `round_trip_error_is_bounded`).
const ALL_FORMATS: [(QuantFormat, f64); 17] = [
    (QuantFormat::Ggml(GgmlType::F32), 0.0),
    (QuantFormat::Ggml(GgmlType::F16), 2.7e-4),
    (QuantFormat::Ggml(GgmlType::BF16), 2.1e-3),
    (QuantFormat::Ggml(GgmlType::Q4_0), 0.105),
    (QuantFormat::Ggml(GgmlType::Q4_1), 0.096),
    (QuantFormat::Ggml(GgmlType::Q5_0), 0.052),
    (QuantFormat::Ggml(GgmlType::Q5_1), 0.047),
    (QuantFormat::Ggml(GgmlType::Q8_0), 0.0066),
    (QuantFormat::Ggml(GgmlType::Q8_1), 0.0066),
    (QuantFormat::Ggml(GgmlType::Q2_K), 0.37),
    (QuantFormat::Ggml(GgmlType::Q3_K), 0.19),
    (QuantFormat::Ggml(GgmlType::Q4_K), 0.088),
    (QuantFormat::Ggml(GgmlType::Q5_K), 0.044),
    (QuantFormat::Ggml(GgmlType::Q6_K), 0.022),
    (QuantFormat::Ggml(GgmlType::Q8_K), 0.0081),
    (QuantFormat::Ggml(GgmlType::IQ4_NL), 0.093),
    (QuantFormat::Nf4, 0.096),
];

use tinyrt_kernels::rng::SplitMix64 as Rng;

/// `n` values ≈ N(0, scale²).
trait Gaussian {
    fn gaussian(&mut self, n: usize, scale: f32) -> Vec<f32>;
}

impl Gaussian for Rng {
    fn gaussian(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.gauss_f32() * scale).collect()
    }
}

fn n_bytes(fmt: QuantFormat, n: usize) -> usize {
    n / fmt.block_size() * fmt.type_size()
}

fn round_trip(fmt: QuantFormat, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut q = vec![0u8; n_bytes(fmt, x.len())];
    quant::quantize_format(fmt, x, &mut q).unwrap();
    let mut y = vec![0f32; x.len()];
    quant::dequantize_format(fmt, &q, &mut y).unwrap();
    (q, y)
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

#[test]
fn round_trip_error_is_bounded() {
    let x = Rng(1).gaussian(4096, 0.02);
    let mut failures = 0;
    for (fmt, bound) in ALL_FORMATS {
        let (_, y) = round_trip(fmt, &x);
        let rel = rmse(&x, &y) / rms(&x);
        eprintln!("{fmt}: relative rmse {rel:.5} (bound {bound})");
        failures += usize::from(rel > bound);
    }
    assert_eq!(
        failures, 0,
        "some round-trip errors exceed their bounds (see stderr)"
    );
}

#[test]
fn zero_blocks_round_trip_to_zero() {
    for (fmt, _) in ALL_FORMATS {
        let x = vec![0f32; 512];
        let (_, y) = round_trip(fmt, &x);
        assert!(y.iter().all(|&v| v == 0.0), "{fmt}: {:?}", &y[..8]);
        // A zero block between non-zero ones stays zero and does not disturb them.
        let mut x = Rng(2).gaussian(768, 1.0);
        x[256..512].fill(0.0);
        let (_, y) = round_trip(fmt, &x);
        assert!(y[256..512].iter().all(|&v| v == 0.0), "{fmt}");
    }
}

#[test]
fn extreme_scales_stay_finite_and_accurate_where_f16_can_hold_the_scale() {
    let base = Rng(3).gaussian(1024, 1.0);
    for (fmt, bound) in ALL_FORMATS {
        for scale in [1e-30f32, 1e-8, 1e-3, 1.0, 1e3] {
            let x: Vec<f32> = base.iter().map(|&v| v * scale).collect();
            let (_, y) = round_trip(fmt, &x);
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(
                y.iter()
                    .all(|v| v.is_finite() && v.abs() <= 2.0 * amax + 1e-30),
                "{fmt} at scale {scale}: values blow up"
            );
            // Block scales of ~scale/100 and above are normal f16 numbers (bf16 and the
            // f32-scaled Q8_K have the f32 range).
            let normal = scale >= 1.0
                || (scale >= 1e-3 && !matches!(fmt, QuantFormat::Ggml(GgmlType::Q2_K)))
                || matches!(
                    fmt,
                    QuantFormat::Ggml(GgmlType::F32 | GgmlType::BF16 | GgmlType::Q8_K)
                );
            if normal {
                let rel = rmse(&x, &y) / rms(&x);
                assert!(
                    rel <= bound * 1.1,
                    "{fmt} at scale {scale}: relative rmse {rel}"
                );
            }
        }
    }
}

#[test]
fn non_finite_input_does_not_panic() {
    for (fmt, _) in ALL_FORMATS {
        let mut x = Rng(4).gaussian(512, 1.0);
        x[3] = f32::NAN;
        x[300] = f32::INFINITY;
        x[301] = f32::NEG_INFINITY;
        let _ = round_trip(fmt, &x);
        let x = vec![f32::MAX; 512];
        let _ = round_trip(fmt, &x);
    }
}

#[test]
fn odd_block_counts_quantize_blockwise() {
    let x = Rng(5).gaussian(7 * 256, 0.5);
    for (fmt, _) in ALL_FORMATS {
        let (whole, _) = round_trip(fmt, &x);
        let bs = fmt.block_size();
        for n_blocks in [1usize, 3, 5, 7] {
            let n = n_blocks * bs;
            if n > x.len() {
                continue;
            }
            let (part, y) = round_trip(fmt, &x[..n]);
            assert_eq!(
                part[..],
                whole[..part.len()],
                "{fmt} with {n_blocks} blocks"
            );
            assert_eq!(y.len(), n);
            // Starting at a later block gives that block's bytes too: no row-level state.
            let (tail, _) = round_trip(fmt, &x[x.len() - n..]);
            assert_eq!(tail[..], whole[whole.len() - tail.len()..], "{fmt} tail");
        }
    }
}

// ---------------------------------------------------------------- dot products

/// Bytes of the first f16 field after `d` (`m` of Q4_1 / Q5_1, `s` of Q8_1).
fn second_f16(block: &[u8]) -> f64 {
    half::f16::from_bits(u16::from_le_bytes([block[2], block[3]])).to_f64()
}

/// Checks the reference dot of `w` (format `fmt`) and `a` against Σ dequant(w)·dequant(a).
fn check_dot(fmt: QuantFormat, w: &[f32], a: &[f32]) -> Result<(), String> {
    let act = QuantFormat::Ggml(fmt.vec_dot_type().ok_or("no dot")?);
    let (wq, wd) = round_trip(fmt, w);
    let (aq, ad) = round_trip(act, a);
    let got = quant::vec_dot(fmt, &wq, &aq).map_err(|e| e.to_string())? as f64;
    let mut reference = 0f64;
    let mut magnitude = 0f64;
    for (&x, &y) in wd.iter().zip(&ad) {
        reference += x as f64 * y as f64;
        magnitude += (x as f64 * y as f64).abs();
    }
    let mut budget = 1e-5 * magnitude;
    if act == QuantFormat::Ggml(GgmlType::Q8_1) {
        // The Q8_1 block sum `s = d * Σq` is stored as f16 (and from the f32 `d`, before its
        // own rounding): the minimum term `m * s` carries that rounding, 2^-11 relative.
        for ((bw, ba), ya) in wq
            .chunks_exact(fmt.type_size())
            .zip(aq.chunks_exact(act.type_size()))
            .zip(ad.chunks_exact(32))
        {
            let sum_a: f64 = ya.iter().map(|&v| v as f64).sum();
            budget += second_f16(bw).abs() * (second_f16(ba).abs() + sum_a.abs()) * 2f64.powi(-11);
        }
    }
    if (got - reference).abs() > budget {
        return Err(format!(
            "{fmt}: dot {got} reference {reference} (|diff| {} > budget {budget})",
            (got - reference).abs()
        ));
    }
    Ok(())
}

#[test]
fn vec_dot_equals_dot_of_dequantized_values() {
    let mut rng = Rng(6);
    for fmt in quant::weight_formats() {
        for n_blocks_k in [1usize, 2, 5] {
            let n = 256 * n_blocks_k;
            let w = rng.gaussian(n, 0.05);
            let mut a = rng.gaussian(n, 2.0);
            // An activation outlier, as real hidden states have.
            a[n / 3] = 40.0;
            check_dot(fmt, &w, &a).unwrap();
        }
        // Non-negative activations make the minimum terms large.
        let w = rng.gaussian(512, 0.05);
        let a: Vec<f32> = rng.gaussian(512, 1.0).iter().map(|v| v.abs()).collect();
        check_dot(fmt, &w, &a).unwrap();
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 48,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn vec_dot_matches_dequantized_dot(
            fmt_index in 0..quant::weight_formats().count(),
            seed in any::<u64>(),
            n_blocks_k in 1usize..4,
            w_scale in -6i32..3,
            a_scale in -3i32..3,
        ) {
            let fmt = quant::weight_formats().nth(fmt_index).unwrap();
            let mut rng = Rng(seed);
            let n = 256 * n_blocks_k;
            let w = rng.gaussian(n, 10f32.powi(w_scale));
            let a = rng.gaussian(n, 10f32.powi(a_scale));
            prop_assert!(check_dot(fmt, &w, &a).is_ok(), "{}", check_dot(fmt, &w, &a).unwrap_err());
        }

        #[test]
        fn quantize_never_panics_on_arbitrary_floats(
            fmt_index in 0..ALL_FORMATS.len(),
            bits in proptest::collection::vec(any::<u32>(), 256..=256),
        ) {
            // Any bit pattern: NaN, infinities, subnormals, huge and tiny values.
            let fmt = ALL_FORMATS[fmt_index].0;
            let x: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
            let (_, y) = round_trip(fmt, &x);
            prop_assert_eq!(y.len(), x.len());
        }

        #[test]
        fn dequantize_never_panics_on_random_bytes(
            fmt_index in 0..ALL_FORMATS.len(),
            bytes in proptest::collection::vec(any::<u8>(), 0..1200),
        ) {
            let fmt = ALL_FORMATS[fmt_index].0;
            let n = bytes.len() / fmt.type_size() * fmt.block_size();
            let mut out = vec![0f32; n];
            let result = quant::dequantize_format(fmt, &bytes, &mut out);
            prop_assert_eq!(result.is_ok(), bytes.len() % fmt.type_size() == 0);
        }
    }
}
