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

/// erf(x), Abramowitz & Stegun 7.1.26 evaluated in f64 (absolute error below 1.5e-7, under
/// half an f32 ulp of erf's values near 1).
#[inline]
pub fn erf(x: f32) -> f32 {
    const P: f64 = 0.327_591_1;
    const A: [f64; 5] = [
        0.254_829_592,
        -0.284_496_736,
        1.421_413_741,
        -1.453_152_027,
        1.061_405_429,
    ];
    let ax = (x as f64).abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * (-ax * ax).exp();
    (y as f32).copysign(x)
}

/// The exact (erf) GELU, `x/2 · (1 + erf(x/√2))`: Hugging Face's `gelu`, which BERT models are
/// trained with (llama.cpp runs them with the tanh approximation instead). Scalar only: the
/// encoders' FFN is a small share of their time.
#[inline]
pub fn gelu_erf_inplace(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}
