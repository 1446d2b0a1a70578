//! Q4_K: 4-bit weights, 6-bit scales and mins per 32 elements.

use super::*;

/// The 256 nibbles of a Q4_K / Q5_K `qs` array in element order: element `64 * n + l` is the
/// low nibble of `qs[32 * n + l]`, element `64 * n + 32 + l` its high nibble.
#[inline]
pub fn unpack_q4k(qs: &[u8; 128]) -> [u8; QK_K] {
    let mut out = [0u8; QK_K];
    for (o, q) in out.chunks_exact_mut(64).zip(qs.chunks_exact(32)) {
        let (lo, hi) = o.split_at_mut(32);
        for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
            *lo = q & 0xf;
            *hi = q >> 4;
        }
    }
    out
}

pub fn dequantize_row_q4_K(x: &[BlockQ4K], y: &mut [f32]) {
    check_row(x.len(), y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        dequantize_superblock_qkx(b.d, b.dmin, &b.scales, &unpack_q4k(&b.qs), y);
    }
}

pub fn quantize_row_q4_K(x: &[f32], y: &mut [BlockQ4K]) {
    check_row(y.len(), x.len());
    let mut l = [0u8; QK_K];
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (d, dmin, scales) = quantize_superblock_qkx(x, 15, -1.0, 20, &mut l);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        for n in 0..4 {
            for j in 0..32 {
                b.qs[32 * n + j] = l[64 * n + j] | (l[64 * n + j + 32] << 4);
            }
        }
    }
}

pub fn vec_dot_q4_K_q8_K(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        sumf += vec_dot_superblock_qkx(bx.d, bx.dmin, &bx.scales, &unpack_q4k(&bx.qs), by);
    }
    sumf
}

weight_format!(
    Q4_K,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q4_K),
    BlockQ4K,
    dequantize_row_q4_K,
    quantize_row_q4_K,
    Q8_K,
    vec_dot_q4_K_q8_K
);
