//! Activation converters: F16, and the Q8_0 / Q8_1 / Q8_K quantizers (the same bytes as
//! `cpu/scalar/dot.rs`).

use super::*;

/// # Safety
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn convert_row_f16(x: &[f32], out: &mut [u8]) {
    debug_assert!(out.len() >= 2 * x.len());
    let mut i = 0;
    while i + 8 <= x.len() {
        // SAFETY: values i..i+8 lie within `x`, their bytes within `out`.
        unsafe {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(out.as_mut_ptr().add(2 * i).cast(), h);
        }
        i += 8;
    }
    scalar::convert_row_f16(&x[i..], &mut out[2 * i..]);
}

/// Quantizes one 32-value block at `x` into 32 bytes at `qs`; returns (d, Σq).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block_q8(x: *const f32, qs: *mut u8) -> (f32, i32) {
    // SAFETY: the caller guarantees 32 readable floats at `x`.
    let v: [__m256; 4] = std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.add(8 * k)) });
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_andnot_ps(sign, v[0]);
    for vk in &v[1..] {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vk));
    }
    let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    let amax = _mm_cvtss_f32(m4);
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
    let (lo, hi) = (_mm256_set1_epi32(-128), _mm256_set1_epi32(127));
    // cvtps2dq rounds half to even under the default MXCSR, like _mm256_round_ps in ggml.
    let q: [__m256i; 4] = std::array::from_fn(|k| {
        _mm256_max_epi32(
            _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[k], id)), hi),
            lo,
        )
    });
    let sum = hsum_epi32(_mm256_add_epi32(
        _mm256_add_epi32(q[0], q[1]),
        _mm256_add_epi32(q[2], q[3]),
    ));
    let p01 = _mm256_packs_epi32(q[0], q[1]);
    let p23 = _mm256_packs_epi32(q[2], q[3]);
    let p = _mm256_packs_epi16(p01, p23);
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: the caller guarantees 32 writable bytes at `qs`.
    unsafe { _mm256_storeu_si256(qs.cast(), p) };
    (d, sum)
}

/// # Safety
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    debug_assert!(x.len().is_multiple_of(32) && out.len() >= x.len() / 32 * 34);
    for b in 0..x.len() / 32 {
        // SAFETY: block b's 32 floats lie within `x`, its 34 bytes within `out`.
        unsafe {
            let o = out.as_mut_ptr().add(34 * b);
            let (d, _) = quantize_block_q8(x.as_ptr().add(32 * b), o.add(2));
            o.cast::<u16>()
                .write_unaligned(half::f16::from_f32(d).to_bits().to_le());
        }
    }
}

/// # Safety
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_1(x: &[f32], out: &mut [u8]) {
    debug_assert!(x.len().is_multiple_of(32) && out.len() >= x.len() / 32 * 36);
    for b in 0..x.len() / 32 {
        // SAFETY: block b's 32 floats lie within `x`, its 36 bytes within `out`.
        unsafe {
            let o = out.as_mut_ptr().add(36 * b);
            let (d, sum) = quantize_block_q8(x.as_ptr().add(32 * b), o.add(4));
            o.cast::<u16>()
                .write_unaligned(half::f16::from_f32(d).to_bits().to_le());
            o.add(2)
                .cast::<u16>()
                .write_unaligned(half::f16::from_f32(d * sum as f32).to_bits().to_le());
        }
    }
}

/// # Safety
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    debug_assert!(x.len().is_multiple_of(256) && out.len() >= x.len() / 256 * 292);
    let sign = _mm256_set1_ps(-0.0);
    for b in 0..x.len() / 256 {
        let xb = &x[256 * b..256 * b + 256];
        let o = &mut out[292 * b..292 * b + 292];
        // SAFETY: values 8k..8k+8 lie within the 256 of `xb`.
        let v: [__m256; 32] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(xb.as_ptr().add(8 * k)) });
        let mut m = _mm256_setzero_ps();
        for vk in &v {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vk));
        }
        let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        if amax == 0.0 {
            o.fill(0);
            continue;
        }
        // The first element of the largest magnitude keeps its sign (ggml keeps the first).
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        let isv = _mm256_set1_ps(iscale);
        let magic = _mm256_set1_ps(12582912.0);
        for k in 0..16 {
            let mut q = [_mm256_setzero_si256(); 2];
            for (h, q) in q.iter_mut().enumerate() {
                // ggml's nearest_int, then clamped to [-128, 127].
                let t = _mm256_castps_si256(_mm256_add_ps(_mm256_mul_ps(v[2 * k + h], isv), magic));
                let t = _mm256_sub_epi32(
                    _mm256_and_si256(t, _mm256_set1_epi32(0x007f_ffff)),
                    _mm256_set1_epi32(0x0040_0000),
                );
                *q = _mm256_max_epi32(
                    _mm256_min_epi32(t, _mm256_set1_epi32(127)),
                    _mm256_set1_epi32(-128),
                );
            }
            let sum = hsum_epi32(_mm256_add_epi32(q[0], q[1]));
            let p = _mm256_packs_epi32(q[0], q[1]);
            let p = _mm256_permute4x64_epi64(p, 0b11_01_10_00);
            let p8 = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
            // SAFETY: bytes 4 + 16k .. 4 + 16k + 16 lie within the 292-byte block.
            unsafe { _mm_storeu_si128(o.as_mut_ptr().add(4 + 16 * k).cast(), p8) };
            o[260 + 2 * k..262 + 2 * k].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        o[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
