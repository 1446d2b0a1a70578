//! K-quants (256-value super-blocks: Q4_K, Q5_K, Q6_K) against Q8_K.

use super::*;

/// Σ over 8 sub-blocks of mins[k]·(bsums[2k] + bsums[2k+1]) as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn mins_dot_bsums(mins8: &[u8], bsums: *const u8) -> __m256i {
    // SAFETY: `mins8` has 8 bytes; the caller guarantees 32 readable bytes at `bsums`.
    unsafe {
        let m = _mm_loadl_epi64(mins8.as_ptr().cast());
        let m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
        _mm256_madd_epi16(_mm256_loadu_si256(bsums.cast()), m16)
    }
}

/// Q4_K (144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 nibble bytes) and
/// Q5_K (176 bytes: the same plus 32 bytes of fifth bits before the nibbles) · Q8_K, for `T`
/// activation rows at once (each token's result is bit-identical to its `T = 1` result).
///
/// # Safety
/// `wp` points to n/256 blocks of the weight type and each `ap[t]` to n/256 Q8_K blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn q45_k_q8_k<const T: usize, const Q5: bool>(
    n: usize,
    wp: *const u8,
    ap: [*const u8; T],
) -> [f32; T] {
    let nb = n / 256;
    let (ts, qs_off) = if Q5 { (176, 48) } else { (144, 16) };
    let idx: [__m512i; 4] = std::array::from_fn(|j| halves_epi32(2 * j as i32, 2 * j as i32 + 1));
    // Q5_K chunk j takes bit 2j of qh for its first 32 values and bit 2j+1 for the next 32.
    let bits: [__m512i; 4] = std::array::from_fn(|j| {
        _mm512_mask_blend_epi8(
            0xFFFF_FFFF_0000_0000,
            _mm512_set1_epi8(1 << (2 * j)),
            _mm512_set1_epi8((1u8 << (2 * j + 1)) as i8),
        )
    });
    let sixteen = _mm512_set1_epi8(16);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut accm = [_mm256_setzero_ps(); T];
    for i in 0..nb {
        // SAFETY: super-block i of every row lies within it (caller contract); the loads below
        // stay inside the 144/176-byte weight block and the 292-byte Q8_K blocks.
        unsafe {
            let x = wp.add(ts * i);
            let xs = std::slice::from_raw_parts(x, ts);
            let sm = scalar::unpack_scales_mins_k4(&xs[4..16]);
            let sc32 =
                _mm512_castsi256_si512(_mm256_cvtepu8_epi32(_mm_loadl_epi64(sm.as_ptr().cast())));
            let (xd, xdmin) = (f16_at(x), f16_at(x.add(2)));
            let qh = if Q5 {
                _mm512_broadcast_i64x4(_mm256_loadu_si256(x.add(16).cast()))
            } else {
                _mm512_setzero_si512()
            };
            let mut isum = [_mm512_setzero_si512(); T];
            for j in 0..4 {
                let mut q = nibbles_32(x.add(qs_off + 32 * j));
                if Q5 {
                    q = _mm512_mask_add_epi8(q, _mm512_test_epi8_mask(qh, bits[j]), q, sixteen);
                }
                let scv = _mm512_permutexvar_epi32(idx[j], sc32);
                for t in 0..T {
                    let yv = _mm512_loadu_si512(ap[t].add(292 * i + 4 + 64 * j).cast());
                    let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, yv);
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(dot, scv));
                }
            }
            for t in 0..T {
                let y = ap[t].add(292 * i);
                let yd = f32_at(y);
                acc[t] =
                    _mm512_fmadd_ps(_mm512_set1_ps(xd * yd), _mm512_cvtepi32_ps(isum[t]), acc[t]);
                let m = mins_dot_bsums(&sm[8..16], y.add(260));
                accm[t] =
                    _mm256_fmadd_ps(_mm256_set1_ps(xdmin * yd), _mm256_cvtepi32_ps(m), accm[t]);
            }
        }
    }
    std::array::from_fn(|t| _mm512_reduce_add_ps(acc[t]) - hsum_256(accm[t]))
}

/// Defines the one-token and four-token entry points of a K-quant kernel.
macro_rules! k_one_and_four {
    ($(#[$doc:meta])* $name:ident, $name4:ident, $imp:path, $w_ts:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// See [`crate::cpu::VecDotFn`]; the CPU supports AVX-512.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
            debug_assert!(w.len() >= n / 256 * $w_ts && a.len() >= n / 256 * 292);
            // SAFETY: the caller's contract is this function's.
            unsafe { $imp(n, w.as_ptr(), [a.as_ptr()])[0] }
        }

        /// Four activation rows at once; see [`crate::cpu::VecDot4Fn`].
        ///
        /// # Safety
        /// See [`crate::cpu::VecDot4Fn`]; the CPU supports AVX-512.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $name4(n: usize, w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            debug_assert!(w.len() >= n / 256 * $w_ts && a.iter().all(|a| a.len() >= n / 256 * 292));
            // SAFETY: the caller's contract is this function's.
            unsafe { $imp(n, w.as_ptr(), a.map(|a| a.as_ptr())) }
        }
    };
}

k_one_and_four!(
    /// Q4_K · Q8_K.
    vec_dot_q4_k_q8_k, vec_dot4_q4_k_q8_k, q45_k_q8_k::<_, false>, 144
);
k_one_and_four!(
    /// Q5_K · Q8_K.
    vec_dot_q5_k_q8_k, vec_dot4_q5_k_q8_k, q45_k_q8_k::<_, true>, 176
);

/// Q6_K (210 bytes: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 × i8 scales, f16 d;
/// value = (q - 32)·scale·d) · Q8_K for `T` activation rows. The -32 offset is removed with the
/// Q8_K sums.
///
/// # Safety
/// `wp` points to n/256 Q6_K blocks and each `ap[t]` to n/256 Q8_K blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k_q8_k<const T: usize>(n: usize, wp: *const u8, ap: [*const u8; T]) -> [f32; T] {
    let nb = n / 256;
    // Chunk c (64 values) uses scales 4c..4c+4, four i32 lanes each.
    let idx: [__m512i; 4] = std::array::from_fn(|c| {
        let c = 4 * c as i32;
        _mm512_set_epi32(
            c + 3,
            c + 3,
            c + 3,
            c + 3,
            c + 2,
            c + 2,
            c + 2,
            c + 2,
            c + 1,
            c + 1,
            c + 1,
            c + 1,
            c,
            c,
            c,
            c,
        )
    });
    let m4 = _mm512_set1_epi8(0x0F);
    let m30 = _mm512_set1_epi8(0x30);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut accc = [_mm256_setzero_ps(); T];
    for i in 0..nb {
        // SAFETY: super-block i of every row lies within it (caller contract); the loads below
        // stay inside the 210-byte weight block and the 292-byte Q8_K blocks.
        unsafe {
            let xp = wp.add(210 * i);
            let xd = f16_at(xp.add(208));
            let sc128 = _mm_loadu_si128(xp.add(192).cast());
            let sc32 = _mm512_cvtepi8_epi32(sc128);
            let mut isum = [_mm512_setzero_si512(); T];
            for h in 0..2 {
                let ql = _mm512_loadu_si512(xp.add(64 * h).cast());
                let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(xp.add(128 + 32 * h).cast()));
                // Values 0..64 of this half: low nibbles, high bits 0-1 then 2-3 of qh.
                let ha = _mm512_and_si512(
                    _mm512_sllv_epi64(qh, _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4)),
                    m30,
                );
                let qa = _mm512_or_si512(_mm512_and_si512(ql, m4), ha);
                // Values 64..128: high nibbles, high bits 4-5 then 6-7.
                let hb = _mm512_and_si512(
                    _mm512_srlv_epi64(qh, _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0)),
                    m30,
                );
                let qb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), hb);
                let sca = _mm512_permutexvar_epi32(idx[2 * h], sc32);
                let scb = _mm512_permutexvar_epi32(idx[2 * h + 1], sc32);
                for t in 0..T {
                    let yp = ap[t].add(292 * i);
                    let ya = _mm512_loadu_si512(yp.add(4 + 128 * h).cast());
                    let yb = _mm512_loadu_si512(yp.add(4 + 128 * h + 64).cast());
                    let da = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qa, ya);
                    let db = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qb, yb);
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(da, sca));
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(db, scb));
                }
            }
            let sc16 = _mm256_cvtepi8_epi16(sc128);
            for t in 0..T {
                let yp = ap[t].add(292 * i);
                let d = xd * f32_at(yp);
                acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(isum[t]), acc[t]);
                let corr = _mm256_madd_epi16(_mm256_loadu_si256(yp.add(260).cast()), sc16);
                accc[t] =
                    _mm256_fmadd_ps(_mm256_set1_ps(32.0 * d), _mm256_cvtepi32_ps(corr), accc[t]);
            }
        }
    }
    std::array::from_fn(|t| _mm512_reduce_add_ps(acc[t]) - hsum_256(accc[t]))
}

k_one_and_four!(
    /// Q6_K · Q8_K.
    vec_dot_q6_k_q8_k, vec_dot4_q6_k_q8_k, q6_k_q8_k, 210
);

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn hsum_256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}
