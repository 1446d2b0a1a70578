//! RoPE over the precomputed cos/sin table (`simd::ops`).

use super::*;
use crate::cpu::simd;

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn rope(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    positions: &[usize],
    cache: &RopeCache,
) {
    // SAFETY: this function's target features are Avx512F32's.
    let v = unsafe { Avx512F32::new() };
    simd::ops::rope(v, x, n_heads, head_dim, positions, cache)
}
