//! The attention kernels of AVX2 and AVX-512 (ggml's per-key path for one query token and its
//! tiled path), written once over [`F32Vec`]; see `scalar::attend_group` / `scalar::attend_tile`
//! for the numerics. The ISAs' `attend_group` / `attend_tile` entries pick the head-dim or
//! row-count variant and call these.

use super::{load_kv_row, F32Vec};
use crate::cpu::attention::job::{AttnJob, AttnTile, KvData};
use crate::cpu::scalar::ops as scalar;

/// Keys per block; ggml's `GGML_FA_TILE_KV`.
const BLOCK: usize = scalar::KV_TILE;

/// One row of `NV * LANES` cache values at `off`, as f32 vectors.
///
/// # Safety
/// `off + NV * LANES <= data.len()`.
#[inline(always)]
unsafe fn load_row_nv<V: F32Vec, const NV: usize>(v: V, data: &KvData, off: usize) -> [V::Reg; NV] {
    let mut r = [v.zero(); NV];
    // SAFETY: the caller guarantees `off..off + NV * LANES` is inside the slice.
    unsafe {
        match data {
            KvData::F32(d) => {
                let p = d.as_ptr().add(off);
                for (c, x) in r.iter_mut().enumerate() {
                    *x = v.loadu(p.add(c * V::LANES));
                }
            }
            KvData::F16(d) => {
                let p = d.as_ptr().add(off);
                for (c, x) in r.iter_mut().enumerate() {
                    *x = v.loadu_f16(p.add(c * V::LANES));
                }
            }
        }
    }
    r
}

/// `attend_group` for a head dim of `NV * LANES`: the query heads, the K/V rows and the
/// accumulators live in arrays of vectors the compiler keeps in registers where it can.
///
/// # Safety
/// `job.head_dim == NV * LANES`.
#[inline(always)]
pub(crate) unsafe fn attend_group_nv<V: F32Vec, const NV: usize>(
    v: V,
    job: &AttnJob,
    q_group: &[f32],
    out_group: &mut [f32],
) {
    let hd = NV * V::LANES;
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

    let zero = [v.zero(); NV];
    let mut qv = vec![zero; g];
    for (h, qh) in qv.iter_mut().enumerate() {
        for (c, x) in qh.iter_mut().enumerate() {
            // SAFETY: `(h * NV + c) * LANES + LANES <= g * hd <= q_group.len()`.
            let y = unsafe { v.loadu(q_group.as_ptr().add((h * NV + c) * V::LANES)) };
            *x = if round_q { v.round_f16(y) } else { y };
        }
    }
    let mut acc = vec![zero; g];
    let mut m = vec![f32::NEG_INFINITY; g];
    let mut s_sum = vec![0.0f32; g];
    let mut scores = vec![0.0f32; g * BLOCK];
    let mut ms = vec![0.0f32; g * BLOCK];
    let scale = v.splat(job.scale);

    let mut start = job.key_lo;
    while start < job.key_hi {
        let n = (job.key_hi - start).min(BLOCK - start % BLOCK);
        for j in 0..n {
            // SAFETY: `start + j < key_hi`, so the row is inside the cache (asserted above).
            let kr = unsafe { load_row_nv::<V, NV>(v, &kv.k, (start + j) * row + base) };
            for (h, qh) in qv.iter().enumerate() {
                if vec_path {
                    scores[h * BLOCK + j] = v.dot_ggml_nv(qh, &kr);
                    continue;
                }
                let mut d = v.mul(qh[0], kr[0]);
                for c in 1..NV {
                    d = v.fmadd(qh[c], kr[c], d);
                }
                scores[h * BLOCK + j] = v.reduce_add(d);
            }
        }
        for h in 0..g {
            let sc = &mut scores[h * BLOCK..h * BLOCK + n];
            let msh = &mut ms[h * BLOCK..h * BLOCK + n];
            scale_scores(v, sc, scale);
            if vec_path {
                // ggml's per-key update with libm's expf, shared by every ISA.
                scalar::per_key_weights(sc, msh, &mut m[h]);
            } else {
                // ggml's tiled path: one max per block, then e^(s - M).
                let bmax = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let m_new = m[h].max(bmax);
                if m_new > m[h] {
                    let f = v.splat((m[h] - m_new).exp());
                    for x in acc[h].iter_mut() {
                        *x = v.mul(*x, f);
                    }
                    s_sum[h] *= (m[h] - m_new).exp();
                }
                m[h] = m_new;
                s_sum[h] += exp_block(v, sc, m_new);
            }
        }
        for j in 0..n {
            // SAFETY: as for K.
            let vr = unsafe { load_row_nv::<V, NV>(v, &kv.v, (start + j) * row + base) };
            for h in 0..g {
                let p = scores[h * BLOCK + j];
                let a = &mut acc[h];
                if vec_path {
                    let f = ms[h * BLOCK + j];
                    if f != 1.0 {
                        let vf = v.splat(f);
                        for x in a.iter_mut() {
                            let t = v.mul(*x, vf);
                            *x = if round_acc { v.round_f16(t) } else { t };
                        }
                    }
                    // ggml's `S = S*ms + vs`, contracted to an FMA by its compiler.
                    s_sum[h] = s_sum[h].mul_add(f, p);
                }
                let vp = v.splat(p);
                for c in 0..NV {
                    let t = v.fmadd(vr[c], vp, a[c]);
                    a[c] = if round_acc { v.round_f16(t) } else { t };
                }
            }
        }
        start += n;
    }
    let mut a = vec![0.0f32; hd];
    for h in 0..g {
        for (c, &x) in acc[h].iter().enumerate() {
            // SAFETY: `c * LANES + LANES <= hd`.
            unsafe { v.storeu(a.as_mut_ptr().add(c * V::LANES), x) };
        }
        scalar::finish_head(job.partial, out_group, h, &a, m[h], s_sum[h]);
    }
}

/// `sc *= scale`, lane by lane.
#[inline(always)]
fn scale_scores<V: F32Vec>(v: V, sc: &mut [f32], scale: V::Reg) {
    let mut i = 0;
    while i < sc.len() {
        // SAFETY: `i < sc.len()`.
        unsafe { v.store(sc, i, v.mul(v.load(sc, i), scale)) };
        i += V::LANES;
    }
}

/// ggml's tiled path for one head's block of scores: `sc = e^(sc - m)`, and the block's sum
/// (each vector's lanes summed, then the vectors in f64).
#[inline(always)]
fn exp_block<V: F32Vec>(v: V, sc: &mut [f32], m: f32) -> f32 {
    let n = sc.len();
    let vm = v.splat(m);
    let mut bsum = 0.0f64;
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n`; tail lanes are masked out of the sum.
        unsafe {
            let e = v.exp_ggml(v.sub(v.load(sc, i), vm));
            let e = if n - i >= V::LANES {
                e
            } else {
                v.zero_tail(e, n - i)
            };
            v.store(sc, i, e);
            bsum += v.reduce_add(e) as f64;
        }
        i += V::LANES;
    }
    bsum as f32
}

/// `attend_group` for any head dim that is a multiple of `LANES`.
#[inline(always)]
pub(crate) fn attend_group_any<V: F32Vec>(
    v: V,
    job: &AttnJob,
    q_group: &[f32],
    out_group: &mut [f32],
) {
    let hd = job.head_dim;
    let nv = hd / V::LANES;
    let g = q_group.len() / hd;
    let kv = job.kv;
    let row = kv.n_kv_heads * hd;
    let k_f16 = matches!(kv.k, KvData::F16(_));
    let v_f16 = matches!(kv.v, KvData::F16(_));
    let vec_path = job.ggml_vec_path;

    // Q, rounded to f16 on ggml's per-key path with an f16 K.
    let mut q = q_group.to_vec();
    if vec_path && k_f16 {
        for c in q.chunks_exact_mut(V::LANES) {
            // SAFETY: `c` holds exactly LANES values.
            unsafe { v.store(c, 0, v.round_f16(v.load(c, 0))) };
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
    let scale = v.splat(job.scale);

    let mut start = job.key_lo;
    while start < job.key_hi {
        let n = (job.key_hi - start).min(BLOCK - start % BLOCK);
        // Scores: each K row is loaded once for all heads of the group.
        for j in 0..n {
            let off = (start + j) * row + job.kv_head * hd;
            load_kv_row(v, &kv.k, off, &mut krow);
            for h in 0..g {
                let qh = &q[h * hd..(h + 1) * hd];
                if vec_path {
                    scores[h * BLOCK + j] = v.dot_ggml_slice(qh, &krow);
                    continue;
                }
                let mut d = v.zero();
                for c in 0..nv {
                    // SAFETY: `c * LANES < hd`.
                    unsafe {
                        d = v.fmadd(v.load(qh, c * V::LANES), v.load(&krow, c * V::LANES), d)
                    };
                }
                scores[h * BLOCK + j] = v.reduce_add(d);
            }
        }
        for h in 0..g {
            let sc = &mut scores[h * BLOCK..h * BLOCK + n];
            let msh = &mut ms[h * BLOCK..h * BLOCK + n];
            scale_scores(v, sc, scale);
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
                    let vf = v.splat(f);
                    for c in 0..nv {
                        // SAFETY: `c * LANES < hd`.
                        unsafe { v.store(a, c * V::LANES, v.mul(v.load(a, c * V::LANES), vf)) };
                    }
                    s_sum[h] *= f;
                }
                m[h] = m_new;
                s_sum[h] += exp_block(v, sc, m_new);
            }
        }
        // Weighted V: each V row is loaded once for all heads of the group.
        for j in 0..n {
            let off = (start + j) * row + job.kv_head * hd;
            load_kv_row(v, &kv.v, off, &mut vrow);
            for h in 0..g {
                let a = &mut acc[h * hd..(h + 1) * hd];
                let p = scores[h * BLOCK + j];
                if vec_path {
                    let f = ms[h * BLOCK + j];
                    if f != 1.0 {
                        let vf = v.splat(f);
                        for c in 0..nv {
                            // SAFETY: `c * LANES < hd`.
                            unsafe {
                                let mut t = v.mul(v.load(a, c * V::LANES), vf);
                                if v_f16 {
                                    t = v.round_f16(t);
                                }
                                v.store(a, c * V::LANES, t);
                            }
                        }
                    }
                    // ggml's `S = S*ms + vs`, contracted to an FMA by its compiler.
                    s_sum[h] = s_sum[h].mul_add(f, p);
                }
                let vp = v.splat(p);
                for c in 0..nv {
                    // SAFETY: `c * LANES < hd`.
                    unsafe {
                        let x = v.load(&vrow, c * V::LANES);
                        let mut t = v.fmadd(x, vp, v.load(a, c * V::LANES));
                        if vec_path && v_f16 {
                            t = v.round_f16(t);
                        }
                        v.store(a, c * V::LANES, t);
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

/// `maxps(a, b)` on one lane: `a` if `a > b`, else `b` (also where either is NaN).
#[inline(always)]
fn max_lane(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Lane 0 of `a`.
#[inline(always)]
fn lane0<V: F32Vec>(v: V, a: V::Reg) -> f32 {
    let mut buf = [0.0f32; 16];
    debug_assert!(V::LANES <= buf.len());
    // SAFETY: `buf` holds 16 ≥ LANES values.
    unsafe { v.storeu(buf.as_mut_ptr(), a) };
    buf[0]
}

/// `f(x)` computed by the vector op on a splat (so a scalar step has the vector step's bits).
#[inline(always)]
fn by_lane<V: F32Vec>(v: V, x: f32, f: impl Fn(V::Reg) -> V::Reg) -> f32 {
    lane0(v, f(v.splat(x)))
}

/// [`attend_tile_rv`] for tiles of few rows (a decode token's group of heads), with the keys
/// and the head dimension in the lanes instead of the rows, so that no lane is idle: each
/// row's scores are computed for `LANES` keys at a time over the block's keys transposed once
/// (`kt[d][key]`), its accumulator `LANES` dims at a time from the value rows as they lie.
/// Every row gets exactly [`attend_tile_rv`]'s operations in its order (the score's FMA chain
/// over `d`, the mask, the block max, `e^(s - M)`, the sum over keys in order, the rescale,
/// the FMA chain over keys, the final scale), so the bits are the same; it is only faster
/// when few of the row lanes would be used.
///
/// # Safety
/// `tile.head_dim % LANES == 0`, `q_tile.len() >= rows * hd`, `out_tile.len() >= rows * hd`
/// (rows = `n_tokens * group`).
#[inline(always)]
pub(crate) unsafe fn attend_tile_few<V: F32Vec>(
    v: V,
    tile: &AttnTile,
    q_tile: &[f32],
    out_tile: &mut [f32],
) {
    let lanes = V::LANES;
    let hd = tile.head_dim;
    let rows = tile.n_tokens * tile.group;
    assert!(
        hd.is_multiple_of(lanes)
            && BLOCK.is_multiple_of(lanes)
            && q_tile.len() >= rows * hd
            && out_tile.len() >= rows * hd
    );
    let nd = hd / lanes;
    let keys: Vec<std::ops::Range<usize>> = (0..rows).map(|r| tile.row_keys(r)).collect();
    let (key_min, key_max) = tile.key_span(rows);
    // Key indices as f32 for the mask (exact below 2^24).
    assert!(
        key_max < 1 << 24,
        "attention: too many keys for the few-row kernel"
    );
    let kv = tile.kv;
    let kv_row = kv.n_kv_heads * hd;
    let base = tile.kv_head * hd;
    let neg_inf = v.splat(f32::NEG_INFINITY);
    let scale = v.splat(tile.scale);
    let mut m = vec![f32::NEG_INFINITY; rows];
    let mut s_sum = vec![0.0f32; rows];
    let mut acc = vec![0.0f32; rows * hd];
    // Per row: the block's scores, then e^(s - M).
    let mut st = vec![0.0f32; rows * BLOCK];
    let mut kf = vec![0.0f32; BLOCK * hd];
    let mut kt = vec![0.0f32; hd * BLOCK];
    let mut vf = vec![0.0f32; BLOCK * hd];
    let mut key_idx = vec![0.0f32; BLOCK];
    let mut b0 = if key_max == 0 {
        0
    } else {
        key_min - key_min % BLOCK
    };
    while b0 < key_max {
        let n = (key_max - b0).min(BLOCK);
        for j in 0..n {
            let off = (b0 + j) * kv_row + base;
            load_kv_row(v, &kv.k, off, &mut kf[j * hd..(j + 1) * hd]);
            load_kv_row(v, &kv.v, off, &mut vf[j * hd..(j + 1) * hd]);
        }
        // Keys past `n` in the last lanes: finite values (zeros or the previous block's),
        // never read below.
        // SAFETY: `n <= BLOCK`, `kf.len() == BLOCK * hd`, `kt.len() == hd * BLOCK`, `BLOCK`
        // a multiple of LANES.
        unsafe { v.transpose_in(&kf, n, hd, &mut kt, BLOCK) };
        for (j, k) in key_idx.iter_mut().enumerate() {
            *k = (b0 + j) as f32;
        }
        for r in 0..rows {
            let q = &q_tile[r * hd..(r + 1) * hd];
            let (lo, hi) = (v.splat(keys[r].start as f32), v.splat(keys[r].end as f32));
            let srow = &mut st[r * BLOCK..(r + 1) * BLOCK];
            for j0 in (0..n).step_by(lanes) {
                let mut a = v.zero();
                for (d, &qd) in q.iter().enumerate() {
                    // SAFETY: `d * BLOCK + j0 + LANES <= hd * BLOCK` (j0 + LANES <= BLOCK).
                    let kd = unsafe { v.loadu(kt.as_ptr().add(d * BLOCK + j0)) };
                    a = v.fmadd(kd, v.splat(qd), a);
                }
                let s = v.mul(a, scale);
                // SAFETY: `j0 + LANES <= BLOCK = key_idx.len()`.
                let key = unsafe { v.loadu(key_idx.as_ptr().add(j0)) };
                // `s` where lo <= key < hi, -inf elsewhere (`keep_keys`).
                let s = v.select_lt(key, lo, neg_inf, s);
                let s = v.select_lt(key, hi, s, neg_inf);
                // SAFETY: `j0 + LANES <= BLOCK = srow.len()`.
                unsafe { v.storeu(srow.as_mut_ptr().add(j0), s) };
            }
            let bmax = srow[..n]
                .iter()
                .fold(f32::NEG_INFINITY, |b, &x| max_lane(b, x));
            let m_new = max_lane(m[r], bmax);
            let m_safe = if m_new == f32::NEG_INFINITY {
                0.0
            } else {
                m_new
            };
            let ms = by_lane(v, m[r] - m_safe, |x| v.exp_libm(x));
            let msv = v.splat(m_safe);
            for j0 in (0..n).step_by(lanes) {
                // SAFETY: `j0 + LANES <= BLOCK = srow.len()`.
                unsafe {
                    let p = srow.as_mut_ptr().add(j0);
                    v.storeu(p, v.exp_ggml(v.sub(v.loadu(p), msv)));
                }
            }
            let sum = srow[..n].iter().fold(0.0f32, |s, &e| s + e);
            s_sum[r] = s_sum[r].mul_add(ms, sum);
            m[r] = m_new;
            let arow = &mut acc[r * hd..(r + 1) * hd];
            let msr = v.splat(ms);
            for c in 0..nd {
                // SAFETY: `c * LANES + LANES <= hd`; value row `j < n` lies in `vf`.
                unsafe {
                    let at = arow.as_mut_ptr().add(c * lanes);
                    let mut x = v.loadu(at);
                    if ms != 1.0 {
                        x = v.mul(x, msr);
                    }
                    for (j, &p) in srow[..n].iter().enumerate() {
                        let vv = v.loadu(vf.as_ptr().add(j * hd + c * lanes));
                        x = v.fmadd(vv, v.splat(p), x);
                    }
                    v.storeu(at, x);
                }
            }
        }
        b0 += n;
    }
    for (r, &sum) in s_sum.iter().enumerate() {
        let inv = v.splat(by_lane(v, sum, |x| v.recip_or_zero(x)));
        for c in 0..nd {
            // SAFETY: `r * hd + c * LANES + LANES <= rows * hd <= out_tile.len()` and
            // `acc.len() == rows * hd`.
            unsafe {
                let x = v.loadu(acc.as_ptr().add(r * hd + c * lanes));
                v.storeu(out_tile.as_mut_ptr().add(r * hd + c * lanes), v.mul(x, inv));
            }
        }
    }
}

/// The tiled kernel for `RV * LANES` row lanes: Q transposed once per tile (`qt[d][row]`), each
/// block of keys converted to f32 once, scores `st[key][row]`, the online softmax per row lane
/// and the accumulator `acc[d][row]`, so no horizontal sums are needed.
///
/// # Safety
/// `tile.n_tokens * tile.group <= RV * LANES`, `tile.head_dim % 4 == 0`.
// Parallel arrays indexed by row vector read clearer with an index.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(crate) unsafe fn attend_tile_rv<V: F32Vec, const RV: usize>(
    v: V,
    tile: &AttnTile,
    q_tile: &[f32],
    out_tile: &mut [f32],
) {
    let lanes = V::LANES;
    let hd = tile.head_dim;
    let g = tile.group;
    let rows = tile.n_tokens * g;
    let rp = RV * lanes;
    assert!(
        rows <= rp
            && hd.is_multiple_of(4)
            && q_tile.len() >= rows * hd
            && out_tile.len() >= rows * hd
    );
    let mut qt = vec![0.0f32; hd * rp];
    let mut lo = vec![0i32; rp];
    let mut hi = vec![0i32; rp];
    // SAFETY: `rows <= rp`, `q_tile.len() >= rows * hd` (asserted) and `qt.len() == hd * rp`.
    unsafe { v.transpose_in(q_tile, rows, hd, &mut qt, rp) };
    for r in 0..rows {
        let keys = tile.row_keys(r);
        lo[r] = keys.start as i32;
        hi[r] = keys.end as i32;
    }
    let (key_min, key_max) = tile.key_span(rows);
    let kv = tile.kv;
    let kv_row = kv.n_kv_heads * hd;
    let base = tile.kv_head * hd;
    let zero = v.zero();
    let neg_inf = v.splat(f32::NEG_INFINITY);
    let mut lo_v = [v.zero_int(); RV];
    let mut hi_v = [v.zero_int(); RV];
    for vr in 0..RV {
        // SAFETY: `lo` and `hi` hold `rp = RV * LANES` values.
        unsafe {
            lo_v[vr] = v.loadu_i32(lo.as_ptr().add(vr * lanes));
            hi_v[vr] = v.loadu_i32(hi.as_ptr().add(vr * lanes));
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
    let scale = v.splat(tile.scale);

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
            (KvData::F32(k), KvData::F32(val)) if last_row_end <= k.len().min(val.len()) => {
                let off = b0 * kv_row + base;
                (k[off..].as_ptr(), val[off..].as_ptr(), kv_row)
            }
            _ => {
                for j in 0..n {
                    let off = (b0 + j) * kv_row + base;
                    load_kv_row(v, &kv.k, off, &mut kf[j * hd..(j + 1) * hd]);
                    load_kv_row(v, &kv.v, off, &mut vf[j * hd..(j + 1) * hd]);
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
                    // SAFETY: `d * rp + vr * LANES + LANES <= hd * rp`.
                    *q = unsafe { v.loadu(qt.as_ptr().add(d * rp + vr * lanes)) };
                }
                for (jj, aj) in a.iter_mut().enumerate() {
                    // SAFETY: `j + jj <= 63 < BLOCK` (j is a multiple of 4 below n ≤ 64), so
                    // the row is inside `kf` or, read in place, before `last_row_end`.
                    let kd = v.splat(unsafe { *kp.add((j + jj) * ks + d) });
                    for vr in 0..RV {
                        aj[vr] = v.fmadd(kd, qd[vr], aj[vr]);
                    }
                }
            }
            for (jj, aj) in a.iter().enumerate().take(n - j) {
                let key = (b0 + j + jj) as i32;
                for vr in 0..RV {
                    let s = v.keep_keys(v.mul(aj[vr], scale), neg_inf, key, lo_v[vr], hi_v[vr]);
                    // SAFETY: `(j + jj) * rp + vr * LANES + LANES <= BLOCK * rp`.
                    unsafe { v.storeu(st.as_mut_ptr().add((j + jj) * rp + vr * lanes), s) };
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
                // SAFETY: `j * rp + vr * LANES + LANES <= BLOCK * rp`.
                bmax = v.max(bmax, unsafe {
                    v.loadu(st.as_ptr().add(j * rp + vr * lanes))
                });
            }
            let m_new = v.max(m[vr], bmax);
            // Rows with nothing attended yet keep M = -inf; use 0 so that e^(-inf - 0) = 0.
            let m_safe = v.replace_eq(m_new, neg_inf, zero);
            ms[vr] = v.exp_libm(v.sub(m[vr], m_safe));
            any_rescale |= v.any_ne(ms[vr], v.splat(1.0));
            let mut sum = zero;
            for j in 0..n {
                // SAFETY: as above.
                unsafe {
                    let p = st.as_mut_ptr().add(j * rp + vr * lanes);
                    let e = v.exp_ggml(v.sub(v.loadu(p), m_safe));
                    v.storeu(p, e);
                    sum = v.add(sum, e);
                }
            }
            s_sum[vr] = v.fmadd(s_sum[vr], ms[vr], sum);
            m[vr] = m_new;
        }
        // acc[d][row] = acc * ms + Σ_j p[j][row] v[j][d], 4 dims at a time.
        let mut d = 0;
        while d < hd {
            let mut a = [[zero; RV]; 4];
            for (dd, ad) in a.iter_mut().enumerate() {
                for vr in 0..RV {
                    // SAFETY: `(d + dd) * rp + vr * LANES + LANES <= hd * rp`.
                    let x = unsafe { v.loadu(acc.as_ptr().add((d + dd) * rp + vr * lanes)) };
                    ad[vr] = if any_rescale { v.mul(x, ms[vr]) } else { x };
                }
            }
            for j in 0..n {
                let mut p = [zero; RV];
                for (vr, pv) in p.iter_mut().enumerate() {
                    // SAFETY: `j * rp + vr * LANES + LANES <= BLOCK * rp`.
                    *pv = unsafe { v.loadu(st.as_ptr().add(j * rp + vr * lanes)) };
                }
                for (dd, ad) in a.iter_mut().enumerate() {
                    // SAFETY: `j < n`, `d + dd < hd`: inside `vf` or the cache, as for `kp`.
                    let x = v.splat(unsafe { *vp.add(j * ks + d + dd) });
                    for vr in 0..RV {
                        ad[vr] = v.fmadd(x, p[vr], ad[vr]);
                    }
                }
            }
            for (dd, ad) in a.iter().enumerate() {
                for vr in 0..RV {
                    // SAFETY: as for the load above.
                    unsafe { v.storeu(acc.as_mut_ptr().add((d + dd) * rp + vr * lanes), ad[vr]) };
                }
            }
            d += 4;
        }
        b0 += n;
    }
    let mut inv = vec![0.0f32; rp];
    for vr in 0..RV {
        // SAFETY: `inv` holds `rp` values.
        unsafe { v.storeu(inv.as_mut_ptr().add(vr * lanes), v.recip_or_zero(s_sum[vr])) };
    }
    // SAFETY: `rows <= rp`, `out_tile.len() >= rows * hd` (asserted), `acc.len() == hd * rp`
    // and `inv.len() == rp`.
    unsafe { v.transpose_out(&acc, rp, &inv, rows, hd, out_tile) };
}

/// The plain transposes of the tiled kernel, for ISAs without a vector transpose (and head
/// dims the vector one does not cover).
pub(crate) mod plain {
    /// `qt[d * rp + r] = q[r * hd + d]` for `r < rows`, `d < hd`.
    #[inline(always)]
    pub(crate) fn transpose_in(q: &[f32], rows: usize, hd: usize, qt: &mut [f32], rp: usize) {
        for r in 0..rows {
            for d in 0..hd {
                qt[d * rp + r] = q[r * hd + d];
            }
        }
    }

    /// `out[r * hd + d] = acc[d * rp + r] * inv[r]` for `r < rows`, `d < hd`.
    #[inline(always)]
    pub(crate) fn transpose_out(
        acc: &[f32],
        rp: usize,
        inv: &[f32],
        rows: usize,
        hd: usize,
        out: &mut [f32],
    ) {
        for r in 0..rows {
            for d in 0..hd {
                out[r * hd + d] = acc[d * rp + r] * inv[r];
            }
        }
    }
}
