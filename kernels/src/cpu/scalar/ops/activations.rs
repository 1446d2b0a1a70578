//! GELU (ggml's f16 table), SiLU, the gated forms and softmax (references), with ggml's
//! `expf` that the SIMD paths reproduce.

use super::*;

/// Max-subtracted softmax; the sum is accumulated in f64 like ggml's `ggml_vec_soft_max_f32`.
#[inline]
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = expf_ggml_v(*v - max);
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// e^x as ggml's `ggml_v_expf` computes it for AVX-512 (ARM's optimized-routines `expf`
/// polynomial: `n = round(x / ln 2)`, `b = x - n ln 2` in two parts, a degree-5 polynomial
/// `j ≈ e^b`, then `j · 2^n` with one rounding; ±inf beyond |n| > 192; max error ≈ 1.5 ulp).
/// ggml's SiLU/SwiGLU and softmax (so its tiled flash attention) use it; every ISA here
/// computes these exact operations (each `mul_add` is one fused multiply-add), so they agree
/// bit for bit with each other and with ggml on the goldens' machine.
#[inline]
pub fn expf_ggml_v(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 0x1.8p23
    let z = x.mul_add(std::f32::consts::LOG2_E, SHIFT); // 0x1.715476p+0
    let n = z - SHIFT;
    // b = x - n·ln2_hi - n·ln2_lo (0x1.62e4p-1, 0x1.7f7d1cp-20), each an FMA.
    let b = (-n).mul_add(f32::from_bits(0x3f31_7200), x);
    let b = (-n).mul_add(f32::from_bits(0x35bf_be8e), b);
    let u = b * b;
    let c4 = f32::from_bits(0x3c07_2010); // 0x1.0e4020p-7
    let c3 = f32::from_bits(0x3d2b_9f17); // 0x1.573e2ep-5
    let c2 = f32::from_bits(0x3e2a_af33); // 0x1.555e66p-3
    let c1 = f32::from_bits(0x3eff_fedb); // 0x1.fffdb6p-2
    let c0 = f32::from_bits(0x3f7f_fff6); // 0x1.ffffecp-1
    let j = c4
        .mul_add(b, c3)
        .mul_add(u, c2.mul_add(b, c1))
        .mul_add(u, c0.mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    if n.is_nan() {
        return f32::NAN;
    }
    // vscalefps: j · 2^n rounded once (n is an integer in [-192, 192]: 2^n is an exact f64,
    // built from its exponent bits, and the f64 product is exact).
    let pow2 = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    (j as f64 * pow2) as f32
}

/// SiLU as ggml computes it on the goldens' machine (`ggml_v_silu`): `x / (1 + e^-x)` with
/// [`expf_ggml_v`].
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + expf_ggml_v(-x))
}

const GELU_COEF_A: f32 = 0.044715;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// The tanh approximation of GELU in f32 (ggml's `ggml_gelu_f32`).
#[inline]
pub fn gelu_tanh_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// ggml's `ggml_table_gelu_f16` (built in `ggml_cpu_init`), widened to f32: entry `i` is
/// `gelu_tanh_f32` of the f16 with bits `i`, rounded to f16. Built once (65536 `tanh`, ~1 ms).
pub fn gelu_f16_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_tanh_f32(f16::from_bits(bits).to_f32())).to_f32())
            .collect()
    })
}

/// GELU as ggml's CPU backend computes it for f32 tensors (`GGML_GELU_FP16` is defined in
/// `vec.h`): the input is rounded to f16 and looked up in [`gelu_f16_table`]; inputs beyond
/// ±10 bypass the table (0 below, x above).
#[inline]
pub fn gelu_tanh_ggml(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        gelu_f16_table()[f16::from_f32(x).to_bits() as usize]
    }
}

#[inline]
pub fn silu_inplace(x: &mut [f32]) {
    for v in x {
        *v = silu(*v);
    }
}

#[inline]
pub fn gelu_tanh_inplace(x: &mut [f32]) {
    for v in x {
        *v = gelu_tanh_ggml(*v);
    }
}

/// GELU's tanh approximation in f32 as PyTorch writes it (`gelu(x, approximate="tanh")`,
/// transformers' `gelu_new` / `gelu_pytorch_tanh`): `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`,
/// with libm's `tanhf`, no table.
#[inline]
pub fn gelu_tanh_exact(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_COEF_A * x * x * x)).tanh())
}

/// [`gelu_tanh_exact`] in place.
#[inline]
pub fn gelu_tanh_exact_inplace(x: &mut [f32]) {
    for v in x {
        *v = gelu_tanh_exact(*v);
    }
}

/// `gate = gelu_tanh_exact(gate) * up`.
#[inline]
pub fn geglu_tanh_exact_inplace(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh_exact(*g) * u;
    }
}

/// `gate = silu(gate) * up`.
#[inline]
pub fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// `gate = gelu_tanh(gate) * up`, ggml's f16-table GELU.
#[inline]
pub fn geglu_tanh_inplace(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh_ggml(*g) * u;
    }
}

/// Coefficients of `erf(x/√2) / x` as a polynomial in `x²` for `|x| < 1` (lowest degree
/// first): a least-squares fit on Chebyshev nodes with minimax reweighting, made for tinyrt
/// (relative error of the polynomial 7e-10, far under f32's 6e-8).
pub(crate) const GELU_ERF_SMALL: [f32; 6] = [
    0.797_884_6,
    -0.132_980_72,
    0.019_946_648,
    -0.002_372_660_7,
    0.000_226_973_45,
    -1.530_867_3e-5,
];

/// `t = 1 / (1 + GELU_ERFC_P·|x|)`: the variable of [`GELU_ERFC_LARGE`] (as in Abramowitz &
/// Stegun 7.1.26, which fits `erfc` the same way; exact in binary).
pub(crate) const GELU_ERFC_P: f32 = 0.375;

/// Coefficients of `erfc(|x|/√2) · e^(x²/2)` as a polynomial in `t` for `1 ≤ |x| < 10` (lowest
/// degree first), fitted like [`GELU_ERF_SMALL`] (relative error of the polynomial 2e-9).
pub(crate) const GELU_ERFC_LARGE: [f32; 9] = [
    -3.585_662e-5,
    0.300_048_2,
    0.290_713_73,
    0.305_213_57,
    0.006_653_573,
    0.419_984_34,
    -0.472_575_16,
    0.158_977_33,
    -0.008_826_87,
];

/// Where the exact GELU is `x` (above) or 0 (below) to f32 precision, or its tail is under
/// 1e-22.
pub(crate) const GELU_ERF_CUTOFF: f32 = 10.0;

/// The exact (erf) GELU, `x/2 · (1 + erf(x/√2))`: Hugging Face's `gelu`, which BERT models are
/// trained with (llama.cpp runs them with the tanh approximation instead). The reference of
/// every ISA's kernel, which computes these very operations (each `mul_add` one fused
/// multiply-add) and so gives the same bits.
///
/// - `|x| < 1`: `h + h·x·P(x²)` with `h = x/2` ([`GELU_ERF_SMALL`]), one rounding at the end.
/// - `1 ≤ |x| < 10`: `max(x, 0) − |h|·erfc(|x|/√2)` (for x < 0, `1 + erf = erfc`; for x > 0,
///   `1 + erf = 2 − erfc`), `erfc = e^(−x²/2)·Q(t)` ([`GELU_ERFC_LARGE`]), with the rounding
///   error of `x²` folded back in (it would cost up to 30 ulp of the tail at x ≈ −8) and
///   [`expf_ggml_v`] for the exponential. Negative inputs therefore keep their relative
///   accuracy instead of cancelling in `1 + erf`.
/// - `|x| ≥ 10`: `x` or 0; NaN stays NaN.
///
/// Against an f64 reference over [−10, 10] (`kernels/tests/gelu_erf.rs`): at most 2.4e-7
/// absolute (the half ulp of the result at x ≈ 5.3) and 7 ulp relative (in the negative tail,
/// where |gelu| < 0.17). The Abramowitz & Stegun 7.1.26 erf (in f64) used before reached
/// 4.6e-7 at x ≈ 4 and lost the negative tail to cancellation in `1 + erf`.
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    let h = 0.5 * x;
    let ax = x.abs();
    if ax < 1.0 {
        let u = x * x;
        let p = horner(&GELU_ERF_SMALL, u);
        h.mul_add(x * p, h)
    } else if ax < GELU_ERF_CUTOFF {
        let t = 1.0 / GELU_ERFC_P.mul_add(ax, 1.0);
        let q = horner(&GELU_ERFC_LARGE, t);
        let s = x * x;
        let ds = x.mul_add(x, -s);
        let e = expf_ggml_v(-0.5 * s);
        // e^(-(s + ds)/2) ≈ e^(-s/2) · (1 - ds/2).
        let e = e.mul_add(-0.5 * ds, e);
        (-h.abs()).mul_add(e * q, x.max(0.0))
    } else if x.is_nan() {
        x
    } else {
        x.max(0.0)
    }
}

/// `c[0] + c[1]·u + …` by Horner's rule, one fused multiply-add per step.
#[inline]
fn horner(c: &[f32], u: f32) -> f32 {
    let (last, rest) = c.split_last().expect("coefficients");
    rest.iter().rev().fold(*last, |p, &c| p.mul_add(u, c))
}

/// [`gelu_erf`] of every value.
#[inline]
pub fn gelu_erf_inplace(x: &mut [f32]) {
    for v in x {
        *v = gelu_erf(*v);
    }
}
