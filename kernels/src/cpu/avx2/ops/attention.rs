//! Attention kernels: ggml's per-key path (one query token, a key range) and its tiled path.

use super::*;
use crate::cpu::simd;

/// e^x of each lane with libm's `expf` (what ggml calls where its C code writes `expf`).
#[inline]
#[target_feature(enable = "avx")]
pub(super) fn exp_libm_ps(x: __m256) -> __m256 {
    let mut t = [0.0f32; 8];
    // SAFETY: `t` holds 8 values.
    unsafe { _mm256_storeu_ps(t.as_mut_ptr(), x) };
    for v in t.iter_mut() {
        *v = v.exp();
    }
    // SAFETY: as above.
    unsafe { _mm256_loadu_ps(t.as_ptr()) }
}

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
pub(super) fn dot_ggml_nv<const NV: usize>(q: &[__m256; NV], k: &[__m256; NV]) -> f32 {
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
pub(super) fn dot_ggml_slice(q: &[f32], k: &[f32]) -> f32 {
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

/// [`attend_group`] for a head dim of `NV * LANES`.
///
/// # Safety
/// `job.head_dim == NV * LANES`; the CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_group_nv<const NV: usize>(job: &AttnJob, q_group: &[f32], out_group: &mut [f32]) {
    // SAFETY: this function's target features are Avx2F32's; the head dim is the caller's.
    unsafe { simd::attention::attend_group_nv::<_, NV>(Avx2F32::new(), job, q_group, out_group) }
}

/// [`attend_group`] for any head dim that is a multiple of `LANES`.
///
/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_group_any(job: &AttnJob, q_group: &[f32], out_group: &mut [f32]) {
    // SAFETY: this function's target features are Avx2F32's.
    simd::attention::attend_group_any(unsafe { Avx2F32::new() }, job, q_group, out_group)
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
        // Few rows (a decode token's heads): keys and dims in the lanes, the same bits.
        if rows <= LANES / 2 && tile.head_dim.is_multiple_of(LANES) {
            return attend_tile_few(tile, q_tile, out_tile);
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

/// The tiled kernel for few rows (`simd::attention::attend_tile_few`).
///
/// # Safety
/// `tile.head_dim % LANES == 0`; the CPU supports this module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_tile_few(tile: &AttnTile, q_tile: &[f32], out_tile: &mut [f32]) {
    // SAFETY: this function's target features are Avx2F32's; the head dim is the caller's, the
    // tile's slices are checked by the kernel.
    unsafe { simd::attention::attend_tile_few(Avx2F32::new(), tile, q_tile, out_tile) }
}

/// The tiled kernel for `RV * LANES` row lanes (`simd::attention::attend_tile_rv`).
///
/// # Safety
/// `tile.n_tokens * tile.group <= RV * LANES`, `tile.head_dim % 4 == 0`; the CPU supports this
/// module's target features.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_tile_rv<const RV: usize>(tile: &AttnTile, q_tile: &[f32], out_tile: &mut [f32]) {
    // SAFETY: this function's target features are Avx2F32's; the tile's shape is the caller's.
    unsafe { simd::attention::attend_tile_rv::<_, RV>(Avx2F32::new(), tile, q_tile, out_tile) }
}

/// Bidirectional attention of one (sequence, head) of a packed batch
/// (`simd::packed::attend_packed`, the bits of `attention::packed::attend_packed_ref`).
///
/// # Safety
/// The CPU supports this module's target features; the job passed `PackedJob::check` and
/// `out` holds its rows × head_dim values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn attend_packed(job: &crate::cpu::attention::packed::PackedJob, out: &mut [f32]) {
    // SAFETY: this function's target features; the caller's contract.
    unsafe { simd::packed::attend_packed(Avx2F32::new(), job, out) }
}
