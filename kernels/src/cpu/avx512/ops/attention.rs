//! Attention kernels: ggml's per-key path (one query token, a key range) and its tiled path.

use super::*;
use crate::cpu::simd;

/// e^x of each lane with libm's `expf` (what ggml calls where its C code writes `expf`).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn exp_libm_ps(x: __m512) -> __m512 {
    let mut t = [0.0f32; 16];
    // SAFETY: `t` holds 16 values.
    unsafe { _mm512_storeu_ps(t.as_mut_ptr(), x) };
    for v in t.iter_mut() {
        *v = v.exp();
    }
    // SAFETY: as above.
    unsafe { _mm512_loadu_ps(t.as_ptr()) }
}

/// Attention of one GQA group for one query token (see `scalar::attend_group`, whose two numeric
/// paths this reproduces). Head dims that are not a multiple of 16 go to the AVX2 kernel.
///
/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn attend_group(job: &AttnJob, q_group: &[f32], out_group: &mut [f32]) {
    let hd = job.head_dim;
    if !hd.is_multiple_of(LANES) {
        // SAFETY: AVX-512 implies the AVX2 module's features (checked by `Isa::is_supported`).
        return unsafe { crate::cpu::avx2::ops::attend_group(job, q_group, out_group) };
    }
    // SAFETY (all arms): this function's target features; `hd == NV * 16`.
    unsafe {
        match hd / LANES {
            1 => attend_group_nv::<1>(job, q_group, out_group),
            2 => attend_group_nv::<2>(job, q_group, out_group),
            3 => attend_group_nv::<3>(job, q_group, out_group),
            4 => attend_group_nv::<4>(job, q_group, out_group),
            5 => attend_group_nv::<5>(job, q_group, out_group),
            6 => attend_group_nv::<6>(job, q_group, out_group),
            8 => attend_group_nv::<8>(job, q_group, out_group),
            16 => attend_group_nv::<16>(job, q_group, out_group),
            _ => attend_group_any(job, q_group, out_group),
        }
    }
}

/// `scalar::dot_ggml` (ggml's AVX-512 `ggml_vec_dot_f16` order) of one query head and one
/// key row held in vectors: the same operations, so the same bits.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub(super) fn dot_ggml_nv<const NV: usize>(q: &[__m512; NV], k: &[__m512; NV]) -> f32 {
    let full = NV / 4 * 4;
    let mut a = [_mm512_setzero_ps(); 4];
    for c in (0..full).step_by(4) {
        for j in 0..4 {
            a[j] = _mm512_fmadd_ps(q[c + j], k[c + j], a[j]);
        }
    }
    let r = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
    let mut sum = _mm512_reduce_add_ps(r) as f64;
    let mut t = [0.0f32; LANES];
    for c in full..NV {
        // SAFETY: `t` holds 16 values.
        unsafe { _mm512_storeu_ps(t.as_mut_ptr(), _mm512_mul_ps(q[c], k[c])) };
        for v in t {
            sum += v as f64;
        }
    }
    sum as f32
}

/// [`dot_ggml_nv`] over slices of a multiple of 16 values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub(super) fn dot_ggml_slice(q: &[f32], k: &[f32]) -> f32 {
    let n = q.len().min(k.len());
    let full = n - n % 64;
    let mut a = [_mm512_setzero_ps(); 4];
    for c in (0..full).step_by(64) {
        for (j, aj) in a.iter_mut().enumerate() {
            // SAFETY: `c + 16 * j + 16 <= full <= n`.
            unsafe { *aj = _mm512_fmadd_ps(load(q, c + 16 * j), load(k, c + 16 * j), *aj) };
        }
    }
    let r = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
    let mut sum = _mm512_reduce_add_ps(r) as f64;
    for i in full..n {
        sum += (q[i] * k[i]) as f64;
    }
    sum as f32
}

/// [`attend_group`] for a head dim of `NV * LANES`.
///
/// # Safety
/// `job.head_dim == NV * LANES`; the CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn attend_group_nv<const NV: usize>(job: &AttnJob, q_group: &[f32], out_group: &mut [f32]) {
    // SAFETY: this function's target features are Avx512F32's; the head dim is the caller's.
    unsafe { simd::attention::attend_group_nv::<_, NV>(Avx512F32::new(), job, q_group, out_group) }
}

/// [`attend_group`] for any head dim that is a multiple of `LANES`.
///
/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn attend_group_any(job: &AttnJob, q_group: &[f32], out_group: &mut [f32]) {
    // SAFETY: this function's target features are Avx512F32's.
    simd::attention::attend_group_any(unsafe { Avx512F32::new() }, job, q_group, out_group)
}

/// ggml's tiled path for a tile of query rows (tokens × the heads of one kv head), vectorised
/// over rows (see `scalar::attend_tile` for the numerics). Tiles of more than 64 rows, or head
/// dims that are not a multiple of 4, go one token at a time through [`attend_group`].
///
/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn attend_tile_few(tile: &AttnTile, q_tile: &[f32], out_tile: &mut [f32]) {
    // SAFETY: this function's target features are Avx512F32's; the head dim is the caller's, the
    // tile's slices are checked by the kernel.
    unsafe { simd::attention::attend_tile_few(Avx512F32::new(), tile, q_tile, out_tile) }
}

/// The tiled kernel for `RV * LANES` row lanes (`simd::attention::attend_tile_rv`).
///
/// # Safety
/// `tile.n_tokens * tile.group <= RV * LANES`, `tile.head_dim % 4 == 0`; the CPU supports this
/// module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn attend_tile_rv<const RV: usize>(tile: &AttnTile, q_tile: &[f32], out_tile: &mut [f32]) {
    // SAFETY: this function's target features are Avx512F32's; the tile's shape is the caller's.
    unsafe { simd::attention::attend_tile_rv::<_, RV>(Avx512F32::new(), tile, q_tile, out_tile) }
}

/// Transposes 16 vectors in place (`v[i][j]` ↔ `v[j][i]`): for each bit `k` of the index, the
/// off-diagonal `k × k` blocks of every `2k × 2k` block are swapped (4 stages of 8 two-source
/// permutes). Pure data movement; replaces the scalar transposes of the tiled attention, which
/// the compiler turned into scatters and gathers.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
fn transpose_16x16(v: &mut [__m512; LANES]) {
    for k in [8usize, 4, 2, 1] {
        let mut lo_idx = [0i32; LANES];
        let mut hi_idx = [0i32; LANES];
        for c in 0..LANES {
            // Index 0..15 picks from the first source, 16..31 from the second.
            if c & k == 0 {
                lo_idx[c] = c as i32;
                hi_idx[c] = (c + k) as i32;
            } else {
                lo_idx[c] = (LANES + c - k) as i32;
                hi_idx[c] = (LANES + c) as i32;
            }
        }
        // SAFETY: both arrays hold 16 i32.
        let (lo, hi) = unsafe {
            (
                _mm512_loadu_si512(lo_idx.as_ptr() as *const _),
                _mm512_loadu_si512(hi_idx.as_ptr() as *const _),
            )
        };
        for i in 0..LANES {
            if i & k == 0 {
                let (a, b) = (v[i], v[i + k]);
                v[i] = _mm512_permutex2var_ps(a, lo, b);
                v[i + k] = _mm512_permutex2var_ps(a, hi, b);
            }
        }
    }
}

/// `qt[d * rp + r] = q[r * hd + d]` for `r < rows`, `d < hd`, by 16 × 16 blocks; the rows of
/// `qt`'s last block past `rows` get zeros.
///
/// # Safety
/// `hd % 16 == 0`, `rows <= rp`, `rp % 16 == 0`, `q.len() >= rows * hd`, `qt.len() >= hd * rp`;
/// the CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub(super) unsafe fn transpose_rows_to_cols(
    q: &[f32],
    rows: usize,
    hd: usize,
    qt: &mut [f32],
    rp: usize,
) {
    assert!(
        hd.is_multiple_of(LANES)
            && rp.is_multiple_of(LANES)
            && rows <= rp
            && q.len() >= rows * hd
            && qt.len() >= hd * rp
    );
    let mut v = [_mm512_setzero_ps(); LANES];
    for r0 in (0..rows).step_by(LANES) {
        for d0 in (0..hd).step_by(LANES) {
            for (i, vi) in v.iter_mut().enumerate() {
                *vi = if r0 + i < rows {
                    // SAFETY: `(r0 + i) * hd + d0 + 16 <= rows * hd <= q.len()`.
                    unsafe { _mm512_loadu_ps(q.as_ptr().add((r0 + i) * hd + d0)) }
                } else {
                    _mm512_setzero_ps()
                };
            }
            transpose_16x16(&mut v);
            for (j, vj) in v.iter().enumerate() {
                // SAFETY: `(d0 + j) * rp + r0 + 16 <= hd * rp` (r0 + 16 <= rp: `rp % 16 == 0`).
                unsafe { _mm512_storeu_ps(qt.as_mut_ptr().add((d0 + j) * rp + r0), *vj) };
            }
        }
    }
}

/// `out[r * hd + d] = acc[d * rp + r] * inv[r]` for `r < rows`, `d < hd`, by 16 × 16 blocks.
///
/// # Safety
/// `hd % 16 == 0`, `rows <= rp`, `rp % 16 == 0`, `acc.len() >= hd * rp`, `inv.len() >= rp`,
/// `out.len() >= rows * hd`; the CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub(super) unsafe fn transpose_cols_to_rows_scaled(
    acc: &[f32],
    rp: usize,
    inv: &[f32],
    rows: usize,
    hd: usize,
    out: &mut [f32],
) {
    assert!(
        hd.is_multiple_of(LANES)
            && rp.is_multiple_of(LANES)
            && rows <= rp
            && acc.len() >= hd * rp
            && inv.len() >= rp
            && out.len() >= rows * hd
    );
    let mut v = [_mm512_setzero_ps(); LANES];
    for r0 in (0..rows).step_by(LANES) {
        for d0 in (0..hd).step_by(LANES) {
            for (i, vi) in v.iter_mut().enumerate() {
                // SAFETY: `(d0 + i) * rp + r0 + 16 <= hd * rp <= acc.len()`.
                *vi = unsafe { _mm512_loadu_ps(acc.as_ptr().add((d0 + i) * rp + r0)) };
            }
            transpose_16x16(&mut v);
            for (j, vj) in v.iter().enumerate().take(rows - r0) {
                let r = r0 + j;
                let scaled = _mm512_mul_ps(*vj, _mm512_set1_ps(inv[r]));
                // SAFETY: `r * hd + d0 + 16 <= rows * hd <= out.len()`.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(r * hd + d0), scaled) };
            }
        }
    }
}

/// Bidirectional attention of one (sequence, head) of a packed batch
/// (`simd::packed::attend_packed`, the bits of `attention::packed::attend_packed_ref`).
///
/// # Safety
/// The CPU supports this module's target features; the job passed `PackedJob::check` and
/// `out` holds its rows × head_dim values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub unsafe fn attend_packed(job: &crate::cpu::attention::packed::PackedJob, out: &mut [f32]) {
    // SAFETY: this function's target features; the caller's contract.
    unsafe { simd::packed::attend_packed(Avx512F32::new(), job, out) }
}
