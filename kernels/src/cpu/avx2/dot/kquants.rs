//! K-quants (256-value super-blocks: Q4_K, Q5_K, Q6_K) against Q8_K.

use super::*;

/// Σ mins[k]·(bsums[2k] + bsums[2k+1]) as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mins_dot_bsums(mins8: &[u8], bsums: *const u8) -> __m256i {
    // SAFETY: `mins8` has 8 bytes; the caller guarantees 32 readable bytes at `bsums`.
    unsafe {
        let m = _mm_loadl_epi64(mins8.as_ptr().cast());
        let m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
        _mm256_madd_epi16(_mm256_loadu_si256(bsums.cast()), m16)
    }
}

/// Q4_K and Q5_K share everything but the fifth bit: `qh` is null for Q4_K.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45_k_superblock(
    x: &[u8],
    qs: usize,
    qh: Option<usize>,
    y: &[u8],
) -> (__m256i, __m256i, f32, f32) {
    let m4 = _mm256_set1_epi8(0x0F);
    // SAFETY: x holds a whole Q4_K/Q5_K super-block and y a Q8_K one; offsets below are inside.
    unsafe {
        let yd = f32_at(y.as_ptr());
        let d = f16_at(x.as_ptr()) * yd;
        let dmin = f16_at(x.as_ptr().add(2)) * yd;
        let sm = scalar::unpack_scales_mins_k4(&x[4..16]);
        let hv = qh.map(|o| _mm256_loadu_si256(x.as_ptr().add(o).cast()));
        let mut isum = _mm256_setzero_si256();
        for j in 0..4 {
            let qb = _mm256_loadu_si256(x.as_ptr().add(qs + 32 * j).cast());
            let mut lo = _mm256_and_si256(qb, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(qb, 4), m4);
            if let Some(h) = hv {
                let b0 = _mm256_set1_epi8(1 << (2 * j));
                let b1 = _mm256_set1_epi8((1u8 << (2 * j + 1)) as i8);
                let sixteen = _mm256_set1_epi8(16);
                lo = _mm256_or_si256(
                    lo,
                    _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, b0), b0), sixteen),
                );
                hi = _mm256_or_si256(
                    hi,
                    _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, b1), b1), sixteen),
                );
            }
            let y0 = _mm256_loadu_si256(y.as_ptr().add(4 + 64 * j).cast());
            let y1 = _mm256_loadu_si256(y.as_ptr().add(36 + 64 * j).cast());
            let p0 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, y0),
                _mm256_set1_epi16(sm[2 * j] as i16),
            );
            let p1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, y1),
                _mm256_set1_epi16(sm[2 * j + 1] as i16),
            );
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(p0, p1));
        }
        let m = mins_dot_bsums(&sm[8..16], y.as_ptr().add(260));
        (isum, m, d, dmin)
    }
}

/// Q4_K · Q8_K.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 256;
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    for i in 0..nb {
        // SAFETY: the sliced super-blocks are whole (bounds-checked slicing).
        let (isum, m, d, dmin) = unsafe {
            q45_k_superblock(
                &w[144 * i..144 * i + 144],
                16,
                None,
                &a[292 * i..292 * i + 292],
            )
        };
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(m), accm);
    }
    hsum_ps(acc) - hsum_ps(accm)
}

/// Q5_K · Q8_K.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q5_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 256;
    let mut acc = _mm256_setzero_ps();
    let mut accm = _mm256_setzero_ps();
    for i in 0..nb {
        // SAFETY: the sliced super-blocks are whole (bounds-checked slicing).
        let (isum, m, d, dmin) = unsafe {
            q45_k_superblock(
                &w[176 * i..176 * i + 176],
                48,
                Some(16),
                &a[292 * i..292 * i + 292],
            )
        };
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(m), accm);
    }
    hsum_ps(acc) - hsum_ps(accm)
}

/// Q6_K · Q8_K.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let nb = n / 256;
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    let mut acc = _mm256_setzero_ps();
    let mut accc = _mm256_setzero_ps();
    for i in 0..nb {
        let x = &w[210 * i..210 * i + 210];
        let y = &a[292 * i..292 * i + 292];
        let sc = &x[192..208];
        // SAFETY: x has 210 bytes and y 292 (sliced above); every load below stays inside.
        unsafe {
            let (xp, yp) = (x.as_ptr(), y.as_ptr());
            let d = f16_at(xp.add(208)) * f32_at(yp);
            let mut isum = _mm256_setzero_si256();
            for h in 0..2 {
                let ql0 = _mm256_loadu_si256(xp.add(64 * h).cast());
                let ql1 = _mm256_loadu_si256(xp.add(64 * h + 32).cast());
                let qh = _mm256_loadu_si256(xp.add(128 + 32 * h).cast());
                let v = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                        _mm256_and_si256(qh, m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
                    ),
                ];
                for (k, v) in v.iter().enumerate() {
                    let yv = _mm256_loadu_si256(yp.add(4 + 128 * h + 32 * k).cast());
                    let s = 8 * h + 2 * k;
                    let scv = _mm256_set_m128i(
                        _mm_set1_epi16(sc[s + 1] as i8 as i16),
                        _mm_set1_epi16(sc[s] as i8 as i16),
                    );
                    isum = _mm256_add_epi32(
                        isum,
                        _mm256_madd_epi16(_mm256_maddubs_epi16(*v, yv), scv),
                    );
                }
            }
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc.as_ptr().cast()));
            let corr = _mm256_madd_epi16(_mm256_loadu_si256(yp.add(260).cast()), sc16);
            accc = _mm256_fmadd_ps(_mm256_set1_ps(32.0 * d), _mm256_cvtepi32_ps(corr), accc);
        }
    }
    hsum_ps(acc) - hsum_ps(accc)
}
