//! Q2_K: 2-bit weights, 4-bit scales and mins per 16 elements.

use super::*;

pub fn dequantize_row_q2_K(x: &[BlockQ2K], y: &mut [f32]) {
    check_row(x.len(), y.len());
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (f16_to_f32(b.d), f16_to_f32(b.dmin));
        let q = unpack_2bit(&b.qs);
        for ((ys, qs), &sc) in y
            .chunks_exact_mut(16)
            .zip(q.chunks_exact(16))
            .zip(&b.scales)
        {
            let dl = d * (sc & 0xf) as f32;
            let ml = dmin * (sc >> 4) as f32;
            for (o, &q) in ys.iter_mut().zip(qs) {
                *o = dl * q as f32 - ml;
            }
        }
    }
}

pub fn quantize_row_q2_K(x: &[f32], y: &mut [BlockQ2K]) {
    check_row(y.len(), x.len());
    const Q4SCALE: f32 = 15.0;
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut scales = [0f32; 16];
        let mut mins = [0f32; 16];
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for j in 0..16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (s, m) = make_qkx2_quants(
                3,
                xs,
                &weights,
                &mut l[16 * j..16 * j + 16],
                &mut laux,
                -0.5,
                0.1,
                15,
                true,
            );
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for j in 0..16 {
                b.scales[j] = nearest_int(iscale * scales[j]) as u8;
            }
            b.d = f32_to_f16(max_scale / Q4SCALE);
        } else {
            b.scales = [0; 16];
            b.d = f32_to_f16(0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for j in 0..16 {
                b.scales[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
            }
            b.dmin = f32_to_f16(max_min / Q4SCALE);
        } else {
            b.dmin = f32_to_f16(0.0);
        }
        for j in 0..16 {
            let d = f16_to_f32(b.d) * (b.scales[j] & 0xf) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = f16_to_f32(b.dmin) * (b.scales[j] >> 4) as f32;
            for i in 0..16 {
                l[16 * j + i] = nearest_int((x[16 * j + i] + dm) / d).clamp(0, 3) as u8;
            }
        }
        pack_2bit(&l, &mut b.qs);
    }
}

pub fn vec_dot_q2_K_q8_K(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut summs = 0i32;
        for (&s, &sc) in by.bsums.iter().zip(&bx.scales) {
            summs += s as i32 * (sc >> 4) as i32;
        }
        let q = unpack_2bit(&bx.qs);
        let mut isum = 0i32;
        for ((qs, ys), &sc) in q
            .chunks_exact(16)
            .zip(by.qs.chunks_exact(16))
            .zip(&bx.scales)
        {
            isum += (sc & 0xf) as i32 * dot_u8_i8(qs, ys);
        }
        let dall = by.d * f16_to_f32(bx.d);
        let dmin = by.d * f16_to_f32(bx.dmin);
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

weight_format!(
    Q2_K,
    crate::quant::QuantFormat::Ggml(crate::quant::GgmlType::Q2_K),
    BlockQ2K,
    dequantize_row_q2_K,
    quantize_row_q2_K,
    Q8_K,
    vec_dot_q2_K_q8_K
);
