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

mod convert;
mod kquants;
mod legacy;

pub use self::convert::*;
pub use self::kquants::*;
pub use self::legacy::*;

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

/// Lanes 0..8 = `a`, lanes 8..16 = `b` (i32 permutation indices).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
fn halves_epi32(a: i32, b: i32) -> __m512i {
    _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(a), _mm512_set1_epi32(b))
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
