//! The exact (erf) GELU: every ISA gives the scalar reference's bits, and the reference is
//! within half an ulp + 2e-7 (and a few ulp relative) of an f64 evaluation of
//! `x/2 · (1 + erf(x/√2))` over [−10, 10].

use proptest::prelude::*;
use tinyrt_kernels::cpu::ops;
use tinyrt_kernels::cpu::scalar::ops as scalar_ops;
use tinyrt_kernels::cpu::Isa;

/// erf and erfc in f64 without cancellation where each is small: erf by the series of
/// positive terms `erf z = 2/√π · e^(−z²) · Σ 2ⁿ z^(2n+1) / (1·3·…·(2n+1))` (Abramowitz &
/// Stegun 7.1.6), erfc for z ≥ 3 by its continued fraction (A&S 7.1.14) evaluated backwards.
fn erf_erfc_f64(z: f64) -> (f64, f64) {
    let a = z.abs();
    let (erf, erfc) = if a < 3.0 {
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        while term > sum * 1e-18 {
            term *= 2.0 * a * a / (2.0 * n + 3.0);
            sum += term;
            n += 1.0;
        }
        let erf = 2.0 / std::f64::consts::PI.sqrt() * (-a * a).exp() * sum;
        (erf, 1.0 - erf)
    } else {
        // erfc z = e^(−z²)/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + 2/(z + …))))).
        let mut f = a;
        for k in (1..200).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / f;
        (1.0 - erfc, erfc)
    };
    if z < 0.0 {
        (-erf, 1.0 + erf)
    } else {
        (erf, erfc)
    }
}

/// `x/2 · (1 + erf(x/√2))` in f64, through erfc for x < 0 (no cancellation).
fn gelu_f64(x: f64) -> f64 {
    // 1 + erf(−a) = erfc(a).
    let (erf, erfc) = erf_erfc_f64(x.abs() / std::f64::consts::SQRT_2);
    if x < 0.0 {
        0.5 * x * erfc
    } else {
        0.5 * x * (1.0 + erf)
    }
}

/// The spacing of f32 values at `v` (the ulp of its f32 rounding).
fn ulp(v: f64) -> f64 {
    let a = (v as f32).abs();
    if a == f32::MAX {
        return f64::INFINITY;
    }
    (f32::from_bits(a.to_bits() + 1) - a) as f64
}

#[test]
fn the_f64_erf_reference_matches_published_values() {
    // Abramowitz & Stegun table 7.1 and the erfc tail.
    for (z, erf, erfc) in [
        (0.5, 0.520_499_877_813_046_5, 0.479_500_122_186_953_5),
        (1.0, 0.842_700_792_949_714_9, 0.157_299_207_050_285_1),
        (2.0, 0.995_322_265_018_952_7, 4.677_734_981_047_266e-3),
        (3.0, 0.999_977_909_503_001_4, 2.209_049_699_858_544e-5),
        (5.0, 0.999_999_999_998_462_5, 1.537_459_794_428_035e-12),
    ] {
        let (e, c) = erf_erfc_f64(z);
        assert!((e - erf).abs() <= 1e-15, "erf({z}) = {e}, want {erf}");
        assert!(
            (c - erfc).abs() <= 1e-13 * erfc,
            "erfc({z}) = {c}, want {erfc}"
        );
        let (e, c) = erf_erfc_f64(-z);
        assert!((e + erf).abs() <= 1e-15 && (c - (2.0 - erfc)).abs() <= 1e-15);
    }
}

#[test]
fn scalar_gelu_erf_is_accurate_against_f64() {
    // Every f32 in [-10, 10] at a step of 2^-10 (exactly representable), plus every 97th f32
    // of 1e-3 ≤ |x| < 2, where the two branches meet.
    let mut xs: Vec<f32> = (-10 * 1024..=10 * 1024)
        .map(|i| i as f32 / 1024.0)
        .collect();
    let (lo, hi) = (1e-3f32.to_bits(), 2.0f32.to_bits());
    for bits in (lo..hi).step_by(97) {
        let v = f32::from_bits(bits);
        xs.extend([v, -v]);
    }
    xs.extend([
        0.99999994f32,
        1.0,
        -0.99999994,
        -1.0,
        9.999999,
        -9.999999,
        1e-30,
        -1e-30,
    ]);
    let (mut worst_abs, mut worst_ulp) = ((0.0f64, 0.0f32), (0.0f64, 0.0f32));
    for &x in &xs {
        let got = scalar_ops::gelu_erf(x) as f64;
        let want = gelu_f64(x as f64);
        let d = (got - want).abs();
        // From |x| = 10 on the result is x or 0: the tail below, under 1e-22, is dropped.
        let u = if want == 0.0 || x.abs() >= 10.0 {
            0.0
        } else {
            d / ulp(want)
        };
        assert!(
            d <= 2e-7 + 0.5 * ulp(want),
            "gelu_erf({x}) = {got}, f64 {want}: |Δ| {d:e}"
        );
        assert!(u <= 8.0, "gelu_erf({x}) = {got}, f64 {want}: {u} ulp");
        if d > worst_abs.0 {
            worst_abs = (d, x);
        }
        if u > worst_ulp.0 {
            worst_ulp = (u, x);
        }
    }
    eprintln!(
        "gelu_erf: {} inputs, max |Δ| {:.3e} at {}, max {:.2} ulp at {}",
        xs.len(),
        worst_abs.0,
        worst_abs.1,
        worst_ulp.0,
        worst_ulp.1
    );
}

#[test]
fn gelu_erf_saturates_and_keeps_nan() {
    for isa in Isa::available() {
        let mut x = vec![
            10.0f32,
            -10.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        x.extend([f32::NAN, 0.0, -0.0, 50.0, -50.0]);
        ops::gelu_erf_inplace(isa, &mut x);
        let name = isa.name();
        assert_eq!(
            &x[..6],
            &[10.0, 0.0, 1e30, 0.0, f32::INFINITY, 0.0],
            "[{name}]"
        );
        assert!(x[6].is_nan(), "[{name}] NaN in, NaN out");
        assert_eq!(x[7], 0.0, "[{name}]");
        assert_eq!(x[8], 0.0, "[{name}]");
        assert_eq!(&x[9..], &[50.0, 0.0], "[{name}]");
    }
}

fn input() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -8.0f32..8.0,
        2 => -1.2f32..1.2,
        1 => -12.0f32..12.0,
        1 => any::<f32>(),
        1 => prop::sample::select(vec![
            0.0f32, -0.0, 1.0, -1.0, 0.99999994, -0.99999994, 10.0, -10.0, 9.999999, -9.999999,
            f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE, -1e-40,
        ]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Every ISA computes the reference's operations, so the bits are the same (lengths cover
    /// the vector tails).
    #[test]
    fn every_isa_gives_the_scalar_bits(x in prop::collection::vec(input(), 0..300usize)) {
        let want: Vec<f32> = x.iter().map(|&v| scalar_ops::gelu_erf(v)).collect();
        for isa in Isa::available() {
            let mut got = x.clone();
            ops::gelu_erf_inplace(isa, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                prop_assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "[{}] gelu_erf({}) = {g}, scalar {w} (index {i})", isa.name(), x[i]
                );
            }
        }
    }
}
