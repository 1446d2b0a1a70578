//! Transformer ops for AVX2 + FMA + F16C; see `cpu/ops.rs` for the API and `cpu/scalar/ops/`
//! for the reference numerics these follow.
//!
//! Every public function is `unsafe` only because of `#[target_feature]`: the caller must have
//! checked that the CPU supports the features (the ISA's `Kernels` table is handed out only
//! then). Tails shorter than a vector use `vmaskmovps` loads and stores.

use std::arch::x86_64::*;

use crate::cpu::attention::job::{AttnJob, AttnTile};
use crate::cpu::rope::RopeCache;
use crate::cpu::scalar::ops as scalar;

mod activations;
mod attention;
mod elementwise;
mod norms;
mod rope;
mod vector;

pub use self::activations::{
    geglu_tanh_inplace, gelu_erf_inplace, gelu_tanh_inplace, swiglu_inplace,
};
pub use self::attention::{attend_group, attend_packed, attend_tile};
pub use self::elementwise::{add_inplace, f16_to_f32_row, f32_to_f16_row, scale_inplace};
pub use self::norms::{layer_norm_inplace, rms_norm_inplace};
pub use self::rope::rope;
pub(crate) use self::vector::Avx2F32;

const LANES: usize = 8;

/// `vmaskmovps` mask of the first `n` (< 8) lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn tail_mask(n: usize) -> __m256i {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
}

/// Loads lanes `i..i+8` of `x`, zeros past its end.
///
/// # Safety
/// `i < x.len()`; the CPU supports AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load(x: &[f32], i: usize) -> __m256 {
    let rem = x.len() - i;
    // SAFETY: a full load only when `i..i+8` is in bounds; `vmaskmovps` never touches (or
    // faults on) masked-off lanes.
    unsafe {
        if rem >= LANES {
            _mm256_loadu_ps(x.as_ptr().add(i))
        } else {
            _mm256_maskload_ps(x.as_ptr().add(i), tail_mask(rem))
        }
    }
}

/// Stores lanes into `x[i..]`, as many as fit.
///
/// # Safety
/// `i < x.len()`; the CPU supports AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store(x: &mut [f32], i: usize, v: __m256) {
    let rem = x.len() - i;
    // SAFETY: as in `load`.
    unsafe {
        if rem >= LANES {
            _mm256_storeu_ps(x.as_mut_ptr().add(i), v)
        } else {
            _mm256_maskstore_ps(x.as_mut_ptr().add(i), tail_mask(rem), v)
        }
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `scalar::expf_ggml_v` (ggml's `ggml_v_expf` for AVX-512), the same operations: the same
/// bits. AVX-512's `vscalefps` (j · 2^n, one rounding) is two exact-then-rounding products
/// j · 2^⌊n/2⌋ · 2^(n-⌊n/2⌋): the first stays normal (|n| ≤ 192), so only the second rounds.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_ggml_ps(x: __m256) -> __m256 {
    let shift = _mm256_set1_ps(12_582_912.0);
    let z = _mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), shift);
    let n = _mm256_sub_ps(z, shift);
    let b = _mm256_fnmadd_ps(n, _mm256_set1_ps(f32::from_bits(0x3f31_7200)), x);
    let b = _mm256_fnmadd_ps(n, _mm256_set1_ps(f32::from_bits(0x35bf_be8e)), b);
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let u = _mm256_mul_ps(b, b);
    let c = |bits: u32| _mm256_set1_ps(f32::from_bits(bits));
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
            u,
            _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
        ),
        u,
        _mm256_fmadd_ps(c(0x3f7f_fff6), b, _mm256_set1_ps(1.0)),
    );
    // Lanes with |n| > 192 (or NaN) get garbage exponents here and are replaced below.
    let ni = _mm256_cvttps_epi32(n);
    let n1 = _mm256_srai_epi32::<1>(ni);
    let n2 = _mm256_sub_epi32(ni, n1);
    let pow2 = |k: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            k,
            _mm256_set1_epi32(127),
        )))
    };
    let res = _mm256_mul_ps(_mm256_mul_ps(j, pow2(n1)), pow2(n2));
    // NaN in, NaN out (j is NaN there).
    let res = _mm256_blendv_ps(res, j, _mm256_cmp_ps::<_CMP_UNORD_Q>(n, n));
    if _mm256_movemask_ps(big) == 0 {
        return res;
    }
    let alt = _mm256_andnot_ps(
        _mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps()),
        _mm256_set1_ps(f32::INFINITY),
    );
    _mm256_blendv_ps(res, alt, big)
}

/// Round each lane to the nearest f16 and back (F16C rounding: nearest even).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn round_f16_ps(x: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
}
