//! Transformer ops for AVX-512 (F/BW/VL/DQ + FMA + F16C); see `cpu/ops.rs` for the API and
//! `cpu/scalar/ops/` for the reference numerics these follow.
//!
//! Every public function is `unsafe` only because of `#[target_feature]`: the caller must have
//! checked that the CPU supports the features (the ISA's `Kernels` table is handed out only
//! then). Tails shorter than a vector use AVX-512 masked loads and stores, so no path falls back to scalar code for them.

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
pub(crate) use self::vector::Avx512F32;

const LANES: usize = 16;

/// Mask of the first `n` (< 16) lanes.
#[inline]
fn tail_mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// Loads lanes `i..i+16` of `x`, zeros past its end.
///
/// # Safety
/// `i < x.len()`; the CPU supports AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load(x: &[f32], i: usize) -> __m512 {
    let rem = x.len() - i;
    // SAFETY: `i < x.len()`; a full load reads `i..i+16` only when that is in bounds, and a
    // masked load touches only the lanes below `rem` (masked lanes never fault).
    unsafe {
        if rem >= LANES {
            _mm512_loadu_ps(x.as_ptr().add(i))
        } else {
            _mm512_maskz_loadu_ps(tail_mask(rem), x.as_ptr().add(i))
        }
    }
}

/// Stores lanes into `x[i..]`, as many as fit.
///
/// # Safety
/// `i < x.len()`; the CPU supports AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store(x: &mut [f32], i: usize, v: __m512) {
    let rem = x.len() - i;
    // SAFETY: as in `load`: only in-bounds lanes are written.
    unsafe {
        if rem >= LANES {
            _mm512_storeu_ps(x.as_mut_ptr().add(i), v)
        } else {
            _mm512_mask_storeu_ps(x.as_mut_ptr().add(i), tail_mask(rem), v)
        }
    }
}

/// `scalar::expf_ggml_v` (ggml's `ggml_v_expf` for AVX-512), the same operations: the same bits.
#[inline]
#[target_feature(enable = "avx512f,avx512dq,fma")]
fn exp_ggml_ps(x: __m512) -> __m512 {
    let shift = _mm512_set1_ps(12_582_912.0);
    let z = _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), shift);
    let n = _mm512_sub_ps(z, shift);
    let b = _mm512_fnmadd_ps(n, _mm512_set1_ps(f32::from_bits(0x3f31_7200)), x);
    let b = _mm512_fnmadd_ps(n, _mm512_set1_ps(f32::from_bits(0x35bf_be8e)), b);
    let big = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), _mm512_set1_ps(192.0));
    let u = _mm512_mul_ps(b, b);
    let c = |bits: u32| _mm512_set1_ps(f32::from_bits(bits));
    let j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(
            _mm512_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
            u,
            _mm512_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
        ),
        u,
        _mm512_fmadd_ps(c(0x3f7f_fff6), b, _mm512_set1_ps(1.0)),
    );
    let res = _mm512_scalef_ps(j, n);
    if big == 0 {
        return res;
    }
    let zero = _mm512_setzero_ps();
    let alt = _mm512_mask_blend_ps(
        _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, zero),
        _mm512_set1_ps(f32::INFINITY),
        zero,
    );
    _mm512_mask_blend_ps(big, res, alt)
}

/// Round each lane to the nearest f16 and back (F16C rounding: nearest even).
#[inline]
#[target_feature(enable = "avx512f")]
fn round_f16_ps(x: __m512) -> __m512 {
    _mm512_cvtph_ps(_mm512_cvtps_ph::<
        { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
    >(x))
}
