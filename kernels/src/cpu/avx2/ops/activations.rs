//! GELU (ggml's f16 table), SiLU and the gated forms SwiGLU and GeGLU.

use super::*;

/// x / (1 + e^-x), ggml's `ggml_v_silu`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn silu_ps(x: __m256) -> __m256 {
    let e = exp_ggml_ps(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

/// ggml's f16-table GELU (see `scalar::gelu_tanh_ggml`): the f16 bits of x index the table
/// with a gather, so every ISA gives ggml's bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gelu_tanh_ggml_ps(x: __m256) -> __m256 {
    let table = scalar::gelu_f16_table();
    let bits = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
    let idx = _mm256_cvtepu16_epi32(bits);
    // SAFETY: every index is a u16 and the table has 65536 entries.
    let g = unsafe { _mm256_i32gather_ps::<4>(table.as_ptr(), idx) };
    // Outside (-10, 10) ggml bypasses its table: 0 below, x itself above.
    let lo = _mm256_cmp_ps::<_CMP_LE_OQ>(x, _mm256_set1_ps(-10.0));
    let hi = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(10.0));
    let g = _mm256_andnot_ps(lo, g);
    _mm256_blendv_ps(g, x, hi)
}

/// Applies `$f` to every 8-lane chunk of `$x` in place.
macro_rules! map_inplace {
    ($x:expr, $f:ident) => {{
        let x: &mut [f32] = $x;
        let mut i = 0;
        while i < x.len() {
            // SAFETY: `i < x.len()`; the caller's target features include AVX2.
            unsafe {
                let v = load(x, i);
                store(x, i, $f(v));
            }
            i += LANES;
        }
    }};
}

/// `gate = $f(gate) * up` per 8-lane chunk.
macro_rules! map_gated {
    ($gate:expr, $up:expr, $f:ident) => {{
        let (gate, up): (&mut [f32], &[f32]) = ($gate, $up);
        let n = gate.len().min(up.len());
        let gate = &mut gate[..n];
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n` ≤ both slices' lengths; the target features are enabled.
            unsafe {
                let g = load(gate, i);
                let u = load(&up[..n], i);
                store(gate, i, _mm256_mul_ps($f(g), u));
            }
            i += LANES;
        }
    }};
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gelu_tanh_inplace(x: &mut [f32]) {
    map_inplace!(x, gelu_tanh_ggml_ps)
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    map_gated!(gate, up, silu_ps)
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn geglu_tanh_inplace(gate: &mut [f32], up: &[f32]) {
    map_gated!(gate, up, gelu_tanh_ggml_ps)
}
