//! [`F32Vec`] for AVX2 + FMA + F16C: 8 lanes, the operations this ISA's kernels used when
//! each had its own copy.

use super::*;
use crate::cpu::simd::attention::plain;
use crate::cpu::simd::F32Vec;

/// The AVX2 token of the shared f32 kernels (`cpu/simd/`).
#[derive(Clone, Copy)]
pub(crate) struct Avx2F32(());

impl Avx2F32 {
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C.
    #[inline(always)]
    pub(crate) unsafe fn new() -> Self {
        Avx2F32(())
    }
}

/// Evaluates `$e`, which calls AVX2/FMA/F16C intrinsics (and, in the `unsafe` methods, touches
/// the memory the method's contract covers).
macro_rules! feat {
    ($e:expr) => {
        // SAFETY: an `Avx2F32` exists only where the CPU supports AVX2, FMA and F16C
        // (`Avx2F32::new`); memory is the calling method's contract.
        unsafe { $e }
    };
}

// SAFETY: `Avx2F32::new`, the only constructor, requires AVX2 + FMA + F16C, every feature the
// methods use.
unsafe impl F32Vec for Avx2F32 {
    type Reg = __m256;
    type Int = __m256i;
    const LANES: usize = LANES;

    #[inline(always)]
    fn zero(self) -> __m256 {
        feat!(_mm256_setzero_ps())
    }
    #[inline(always)]
    fn zero_int(self) -> __m256i {
        feat!(_mm256_setzero_si256())
    }
    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        feat!(_mm256_set1_ps(x))
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        feat!(_mm256_add_ps(a, b))
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        feat!(_mm256_sub_ps(a, b))
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        feat!(_mm256_mul_ps(a, b))
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        feat!(_mm256_div_ps(a, b))
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        feat!(_mm256_max_ps(a, b))
    }
    #[inline(always)]
    fn fmadd(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        feat!(_mm256_fmadd_ps(a, b, c))
    }
    #[inline(always)]
    fn fmsub(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        feat!(_mm256_fmsub_ps(a, b, c))
    }
    #[inline(always)]
    fn fmaddsub(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        feat!(_mm256_fmaddsub_ps(a, b, c))
    }
    #[inline(always)]
    fn dup_even(self, a: __m256) -> __m256 {
        feat!(_mm256_moveldup_ps(a))
    }
    #[inline(always)]
    fn dup_odd(self, a: __m256) -> __m256 {
        feat!(_mm256_movehdup_ps(a))
    }
    #[inline(always)]
    fn swap_pairs(self, a: __m256) -> __m256 {
        feat!(_mm256_permute_ps::<0b1011_0001>(a))
    }
    #[inline(always)]
    fn zero_tail(self, a: __m256, n: usize) -> __m256 {
        feat!(_mm256_and_ps(a, _mm256_castsi256_ps(tail_mask(n))))
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        feat!(_mm256_andnot_ps(_mm256_set1_ps(-0.0), a))
    }
    #[inline(always)]
    fn select_lt(self, a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
        feat!(_mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)))
    }
    #[inline(always)]
    fn replace_eq(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        feat!(_mm256_blendv_ps(a, c, _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b)))
    }
    #[inline(always)]
    fn any_ne(self, a: __m256, b: __m256) -> bool {
        feat!(_mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(a, b)) != 0)
    }
    #[inline(always)]
    fn recip_or_zero(self, a: __m256) -> __m256 {
        feat!({
            let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(a, _mm256_setzero_ps());
            _mm256_and_ps(nonzero, _mm256_div_ps(_mm256_set1_ps(1.0), a))
        })
    }
    #[inline(always)]
    fn keep_keys(self, s: __m256, fill: __m256, key: i32, lo: __m256i, hi: __m256i) -> __m256 {
        feat!({
            let key = _mm256_set1_epi32(key);
            // outside = key < lo || key >= hi = lo > key || !(hi > key)
            let below = _mm256_cmpgt_epi32(lo, key);
            let inside_hi = _mm256_cmpgt_epi32(hi, key);
            let outside = _mm256_castsi256_ps(_mm256_or_si256(
                below,
                _mm256_xor_si256(inside_hi, _mm256_set1_epi32(-1)),
            ));
            _mm256_blendv_ps(s, fill, outside)
        })
    }

    /// (lo 128 + hi 128), then pairs: [`hsum`].
    #[inline(always)]
    fn reduce_add(self, a: __m256) -> f32 {
        feat!(hsum(a))
    }
    /// Two f64 accumulators (the low and high 4 lanes), added, then halves and pairs.
    #[inline(always)]
    fn sum_f64(self, x: &[f32], f: impl Fn(__m256) -> __m256) -> f64 {
        feat!({
            let mut acc_lo = _mm256_setzero_pd();
            let mut acc_hi = _mm256_setzero_pd();
            let mut i = 0;
            while i < x.len() {
                // `load` stays in bounds: `i < x.len()`.
                let t = f(load(x, i));
                acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
                acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(t)));
                i += LANES;
            }
            let s = _mm256_add_pd(acc_lo, acc_hi);
            let s = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd::<1>(s));
            _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
        })
    }
    #[inline(always)]
    fn dot_ggml_nv<const NV: usize>(self, q: &[__m256; NV], k: &[__m256; NV]) -> f32 {
        feat!(attention::dot_ggml_nv(q, k))
    }
    #[inline(always)]
    fn dot_ggml_slice(self, q: &[f32], k: &[f32]) -> f32 {
        feat!(attention::dot_ggml_slice(q, k))
    }

    #[inline(always)]
    fn exp_ggml(self, a: __m256) -> __m256 {
        feat!(exp_ggml_ps(a))
    }
    #[inline(always)]
    fn exp_libm(self, a: __m256) -> __m256 {
        feat!(attention::exp_libm_ps(a))
    }
    #[inline(always)]
    fn round_f16(self, a: __m256) -> __m256 {
        feat!(round_f16_ps(a))
    }
    #[inline(always)]
    fn gelu_tanh_ggml(self, a: __m256) -> __m256 {
        feat!(activations::gelu_tanh_ggml_ps(a))
    }
    #[inline(always)]
    fn f16_to_f32_row(self, src: &[u16], dst: &mut [f32]) {
        feat!(f16_to_f32_row(src, dst))
    }

    #[inline(always)]
    unsafe fn transpose_in(self, q: &[f32], rows: usize, hd: usize, qt: &mut [f32], rp: usize) {
        plain::transpose_in(q, rows, hd, qt, rp)
    }
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
        plain::transpose_out(acc, rp, inv, rows, hd, out)
    }

    #[inline(always)]
    unsafe fn load(self, x: &[f32], i: usize) -> __m256 {
        feat!(load(x, i))
    }
    #[inline(always)]
    unsafe fn store(self, x: &mut [f32], i: usize, a: __m256) {
        feat!(store(x, i, a))
    }
    #[inline(always)]
    unsafe fn loadu(self, p: *const f32) -> __m256 {
        feat!(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn storeu(self, p: *mut f32, a: __m256) {
        feat!(_mm256_storeu_ps(p, a))
    }
    #[inline(always)]
    unsafe fn loadu_f16(self, p: *const u16) -> __m256 {
        feat!(_mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)))
    }
    #[inline(always)]
    unsafe fn loadu_i32(self, p: *const i32) -> __m256i {
        feat!(_mm256_loadu_si256(p as *const __m256i))
    }
}
