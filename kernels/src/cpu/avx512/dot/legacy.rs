//! Legacy quants (32-value blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, NF4) against Q8_0 / Q8_1.

use super::*;

/// The f16 values at `base + idx[k]` (k = 0..16, byte offsets) as 16 f32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn gather_f16(base: *const u8, idx: __m512i) -> __m512 {
    // SAFETY: the caller guarantees 4 readable bytes at every base + idx[k].
    let g = unsafe { _mm512_i32gather_epi32::<1>(idx, base.cast()) };
    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g))
}

/// The shared loop of the 32-value block kernels, for `T` activation rows at once (prefill
/// reuses each unpacked weight register for several tokens; `T = 1` is the plain dot product,
/// and every token's result is bit-identical to its `T = 1` result).
///
/// `unpack(i, j)` returns the unsigned weight codes of blocks `i` and `j` (64 bytes) and
/// `dot(q, y)` their i32 sums against activation bytes `y` (lanes 0..8: block i, 8..16: block
/// j). The activation codes start `a_qoff` bytes into each activation block. Scales are the
/// f16 at offset 0 of each weight block (`w_ts` bytes) and activation block (`a_ts` bytes);
/// with `mins`, Σ m·s is added, m at offset 2 of the weight block and s (= d·Σq of Q8_1) at
/// offset 2 of the activation block.
///
/// Groups of 16 blocks gather their scales in one instruction per row (converting them one by
/// one was the bottleneck); the tail pairs blocks, the last one with itself at scale 0.
///
/// # Safety
/// `wp` points to `nb` blocks of `w_ts` bytes and every `ap[t]` to `nb` blocks of `a_ts` bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn legacy_dot<const T: usize>(
    nb: usize,
    wp: *const u8,
    w_ts: usize,
    ap: [*const u8; T],
    a_ts: usize,
    a_qoff: usize,
    mins: bool,
    unpack: impl Fn(usize, usize) -> __m512i,
    dot: impl Fn(__m512i, __m512i) -> __m512i,
) -> [f32; T] {
    let pair_idx: [__m512i; 8] =
        std::array::from_fn(|p| halves_epi32(2 * p as i32, 2 * p as i32 + 1));
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let widx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(w_ts as i32));
    let aidx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(a_ts as i32));
    let mut acc = [[_mm512_setzero_ps(); 2]; T];
    let mut accm = [_mm512_setzero_ps(); T];
    let mut tail_mins = [0f32; T];
    // SAFETY (whole body): every block index passed to `unpack`, to the activation loads and to
    // the gathers is < nb, so all reads stay within the rows (caller contract); the gathers
    // read 4 bytes at offsets 0 and 2 of blocks of at least 18 bytes.
    unsafe {
        let load_y = |t: usize, i: usize, j: usize| {
            load_2x32(ap[t].add(a_ts * i + a_qoff), ap[t].add(a_ts * j + a_qoff))
        };
        let mut i = 0;
        while i + 16 <= nb {
            let wb = wp.add(w_ts * i);
            let dw = gather_f16(wb, widx);
            let mw = if mins {
                gather_f16(wb.add(2), widx)
            } else {
                dw
            };
            let mut sc = [_mm512_setzero_ps(); T];
            for t in 0..T {
                let ab = ap[t].add(a_ts * i);
                sc[t] = _mm512_mul_ps(dw, gather_f16(ab, aidx));
                if mins {
                    accm[t] = _mm512_fmadd_ps(mw, gather_f16(ab.add(2), aidx), accm[t]);
                }
            }
            for p in 0..8 {
                let (bi, bj) = (i + 2 * p, i + 2 * p + 1);
                let q = unpack(bi, bj);
                for t in 0..T {
                    let sums = dot(q, load_y(t, bi, bj));
                    let scale = _mm512_permutexvar_ps(pair_idx[p], sc[t]);
                    acc[t][p & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc[t][p & 1]);
                }
            }
            i += 16;
        }
        while i < nb {
            let j = if i + 1 < nb { i + 1 } else { i };
            let q = unpack(i, j);
            let (wa, wb) = (wp.add(w_ts * i), wp.add(w_ts * j));
            for t in 0..T {
                let (aa, ab) = (ap[t].add(a_ts * i), ap[t].add(a_ts * j));
                let sa = f16_at(wa) * f16_at(aa);
                let sb = if j != i { f16_at(wb) * f16_at(ab) } else { 0.0 };
                if mins {
                    tail_mins[t] += f16_at(wa.add(2)) * f16_at(aa.add(2));
                    if j != i {
                        tail_mins[t] += f16_at(wb.add(2)) * f16_at(ab.add(2));
                    }
                }
                let sums = dot(q, load_y(t, i, j));
                acc[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), halves_ps(sa, sb), acc[t][0]);
            }
            i += 2;
        }
    }
    std::array::from_fn(|t| {
        _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]))
            + _mm512_reduce_add_ps(accm[t])
            + tail_mins[t]
    })
}

/// Defines the one-token and four-token entry points of a legacy kernel `$imp<T>`.
macro_rules! one_and_four {
    ($(#[$doc:meta])* $name:ident, $name4:ident, $imp:ident, $w_ts:expr, $a_ts:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// See [`crate::cpu::VecDotFn`]; the CPU supports AVX-512.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
            debug_assert!(w.len() >= n / 32 * $w_ts && a.len() >= n / 32 * $a_ts);
            // SAFETY: the caller's contract is this function's.
            unsafe { $imp::<1>(n, w.as_ptr(), [a.as_ptr()])[0] }
        }

        /// Four activation rows at once; see [`crate::cpu::VecDot4Fn`].
        ///
        /// # Safety
        /// See [`crate::cpu::VecDot4Fn`]; the CPU supports AVX-512.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $name4(n: usize, w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            debug_assert!(w.len() >= n / 32 * $w_ts && a.iter().all(|a| a.len() >= n / 32 * $a_ts));
            // SAFETY: the caller's contract is this function's.
            unsafe { $imp::<4>(n, w.as_ptr(), a.map(|a| a.as_ptr())) }
        }
    };
}

/// # Safety
/// `w` points to n/32 Q4_0 blocks and each `a[t]` to n/32 Q8_0 blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_0_q8_0<const T: usize>(n: usize, wp: *const u8, a: [*const u8; T]) -> [f32; T] {
    let off = _mm512_set1_epi8(8);
    // SAFETY: `legacy_dot` passes block indices < n/32.
    let unpack =
        |i: usize, j: usize| unsafe { nibbles_2x16(wp.add(18 * i + 2), wp.add(18 * j + 2)) };
    let dot = |q: __m512i, y: __m512i| {
        let z = _mm512_setzero_si512();
        _mm512_sub_epi32(_mm512_dpbusd_epi32(z, q, y), _mm512_dpbusd_epi32(z, off, y))
    };
    // SAFETY: the rows hold n/32 blocks (caller contract).
    unsafe { legacy_dot(n / 32, wp, 18, a, 34, 2, false, unpack, dot) }
}

one_and_four!(
    /// Q4_0 (18 bytes: f16 d, 16 nibble bytes; value = (q - 8)·d) · Q8_0.
    vec_dot_q4_0_q8_0, vec_dot4_q4_0_q8_0, q4_0_q8_0, 18, 34
);

/// # Safety
/// `w` points to n/32 Q4_1 blocks and each `a[t]` to n/32 Q8_1 blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_1_q8_1<const T: usize>(n: usize, wp: *const u8, a: [*const u8; T]) -> [f32; T] {
    // SAFETY: `legacy_dot` passes block indices < n/32.
    let unpack =
        |i: usize, j: usize| unsafe { nibbles_2x16(wp.add(20 * i + 4), wp.add(20 * j + 4)) };
    let dot = |q: __m512i, y: __m512i| _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y);
    // SAFETY: the rows hold n/32 blocks (caller contract).
    unsafe { legacy_dot(n / 32, wp, 20, a, 36, 4, true, unpack, dot) }
}

one_and_four!(
    /// Q4_1 (20 bytes: f16 d, f16 m, 16 nibble bytes; value = q·d + m) · Q8_1 (whose stored
    /// s = d·Σq folds the minimum into one term per block).
    vec_dot_q4_1_q8_1, vec_dot4_q4_1_q8_1, q4_1_q8_1, 20, 36
);

/// The fifth bits of two Q5 blocks (`qh` words at `pa`, `pb`) added as 16 to the 4-bit codes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn add_high_bits_2(q: __m512i, pa: *const u8, pb: *const u8) -> __m512i {
    // SAFETY: the caller guarantees four readable bytes at `pa` and at `pb`.
    let k = unsafe { u32_at(pa) as u64 | (u32_at(pb) as u64) << 32 };
    _mm512_mask_add_epi8(q, k, q, _mm512_set1_epi8(16))
}

/// # Safety
/// `w` points to n/32 Q5_0 blocks and each `a[t]` to n/32 Q8_0 blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn q5_0_q8_0<const T: usize>(n: usize, wp: *const u8, a: [*const u8; T]) -> [f32; T] {
    let off = _mm512_set1_epi8(16);
    let unpack = |i: usize, j: usize| {
        // SAFETY: `legacy_dot` passes block indices < n/32.
        unsafe {
            let (xa, xb) = (wp.add(22 * i), wp.add(22 * j));
            add_high_bits_2(nibbles_2x16(xa.add(6), xb.add(6)), xa.add(2), xb.add(2))
        }
    };
    let dot = |q: __m512i, y: __m512i| {
        let z = _mm512_setzero_si512();
        _mm512_sub_epi32(_mm512_dpbusd_epi32(z, q, y), _mm512_dpbusd_epi32(z, off, y))
    };
    // SAFETY: the rows hold n/32 blocks (caller contract).
    unsafe { legacy_dot(n / 32, wp, 22, a, 34, 2, false, unpack, dot) }
}

one_and_four!(
    /// Q5_0 (22 bytes: f16 d, u32 qh, 16 nibble bytes; value = ((q | h<<4) - 16)·d) · Q8_0.
    vec_dot_q5_0_q8_0, vec_dot4_q5_0_q8_0, q5_0_q8_0, 22, 34
);

/// # Safety
/// `w` points to n/32 Q5_1 blocks and each `a[t]` to n/32 Q8_1 blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn q5_1_q8_1<const T: usize>(n: usize, wp: *const u8, a: [*const u8; T]) -> [f32; T] {
    let unpack = |i: usize, j: usize| {
        // SAFETY: `legacy_dot` passes block indices < n/32.
        unsafe {
            let (xa, xb) = (wp.add(24 * i), wp.add(24 * j));
            add_high_bits_2(nibbles_2x16(xa.add(8), xb.add(8)), xa.add(4), xb.add(4))
        }
    };
    let dot = |q: __m512i, y: __m512i| _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y);
    // SAFETY: the rows hold n/32 blocks (caller contract).
    unsafe { legacy_dot(n / 32, wp, 24, a, 36, 4, true, unpack, dot) }
}

one_and_four!(
    /// Q5_1 (24 bytes: f16 d, f16 m, u32 qh, 16 nibble bytes; value = (q | h<<4)·d + m) · Q8_1.
    vec_dot_q5_1_q8_1, vec_dot4_q5_1_q8_1, q5_1_q8_1, 24, 36
);

/// # Safety
/// `w` points to n/32 Q8_0 blocks and each `a[t]` to n/32 Q8_0 blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_0_q8_0<const T: usize>(n: usize, wp: *const u8, a: [*const u8; T]) -> [f32; T] {
    let off = _mm512_set1_epi8(-128);
    // SAFETY: `legacy_dot` passes block indices < n/32.
    let unpack = |i: usize, j: usize| unsafe {
        _mm512_xor_si512(load_2x32(wp.add(34 * i + 2), wp.add(34 * j + 2)), off)
    };
    let dot = |q: __m512i, y: __m512i| {
        let z = _mm512_setzero_si512();
        _mm512_sub_epi32(_mm512_dpbusd_epi32(z, q, y), _mm512_dpbusd_epi32(z, off, y))
    };
    // SAFETY: the rows hold n/32 blocks (caller contract).
    unsafe { legacy_dot(n / 32, wp, 34, a, 34, 2, false, unpack, dot) }
}

one_and_four!(
    /// Q8_0 (34 bytes: f16 d, 32 × i8) · Q8_0. The weights are offset by 128 to unsigned bytes.
    vec_dot_q8_0_q8_0, vec_dot4_q8_0_q8_0, q8_0_q8_0, 34, 34
);

/// A signed codebook offset by 128, as unsigned bytes for `vpdpbusd`.
const fn plus_128(t: [i8; 16]) -> [u8; 16] {
    let mut o = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        o[i] = (t[i] as i16 + 128) as u8;
        i += 1;
    }
    o
}
const IQ4NL_PLUS_128: [u8; 16] = plus_128(KVALUES_IQ4NL);
const NF4_PLUS_128: [u8; 16] = plus_128(KVALUES_NF4);

/// # Safety
/// `w` points to n/32 IQ4_NL blocks and each `a[t]` to n/32 Q8_0 blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn iq4_nl_q8_0<const T: usize>(n: usize, wp: *const u8, a: [*const u8; T]) -> [f32; T] {
    // SAFETY: the table has 16 bytes.
    let table = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(IQ4NL_PLUS_128.as_ptr().cast()) });
    let off = _mm512_set1_epi8(-128);
    // SAFETY: `legacy_dot` passes block indices < n/32.
    let unpack = |i: usize, j: usize| unsafe {
        _mm512_shuffle_epi8(table, nibbles_2x16(wp.add(18 * i + 2), wp.add(18 * j + 2)))
    };
    let dot = |q: __m512i, y: __m512i| {
        let z = _mm512_setzero_si512();
        _mm512_sub_epi32(_mm512_dpbusd_epi32(z, q, y), _mm512_dpbusd_epi32(z, off, y))
    };
    // SAFETY: the rows hold n/32 blocks (caller contract).
    unsafe { legacy_dot(n / 32, wp, 18, a, 34, 2, false, unpack, dot) }
}

one_and_four!(
    /// IQ4_NL (18 bytes: f16 d, 16 nibble bytes; value = `kvalues_iq4nl[q]`·d) · Q8_0.
    vec_dot_iq4_nl_q8_0, vec_dot4_iq4_nl_q8_0, iq4_nl_q8_0, 18, 34
);

/// # Safety
/// `w` points to n/32 NF4 blocks and each `a[t]` to n/32 Q8_0 blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn nf4_q8_0<const T: usize>(n: usize, wp: *const u8, a: [*const u8; T]) -> [f32; T] {
    // SAFETY: the table has 16 bytes.
    let table = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(NF4_PLUS_128.as_ptr().cast()) });
    let off = _mm512_set1_epi8(-128);
    // SAFETY: `legacy_dot` passes block indices < n/32.
    let unpack = |i: usize, j: usize| unsafe {
        _mm512_shuffle_epi8(table, nibbles_2x16(wp.add(18 * i + 2), wp.add(18 * j + 2)))
    };
    let dot = |q: __m512i, y: __m512i| {
        let z = _mm512_setzero_si512();
        _mm512_sub_epi32(_mm512_dpbusd_epi32(z, q, y), _mm512_dpbusd_epi32(z, off, y))
    };
    // SAFETY: the rows hold n/32 blocks (caller contract).
    unsafe { legacy_dot(n / 32, wp, 18, a, 34, 2, false, unpack, dot) }
}

one_and_four!(
    /// NF4 (18 bytes: f16 d, 16 nibble bytes; value = `KVALUES_NF4[q]`·d, IQ4_NL's layout) ·
    /// Q8_0.
    vec_dot_nf4_q8_0, vec_dot4_nf4_q8_0, nf4_q8_0, 18, 34
);
