//! AVX-512 (F/BW/VL/DQ + VNNI) dot products and activation converters.
//!
//! Integer dot products use `vpdpbusd` (u8 × s8 → i32, four products per lane). Weights are
//! brought to unsigned bytes (4-bit codes as they are, Q8_0 and IQ4_NL offset by 128) and the
//! offset is removed with one more `vpdpbusd` of the offset against the activations, or, for
//! K-quants, with the 16-wide sums Q8_K stores. One 512-bit register covers two 32-value blocks
//! (legacy quants) or 64 values of a 256-value super-block (K-quants); integer sums stay i32
//! within a block and are scaled into an f32 accumulator lane-wise, so there is one horizontal
//! sum per row. Block layouts: ggml-common.h.

use std::arch::x86_64::*;

use crate::cpu::scalar::dot as scalar;
use crate::cpu::{dot_entry, dot_entry4, QuantizeEntry, VecDotEntry};
use crate::quant::{GgmlType, QuantFormat, KVALUES_IQ4NL, KVALUES_NF4};

/// The AVX-512 kernel table.
pub(crate) const VEC_DOTS: &[VecDotEntry] = &[
    dot_entry(GgmlType::F32, GgmlType::F32, vec_dot_f32),
    dot_entry(GgmlType::F16, GgmlType::F32, vec_dot_f16_f32),
    dot_entry(GgmlType::BF16, GgmlType::F32, vec_dot_bf16_f32),
    dot_entry4(
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        vec_dot_q4_0_q8_0,
        vec_dot4_q4_0_q8_0,
    ),
    dot_entry4(
        GgmlType::Q4_1,
        GgmlType::Q8_1,
        vec_dot_q4_1_q8_1,
        vec_dot4_q4_1_q8_1,
    ),
    dot_entry4(
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        vec_dot_q5_0_q8_0,
        vec_dot4_q5_0_q8_0,
    ),
    dot_entry4(
        GgmlType::Q5_1,
        GgmlType::Q8_1,
        vec_dot_q5_1_q8_1,
        vec_dot4_q5_1_q8_1,
    ),
    dot_entry4(
        GgmlType::Q8_0,
        GgmlType::Q8_0,
        vec_dot_q8_0_q8_0,
        vec_dot4_q8_0_q8_0,
    ),
    // No SIMD kernel yet: the scalar reference.
    dot_entry(GgmlType::Q2_K, GgmlType::Q8_K, scalar::vec_dot_q2_k_q8_k),
    dot_entry(GgmlType::Q3_K, GgmlType::Q8_K, scalar::vec_dot_q3_k_q8_k),
    dot_entry4(
        GgmlType::Q4_K,
        GgmlType::Q8_K,
        vec_dot_q4_k_q8_k,
        vec_dot4_q4_k_q8_k,
    ),
    dot_entry4(
        GgmlType::Q5_K,
        GgmlType::Q8_K,
        vec_dot_q5_k_q8_k,
        vec_dot4_q5_k_q8_k,
    ),
    dot_entry4(
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        vec_dot_q6_k_q8_k,
        vec_dot4_q6_k_q8_k,
    ),
    dot_entry4(
        GgmlType::IQ4_NL,
        GgmlType::Q8_0,
        vec_dot_iq4_nl_q8_0,
        vec_dot4_iq4_nl_q8_0,
    ),
    VecDotEntry {
        weight: QuantFormat::Nf4,
        act: GgmlType::Q8_0,
        f: vec_dot_nf4_q8_0,
        f4: Some(vec_dot4_nf4_q8_0),
    },
];

/// The AVX-512 activation converters.
pub(crate) const QUANTIZERS: &[QuantizeEntry] = &[
    QuantizeEntry {
        act: GgmlType::F32,
        f: scalar::convert_row_f32,
    },
    QuantizeEntry {
        act: GgmlType::F16,
        f: convert_row_f16,
    },
    QuantizeEntry {
        act: GgmlType::BF16,
        f: scalar::convert_row_bf16,
    },
    QuantizeEntry {
        act: GgmlType::Q8_0,
        f: quantize_row_q8_0,
    },
    QuantizeEntry {
        act: GgmlType::Q8_1,
        f: quantize_row_q8_1,
    },
    QuantizeEntry {
        act: GgmlType::Q8_K,
        f: quantize_row_q8_k,
    },
];

// ---------------------------------------------------------------------------------------------
// Helpers.

/// An f16 stored at `p` (any alignment), as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees two readable bytes at `p`.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// An f32 stored at `p` (any alignment).
#[inline]
unsafe fn f32_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees four readable bytes at `p`.
    unsafe { p.cast::<f32>().read_unaligned() }
}

/// A u32 stored little-endian at `p`.
#[inline]
unsafe fn u32_at(p: *const u8) -> u32 {
    // SAFETY: the caller guarantees four readable bytes at `p`.
    u32::from_le(unsafe { p.cast::<u32>().read_unaligned() })
}

/// The 4-bit codes of two 16-byte nibble arrays (`pa`, `pb`; ggml order: low nibbles are values
/// 0..16, high nibbles 16..32) as 64 bytes: values 0..32 of block a, then of block b.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn nibbles_2x16(pa: *const u8, pb: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 16 readable bytes at `pa` and at `pb`.
    let (qa, qb) = unsafe { (_mm_loadu_si128(pa.cast()), _mm_loadu_si128(pb.cast())) };
    let z = _mm512_mask_broadcast_i32x4(_mm512_broadcast_i32x4(qa), 0xFF00, qb);
    let z = _mm512_srlv_epi64(z, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
    _mm512_and_si512(z, _mm512_set1_epi8(0x0F))
}

/// The 4-bit codes of one 32-byte nibble array (K-quant layout: low nibbles are the 32 values
/// of one sub-block, high nibbles the next) as 64 bytes in value order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn nibbles_32(p: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 32 readable bytes at `p`.
    let q = unsafe { _mm256_loadu_si256(p.cast()) };
    let z = _mm512_broadcast_i64x4(q);
    let z = _mm512_srlv_epi64(z, _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0));
    _mm512_and_si512(z, _mm512_set1_epi8(0x0F))
}

/// 32 bytes at `pa` followed by 32 bytes at `pb`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn load_2x32(pa: *const u8, pb: *const u8) -> __m512i {
    // SAFETY: the caller guarantees 32 readable bytes at `pa` and at `pb`.
    unsafe {
        _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256(pa.cast())),
            _mm256_loadu_si256(pb.cast()),
            1,
        )
    }
}

/// Lanes 0..8 = `a`, lanes 8..16 = `b`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn halves_ps(a: f32, b: f32) -> __m512 {
    _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a), _mm512_set1_ps(b))
}

// ---------------------------------------------------------------------------------------------
// Float dot products.

/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX-512.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub unsafe fn vec_dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 4 * n && a.len() >= 4 * n);
    let (wp, ap) = (w.as_ptr().cast::<f32>(), a.as_ptr().cast::<f32>());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads below): i + 16 <= n, or the masked load touches only i..n, and both
    // slices hold n f32 values (caller contract).
    while i + 64 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(wp.add(i + 16 * k)),
                    _mm512_loadu_ps(ap.add(i + 16 * k)),
                )
            };
            *acc = _mm512_fmadd_ps(x, y, *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        let (x, y) = unsafe { (_mm512_loadu_ps(wp.add(i)), _mm512_loadu_ps(ap.add(i))) };
        acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
        i += 16;
    }
    if i < n {
        let m: __mmask16 = (1u32 << (n - i)).wrapping_sub(1) as u16;
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, wp.add(i)),
                _mm512_maskz_loadu_ps(m, ap.add(i)),
            )
        };
        acc[1] = _mm512_fmadd_ps(x, y, acc[1]);
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

/// F16 weights · F32 activations.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX-512.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub unsafe fn vec_dot_f16_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && a.len() >= 4 * n);
    let (wp, ap) = (w.as_ptr(), a.as_ptr().cast::<f32>());
    let mut acc0 = _mm512_setzero_ps();
    let mut acc1 = _mm512_setzero_ps();
    let mut i = 0;
    // SAFETY (all loads below): values i..i+32 (or i..n, masked) lie within both slices, which
    // hold n values (caller contract).
    while i + 32 <= n {
        let (x0, x1, y0, y1) = unsafe {
            (
                _mm256_loadu_si256(wp.add(2 * i).cast()),
                _mm256_loadu_si256(wp.add(2 * i + 32).cast()),
                _mm512_loadu_ps(ap.add(i)),
                _mm512_loadu_ps(ap.add(i + 16)),
            )
        };
        acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(x0), y0, acc0);
        acc1 = _mm512_fmadd_ps(_mm512_cvtph_ps(x1), y1, acc1);
        i += 32;
    }
    while i < n {
        let m: __mmask16 = (1u32 << (n - i).min(16)).wrapping_sub(1) as u16;
        let (x, y) = unsafe {
            (
                _mm256_maskz_loadu_epi16(m, wp.add(2 * i).cast()),
                _mm512_maskz_loadu_ps(m, ap.add(i)),
            )
        };
        acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(x), y, acc0);
        i += 16;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}

/// BF16 weights · F32 activations.
///
/// # Safety
/// See [`crate::cpu::VecDotFn`]; the CPU supports AVX-512.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub unsafe fn vec_dot_bf16_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    debug_assert!(w.len() >= 2 * n && a.len() >= 4 * n);
    let (wp, ap) = (w.as_ptr(), a.as_ptr().cast::<f32>());
    let mut acc0 = _mm512_setzero_ps();
    let mut acc1 = _mm512_setzero_ps();
    let widen = |v: __m256i| _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
    let mut i = 0;
    // SAFETY (all loads below): values i..i+16 (or i..n, masked) lie within both slices.
    while i + 16 <= n {
        let (x, y) = unsafe {
            (
                _mm256_loadu_si256(wp.add(2 * i).cast()),
                _mm512_loadu_ps(ap.add(i)),
            )
        };
        acc0 = _mm512_fmadd_ps(widen(x), y, acc0);
        std::mem::swap(&mut acc0, &mut acc1);
        i += 16;
    }
    if i < n {
        let m: __mmask16 = (1u32 << (n - i)).wrapping_sub(1) as u16;
        let (x, y) = unsafe {
            (
                _mm256_maskz_loadu_epi16(m, wp.add(2 * i).cast()),
                _mm512_maskz_loadu_ps(m, ap.add(i)),
            )
        };
        acc0 = _mm512_fmadd_ps(widen(x), y, acc0);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}

// ---------------------------------------------------------------------------------------------
// Activation converters (same bytes as the scalar ones; see cpu/scalar/dot.rs).

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

// ---------------------------------------------------------------------------------------------
// Legacy quants (32-value blocks) against Q8_0 / Q8_1, two blocks per register.

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

// ---------------------------------------------------------------------------------------------
// K-quants (256-value super-blocks) against Q8_K (f32 d, 256 × i8, 16 × i16 sums of 16).

/// Lanes 0..8 = `a`, lanes 8..16 = `b` (i32 permutation indices).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn halves_epi32(a: i32, b: i32) -> __m512i {
    _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(a), _mm512_set1_epi32(b))
}

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

/// XOR of the u64 words of `data` with 512-bit loads, four independent streams (a read
/// bandwidth probe; see [`crate::cpu::Kernels::read_probe`]).
///
/// # Safety
/// The CPU supports AVX-512.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub unsafe fn read_probe(data: &[u8]) -> u64 {
    let p = data.as_ptr();
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i + 256 <= data.len() {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: bytes i + 64k .. i + 64k + 64 lie within `data` (i + 256 <= len).
            *a = _mm512_xor_si512(*a, unsafe { _mm512_loadu_si512(p.add(i + 64 * k).cast()) });
        }
        i += 256;
    }
    let v = _mm512_xor_si512(
        _mm512_xor_si512(acc[0], acc[1]),
        _mm512_xor_si512(acc[2], acc[3]),
    );
    let mut words = [0u64; 8];
    // SAFETY: `words` has 64 writable bytes.
    unsafe { _mm512_storeu_si512(words.as_mut_ptr().cast(), v) };
    words
        .iter()
        .fold(scalar::read_probe(&data[i..]), |a, b| a ^ b)
}
