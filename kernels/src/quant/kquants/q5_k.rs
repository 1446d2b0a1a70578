//! Q5_K: 5-bit weights (4 low bits + a high-bit plane), 6-bit scales and mins per 32 elements.

use super::*;

/// The 256 five-bit values of a Q5_K block in element order.
#[inline]
pub fn unpack_q5k(b: &BlockQ5K) -> [u8; QK_K] {
    let mut out = unpack_q4k(&b.qs);
    for (c, o) in out.chunks_exact_mut(32).enumerate() {
        for (o, &h) in o.iter_mut().zip(&b.qh) {
            *o |= ((h >> c) & 1) << 4;
        }
    }
    out
}

pub fn dequantize_row_q5_K(x: &[BlockQ5K], y: &mut [f32]) {
    check_row(x.len(), y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        dequantize_superblock_qkx(b.d, b.dmin, &b.scales, &unpack_q5k(b), y);
    }
}

pub fn quantize_row_q5_K(x: &[f32], y: &mut [BlockQ5K]) {
    check_row(y.len(), x.len());
    let mut l = [0u8; QK_K];
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (d, dmin, scales) = quantize_superblock_qkx(x, 31, -0.5, 15, &mut l);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        b.qh = [0; 32];
        for n in 0..4 {
            for j in 0..32 {
                let (mut l1, mut l2) = (l[64 * n + j], l[64 * n + j + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    b.qh[j] |= 1 << (2 * n);
                }
                if l2 > 15 {
                    l2 -= 16;
                    b.qh[j] |= 2 << (2 * n);
                }
                b.qs[32 * n + j] = l1 | (l2 << 4);
            }
        }
    }
}

pub fn vec_dot_q5_K_q8_K(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        sumf += vec_dot_superblock_qkx(bx.d, bx.dmin, &bx.scales, &unpack_q5k(bx), by);
    }
    sumf
}

weight_format!(
    Q5_K,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q5_K),
    BlockQ5K,
    dequantize_row_q5_K,
    quantize_row_q5_K,
    Q8_K,
    vec_dot_q5_K_q8_K
);
