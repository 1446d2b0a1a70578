//! Transformer ops for AVX2 + FMA + F16C; see `cpu/ops.rs` for the API and `cpu/scalar/ops.rs`
//! for the reference numerics these follow.
//!
//! Every public function is `unsafe` only because of `#[target_feature]`: the caller must have
//! checked that the CPU supports the features (`cpu::ops` dispatch does). Tails shorter than a
//! vector use `vmaskmovps` loads and stores.

use std::arch::x86_64::*;

use crate::cpu::attention::job::{AttnJob, AttnTile, KvData};
use crate::cpu::rope::{RopeCache, RopeMode};
use crate::cpu::scalar::ops as scalar;

/// Ops the compiler vectorises well from the scalar reference once the target features are
/// enabled: the body is the scalar reference, inlined and compiled for this ISA.
macro_rules! compiled_for_isa {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ); )*) => {$(
        /// The scalar reference compiled for this ISA.
        ///
        /// # Safety
        /// The CPU supports this module's target features.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $name($($arg: $ty),*) {
            scalar::$name($($arg),*)
        }
    )*};
}

compiled_for_isa! {
    add_inplace(x: &mut [f32], y: &[f32]);
    scale_inplace(x: &mut [f32], s: f32);
}

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

/// e^x of each lane with libm's `expf` (what ggml calls where its C code writes `expf`).
#[inline]
#[target_feature(enable = "avx")]
fn exp_libm_ps(x: __m256) -> __m256 {
    let mut t = [0.0f32; 8];
    // SAFETY: `t` holds 8 values.
    unsafe { _mm256_storeu_ps(t.as_mut_ptr(), x) };
    for v in t.iter_mut() {
        *v = v.exp();
    }
    // SAFETY: as above.
    unsafe { _mm256_loadu_ps(t.as_ptr()) }
}

/// x / (1 + e^-x), ggml's `ggml_v_silu`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn silu_ps(x: __m256) -> __m256 {
    let e = exp_ggml_ps(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

/// Round each lane to the nearest f16 and back (F16C rounding: nearest even).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn round_f16_ps(x: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
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

/// f64 sum of `f(lane)` over `x`, each 8-lane f32 chunk widened to f64 before adding.
macro_rules! sum_f64 {
    ($x:expr, |$v:ident| $e:expr) => {{
        let x: &[f32] = $x;
        let mut acc_lo = _mm256_setzero_pd();
        let mut acc_hi = _mm256_setzero_pd();
        let mut i = 0;
        while i < x.len() {
            // SAFETY: `i < x.len()`; AVX2 is enabled.
            let $v = unsafe { load(x, i) };
            let t: __m256 = $e;
            acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
            acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(t)));
            i += LANES;
        }
        let s = _mm256_add_pd(acc_lo, acc_hi);
        let s = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd::<1>(s));
        _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
    }};
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        // Zeroed tail lanes add 0.
        let sum = sum_f64!(&*xr, |v| _mm256_mul_ps(v, v));
        let mean = (sum / n as f64) as f32;
        let scale = _mm256_set1_ps(1.0 / (mean + eps).sqrt());
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n` = length of `xr` and `weight`.
            unsafe {
                let v = _mm256_mul_ps(load(xr, i), scale);
                store(xr, i, _mm256_mul_ps(v, load(weight, i)));
            }
            i += LANES;
        }
    }
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn layer_norm_inplace(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    let n = weight.len();
    for xr in x.chunks_exact_mut(n) {
        let sum = sum_f64!(&*xr, |v| v);
        let mean = sum as f32 / n as f32;
        let vmean = _mm256_set1_ps(mean);
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n`.
            unsafe { store(xr, i, _mm256_sub_ps(load(xr, i), vmean)) };
            i += LANES;
        }
        // Tail lanes load as 0 and add 0.
        let var = sum_f64!(&*xr, |d| _mm256_mul_ps(d, d));
        let variance = (var / n as f64) as f32;
        let scale = _mm256_set1_ps(1.0 / (variance + eps).sqrt());
        let mut i = 0;
        while i < n {
            // SAFETY: `i < n` = length of `xr`, `weight` and (checked by the caller) `bias`.
            unsafe {
                let mut v = _mm256_mul_ps(_mm256_mul_ps(load(xr, i), scale), load(weight, i));
                if let Some(b) = bias {
                    v = _mm256_add_ps(v, load(b, i));
                }
                store(xr, i, v);
            }
            i += LANES;
        }
    }
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rope(
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    positions: &[usize],
    cache: &RopeCache,
) {
    let n_rot = cache.n_rot();
    let half = n_rot / 2;
    for (tok, &pos) in x.chunks_exact_mut(n_heads * head_dim).zip(positions) {
        let row = cache.row(pos);
        for head in tok.chunks_exact_mut(head_dim) {
            match cache.mode() {
                RopeMode::Normal => {
                    let head = &mut head[..n_rot];
                    let mut i = 0;
                    while i < n_rot {
                        // SAFETY: `i < n_rot` = length of `head` and `row`; n_rot is even, so
                        // a masked tail holds whole pairs.
                        unsafe {
                            let v = load(head, i);
                            let cs = load(row, i);
                            // ggml: even lanes fma(x0, cos, -(x1 sin)), odd lanes
                            // fma(x0, sin, x1 cos) (see `scalar::rope`).
                            let x0 = _mm256_moveldup_ps(v);
                            let x1 = _mm256_movehdup_ps(v);
                            let sc = _mm256_permute_ps::<0b1011_0001>(cs);
                            store(head, i, _mm256_fmaddsub_ps(x0, cs, _mm256_mul_ps(x1, sc)));
                        }
                        i += LANES;
                    }
                }
                RopeMode::Neox => {
                    let (lo, rest) = head.split_at_mut(half);
                    let hi = &mut rest[..half];
                    let (cos, sin) = row.split_at(half);
                    let mut i = 0;
                    while i < half {
                        // SAFETY: `i < half` = length of `lo`, `hi`, `cos` and `sin`.
                        unsafe {
                            let x0 = load(lo, i);
                            let x1 = load(hi, i);
                            let c = load(cos, i);
                            let s = load(sin, i);
                            store(lo, i, _mm256_fmsub_ps(x0, c, _mm256_mul_ps(x1, s)));
                            store(hi, i, _mm256_fmadd_ps(x0, s, _mm256_mul_ps(x1, c)));
                        }
                        i += LANES;
                    }
                }
            }
        }
    }
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f32_to_f16_row(src: &[f32], dst: &mut [u16]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + LANES <= n {
        // SAFETY: `i + 8 <= n`: 8 f32 read, 8 u16 written, all in bounds.
        unsafe {
            let v = _mm256_loadu_ps(src.as_ptr().add(i));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
        }
        i += LANES;
    }
    scalar::f32_to_f16_row(&src[i..n], &mut dst[i..n]);
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_to_f32_row(src: &[u16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + LANES <= n {
        // SAFETY: `i + 8 <= n`: 8 u16 read, 8 f32 written, all in bounds.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += LANES;
    }
    scalar::f16_to_f32_row(&src[i..n], &mut dst[i..n]);
}

/// Keys per block; ggml's `GGML_FA_TILE_KV`.
const BLOCK: usize = scalar::KV_TILE;

/// Attention of one GQA group for one query token (see `scalar::attend_group`, whose two numeric
/// paths this reproduces). Head dims that are not a multiple of 8 use the scalar reference.
///
/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attend_group(job: &AttnJob, q_group: &[f32], out_group: &mut [f32]) {
    let hd = job.head_dim;
    if !hd.is_multiple_of(LANES) {
        return scalar::attend_group(job, q_group, out_group);
    }
    // SAFETY (all arms): this function's target features; `hd == NV * 8`.
    unsafe {
        match hd / LANES {
            1 => attend_group_nv::<1>(job, q_group, out_group),
            2 => attend_group_nv::<2>(job, q_group, out_group),
            3 => attend_group_nv::<3>(job, q_group, out_group),
            4 => attend_group_nv::<4>(job, q_group, out_group),
            6 => attend_group_nv::<6>(job, q_group, out_group),
            8 => attend_group_nv::<8>(job, q_group, out_group),
            10 => attend_group_nv::<10>(job, q_group, out_group),
            12 => attend_group_nv::<12>(job, q_group, out_group),
            16 => attend_group_nv::<16>(job, q_group, out_group),
            32 => attend_group_nv::<32>(job, q_group, out_group),
            _ => attend_group_any(job, q_group, out_group),
        }
    }
}

/// `scalar::dot_ggml` (ggml's AVX-512 `ggml_vec_dot_f16` order) of one query head and one
/// key row held in vectors: each 16-lane accumulator of ggml is a pair of 8-lane ones, and
/// [`hsum`] of `lo + hi` is `_mm512_reduce_add_ps`'s order, so the bits are the same.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_ggml_nv<const NV: usize>(q: &[__m256; NV], k: &[__m256; NV]) -> f32 {
    let full = NV / 8 * 8;
    let mut lo = [_mm256_setzero_ps(); 4];
    let mut hi = [_mm256_setzero_ps(); 4];
    for c in (0..full).step_by(8) {
        for j in 0..4 {
            lo[j] = _mm256_fmadd_ps(q[c + 2 * j], k[c + 2 * j], lo[j]);
            hi[j] = _mm256_fmadd_ps(q[c + 2 * j + 1], k[c + 2 * j + 1], hi[j]);
        }
    }
    let r_lo = _mm256_add_ps(_mm256_add_ps(lo[0], lo[2]), _mm256_add_ps(lo[1], lo[3]));
    let r_hi = _mm256_add_ps(_mm256_add_ps(hi[0], hi[2]), _mm256_add_ps(hi[1], hi[3]));
    let mut sum = hsum(_mm256_add_ps(r_lo, r_hi)) as f64;
    let mut t = [0.0f32; LANES];
    for c in full..NV {
        // SAFETY: `t` holds 8 values.
        unsafe { _mm256_storeu_ps(t.as_mut_ptr(), _mm256_mul_ps(q[c], k[c])) };
        for v in t {
            sum += v as f64;
        }
    }
    sum as f32
}

/// [`dot_ggml_nv`] over slices of a multiple of 8 values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_ggml_slice(q: &[f32], k: &[f32]) -> f32 {
    let n = q.len().min(k.len());
    let full = n - n % 64;
    let mut lo = [_mm256_setzero_ps(); 4];
    let mut hi = [_mm256_setzero_ps(); 4];
    for c in (0..full).step_by(64) {
        for j in 0..4 {
            let (a, b) = (c + 16 * j, c + 16 * j + 8);
            // SAFETY: `c + 16 * j + 16 <= full <= n`.
            unsafe {
                lo[j] = _mm256_fmadd_ps(load(q, a), load(k, a), lo[j]);
                hi[j] = _mm256_fmadd_ps(load(q, b), load(k, b), hi[j]);
            }
        }
    }
    let r_lo = _mm256_add_ps(_mm256_add_ps(lo[0], lo[2]), _mm256_add_ps(lo[1], lo[3]));
    let r_hi = _mm256_add_ps(_mm256_add_ps(hi[0], hi[2]), _mm256_add_ps(hi[1], hi[3]));
    let mut sum = hsum(_mm256_add_ps(r_lo, r_hi)) as f64;
    for i in full..n {
        sum += (q[i] * k[i]) as f64;
    }
    sum as f32
}

/// One row of `NV * 8` cache values at `off`, as f32 vectors.
///
/// # Safety
/// `off + NV * 8 <= data.len()`; the CPU supports this module's target features.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_row_nv<const NV: usize>(data: &KvData, off: usize) -> [__m256; NV] {
    let mut r = [_mm256_setzero_ps(); NV];
    // SAFETY: the caller guarantees `off..off + NV*8` is inside the slice.
    unsafe {
        match data {
            KvData::F32(d) => {
                let p = d.as_ptr().add(off);
                for (c, v) in r.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(p.add(c * LANES));
                }
            }
            KvData::F16(d) => {
                let p = d.as_ptr().add(off);
                for (c, v) in r.iter_mut().enumerate() {
                    *v = _mm256_cvtph_ps(_mm_loadu_si128(p.add(c * LANES) as *const __m128i));
                }
            }
        }
    }
    r
}

/// [`attend_group`] for a head dim of `NV * 8`: the query heads, the K/V rows and the
/// accumulators live in arrays of vectors the compiler keeps in registers where it can.
///
/// # Safety
/// `job.head_dim == NV * 8`; the CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_group_nv<const NV: usize>(job: &AttnJob, q_group: &[f32], out_group: &mut [f32]) {
    let hd = NV * LANES;
    let g = q_group.len() / hd;
    let kv = job.kv;
    let row = kv.n_kv_heads * hd;
    let base = job.kv_head * hd;
    // Every row read below ends at or before this one's end.
    assert!(
        job.key_hi == 0 || (job.key_hi - 1) * row + base + hd <= kv.k.len().min(kv.v.len()),
        "attention: cache too short"
    );
    assert!(out_group.len() >= g * (hd + 2 * job.partial as usize));
    let k_f16 = matches!(kv.k, KvData::F16(_));
    let v_f16 = matches!(kv.v, KvData::F16(_));
    let vec_path = job.ggml_vec_path;
    let round_q = vec_path && k_f16;
    let round_acc = vec_path && v_f16;

    let zero = [_mm256_setzero_ps(); NV];
    let mut qv = vec![zero; g];
    for (h, qh) in qv.iter_mut().enumerate() {
        for (c, v) in qh.iter_mut().enumerate() {
            // SAFETY: `(h * NV + c) * 8 + 8 <= g * hd = q_group.len()`.
            let x = unsafe { _mm256_loadu_ps(q_group.as_ptr().add((h * NV + c) * LANES)) };
            *v = if round_q { round_f16_ps(x) } else { x };
        }
    }
    let mut acc = vec![zero; g];
    let mut m = vec![f32::NEG_INFINITY; g];
    let mut s_sum = vec![0.0f32; g];
    let mut scores = vec![0.0f32; g * BLOCK];
    let mut ms = vec![0.0f32; g * BLOCK];
    let scale = _mm256_set1_ps(job.scale);

    let mut start = job.key_lo;
    while start < job.key_hi {
        let n = (job.key_hi - start).min(BLOCK - start % BLOCK);
        for j in 0..n {
            // SAFETY: `start + j < key_hi`, so the row is inside the cache (asserted above).
            let kr = unsafe { load_row_nv::<NV>(&kv.k, (start + j) * row + base) };
            for (h, qh) in qv.iter().enumerate() {
                if vec_path {
                    scores[h * BLOCK + j] = dot_ggml_nv(qh, &kr);
                    continue;
                }
                let mut d = _mm256_mul_ps(qh[0], kr[0]);
                for c in 1..NV {
                    d = _mm256_fmadd_ps(qh[c], kr[c], d);
                }
                scores[h * BLOCK + j] = hsum(d);
            }
        }
        for h in 0..g {
            let sc = &mut scores[h * BLOCK..h * BLOCK + n];
            let msh = &mut ms[h * BLOCK..h * BLOCK + n];
            let mut i = 0;
            while i < n {
                // SAFETY: `i < n`.
                unsafe { store(sc, i, _mm256_mul_ps(load(sc, i), scale)) };
                i += LANES;
            }
            if vec_path {
                // ggml's per-key update with libm's expf, shared by every ISA.
                scalar::per_key_weights(sc, msh, &mut m[h]);
            } else {
                // ggml's tiled path: one max per block, then e^(s - M).
                let bmax = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let m_new = m[h].max(bmax);
                if m_new > m[h] {
                    let f = _mm256_set1_ps((m[h] - m_new).exp());
                    for v in acc[h].iter_mut() {
                        *v = _mm256_mul_ps(*v, f);
                    }
                    s_sum[h] *= (m[h] - m_new).exp();
                }
                m[h] = m_new;
                let vm = _mm256_set1_ps(m_new);
                let mut bsum = 0.0f64;
                let mut i = 0;
                while i < n {
                    // SAFETY: `i < n`; tail lanes are masked out of the sum.
                    unsafe {
                        let e = exp_ggml_ps(_mm256_sub_ps(load(sc, i), vm));
                        let e = if n - i >= LANES {
                            e
                        } else {
                            _mm256_and_ps(e, _mm256_castsi256_ps(tail_mask(n - i)))
                        };
                        store(sc, i, e);
                        bsum += hsum(e) as f64;
                    }
                    i += LANES;
                }
                s_sum[h] += bsum as f32;
            }
        }
        for j in 0..n {
            // SAFETY: as for K.
            let vr = unsafe { load_row_nv::<NV>(&kv.v, (start + j) * row + base) };
            for h in 0..g {
                let p = scores[h * BLOCK + j];
                let a = &mut acc[h];
                if vec_path {
                    let f = ms[h * BLOCK + j];
                    if f != 1.0 {
                        let vf = _mm256_set1_ps(f);
                        for v in a.iter_mut() {
                            let t = _mm256_mul_ps(*v, vf);
                            *v = if round_acc { round_f16_ps(t) } else { t };
                        }
                    }
                    // ggml's `S = S*ms + vs`, contracted to an FMA by its compiler.
                    s_sum[h] = s_sum[h].mul_add(f, p);
                }
                let vp = _mm256_set1_ps(p);
                for c in 0..NV {
                    let t = _mm256_fmadd_ps(vr[c], vp, a[c]);
                    a[c] = if round_acc { round_f16_ps(t) } else { t };
                }
            }
        }
        start += n;
    }
    let mut a = vec![0.0f32; hd];
    for h in 0..g {
        for (c, &v) in acc[h].iter().enumerate() {
            // SAFETY: `c * 8 + 8 <= hd`.
            unsafe { _mm256_storeu_ps(a.as_mut_ptr().add(c * LANES), v) };
        }
        scalar::finish_head(job.partial, out_group, h, &a, m[h], s_sum[h]);
    }
}

/// [`attend_group`] for any head dim that is a multiple of 8.
///
/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_group_any(job: &AttnJob, q_group: &[f32], out_group: &mut [f32]) {
    let hd = job.head_dim;
    let nv = hd / LANES;
    let g = q_group.len() / hd;
    let kv = job.kv;
    let row = kv.n_kv_heads * hd;
    let k_f16 = matches!(kv.k, KvData::F16(_));
    let v_f16 = matches!(kv.v, KvData::F16(_));
    let vec_path = job.ggml_vec_path;

    // Q, rounded to f16 on ggml's per-key path with an f16 K.
    let mut q = q_group.to_vec();
    if vec_path && k_f16 {
        for c in q.chunks_exact_mut(LANES) {
            // SAFETY: `c` holds exactly 8 values.
            unsafe { store(c, 0, round_f16_ps(load(c, 0))) };
        }
    }
    let mut acc = vec![0.0f32; g * hd];
    let mut m = vec![f32::NEG_INFINITY; g];
    let mut s_sum = vec![0.0f32; g];
    let mut scores = vec![0.0f32; g * BLOCK];
    // ms/vs of the per-key path: rescale factor of the accumulator and weight of each key.
    let mut ms = vec![0.0f32; g * BLOCK];
    let mut krow = vec![0.0f32; hd];
    let mut vrow = vec![0.0f32; hd];
    let scale = _mm256_set1_ps(job.scale);

    let mut start = job.key_lo;
    while start < job.key_hi {
        let n = (job.key_hi - start).min(BLOCK - start % BLOCK);
        // Scores: each K row is loaded once for all heads of the group.
        for j in 0..n {
            let off = (start + j) * row + job.kv_head * hd;
            // SAFETY: the row `off..off+hd` is inside the cache (checked by `cpu::ops`).
            unsafe { load_kv_row(&kv.k, off, &mut krow) };
            for h in 0..g {
                let qh = &q[h * hd..(h + 1) * hd];
                if vec_path {
                    scores[h * BLOCK + j] = dot_ggml_slice(qh, &krow);
                    continue;
                }
                let mut d = _mm256_setzero_ps();
                for c in 0..nv {
                    // SAFETY: `c * 8 < hd`.
                    unsafe { d = _mm256_fmadd_ps(load(qh, c * LANES), load(&krow, c * LANES), d) };
                }
                scores[h * BLOCK + j] = hsum(d);
            }
        }
        for h in 0..g {
            let sc = &mut scores[h * BLOCK..h * BLOCK + n];
            let msh = &mut ms[h * BLOCK..h * BLOCK + n];
            let mut i = 0;
            while i < n {
                // SAFETY: `i < n`.
                unsafe { store(sc, i, _mm256_mul_ps(load(sc, i), scale)) };
                i += LANES;
            }
            if vec_path {
                // ggml's per-key update with libm's expf, shared by every ISA.
                scalar::per_key_weights(sc, msh, &mut m[h]);
            } else {
                // ggml's tiled path: one max per block, then e^(s - M).
                let bmax = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let m_new = m[h].max(bmax);
                if m_new > m[h] {
                    let f = (m[h] - m_new).exp();
                    let a = &mut acc[h * hd..(h + 1) * hd];
                    let vf = _mm256_set1_ps(f);
                    for c in 0..nv {
                        // SAFETY: `c * 8 < hd`.
                        unsafe { store(a, c * LANES, _mm256_mul_ps(load(a, c * LANES), vf)) };
                    }
                    s_sum[h] *= f;
                }
                m[h] = m_new;
                let vm = _mm256_set1_ps(m_new);
                let mut bsum = 0.0f64;
                let mut i = 0;
                while i < n {
                    // SAFETY: `i < n`; tail lanes are masked out of the sum.
                    unsafe {
                        let e = exp_ggml_ps(_mm256_sub_ps(load(sc, i), vm));
                        let e = if n - i >= LANES {
                            e
                        } else {
                            _mm256_and_ps(e, _mm256_castsi256_ps(tail_mask(n - i)))
                        };
                        store(sc, i, e);
                        bsum += hsum(e) as f64;
                    }
                    i += LANES;
                }
                s_sum[h] += bsum as f32;
            }
        }
        // Weighted V: each V row is loaded once for all heads of the group.
        for j in 0..n {
            let off = (start + j) * row + job.kv_head * hd;
            // SAFETY: as for K.
            unsafe { load_kv_row(&kv.v, off, &mut vrow) };
            for h in 0..g {
                let a = &mut acc[h * hd..(h + 1) * hd];
                let p = scores[h * BLOCK + j];
                if vec_path {
                    let f = ms[h * BLOCK + j];
                    if f != 1.0 {
                        let vf = _mm256_set1_ps(f);
                        for c in 0..nv {
                            // SAFETY: `c * 8 < hd`.
                            unsafe {
                                let mut t = _mm256_mul_ps(load(a, c * LANES), vf);
                                if v_f16 {
                                    t = round_f16_ps(t);
                                }
                                store(a, c * LANES, t);
                            }
                        }
                    }
                    // ggml's `S = S*ms + vs`, contracted to an FMA by its compiler.
                    s_sum[h] = s_sum[h].mul_add(f, p);
                }
                let vp = _mm256_set1_ps(p);
                for c in 0..nv {
                    // SAFETY: `c * 8 < hd`.
                    unsafe {
                        let mut t = _mm256_fmadd_ps(load(&vrow, c * LANES), vp, load(a, c * LANES));
                        if vec_path && v_f16 {
                            t = round_f16_ps(t);
                        }
                        store(a, c * LANES, t);
                    }
                }
            }
        }
        start += n;
    }
    for h in 0..g {
        scalar::finish_head(
            job.partial,
            out_group,
            h,
            &acc[h * hd..(h + 1) * hd],
            m[h],
            s_sum[h],
        );
    }
}

/// Copies `dst.len()` cache values from `off` into `dst` as f32.
///
/// # Safety
/// `off + dst.len()` is within the cache; the CPU supports this module's target features.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_kv_row(data: &KvData, off: usize, dst: &mut [f32]) {
    match data {
        KvData::F32(d) => dst.copy_from_slice(&d[off..off + dst.len()]),
        // SAFETY: this function's target features.
        KvData::F16(d) => unsafe { f16_to_f32_row(&d[off..off + dst.len()], dst) },
    }
}

/// ggml's tiled path for a tile of query rows (tokens × the heads of one kv head), vectorised
/// over rows (see `scalar::attend_tile` for the numerics). Tiles of more than 32 rows, or head
/// dims that are not a multiple of 4, go one token at a time through [`attend_group`].
///
/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attend_tile(tile: &AttnTile, q_tile: &[f32], out_tile: &mut [f32]) {
    let rows = tile.n_tokens * tile.group;
    // SAFETY (all arms): this function's target features.
    unsafe {
        if !tile.head_dim.is_multiple_of(4) {
            return attend_tile_by_token(tile, q_tile, out_tile);
        }
        match rows.div_ceil(LANES) {
            1 => attend_tile_rv::<1>(tile, q_tile, out_tile),
            2 => attend_tile_rv::<2>(tile, q_tile, out_tile),
            3 => attend_tile_rv::<3>(tile, q_tile, out_tile),
            4 => attend_tile_rv::<4>(tile, q_tile, out_tile),
            _ => attend_tile_by_token(tile, q_tile, out_tile),
        }
    }
}

/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_tile_by_token(tile: &AttnTile, q_tile: &[f32], out_tile: &mut [f32]) {
    // SAFETY: this function's target features.
    tile.by_token(q_tile, out_tile, |job, qt, ot| unsafe {
        attend_group(job, qt, ot)
    });
}

/// The tiled kernel for `RV * 8` row lanes: Q transposed once per tile (`qt[d][row]`), each
/// block of keys converted to f32 once, scores `st[key][row]`, the online softmax per row lane
/// and the accumulator `acc[d][row]`, so no horizontal sums are needed.
///
/// # Safety
/// `tile.n_tokens * tile.group <= RV * 8`, `tile.head_dim % 4 == 0`; the CPU supports this
/// module's target features.
// Parallel arrays indexed by row vector read clearer with an index.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_tile_rv<const RV: usize>(tile: &AttnTile, q_tile: &[f32], out_tile: &mut [f32]) {
    let hd = tile.head_dim;
    let g = tile.group;
    let rows = tile.n_tokens * g;
    let rp = RV * LANES;
    assert!(
        rows <= rp
            && hd.is_multiple_of(4)
            && q_tile.len() >= rows * hd
            && out_tile.len() >= rows * hd
    );
    let mut qt = vec![0.0f32; hd * rp];
    let mut lo = vec![0i32; rp];
    let mut hi = vec![0i32; rp];
    for r in 0..rows {
        for d in 0..hd {
            qt[d * rp + r] = q_tile[r * hd + d];
        }
        let keys = tile.row_keys(r);
        lo[r] = keys.start as i32;
        hi[r] = keys.end as i32;
    }
    let (key_min, key_max) = tile.key_span(rows);
    let kv = tile.kv;
    let kv_row = kv.n_kv_heads * hd;
    let base = tile.kv_head * hd;
    let zero = _mm256_setzero_ps();
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut lo_v = [_mm256_setzero_si256(); RV];
    let mut hi_v = [_mm256_setzero_si256(); RV];
    for vr in 0..RV {
        // SAFETY: `lo` and `hi` hold `rp = RV * 8` values.
        unsafe {
            lo_v[vr] = _mm256_loadu_si256(lo.as_ptr().add(vr * LANES) as *const __m256i);
            hi_v[vr] = _mm256_loadu_si256(hi.as_ptr().add(vr * LANES) as *const __m256i);
        }
    }
    let mut m = [neg_inf; RV];
    let mut s_sum = [zero; RV];
    let mut acc = vec![0.0f32; hd * rp];
    let mut st = vec![0.0f32; BLOCK * rp];
    // Rows past a block's end stay finite (zeros or the previous block's keys): the score loop
    // computes 4 keys at a time and drops the extra ones.
    let mut kf = vec![0.0f32; BLOCK * hd];
    let mut vf = vec![0.0f32; BLOCK * hd];
    let scale = _mm256_set1_ps(tile.scale);

    // Blocks aligned to multiples of BLOCK in the cache, like ggml's tiles.
    let mut b0 = if key_max == 0 {
        0
    } else {
        key_min - key_min % BLOCK
    };
    while b0 < key_max {
        let n = (key_max - b0).min(BLOCK);
        for j in 0..n {
            let off = (b0 + j) * kv_row + base;
            // SAFETY: `b0 + j < key_max`: inside the cache (`AttnTile::key_span` checks it).
            unsafe {
                load_kv_row(&kv.k, off, &mut kf[j * hd..(j + 1) * hd]);
                load_kv_row(&kv.v, off, &mut vf[j * hd..(j + 1) * hd]);
            }
        }
        // Scores for 4 keys at a time: 4 × RV independent accumulators.
        let mut j = 0;
        while j < n {
            let mut a = [[zero; RV]; 4];
            for d in 0..hd {
                let mut qd = [zero; RV];
                for (vr, q) in qd.iter_mut().enumerate() {
                    // SAFETY: `d * rp + vr * 8 + 8 <= hd * rp`.
                    *q = unsafe { _mm256_loadu_ps(qt.as_ptr().add(d * rp + vr * LANES)) };
                }
                for (jj, aj) in a.iter_mut().enumerate() {
                    // SAFETY: `j + jj <= 63 < BLOCK` (j is a multiple of 4 below n ≤ 64).
                    let kd = _mm256_set1_ps(unsafe { *kf.as_ptr().add((j + jj) * hd + d) });
                    for vr in 0..RV {
                        aj[vr] = _mm256_fmadd_ps(kd, qd[vr], aj[vr]);
                    }
                }
            }
            for (jj, aj) in a.iter().enumerate().take(n - j) {
                let key = _mm256_set1_epi32((b0 + j + jj) as i32);
                for vr in 0..RV {
                    // outside = key < lo || key >= hi = lo > key || !(hi > key)
                    let below = _mm256_cmpgt_epi32(lo_v[vr], key);
                    let inside_hi = _mm256_cmpgt_epi32(hi_v[vr], key);
                    let outside = _mm256_castsi256_ps(_mm256_or_si256(
                        below,
                        _mm256_xor_si256(inside_hi, _mm256_set1_epi32(-1)),
                    ));
                    let s = _mm256_blendv_ps(_mm256_mul_ps(aj[vr], scale), neg_inf, outside);
                    // SAFETY: `(j + jj) * rp + vr * 8 + 8 <= BLOCK * rp`.
                    unsafe { _mm256_storeu_ps(st.as_mut_ptr().add((j + jj) * rp + vr * LANES), s) };
                }
            }
            j += 4;
        }
        // Online softmax per row lane: one max per block, e^(s - M), rescale by e^(M_old - M).
        let mut ms = [zero; RV];
        let mut any_rescale = false;
        for vr in 0..RV {
            let mut bmax = neg_inf;
            for j in 0..n {
                // SAFETY: `j * rp + vr * 8 + 8 <= BLOCK * rp`.
                bmax = _mm256_max_ps(bmax, unsafe {
                    _mm256_loadu_ps(st.as_ptr().add(j * rp + vr * LANES))
                });
            }
            let m_new = _mm256_max_ps(m[vr], bmax);
            // Rows with nothing attended yet keep M = -inf; use 0 so that e^(-inf - 0) = 0.
            let none = _mm256_cmp_ps::<_CMP_EQ_OQ>(m_new, neg_inf);
            let m_safe = _mm256_blendv_ps(m_new, zero, none);
            ms[vr] = exp_libm_ps(_mm256_sub_ps(m[vr], m_safe));
            any_rescale |=
                _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(ms[vr], _mm256_set1_ps(1.0))) != 0;
            let mut sum = zero;
            for j in 0..n {
                // SAFETY: as above.
                unsafe {
                    let p = st.as_mut_ptr().add(j * rp + vr * LANES);
                    let e = exp_ggml_ps(_mm256_sub_ps(_mm256_loadu_ps(p), m_safe));
                    _mm256_storeu_ps(p, e);
                    sum = _mm256_add_ps(sum, e);
                }
            }
            s_sum[vr] = _mm256_fmadd_ps(s_sum[vr], ms[vr], sum);
            m[vr] = m_new;
        }
        // acc[d][row] = acc * ms + Σ_j p[j][row] v[j][d], 4 dims at a time.
        let mut d = 0;
        while d < hd {
            let mut a = [[zero; RV]; 4];
            for (dd, ad) in a.iter_mut().enumerate() {
                for vr in 0..RV {
                    // SAFETY: `(d + dd) * rp + vr * 8 + 8 <= hd * rp`.
                    let v =
                        unsafe { _mm256_loadu_ps(acc.as_ptr().add((d + dd) * rp + vr * LANES)) };
                    ad[vr] = if any_rescale {
                        _mm256_mul_ps(v, ms[vr])
                    } else {
                        v
                    };
                }
            }
            for j in 0..n {
                let mut p = [zero; RV];
                for (vr, pv) in p.iter_mut().enumerate() {
                    // SAFETY: `j * rp + vr * 8 + 8 <= BLOCK * rp`.
                    *pv = unsafe { _mm256_loadu_ps(st.as_ptr().add(j * rp + vr * LANES)) };
                }
                for (dd, ad) in a.iter_mut().enumerate() {
                    // SAFETY: `j * hd + d + dd < BLOCK * hd`.
                    let v = _mm256_set1_ps(unsafe { *vf.as_ptr().add(j * hd + d + dd) });
                    for vr in 0..RV {
                        ad[vr] = _mm256_fmadd_ps(v, p[vr], ad[vr]);
                    }
                }
            }
            for (dd, ad) in a.iter().enumerate() {
                for vr in 0..RV {
                    // SAFETY: as for the load above.
                    unsafe {
                        _mm256_storeu_ps(acc.as_mut_ptr().add((d + dd) * rp + vr * LANES), ad[vr])
                    };
                }
            }
            d += 4;
        }
        b0 += n;
    }
    let mut inv = vec![0.0f32; rp];
    for vr in 0..RV {
        let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(s_sum[vr], zero);
        let i = _mm256_and_ps(nonzero, _mm256_div_ps(_mm256_set1_ps(1.0), s_sum[vr]));
        // SAFETY: `inv` holds `rp` values.
        unsafe { _mm256_storeu_ps(inv.as_mut_ptr().add(vr * LANES), i) };
    }
    for r in 0..rows {
        for d in 0..hd {
            out_tile[r * hd + d] = acc[d * rp + r] * inv[r];
        }
    }
}
