//! Activation converters: F16, and the Q8_0 / Q8_1 / Q8_K quantizers (the same bytes as
//! `cpu/scalar/dot.rs`).

use super::*;

/// # Safety
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX-512.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub unsafe fn convert_row_f16(x: &[f32], out: &mut [u8]) {
    debug_assert!(out.len() >= 2 * x.len());
    let mut i = 0;
    while i + 16 <= x.len() {
        // SAFETY: values i..i+16 lie within `x`, their bytes within `out`.
        unsafe {
            let v = _mm512_loadu_ps(x.as_ptr().add(i));
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            _mm256_storeu_si256(out.as_mut_ptr().add(2 * i).cast(), h);
        }
        i += 16;
    }
    scalar::convert_row_f16(&x[i..], &mut out[2 * i..]);
}

/// Quantizes one 32-value block at `x`; returns (d, qs as 32 bytes in an xmm pair, Σq).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn quantize_block_q8(x: *const f32, qs: *mut u8) -> (f32, i32) {
    // SAFETY: the caller guarantees 32 readable floats at `x` and 32 writable bytes at `qs`.
    let (v0, v1) = unsafe { (_mm512_loadu_ps(x), _mm512_loadu_ps(x.add(16))) };
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let idv = _mm512_set1_ps(id);
    // cvtps2dq rounds half to even under the default MXCSR, like _mm256_round_ps in ggml.
    let lo = _mm512_set1_epi32(-128);
    let hi = _mm512_set1_epi32(127);
    let q0 = _mm512_max_epi32(
        _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v0, idv)), hi),
        lo,
    );
    let q1 = _mm512_max_epi32(
        _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v1, idv)), hi),
        lo,
    );
    let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    // SAFETY: 32 writable bytes at `qs` (caller contract).
    unsafe {
        _mm_storeu_si128(qs.cast(), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128(qs.add(16).cast(), _mm512_cvtsepi32_epi8(q1));
    }
    (d, sum)
}

/// # Safety
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX-512.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
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
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX-512.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
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
/// See [`crate::cpu::QuantizeRowFn`]; the CPU supports AVX-512.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    debug_assert!(x.len().is_multiple_of(256) && out.len() >= x.len() / 256 * 292);
    for b in 0..x.len() / 256 {
        // SAFETY: super-block b's 256 floats lie within `x`, its 292 bytes within `out`.
        let xp = unsafe { x.as_ptr().add(256 * b) };
        let o = &mut out[292 * b..292 * b + 292];
        let mut v = [_mm512_setzero_ps(); 16];
        let mut amaxv = _mm512_setzero_ps();
        for (k, v) in v.iter_mut().enumerate() {
            // SAFETY: values 16k..16k+16 of the super-block.
            *v = unsafe { _mm512_loadu_ps(xp.add(16 * k)) };
            amaxv = _mm512_max_ps(amaxv, _mm512_abs_ps(*v));
        }
        let amax = _mm512_reduce_max_ps(amaxv);
        if amax == 0.0 {
            o.fill(0);
            continue;
        }
        // The signed value of the first element with the largest magnitude (ggml keeps the
        // first on ties).
        let amaxs = _mm512_set1_ps(amax);
        let mut max = 0f32;
        for (k, v) in v.iter().enumerate() {
            let m = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(*v), amaxs);
            if m != 0 {
                // SAFETY: index 16k + tz < 256 lies within the super-block.
                max = unsafe { *xp.add(16 * k + m.trailing_zeros() as usize) };
                break;
            }
        }
        let iscale = -127.0 / max;
        let isv = _mm512_set1_ps(iscale);
        let magic = _mm512_set1_ps(12582912.0);
        for (k, v) in v.iter().enumerate() {
            // ggml's nearest_int: (bits(x + 1.5·2²³) & 0x7fffff) - 0x400000, then clamped.
            let t = _mm512_castps_si512(_mm512_add_ps(_mm512_mul_ps(*v, isv), magic));
            let q = _mm512_sub_epi32(
                _mm512_and_si512(t, _mm512_set1_epi32(0x007f_ffff)),
                _mm512_set1_epi32(0x0040_0000),
            );
            let q = _mm512_max_epi32(
                _mm512_min_epi32(q, _mm512_set1_epi32(127)),
                _mm512_set1_epi32(-128),
            );
            let q8 = _mm512_cvtepi32_epi8(q);
            let sum = _mm512_reduce_add_epi32(q);
            // SAFETY: bytes 4 + 16k .. 4 + 16k + 16 lie within the 292-byte block.
            unsafe { _mm_storeu_si128(o.as_mut_ptr().add(4 + 16 * k).cast(), q8) };
            o[260 + 2 * k..262 + 2 * k].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        o[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}
