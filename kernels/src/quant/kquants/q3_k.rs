//! Q3_K: 3-bit weights (2 low bits + a high-bit mask), 6-bit signed scales per 16 elements.

use super::*;

/// The 256 signed 3-bit values (-4..=3) of a Q3_K block in element order.
#[inline]
pub fn unpack_q3k(b: &BlockQ3K) -> [i8; QK_K] {
    let low = unpack_2bit(&b.qs);
    let mut out = [0i8; QK_K];
    for (c, (o, lo)) in out
        .chunks_exact_mut(32)
        .zip(low.chunks_exact(32))
        .enumerate()
    {
        for ((o, &lo), &hm) in o.iter_mut().zip(lo).zip(&b.hmask) {
            let high = (hm >> c) & 1;
            *o = lo as i8 - if high != 0 { 0 } else { 4 };
        }
    }
    out
}

pub fn dequantize_row_q3_K(x: &[BlockQ3K], y: &mut [f32]) {
    check_row(x.len(), y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d_all = f16_to_f32(b.d);
        let scales = q3k_scales(&b.scales);
        let q = unpack_q3k(b);
        for ((ys, qs), &sc) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&scales) {
            let dl = d_all * (sc as i32 - 32) as f32;
            for (o, &q) in ys.iter_mut().zip(qs) {
                *o = dl * q as f32;
            }
        }
    }
}

pub fn quantize_row_q3_K(x: &[f32], y: &mut [BlockQ3K]) {
    check_row(y.len(), x.len());
    let mut l = [0i8; QK_K];
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut scales = [0f32; 16];
        let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
        for j in 0..16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            let s = scales[j].abs();
            if s > amax {
                amax = s;
                max_scale = scales[j];
            }
        }
        b.scales = [0; 12];
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                // ggml stores nearest_int into an int8_t before clamping.
                let q = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
                if j < 8 {
                    b.scales[j] = q & 0xf;
                } else {
                    b.scales[j - 8] |= (q & 0xf) << 4;
                }
                b.scales[j % 4 + 8] |= (q >> 4) << (2 * (j / 4));
            }
            b.d = f32_to_f16(1.0 / iscale);
        } else {
            b.d = f32_to_f16(0.0);
        }
        let packed = q3k_scales(&b.scales);
        for j in 0..16 {
            let d = f16_to_f32(b.d) * (packed[j] as i32 - 32) as f32;
            if d == 0.0 {
                continue;
            }
            for i in 0..16 {
                l[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-4, 3) + 4) as i8;
            }
        }
        b.hmask = [0; 32];
        let mut low = [0u8; QK_K];
        for (e, (&q, lo)) in l.iter().zip(low.iter_mut()).enumerate() {
            let mut q = q as u8;
            if q > 3 {
                b.hmask[e % 32] |= 1 << (e / 32);
                q -= 4;
            }
            *lo = q;
        }
        pack_2bit(&low, &mut b.qs);
    }
}

pub fn vec_dot_q3_K_q8_K(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let scales = q3k_scales(&bx.scales);
        let q = unpack_q3k(bx);
        let mut isum = 0i32;
        for ((qs, ys), &sc) in q.chunks_exact(16).zip(by.qs.chunks_exact(16)).zip(&scales) {
            isum += (sc as i32 - 32) * dot_i8_i8(qs, ys);
        }
        sumf += f16_to_f32(bx.d) * by.d * isum as f32;
    }
    sumf
}

weight_format!(
    Q3_K,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q3_K),
    BlockQ3K,
    dequantize_row_q3_K,
    quantize_row_q3_K,
    Q8_K,
    vec_dot_q3_K_q8_K
);
