//! Q6_K: 6-bit weights (4 low + 2 high bits), 8-bit signed scales per 16 elements.

use super::*;

/// The 256 signed 6-bit values (-32..=31) of a Q6_K block in element order. In each half
/// `h` of 128 elements, element `32 * i + l` takes the low (`i < 2`) or high nibble of
/// `ql[64 * h + 32 * (i % 2) + l]` and bits `2i..2i+2` of `qh[32 * h + l]`.
#[inline]
pub fn unpack_q6k(b: &BlockQ6K) -> [i8; QK_K] {
    let mut out = [0i8; QK_K];
    for ((o, ql), qh) in out
        .chunks_exact_mut(128)
        .zip(b.ql.chunks_exact(64))
        .zip(b.qh.chunks_exact(32))
    {
        for l in 0..32 {
            let (a, c, h) = (ql[l], ql[l + 32], qh[l]);
            o[l] = ((a & 0xf) | ((h & 3) << 4)) as i8 - 32;
            o[l + 32] = ((c & 0xf) | (((h >> 2) & 3) << 4)) as i8 - 32;
            o[l + 64] = ((a >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
            o[l + 96] = ((c >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    out
}

pub fn dequantize_row_q6_K(x: &[BlockQ6K], y: &mut [f32]) {
    check_row(x.len(), y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let q = unpack_q6k(b);
        for ((ys, qs), &sc) in y
            .chunks_exact_mut(16)
            .zip(q.chunks_exact(16))
            .zip(&b.scales)
        {
            let dl = d * sc as f32;
            for (o, &q) in ys.iter_mut().zip(qs) {
                *o = dl * q as f32;
            }
        }
    }
}

pub fn quantize_row_q6_K(x: &[f32], y: &mut [BlockQ6K]) {
    check_row(y.len(), x.len());
    let mut l = [0i8; QK_K];
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for j in 0..16 {
            let s = make_qx_quants(32, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16], 1);
            scales[j] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *b = BlockQ6K::zeroed();
            continue;
        }
        let iscale = -128.0 / max_scale;
        b.d = f32_to_f16(1.0 / iscale);
        for (o, &s) in b.scales.iter_mut().zip(&scales) {
            *o = nearest_int(iscale * s).min(127) as i8;
        }
        for j in 0..16 {
            let d = f16_to_f32(b.d) * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for i in 0..16 {
                l[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for half in 0..2 {
            for j in 0..32 {
                let e = 128 * half + j;
                let q = [
                    l[e] as u8,
                    l[e + 32] as u8,
                    l[e + 64] as u8,
                    l[e + 96] as u8,
                ];
                b.ql[64 * half + j] = (q[0] & 0xf) | ((q[2] & 0xf) << 4);
                b.ql[64 * half + j + 32] = (q[1] & 0xf) | ((q[3] & 0xf) << 4);
                b.qh[32 * half + j] =
                    (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
            }
        }
    }
}

pub fn vec_dot_q6_K_q8_K(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let q = unpack_q6k(bx);
        let mut isum = 0i32;
        for ((qs, ys), &sc) in q
            .chunks_exact(16)
            .zip(by.qs.chunks_exact(16))
            .zip(&bx.scales)
        {
            isum += sc as i32 * dot_i8_i8(qs, ys);
        }
        sumf += f16_to_f32(bx.d) * by.d * isum as f32;
    }
    sumf
}

weight_format!(
    Q6_K,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q6_K),
    BlockQ6K,
    dequantize_row_q6_K,
    quantize_row_q6_K,
    Q8_K,
    vec_dot_q6_K_q8_K
);
