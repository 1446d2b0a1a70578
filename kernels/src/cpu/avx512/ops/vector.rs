//! [`F32Vec`] for AVX-512 F/BW/VL/DQ (+ AVX2, FMA, F16C): 16 lanes, the operations this ISA's kernels used when
//! each had its own copy.

use super::*;
use crate::cpu::simd::attention::plain;
use crate::cpu::simd::F32Vec;

/// The AVX-512 token of the shared f32 kernels (`cpu/simd/`).
#[derive(Clone, Copy)]
pub(crate) struct Avx512F32(());

impl Avx512F32 {
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL/DQ, AVX2, FMA and F16C.
    #[inline(always)]
    pub(crate) unsafe fn new() -> Self {
        Avx512F32(())
    }
}

/// Evaluates `$e`, which calls AVX-512/AVX2/FMA/F16C intrinsics (and, in the `unsafe` methods, touches
/// the memory the method's contract covers).
macro_rules! feat {
    ($e:expr) => {
        // SAFETY: an `Avx512F32` exists only where the CPU supports AVX-512 F/BW/VL/DQ, AVX2,
        // FMA and F16C (`Avx512F32::new`); memory is the calling method's contract.
        unsafe { $e }
    };
}

// SAFETY: `Avx512F32::new`, the only constructor, requires AVX-512 F/BW/VL/DQ + AVX2 + FMA +
// F16C, every feature the methods use.
unsafe impl F32Vec for Avx512F32 {
    type Reg = __m512;
    type Int = __m512i;
    const LANES: usize = LANES;

    #[inline(always)]
    fn zero(self) -> __m512 {
        feat!(_mm512_setzero_ps())
    }
    #[inline(always)]
    fn zero_int(self) -> __m512i {
        feat!(_mm512_setzero_si512())
    }
    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        feat!(_mm512_set1_ps(x))
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        feat!(_mm512_add_ps(a, b))
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        feat!(_mm512_sub_ps(a, b))
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        feat!(_mm512_mul_ps(a, b))
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        feat!(_mm512_div_ps(a, b))
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        feat!(_mm512_max_ps(a, b))
    }
    #[inline(always)]
    fn fmadd(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        feat!(_mm512_fmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn fmsub(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        feat!(_mm512_fmsub_ps(a, b, c))
    }
    #[inline(always)]
    fn fmaddsub(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        feat!(_mm512_fmaddsub_ps(a, b, c))
    }
    #[inline(always)]
    fn dup_even(self, a: __m512) -> __m512 {
        feat!(_mm512_moveldup_ps(a))
    }
    #[inline(always)]
    fn dup_odd(self, a: __m512) -> __m512 {
        feat!(_mm512_movehdup_ps(a))
    }
    #[inline(always)]
    fn swap_pairs(self, a: __m512) -> __m512 {
        feat!(_mm512_permute_ps::<0b1011_0001>(a))
    }
    #[inline(always)]
    fn zero_tail(self, a: __m512, n: usize) -> __m512 {
        feat!(_mm512_maskz_mov_ps(tail_mask(n), a))
    }
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
        feat!(_mm512_abs_ps(a))
    }
    #[inline(always)]
    fn select_lt(self, a: __m512, b: __m512, x: __m512, y: __m512) -> __m512 {
        feat!(_mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b),
            y,
            x
        ))
    }
    #[inline(always)]
    fn replace_eq(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        feat!(_mm512_mask_blend_ps(
            _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b),
            a,
            c
        ))
    }
    #[inline(always)]
    fn any_ne(self, a: __m512, b: __m512) -> bool {
        feat!(_mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(a, b) != 0)
    }
    #[inline(always)]
    fn recip_or_zero(self, a: __m512) -> __m512 {
        feat!({
            let nonzero = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(a, _mm512_setzero_ps());
            _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0), a)
        })
    }
    #[inline(always)]
    fn keep_keys(self, s: __m512, fill: __m512, key: i32, lo: __m512i, hi: __m512i) -> __m512 {
        feat!({
            let key = _mm512_set1_epi32(key);
            let inside = _mm512_cmpge_epi32_mask(key, lo) & _mm512_cmplt_epi32_mask(key, hi);
            _mm512_mask_blend_ps(inside, fill, s)
        })
    }

    /// `_mm512_reduce_add_ps`'s order.
    #[inline(always)]
    fn reduce_add(self, a: __m512) -> f32 {
        feat!(_mm512_reduce_add_ps(a))
    }
    /// Two f64 accumulators (the low and high 8 lanes), added, then `_mm512_reduce_add_pd`.
    #[inline(always)]
    fn sum_f64(self, x: &[f32], f: impl Fn(__m512) -> __m512) -> f64 {
        feat!({
            let mut acc_lo = _mm512_setzero_pd();
            let mut acc_hi = _mm512_setzero_pd();
            let mut i = 0;
            while i < x.len() {
                // `load` stays in bounds: `i < x.len()`.
                let t = f(load(x, i));
                acc_lo = _mm512_add_pd(acc_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(t)));
                acc_hi = _mm512_add_pd(
                    acc_hi,
                    _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                        _mm512_castps_pd(t),
                    ))),
                );
                i += LANES;
            }
            _mm512_reduce_add_pd(_mm512_add_pd(acc_lo, acc_hi))
        })
    }
    #[inline(always)]
    fn dot_ggml_nv<const NV: usize>(self, q: &[__m512; NV], k: &[__m512; NV]) -> f32 {
        feat!(attention::dot_ggml_nv(q, k))
    }
    #[inline(always)]
    fn dot_ggml_slice(self, q: &[f32], k: &[f32]) -> f32 {
        feat!(attention::dot_ggml_slice(q, k))
    }

    #[inline(always)]
    fn exp_ggml(self, a: __m512) -> __m512 {
        feat!(exp_ggml_ps(a))
    }
    #[inline(always)]
    fn exp_libm(self, a: __m512) -> __m512 {
        feat!(attention::exp_libm_ps(a))
    }
    #[inline(always)]
    fn round_f16(self, a: __m512) -> __m512 {
        feat!(round_f16_ps(a))
    }
    #[inline(always)]
    fn gelu_tanh_ggml(self, a: __m512) -> __m512 {
        feat!(activations::gelu_tanh_ggml_ps(a))
    }
    #[inline(always)]
    fn f16_to_f32_row(self, src: &[u16], dst: &mut [f32]) {
        feat!(f16_to_f32_row(src, dst))
    }

    /// By 16 × 16 vector blocks where the head dim is a multiple of 16.
    #[inline(always)]
    unsafe fn transpose_in(self, q: &[f32], rows: usize, hd: usize, qt: &mut [f32], rp: usize) {
        if hd.is_multiple_of(LANES) {
            // `hd % 16 == 0` and the method's contract: `transpose_rows_to_cols`'s.
            feat!(attention::transpose_rows_to_cols(q, rows, hd, qt, rp))
        } else {
            plain::transpose_in(q, rows, hd, qt, rp)
        }
    }
    /// By 16 × 16 vector blocks where the head dim is a multiple of 16.
    #[inline(always)]
    unsafe fn transpose_out(
        self,
        acc: &[f32],
        rp: usize,
        inv: &[f32],
        rows: usize,
        hd: usize,
        out: &mut [f32],
    ) {
        if hd.is_multiple_of(LANES) {
            // `hd % 16 == 0` and the method's contract: `transpose_cols_to_rows_scaled`'s.
            feat!(attention::transpose_cols_to_rows_scaled(
                acc, rp, inv, rows, hd, out
            ))
        } else {
            plain::transpose_out(acc, rp, inv, rows, hd, out)
        }
    }

    #[inline(always)]
    unsafe fn load(self, x: &[f32], i: usize) -> __m512 {
        feat!(load(x, i))
    }
    #[inline(always)]
    unsafe fn store(self, x: &mut [f32], i: usize, a: __m512) {
        feat!(store(x, i, a))
    }
    #[inline(always)]
    unsafe fn loadu(self, p: *const f32) -> __m512 {
        feat!(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn storeu(self, p: *mut f32, a: __m512) {
        feat!(_mm512_storeu_ps(p, a))
    }
    #[inline(always)]
    unsafe fn loadu_f16(self, p: *const u16) -> __m512 {
        feat!(_mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)))
    }
    #[inline(always)]
    unsafe fn loadu_i32(self, p: *const i32) -> __m512i {
        feat!(_mm512_loadu_si512(p as *const _))
    }
}
