//! Every dot-product kernel and activation converter of every ISA this CPU has, against the
//! scalar references (`tinyrt_kernels::quant`, and `cpu::scalar` for the converters).
//!
//! - dot products: |simd - reference| ≤ 1e-5 · Σ|wᵢ·xᵢ| over the dequantized values, for random
//!   values, random block counts (odd ones included), extreme scales, all-zero and all-max
//!   blocks, and raw random block bytes (every code and scale value reachable);
//! - activation converters: the same bytes as the scalar converter.

use proptest::prelude::*;
use tinyrt_kernels::cpu::{Isa, Kernels};
use tinyrt_kernels::quant::{self, GgmlType, QuantFormat};

/// Every weight format with a kernel.
fn formats() -> Vec<QuantFormat> {
    Kernels::get(Isa::Scalar).unwrap().weight_types().collect()
}

/// The workspace's seeded generator, so a proptest case is just a seed.
use tinyrt_kernels::rng::SplitMix64 as Rng;

/// How the values of one block are drawn.
fn fill(rng: &mut Rng, out: &mut [f32], block: usize, scale: f32) {
    for chunk in out.chunks_mut(block) {
        match rng.next_u64() % 8 {
            0 => chunk.fill(0.0),
            1 => {
                let v = if rng.next_u64().is_multiple_of(2) {
                    scale
                } else {
                    -scale
                };
                chunk.fill(v);
            }
            2 => {
                // Half-integers: ties for the rounding of the quantizers.
                for v in chunk.iter_mut() {
                    *v = ((rng.next_u64() % 255) as f32 - 127.0) * 0.5 * scale / 64.0;
                }
            }
            _ => {
                for v in chunk.iter_mut() {
                    *v = rng.unit_f32() * scale;
                }
            }
        }
    }
}

fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

/// Random raw bytes for `n_blocks` blocks of `fmt`, with the f16/f32 scale fields replaced by
/// finite values (every other byte pattern is a valid block).
fn random_blocks(rng: &mut Rng, fmt: QuantFormat, n_blocks: usize) -> Option<Vec<u8>> {
    let scale_offsets: &[usize] = match fmt {
        QuantFormat::Nf4 => &[0],
        QuantFormat::Ggml(t) => match t {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL => &[0],
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q2_K => &[80, 82],
            GgmlType::Q3_K => &[108],
            GgmlType::Q6_K => &[208],
            _ => return None,
        },
    };
    let ts = fmt.type_size();
    let mut bytes: Vec<u8> = (0..n_blocks * ts).map(|_| rng.next_u64() as u8).collect();
    for b in bytes.chunks_exact_mut(ts) {
        for &o in scale_offsets {
            let d = rng.unit_f32() * 0.05;
            b[o..o + 2].copy_from_slice(&f16_bytes(d));
        }
    }
    Some(bytes)
}

fn dequantize(fmt: QuantFormat, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    quant::dequantize_format(fmt, bytes, &mut out).expect("dequantize");
    out
}

fn quantize(fmt: QuantFormat, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / fmt.block_size() * fmt.type_size()];
    quant::quantize_format(fmt, x, &mut out).expect("quantize");
    out
}

/// Checks every ISA's dot product of `fmt` against the scalar reference for one case.
fn check_dot(fmt: QuantFormat, n_blocks: usize, seed: u64, scale_exp: i32, raw: bool) {
    let mut rng = Rng(seed);
    let scalar = Kernels::get(Isa::Scalar).unwrap();
    let act = scalar.act_type(fmt).expect("act type");
    // A length that is a whole number of blocks of both the weight and the activation type.
    let unit = fmt.block_size().max(act.block_size());
    let n = n_blocks * unit;
    let scale = 10f32.powi(scale_exp);
    let w = match raw
        .then(|| random_blocks(&mut rng, fmt, n / fmt.block_size()))
        .flatten()
    {
        Some(b) => b,
        None => {
            let mut x = vec![0f32; n];
            fill(&mut rng, &mut x, fmt.block_size().max(32), scale);
            quantize(fmt, &x)
        }
    };
    let mut xf = vec![0f32; n];
    // Activations up to 100 in magnitude: Q8_1 stores d·Σq as f16, which overflows beyond ~500.
    fill(
        &mut rng,
        &mut xf,
        act.block_size().max(32),
        10f32.powi((-scale_exp).clamp(-2, 2)),
    );
    let mut a = vec![0u8; n / act.block_size() * act.type_size()];
    scalar.quantize_row(act, &xf, &mut a).unwrap();

    let wd = dequantize(fmt, &w, n);
    let ad = dequantize(act.into(), &a, n);
    let bound: f64 = wd
        .iter()
        .zip(&ad)
        .map(|(p, q)| (*p as f64 * *q as f64).abs())
        .sum();
    let reference = scalar.vec_dot(fmt, n, &w, &a).unwrap();
    let exact: f64 = wd.iter().zip(&ad).map(|(p, q)| *p as f64 * *q as f64).sum();
    // (Q8_1 stores d·Σq as f16, so *_1 references differ from the exact dot by that rounding.)
    assert!(
        act == GgmlType::Q8_1 || (reference as f64 - exact).abs() <= 1e-5 * bound + 1e-30,
        "{fmt}: scalar reference {reference} vs exact {exact}"
    );
    for isa in Isa::available() {
        let k = Kernels::get(isa).unwrap();
        let got = k.vec_dot(fmt, n, &w, &a).unwrap();
        // The NEON tiers keep the reference's float steps in its order (only the exact
        // integer sums are vectorised): the reference's bits.
        if matches!(isa, Isa::Neon | Isa::NeonDotprod) {
            assert_eq!(
                got.to_bits(),
                reference.to_bits(),
                "{fmt} on {}: got {got}, reference {reference}",
                isa.name()
            );
        }
        let err = (got as f64 - reference as f64).abs();
        assert!(
            err <= 1e-5 * bound + 1e-30,
            "{fmt} on {}: n={n} got {got}, reference {reference}, |Δ|={err:e}, bound {:e}",
            isa.name(),
            1e-5 * bound
        );
        // The same bytes at an odd address (the kernels must not assume alignment).
        let mut wo = vec![0u8; w.len() + 1];
        wo[1..].copy_from_slice(&w);
        let mut ao = vec![0u8; a.len() + 1];
        ao[1..].copy_from_slice(&a);
        let got_unaligned = k.vec_dot(fmt, n, &wo[1..], &ao[1..]).unwrap();
        assert_eq!(
            got.to_bits(),
            got_unaligned.to_bits(),
            "{fmt} on {} unaligned",
            isa.name()
        );
        // The four-token form gives each token's single-token result, bit for bit.
        let xr: Vec<f32> = xf.iter().rev().copied().collect();
        let mut a2 = vec![0u8; a.len()];
        scalar.quantize_row(act, &xr, &mut a2).unwrap();
        let four = k.vec_dot4(fmt, n, &w, [&a, &a2, &ao[1..], &a]).unwrap();
        let single2 = k.vec_dot(fmt, n, &w, &a2).unwrap();
        let expected4 = [got, single2, got, got];
        assert_eq!(
            four.map(f32::to_bits),
            expected4.map(f32::to_bits),
            "{fmt} on {} vec_dot4",
            isa.name()
        );
    }
}

/// `cases` cases, or `PROPTEST_CASES` when set (the qemu runs of `scripts/test-aarch64.sh`
/// take fewer).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(192))]

    #[test]
    fn legacy_and_lut_dots_match_reference(
        fi in 0usize..64,
        n_blocks in 1usize..=40,
        seed in any::<u64>(),
        scale_exp in -4i32..=4,
        raw in any::<bool>(),
    ) {
        let fmts: Vec<QuantFormat> = formats()
            .into_iter()
            .filter(|f| f.block_size() <= 64 && !matches!(f, QuantFormat::Ggml(GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)))
            .collect();
        let fmt = fmts[fi % fmts.len()];
        check_dot(fmt, n_blocks, seed, scale_exp, raw);
    }

    #[test]
    fn k_quant_dots_match_reference(
        fi in 0usize..64,
        n_blocks in 1usize..=5,
        seed in any::<u64>(),
        scale_exp in -3i32..=3,
        raw in any::<bool>(),
    ) {
        let fmts: Vec<QuantFormat> = formats().into_iter().filter(|f| f.block_size() == 256).collect();
        let fmt = fmts[fi % fmts.len()];
        check_dot(fmt, n_blocks, seed, scale_exp, raw);
    }

    #[test]
    fn float_dots_match_reference(
        fi in 0usize..3,
        n in 1usize..=300,
        seed in any::<u64>(),
        scale_exp in -4i32..=4,
    ) {
        let fmt = [GgmlType::F32, GgmlType::F16, GgmlType::BF16][fi].into();
        check_dot(fmt, n, seed, scale_exp, false);
    }

    #[test]
    fn activation_converters_match_scalar_bytes(
        ai in 0usize..6,
        n_blocks in 1usize..=9,
        seed in any::<u64>(),
        scale_exp in -30i32..=30,
    ) {
        let act = [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K, GgmlType::F16, GgmlType::BF16, GgmlType::F32][ai];
        let block = if act == GgmlType::Q8_K { 256 } else { 32 };
        let n = n_blocks * block;
        let mut rng = Rng(seed);
        let mut x = vec![0f32; n];
        fill(&mut rng, &mut x, block, 10f32.powi(scale_exp));
        if seed.is_multiple_of(5) {
            // A block whose largest magnitude appears with both signs (Q8_K keeps the first).
            x[3] = -10f32.powi(scale_exp) * 2.0;
            x[7] = 10f32.powi(scale_exp) * 2.0;
        }
        let scalar = Kernels::get(Isa::Scalar).unwrap();
        let bytes = n / act.block_size() * act.type_size();
        let mut expected = vec![0u8; bytes];
        scalar.quantize_row(act, &x, &mut expected).unwrap();
        for isa in Isa::available() {
            let mut got = vec![0xAAu8; bytes];
            Kernels::get(isa).unwrap().quantize_row(act, &x, &mut got).unwrap();
            prop_assert_eq!(&got, &expected, "{} on {}", act, isa.name());
        }
        if act == GgmlType::Q8_K {
            // Q8_K is ggml's reference algorithm: the same bytes as quant's.
            let mut r = vec![0u8; bytes];
            quant::quantize(act, &x, &mut r).unwrap();
            prop_assert_eq!(&r, &expected);
        }
        if matches!(act, GgmlType::Q8_0 | GgmlType::Q8_1) {
            // ggml's x86 quantizer (what llama.cpp runs) multiplies by 127/amax and rounds
            // half to even; the reference multiplies by 1/d and rounds half away from zero.
            // Same scales, codes within one step.
            let mut r = vec![0u8; bytes];
            quant::quantize(act, &x, &mut r).unwrap();
            let ts = act.type_size();
            let hdr = ts - 32;
            for (g, e) in expected.chunks_exact(ts).zip(r.chunks_exact(ts)) {
                prop_assert_eq!(&g[..2], &e[..2], "{} scale", act);
                for (p, q) in g[hdr..].iter().zip(&e[hdr..]) {
                    prop_assert!((*p as i8 as i32 - *q as i8 as i32).abs() <= 1);
                }
            }
        }
    }
}

#[test]
fn every_isa_covers_the_same_formats_with_the_same_activation_types() {
    let scalar = Kernels::get(Isa::Scalar).unwrap();
    for fmt in formats() {
        assert_eq!(scalar.act_type(fmt), fmt.vec_dot_type(), "{fmt}");
    }
    for isa in Isa::available() {
        let k = Kernels::get(isa).unwrap();
        for fmt in formats() {
            if isa != Isa::Scalar && quant::simd_formats().any(|f| f == fmt) {
                assert!(k.act_type(fmt).is_some(), "{fmt} on {}", isa.name());
            }
            if let Some(act) = k.act_type(fmt) {
                assert_eq!(Some(act), scalar.act_type(fmt), "{fmt} on {}", isa.name());
            }
        }
    }
}

#[test]
fn avx512_has_four_token_kernels_for_the_main_formats() {
    if let Some(k) = Kernels::get(Isa::Avx512) {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::IQ4_NL,
        ] {
            assert!(k.has_vec_dot4(ty), "{ty}");
        }
        assert!(k.has_vec_dot4(QuantFormat::Nf4), "NF4");
    }
}

#[test]
fn best_kernels_are_simd_on_a_simd_cpu() {
    let forced = std::env::var("TINYRT_ISA").is_ok();
    let best = Kernels::best();
    #[cfg(target_arch = "x86_64")]
    if !forced {
        if std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            assert_eq!(best.isa, Isa::Avx512);
        } else if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            assert_eq!(best.isa, Isa::Avx2);
        }
    }
    assert!(Kernels::get(best.isa).is_some());
    for isa in Isa::ALL {
        assert_eq!(Kernels::get(isa).is_some(), isa.is_supported());
    }
}

#[test]
fn bad_sizes_are_errors() {
    let k = Kernels::best();
    assert!(k.vec_dot(GgmlType::Q4_0, 33, &[0; 36], &[0; 68]).is_err());
    assert!(k.vec_dot(GgmlType::Q4_0, 64, &[0; 35], &[0; 68]).is_err());
    assert!(k.vec_dot(GgmlType::Q4_0, 64, &[0; 36], &[0; 67]).is_err());
    assert!(k
        .vec_dot(GgmlType::IQ2_XXS, 256, &[0; 66], &[0; 292])
        .is_err());
    assert!(k
        .quantize_row(GgmlType::Q4_0, &[0.0; 32], &mut [0; 18])
        .is_err());
    assert!(k
        .quantize_row(GgmlType::Q8_0, &[0.0; 31], &mut [0; 34])
        .is_err());
    assert!(k
        .quantize_row(GgmlType::Q8_0, &[0.0; 64], &mut [0; 67])
        .is_err());
    assert_eq!(k.vec_dot(GgmlType::Q4_0, 0, &[], &[]), Ok(0.0));
}

#[test]
fn read_probe_agrees_across_isas() {
    let data: Vec<u8> = (0..10_007u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for len in [0, 7, 8, 255, 256, 1000, 10_007] {
        let expected = Kernels::get(Isa::Scalar).unwrap().read_probe(&data[..len]);
        for isa in Isa::available() {
            assert_eq!(
                Kernels::get(isa).unwrap().read_probe(&data[..len]),
                expected,
                "{} len {len}",
                isa.name()
            );
        }
    }
}
