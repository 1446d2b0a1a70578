//! Attention kernels: ggml's per-key path (one query token, a key range) and its tiled path.

use super::*;

/// e^x of each lane with libm's `expf` (what ggml calls where its C code writes `expf`).
#[inline]
#[target_feature(enable = "avx512f")]
fn exp_libm_ps(x: __m512) -> __m512 {
    let mut t = [0.0f32; 16];
    // SAFETY: `t` holds 16 values.
    unsafe { _mm512_storeu_ps(t.as_mut_ptr(), x) };
    for v in t.iter_mut() {
        *v = v.exp();
    }
    // SAFETY: as above.
    unsafe { _mm512_loadu_ps(t.as_ptr()) }
}

/// Keys per block; ggml's `GGML_FA_TILE_KV`.
const BLOCK: usize = scalar::KV_TILE;

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
fn dot_ggml_nv<const NV: usize>(q: &[__m512; NV], k: &[__m512; NV]) -> f32 {
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
fn dot_ggml_slice(q: &[f32], k: &[f32]) -> f32 {
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

/// One row of `NV * 16` cache values at `off`, as f32 vectors.
///
/// # Safety
/// `off + NV * 16 <= data.len()`; the CPU supports this module's target features.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn load_row_nv<const NV: usize>(data: &KvData, off: usize) -> [__m512; NV] {
    let mut r = [_mm512_setzero_ps(); NV];
    // SAFETY: the caller guarantees `off..off + NV*16` is inside the slice.
    unsafe {
        match data {
            KvData::F32(d) => {
                let p = d.as_ptr().add(off);
                for (c, v) in r.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(p.add(c * LANES));
                }
            }
            KvData::F16(d) => {
                let p = d.as_ptr().add(off);
                for (c, v) in r.iter_mut().enumerate() {
                    *v = _mm512_cvtph_ps(_mm256_loadu_si256(p.add(c * LANES) as *const __m256i));
                }
            }
        }
    }
    r
}

/// [`attend_group`] for a head dim of `NV * 16`: the query heads, the K/V rows and the
/// accumulators live in arrays of vectors the compiler keeps in registers where it can.
///
/// # Safety
/// `job.head_dim == NV * 16`; the CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
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

    let zero = [_mm512_setzero_ps(); NV];
    let mut qv = vec![zero; g];
    for (h, qh) in qv.iter_mut().enumerate() {
        for (c, v) in qh.iter_mut().enumerate() {
            // SAFETY: `(h * NV + c) * 16 + 16 <= g * hd = q_group.len()`.
            let x = unsafe { _mm512_loadu_ps(q_group.as_ptr().add((h * NV + c) * LANES)) };
            *v = if round_q { round_f16_ps(x) } else { x };
        }
    }
    let mut acc = vec![zero; g];
    let mut m = vec![f32::NEG_INFINITY; g];
    let mut s_sum = vec![0.0f32; g];
    let mut scores = vec![0.0f32; g * BLOCK];
    let mut ms = vec![0.0f32; g * BLOCK];
    let scale = _mm512_set1_ps(job.scale);

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
                let mut d = _mm512_mul_ps(qh[0], kr[0]);
                for c in 1..NV {
                    d = _mm512_fmadd_ps(qh[c], kr[c], d);
                }
                scores[h * BLOCK + j] = _mm512_reduce_add_ps(d);
            }
        }
        for h in 0..g {
            let sc = &mut scores[h * BLOCK..h * BLOCK + n];
            let msh = &mut ms[h * BLOCK..h * BLOCK + n];
            let mut i = 0;
            while i < n {
                // SAFETY: `i < n`.
                unsafe { store(sc, i, _mm512_mul_ps(load(sc, i), scale)) };
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
                    let f = _mm512_set1_ps((m[h] - m_new).exp());
                    for v in acc[h].iter_mut() {
                        *v = _mm512_mul_ps(*v, f);
                    }
                    s_sum[h] *= (m[h] - m_new).exp();
                }
                m[h] = m_new;
                let vm = _mm512_set1_ps(m_new);
                let mut bsum = 0.0f64;
                let mut i = 0;
                while i < n {
                    // SAFETY: `i < n`; tail lanes are masked out of the sum.
                    unsafe {
                        let e = exp_ggml_ps(_mm512_sub_ps(load(sc, i), vm));
                        let e = if n - i >= LANES {
                            e
                        } else {
                            _mm512_maskz_mov_ps(tail_mask(n - i), e)
                        };
                        store(sc, i, e);
                        bsum += _mm512_reduce_add_ps(e) as f64;
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
                        let vf = _mm512_set1_ps(f);
                        for v in a.iter_mut() {
                            let t = _mm512_mul_ps(*v, vf);
                            *v = if round_acc { round_f16_ps(t) } else { t };
                        }
                    }
                    // ggml's `S = S*ms + vs`, contracted to an FMA by its compiler.
                    s_sum[h] = s_sum[h].mul_add(f, p);
                }
                let vp = _mm512_set1_ps(p);
                for c in 0..NV {
                    let t = _mm512_fmadd_ps(vr[c], vp, a[c]);
                    a[c] = if round_acc { round_f16_ps(t) } else { t };
                }
            }
        }
        start += n;
    }
    let mut a = vec![0.0f32; hd];
    for h in 0..g {
        for (c, &v) in acc[h].iter().enumerate() {
            // SAFETY: `c * 16 + 16 <= hd`.
            unsafe { _mm512_storeu_ps(a.as_mut_ptr().add(c * LANES), v) };
        }
        scalar::finish_head(job.partial, out_group, h, &a, m[h], s_sum[h]);
    }
}

/// [`attend_group`] for any head dim that is a multiple of 16.
///
/// # Safety
/// The CPU supports this module's target features.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
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
            // SAFETY: `c` holds exactly 16 values.
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
    let scale = _mm512_set1_ps(job.scale);

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
                let mut d = _mm512_setzero_ps();
                for c in 0..nv {
                    // SAFETY: `c * 16 < hd`.
                    unsafe { d = _mm512_fmadd_ps(load(qh, c * LANES), load(&krow, c * LANES), d) };
                }
                scores[h * BLOCK + j] = _mm512_reduce_add_ps(d);
            }
        }
        for h in 0..g {
            let sc = &mut scores[h * BLOCK..h * BLOCK + n];
            let msh = &mut ms[h * BLOCK..h * BLOCK + n];
            let mut i = 0;
            while i < n {
                // SAFETY: `i < n`.
                unsafe { store(sc, i, _mm512_mul_ps(load(sc, i), scale)) };
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
                    let vf = _mm512_set1_ps(f);
                    for c in 0..nv {
                        // SAFETY: `c * 16 < hd`.
                        unsafe { store(a, c * LANES, _mm512_mul_ps(load(a, c * LANES), vf)) };
                    }
                    s_sum[h] *= f;
                }
                m[h] = m_new;
                let vm = _mm512_set1_ps(m_new);
                let mut bsum = 0.0f64;
                let mut i = 0;
                while i < n {
                    // SAFETY: `i < n`; tail lanes are masked out of the sum.
                    unsafe {
                        let e = exp_ggml_ps(_mm512_sub_ps(load(sc, i), vm));
                        let e = if n - i >= LANES {
                            e
                        } else {
                            _mm512_maskz_mov_ps(tail_mask(n - i), e)
                        };
                        store(sc, i, e);
                        bsum += _mm512_reduce_add_ps(e) as f64;
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
                        let vf = _mm512_set1_ps(f);
                        for c in 0..nv {
                            // SAFETY: `c * 16 < hd`.
                            unsafe {
                                let mut t = _mm512_mul_ps(load(a, c * LANES), vf);
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
                let vp = _mm512_set1_ps(p);
                for c in 0..nv {
                    // SAFETY: `c * 16 < hd`.
                    unsafe {
                        let mut t = _mm512_fmadd_ps(load(&vrow, c * LANES), vp, load(a, c * LANES));
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn load_kv_row(data: &KvData, off: usize, dst: &mut [f32]) {
    match data {
        KvData::F32(d) => dst.copy_from_slice(&d[off..off + dst.len()]),
        // SAFETY: this function's target features.
        KvData::F16(d) => unsafe { f16_to_f32_row(&d[off..off + dst.len()], dst) },
    }
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

/// The tiled kernel for `RV * 16` row lanes: Q transposed once per tile (`qt[d][row]`), each
/// block of keys converted to f32 once, scores `st[key][row]`, the online softmax per row lane
/// and the accumulator `acc[d][row]`, so no horizontal sums are needed.
///
/// # Safety
/// `tile.n_tokens * tile.group <= RV * 16`, `tile.head_dim % 4 == 0`; the CPU supports this
/// module's target features.
// Parallel arrays indexed by row vector read clearer with an index.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
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
    if hd.is_multiple_of(LANES) {
        // SAFETY: `rows <= rp`, `q_tile.len() >= rows * hd` and `qt.len() == hd * rp`
        // (asserted and allocated above); this function's target features.
        unsafe { transpose_rows_to_cols(q_tile, rows, hd, &mut qt, rp) };
    } else {
        for r in 0..rows {
            for d in 0..hd {
                qt[d * rp + r] = q_tile[r * hd + d];
            }
        }
    }
    for r in 0..rows {
        let keys = tile.row_keys(r);
        lo[r] = keys.start as i32;
        hi[r] = keys.end as i32;
    }
    let (key_min, key_max) = tile.key_span(rows);
    let kv = tile.kv;
    let kv_row = kv.n_kv_heads * hd;
    let base = tile.kv_head * hd;
    let zero = _mm512_setzero_ps();
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut lo_v = [_mm512_setzero_si512(); RV];
    let mut hi_v = [_mm512_setzero_si512(); RV];
    for vr in 0..RV {
        // SAFETY: `lo` and `hi` hold `rp = RV * 16` values.
        unsafe {
            lo_v[vr] = _mm512_loadu_si512(lo.as_ptr().add(vr * LANES) as *const _);
            hi_v[vr] = _mm512_loadu_si512(hi.as_ptr().add(vr * LANES) as *const _);
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
    let scale = _mm512_set1_ps(tile.scale);

    // Blocks aligned to multiples of BLOCK in the cache, like ggml's tiles.
    let mut b0 = if key_max == 0 {
        0
    } else {
        key_min - key_min % BLOCK
    };
    while b0 < key_max {
        let n = (key_max - b0).min(BLOCK);
        // Key row `j` of the block is at `kp + j * ks`, value row `j` at `vp + j * ks`. An f32
        // cache (e.g. `attention_parallel`'s f16 cache converted once per call) is read in
        // place when the score loop's rounding up to 4 keys stays inside it; otherwise the
        // rows are copied (converted) into `kf`/`vf`.
        let last_row_end = (b0 + n.next_multiple_of(4) - 1) * kv_row + base + hd;
        let (kp, vp, ks) = match (&kv.k, &kv.v) {
            (KvData::F32(k), KvData::F32(v)) if last_row_end <= k.len().min(v.len()) => {
                let off = b0 * kv_row + base;
                (k[off..].as_ptr(), v[off..].as_ptr(), kv_row)
            }
            _ => {
                for j in 0..n {
                    let off = (b0 + j) * kv_row + base;
                    // SAFETY: `b0 + j < key_max`: inside the cache (`AttnTile::key_span` checks it).
                    unsafe {
                        load_kv_row(&kv.k, off, &mut kf[j * hd..(j + 1) * hd]);
                        load_kv_row(&kv.v, off, &mut vf[j * hd..(j + 1) * hd]);
                    }
                }
                (kf.as_ptr(), vf.as_ptr(), hd)
            }
        };
        // Scores for 4 keys at a time: 4 × RV independent accumulators.
        let mut j = 0;
        while j < n {
            let mut a = [[zero; RV]; 4];
            for d in 0..hd {
                let mut qd = [zero; RV];
                for (vr, q) in qd.iter_mut().enumerate() {
                    // SAFETY: `d * rp + vr * 16 + 16 <= hd * rp`.
                    *q = unsafe { _mm512_loadu_ps(qt.as_ptr().add(d * rp + vr * LANES)) };
                }
                for (jj, aj) in a.iter_mut().enumerate() {
                    // SAFETY: `j + jj <= 63 < BLOCK` (j is a multiple of 4 below n ≤ 64), so
                    // the row is inside `kf` or, read in place, before `last_row_end`.
                    let kd = _mm512_set1_ps(unsafe { *kp.add((j + jj) * ks + d) });
                    for vr in 0..RV {
                        aj[vr] = _mm512_fmadd_ps(kd, qd[vr], aj[vr]);
                    }
                }
            }
            for (jj, aj) in a.iter().enumerate().take(n - j) {
                let key = _mm512_set1_epi32((b0 + j + jj) as i32);
                for vr in 0..RV {
                    let inside = _mm512_cmpge_epi32_mask(key, lo_v[vr])
                        & _mm512_cmplt_epi32_mask(key, hi_v[vr]);
                    let s = _mm512_mask_blend_ps(inside, neg_inf, _mm512_mul_ps(aj[vr], scale));
                    // SAFETY: `(j + jj) * rp + vr * 16 + 16 <= BLOCK * rp`.
                    unsafe { _mm512_storeu_ps(st.as_mut_ptr().add((j + jj) * rp + vr * LANES), s) };
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
                // SAFETY: `j * rp + vr * 16 + 16 <= BLOCK * rp`.
                bmax = _mm512_max_ps(bmax, unsafe {
                    _mm512_loadu_ps(st.as_ptr().add(j * rp + vr * LANES))
                });
            }
            let m_new = _mm512_max_ps(m[vr], bmax);
            // Rows with nothing attended yet keep M = -inf; use 0 so that e^(-inf - 0) = 0.
            let none = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(m_new, neg_inf);
            let m_safe = _mm512_mask_blend_ps(none, m_new, zero);
            ms[vr] = exp_libm_ps(_mm512_sub_ps(m[vr], m_safe));
            any_rescale |= _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(ms[vr], _mm512_set1_ps(1.0)) != 0;
            let mut sum = zero;
            for j in 0..n {
                // SAFETY: as above.
                unsafe {
                    let p = st.as_mut_ptr().add(j * rp + vr * LANES);
                    let e = exp_ggml_ps(_mm512_sub_ps(_mm512_loadu_ps(p), m_safe));
                    _mm512_storeu_ps(p, e);
                    sum = _mm512_add_ps(sum, e);
                }
            }
            s_sum[vr] = _mm512_fmadd_ps(s_sum[vr], ms[vr], sum);
            m[vr] = m_new;
        }
        // acc[d][row] = acc * ms + Σ_j p[j][row] v[j][d], 4 dims at a time.
        let mut d = 0;
        while d < hd {
            let mut a = [[zero; RV]; 4];
            for (dd, ad) in a.iter_mut().enumerate() {
                for vr in 0..RV {
                    // SAFETY: `(d + dd) * rp + vr * 16 + 16 <= hd * rp`.
                    let v =
                        unsafe { _mm512_loadu_ps(acc.as_ptr().add((d + dd) * rp + vr * LANES)) };
                    ad[vr] = if any_rescale {
                        _mm512_mul_ps(v, ms[vr])
                    } else {
                        v
                    };
                }
            }
            for j in 0..n {
                let mut p = [zero; RV];
                for (vr, pv) in p.iter_mut().enumerate() {
                    // SAFETY: `j * rp + vr * 16 + 16 <= BLOCK * rp`.
                    *pv = unsafe { _mm512_loadu_ps(st.as_ptr().add(j * rp + vr * LANES)) };
                }
                for (dd, ad) in a.iter_mut().enumerate() {
                    // SAFETY: `j < n`, `d + dd < hd`: inside `vf` or the cache, as for `kp`.
                    let v = _mm512_set1_ps(unsafe { *vp.add(j * ks + d + dd) });
                    for vr in 0..RV {
                        ad[vr] = _mm512_fmadd_ps(v, p[vr], ad[vr]);
                    }
                }
            }
            for (dd, ad) in a.iter().enumerate() {
                for vr in 0..RV {
                    // SAFETY: as for the load above.
                    unsafe {
                        _mm512_storeu_ps(acc.as_mut_ptr().add((d + dd) * rp + vr * LANES), ad[vr])
                    };
                }
            }
            d += 4;
        }
        b0 += n;
    }
    let mut inv = vec![0.0f32; rp];
    for vr in 0..RV {
        let nonzero = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(s_sum[vr], zero);
        let i = _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(1.0), s_sum[vr]);
        // SAFETY: `inv` holds `rp` values.
        unsafe { _mm512_storeu_ps(inv.as_mut_ptr().add(vr * LANES), i) };
    }
    if hd.is_multiple_of(LANES) {
        // SAFETY: `rows <= rp`, `out_tile.len() >= rows * hd`, `acc.len() == hd * rp` and
        // `inv.len() == rp`; this function's target features.
        unsafe { transpose_cols_to_rows_scaled(&acc, rp, &inv, rows, hd, out_tile) };
    } else {
        for r in 0..rows {
            for d in 0..hd {
                out_tile[r * hd + d] = acc[d * rp + r] * inv[r];
            }
        }
    }
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
unsafe fn transpose_rows_to_cols(q: &[f32], rows: usize, hd: usize, qt: &mut [f32], rp: usize) {
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
unsafe fn transpose_cols_to_rows_scaled(
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
