//! Unquantized element types: F32, F16 (IEEE binary16) and BF16 (bfloat16), stored as raw bits
//! (`u16`) so that slices of them are plain old data.
//!
//! Their dot products take F32 activations and accumulate in f64, as ggml's scalar
//! `ggml_vec_dot_f16` / `ggml_vec_dot_f32` do (`ggml_float`), which makes the reference more
//! accurate than any f32 fast path it is compared with. The products are summed in eight
//! interleaved f64 partial sums (then added in order), so the loop vectorizes.

use super::{f16_to_f32, f32_to_f16};

pub fn dequantize_row_f32(x: &[f32], y: &mut [f32]) {
    y.copy_from_slice(x);
}

pub fn quantize_row_f32(x: &[f32], y: &mut [f32]) {
    y.copy_from_slice(x);
}

pub fn dequantize_row_f16(x: &[u16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (o, &h) in y.iter_mut().zip(x) {
        *o = f16_to_f32(h);
    }
}

/// Round to nearest even; values beyond the f16 range become ±inf (ggml does the same).
pub fn quantize_row_f16(x: &[f32], y: &mut [u16]) {
    assert_eq!(x.len(), y.len());
    for (o, &v) in y.iter_mut().zip(x) {
        *o = f32_to_f16(v);
    }
}

/// bf16 bits to f32: the high half of the f32 bits (exact).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 to bf16 bits as ggml's `ggml_compute_fp32_to_bf16`: round to nearest even, NaN kept NaN
/// (quiet bit forced so that truncation cannot turn it into infinity).
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

pub fn dequantize_row_bf16(x: &[u16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (o, &h) in y.iter_mut().zip(x) {
        *o = bf16_to_f32(h);
    }
}

pub fn quantize_row_bf16(x: &[f32], y: &mut [u16]) {
    assert_eq!(x.len(), y.len());
    for (o, &v) in y.iter_mut().zip(x) {
        *o = f32_to_bf16(v);
    }
}

/// Σ x·y with f64 accumulation.
pub fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len());
    x.iter().zip(y).map(|(&a, &b)| (a * b) as f64).sum::<f64>() as f32
}

/// Σ f16(x)·y with f64 accumulation.
pub fn vec_dot_f16_f32(x: &[u16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len());
    x.iter()
        .zip(y)
        .map(|(&a, &b)| (f16_to_f32(a) * b) as f64)
        .sum::<f64>() as f32
}

/// Σ bf16(x)·y with f64 accumulation.
pub fn vec_dot_bf16_f32(x: &[u16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len());
    x.iter()
        .zip(y)
        .map(|(&a, &b)| (bf16_to_f32(a) * b) as f64)
        .sum::<f64>() as f32
}

weight_format!(
    F32,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::F32),
    f32,
    dequantize_row_f32,
    quantize_row_f32,
    F32,
    vec_dot_f32
);
weight_format!(
    F16,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::F16),
    u16,
    dequantize_row_f16,
    quantize_row_f16,
    F32,
    vec_dot_f16_f32
);
weight_format!(
    BF16,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::BF16),
    u16,
    dequantize_row_bf16,
    quantize_row_bf16,
    F32,
    vec_dot_bf16_f32
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_ggml() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is exactly half way between two bf16 values: ties to even (down).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        // A NaN whose payload lives only in the low bits must not become infinity.
        assert!(bf16_to_f32(f32_to_bf16(f32::from_bits(0x7f80_0001))).is_nan());
    }

    #[test]
    fn f16_round_trip() {
        let x = [0.0f32, -1.5, 65504.0, 1e-7, 2.71];
        let mut h = [0u16; 5];
        quantize_row_f16(&x, &mut h);
        let mut y = [0f32; 5];
        dequantize_row_f16(&h, &mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= a.abs() * 1e-3 + 1e-7, "{a} {b}");
        }
    }
}
