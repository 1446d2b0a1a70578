//! Attention (references): ggml's per-key path and its tiled path, and the helpers the SIMD
//! kernels share (the f16 dot-product order, the per-key softmax step, the split-KV merge).

use super::*;

#[inline]
fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Copies row `pos` of kv head `kv_head` of a cache into f32.
#[inline]
fn load_row(data: &KvData, offset: usize, dst: &mut [f32]) {
    match data {
        KvData::F32(d) => dst.copy_from_slice(&d[offset..offset + dst.len()]),
        KvData::F16(d) => f16_to_f32_row(&d[offset..offset + dst.len()], dst),
    }
}

/// Writes head `h`'s result: `acc / s_sum` into `out[h*hd..]`, or with `partial` the raw
/// accumulator, M and S into `out[h*(hd+2)..]` for [`combine_partials`].
#[inline]
pub fn finish_head(partial: bool, out: &mut [f32], h: usize, acc: &[f32], m: f32, s_sum: f32) {
    let hd = acc.len();
    if partial {
        let o = &mut out[h * (hd + 2)..(h + 1) * (hd + 2)];
        o[..hd].copy_from_slice(acc);
        o[hd] = m;
        o[hd + 1] = s_sum;
    } else {
        let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
        for (o, &a) in out[h * hd..(h + 1) * hd].iter_mut().zip(acc) {
            *o = a * inv;
        }
    }
}

/// ggml `ggml_flash_attn_ext_reduce_partials`: merges the `[acc(hd), M, S]` partial results of
/// one head over several key chunks (in chunk order) into the normalised output.
#[inline]
pub fn combine_partials<'a>(chunks: impl Iterator<Item = &'a [f32]>, out: &mut [f32]) {
    let hd = out.len();
    let mut m_final = f32::NEG_INFINITY;
    let mut s_final = 0.0f32;
    out.fill(0.0);
    for c in chunks {
        let (m_c, s_c) = (c[hd], c[hd + 1]);
        if s_c == 0.0 {
            continue;
        }
        let m_new = m_final.max(m_c);
        let scale_old = (m_final - m_new).exp();
        let scale_new = (m_c - m_new).exp();
        for (o, &v) in out.iter_mut().zip(&c[..hd]) {
            *o = *o * scale_old + v * scale_new;
        }
        s_final = s_final * scale_old + s_c * scale_new;
        m_final = m_new;
    }
    if s_final != 0.0 {
        let inv = 1.0 / s_final;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// `_mm512_reduce_add_ps` of 16 lanes, in its order (GCC's and Rust's alike): halves, then
/// quarters, then pairs.
#[inline]
pub fn reduce_add_16(r: &[f32; 16]) -> f32 {
    let mut t1 = [0.0f32; 8];
    for i in 0..8 {
        t1[i] = r[i] + r[i + 8];
    }
    let t2 = [t1[0] + t1[4], t1[1] + t1[5], t1[2] + t1[6], t1[3] + t1[7]];
    (t2[0] + t2[2]) + (t2[1] + t2[3])
}

/// Q·K of ggml's per-key attention path, summed in the order of `ggml_vec_dot_f16` as built
/// for AVX-512 (the goldens' machine): per 64 values, four accumulators of 16 lanes with a
/// fused multiply-add each; then `(a0 + a2) + (a1 + a3)`, [`reduce_add_16`], and the values
/// past the last multiple of 64 added one by one in f64. Every ISA sums in this order, so
/// scores are bit-identical across ISAs: the f16 accumulator of the per-key path rounds, and a
/// score one ulp off flips some of those roundings.
///
/// With `exact_products` (Q and K hold f16 values: their products are exact in f32) the fused
/// multiply-add equals a multiply then an add, which is much faster without hardware FMA.
#[inline]
pub fn dot_ggml(q: &[f32], k: &[f32], exact_products: bool) -> f32 {
    let n = q.len().min(k.len());
    let np = n - n % 64;
    let mut acc = [[0.0f32; 16]; 4];
    for c in (0..np).step_by(64) {
        for (j, a) in acc.iter_mut().enumerate() {
            let (qc, kc) = (
                &q[c + 16 * j..c + 16 * j + 16],
                &k[c + 16 * j..c + 16 * j + 16],
            );
            for l in 0..16 {
                a[l] = if exact_products {
                    a[l] + qc[l] * kc[l]
                } else {
                    qc[l].mul_add(kc[l], a[l])
                };
            }
        }
    }
    let mut r = [0.0f32; 16];
    for (l, v) in r.iter_mut().enumerate() {
        *v = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut sum = reduce_add_16(&r) as f64;
    for i in np..n {
        sum += (q[i] * k[i]) as f64;
    }
    sum as f32
}

/// ggml's per-key online-softmax update over a run of (already scaled) scores, the one every
/// ISA uses: with `m` the running max, a key above it becomes the max and rescales what came
/// before by `ms = e^(m_old - s)` (its own weight `vs` is 1); any other key gets
/// `vs = e^(s - m)` (and `ms = 1`). One libm `expf` per key, as ggml computes it. On return
/// `scores[j]` holds `vs_j`, `rescale[j]` holds `ms_j` and `m` the new running max; the caller
/// then does `acc = acc * ms_j + v_j * vs_j` and `S = fma(S, ms_j, vs_j)`.
#[inline]
pub fn per_key_weights(scores: &mut [f32], rescale: &mut [f32], m: &mut f32) {
    for (s, ms) in scores.iter_mut().zip(rescale.iter_mut()) {
        if *s > *m {
            *ms = (*m - *s).exp();
            *m = *s;
            *s = 1.0;
        } else {
            *ms = 1.0;
            *s = (*s - *m).exp();
        }
    }
}

/// Keys per block of the blocked (tiled) path; ggml's `GGML_FA_TILE_KV`.
pub const KV_TILE: usize = 64;

/// Attention of the query heads of one GQA group, for one query token, over keys
/// `job.key_lo..job.key_hi`. See [`crate::cpu::ops::attention`] for the two numeric modes.
#[inline]
pub fn attend_group(job: &AttnJob, q_group: &[f32], out_group: &mut [f32]) {
    let hd = job.head_dim;
    let kv = job.kv;
    let row = kv.n_kv_heads * hd;
    let mut krow = vec![0.0f32; hd];
    let mut vrow = vec![0.0f32; hd];
    if job.ggml_vec_path {
        // ggml `ggml_compute_forward_flash_attn_ext_f16_one_chunk`: one key at a time; Q rounded
        // to f16 when K is f16; the V accumulator kept in f16 when V is f16.
        let k_f16 = matches!(kv.k, KvData::F16(_));
        let v_f16 = matches!(kv.v, KvData::F16(_));
        for (h, qh) in q_group.chunks_exact(hd).enumerate() {
            let q: Vec<f32> = if k_f16 {
                qh.iter().map(|&v| round_f16(v)).collect()
            } else {
                qh.to_vec()
            };
            let mut acc = vec![0.0f32; hd];
            let mut m = f32::NEG_INFINITY;
            let mut s_sum = 0.0f32;
            for key in job.key_lo..job.key_hi {
                let off = key * row + job.kv_head * hd;
                load_row(&kv.k, off, &mut krow);
                let mut vs = [dot_ggml(&q, &krow, k_f16) * job.scale];
                let mut ms = [1.0f32];
                per_key_weights(&mut vs, &mut ms, &mut m);
                let (ms, vs) = (ms[0], vs[0]);
                if ms != 1.0 {
                    for a in acc.iter_mut() {
                        *a *= ms;
                        if v_f16 {
                            *a = round_f16(*a);
                        }
                    }
                }
                load_row(&kv.v, off, &mut vrow);
                // ggml_vec_mad_f16 uses an FMA, then rounds to f16.
                for (a, &v) in acc.iter_mut().zip(&vrow) {
                    *a = v.mul_add(vs, *a);
                    if v_f16 {
                        *a = round_f16(*a);
                    }
                }
                // ggml's `S = S*ms + vs`, contracted to an FMA by its compiler.
                s_sum = s_sum.mul_add(ms, vs);
            }
            finish_head(job.partial, out_group, h, &acc, m, s_sum);
        }
    } else {
        // ggml `ggml_compute_forward_flash_attn_ext_tiled`: f32 Q and K, blocks of KV_TILE keys
        // aligned to multiples of KV_TILE in the cache (as ggml's tiles are), online softmax
        // across blocks, f32 accumulator.
        let mut scores = vec![0.0f32; KV_TILE];
        for (h, qh) in q_group.chunks_exact(hd).enumerate() {
            let mut acc = vec![0.0f32; hd];
            let mut m = f32::NEG_INFINITY;
            let mut s_sum = 0.0f32;
            let mut start = job.key_lo;
            while start < job.key_hi {
                let n = (job.key_hi - start).min(KV_TILE - start % KV_TILE);
                for (j, sc) in scores[..n].iter_mut().enumerate() {
                    let off = (start + j) * row + job.kv_head * hd;
                    load_row(&kv.k, off, &mut krow);
                    let dot: f32 = qh.iter().zip(&krow).map(|(a, b)| a * b).sum();
                    *sc = dot * job.scale;
                }
                let bmax = scores[..n]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max);
                let m_new = m.max(bmax);
                if m_new > m {
                    let ms = (m - m_new).exp();
                    for a in acc.iter_mut() {
                        *a *= ms;
                    }
                    s_sum *= ms;
                }
                m = m_new;
                let mut bsum = 0.0f64;
                for sc in scores[..n].iter_mut() {
                    *sc = expf_ggml_v(*sc - m);
                    bsum += *sc as f64;
                }
                s_sum += bsum as f32;
                for (j, &p) in scores[..n].iter().enumerate() {
                    let off = (start + j) * row + job.kv_head * hd;
                    load_row(&kv.v, off, &mut vrow);
                    for (a, &v) in acc.iter_mut().zip(&vrow) {
                        *a += p * v;
                    }
                }
                start += n;
            }
            finish_head(job.partial, out_group, h, &acc, m, s_sum);
        }
    }
}

/// ggml's tiled path for a tile of query tokens × the query heads of one kv head:
/// `q_tile` and `out_tile` are `[n_tokens][group][head_dim]`.
///
/// Head dims that are a multiple of 4 compute, for every row (token × head), exactly the float
/// operations of the AVX2/AVX-512 tile kernels (`attend_tile_rv`), in their order, so every ISA
/// gives the same bits:
/// - blocks of [`KV_TILE`] keys aligned to multiples of it in the cache, over the keys of the
///   whole tile; keys outside a row's range score -inf (they add nothing to that row: e = 0,
///   and a block with none of its keys rescales by e^0 = 1);
/// - score `s = (fma chain over d of k_d · q_d, from 0) · scale`;
/// - per block: `M' = max(M, max_j s_j)`, `ms = expf(M - M')` (libm, `M' = 0` while it is
///   -inf), `e_j = expf_ggml_v(s_j - M')`, the block sum `Σ e_j` in f32 key by key,
///   `S = fma(S, ms, Σ)`, `acc = acc · ms` then `acc = fma(v_j, e_j, acc)` key by key;
/// - `out = acc · (1 / S)` (0 where S = 0).
///
/// Other head dims go one token at a time through [`attend_group`]'s tiled branch, as the AVX
/// kernels do (their `attend_group` hands such head dims to this scalar one).
#[inline]
pub fn attend_tile(tile: &AttnTile, q_tile: &[f32], out_tile: &mut [f32]) {
    if !tile.head_dim.is_multiple_of(4) {
        return tile.by_token(q_tile, out_tile, attend_group);
    }
    // `f32::mul_add` is one instruction with FMA and a (correctly rounded, so identical but
    // slow) libm call without it.
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA.
        unsafe { attend_tile_rows_fma(tile, q_tile, out_tile) };
        return;
    }
    attend_tile_rows(tile, q_tile, out_tile)
}

/// [`attend_tile_rows`] compiled with FMA.
///
/// # Safety
/// The CPU supports FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn attend_tile_rows_fma(tile: &AttnTile, q_tile: &[f32], out_tile: &mut [f32]) {
    attend_tile_rows(tile, q_tile, out_tile)
}

/// `_mm*_max_ps(a, b)`: `a` where `a > b`, else `b`.
#[inline(always)]
fn max_ps(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// The rows-in-lanes form of [`attend_tile`] for any number of rows (head dim a multiple of
/// 4): Q transposed (`qt[d][row]`), scores `st[key][row]` and accumulator `acc[d][row]`, so
/// the inner loops run over rows and vectorise without reordering any row's operations.
#[inline(always)]
fn attend_tile_rows(tile: &AttnTile, q_tile: &[f32], out_tile: &mut [f32]) {
    let hd = tile.head_dim;
    let g = tile.group;
    let rows = tile.n_tokens * g;
    assert!(q_tile.len() >= rows * hd && out_tile.len() >= rows * hd);
    if rows == 0 {
        return;
    }
    let mut qt = vec![0.0f32; hd * rows];
    for r in 0..rows {
        for d in 0..hd {
            qt[d * rows + r] = q_tile[r * hd + d];
        }
    }
    let (lo, hi): (Vec<usize>, Vec<usize>) = (0..rows)
        .map(|r| {
            let keys = tile.row_keys(r);
            (keys.start, keys.end)
        })
        .unzip();
    let (key_min, key_max) = tile.key_span(rows);
    let kv = tile.kv;
    let kv_row = kv.n_kv_heads * hd;
    let base = tile.kv_head * hd;
    let mut m = vec![f32::NEG_INFINITY; rows];
    let mut s_sum = vec![0.0f32; rows];
    let mut acc = vec![0.0f32; hd * rows];
    let mut st = vec![0.0f32; KV_TILE * rows];
    let mut a = vec![0.0f32; rows];
    let mut bmax = vec![0.0f32; rows];
    let mut m_safe = vec![0.0f32; rows];
    let mut ms = vec![0.0f32; rows];
    let mut sum = vec![0.0f32; rows];
    let mut kf = vec![0.0f32; KV_TILE * hd];
    let mut vf = vec![0.0f32; KV_TILE * hd];

    // Blocks aligned to multiples of KV_TILE in the cache, like ggml's tiles.
    let mut b0 = key_min - key_min % KV_TILE;
    while b0 < key_max {
        let n = (key_max - b0).min(KV_TILE);
        for j in 0..n {
            let off = (b0 + j) * kv_row + base;
            load_row(&kv.k, off, &mut kf[j * hd..(j + 1) * hd]);
            load_row(&kv.v, off, &mut vf[j * hd..(j + 1) * hd]);
        }
        // Scores: per row an FMA chain over the head dims, then the scale; -inf outside.
        for j in 0..n {
            a.fill(0.0);
            for (d, &kd) in kf[j * hd..(j + 1) * hd].iter().enumerate() {
                for (ar, &q) in a.iter_mut().zip(&qt[d * rows..(d + 1) * rows]) {
                    *ar = kd.mul_add(q, *ar);
                }
            }
            let key = b0 + j;
            for (r, s) in st[j * rows..(j + 1) * rows].iter_mut().enumerate() {
                *s = if key >= lo[r] && key < hi[r] {
                    a[r] * tile.scale
                } else {
                    f32::NEG_INFINITY
                };
            }
        }
        // Online softmax per row: one max per block, e^(s - M), rescale by e^(M_old - M).
        bmax.fill(f32::NEG_INFINITY);
        for j in 0..n {
            for (b, &s) in bmax.iter_mut().zip(&st[j * rows..(j + 1) * rows]) {
                *b = max_ps(*b, s);
            }
        }
        let mut any_rescale = false;
        for r in 0..rows {
            let m_new = max_ps(m[r], bmax[r]);
            // Rows with nothing attended yet keep M = -inf; use 0 so that e^(-inf - 0) = 0.
            m_safe[r] = if m_new == f32::NEG_INFINITY {
                0.0
            } else {
                m_new
            };
            ms[r] = (m[r] - m_safe[r]).exp();
            any_rescale |= ms[r] != 1.0;
            m[r] = m_new;
        }
        sum.fill(0.0);
        for j in 0..n {
            for ((s, sr), &mr) in st[j * rows..(j + 1) * rows]
                .iter_mut()
                .zip(sum.iter_mut())
                .zip(&m_safe)
            {
                *s = expf_ggml_v(*s - mr);
                *sr += *s;
            }
        }
        for r in 0..rows {
            s_sum[r] = s_sum[r].mul_add(ms[r], sum[r]);
        }
        // acc[d][row] = acc · ms, then fma(v, p, acc) key by key (a factor of 1 is exact).
        if any_rescale {
            for ad in acc.chunks_exact_mut(rows) {
                for (x, &f) in ad.iter_mut().zip(&ms) {
                    *x *= f;
                }
            }
        }
        for j in 0..n {
            let p = &st[j * rows..(j + 1) * rows];
            for (ad, &v) in acc.chunks_exact_mut(rows).zip(&vf[j * hd..(j + 1) * hd]) {
                for (x, &pr) in ad.iter_mut().zip(p) {
                    *x = v.mul_add(pr, *x);
                }
            }
        }
        b0 += n;
    }
    for r in 0..rows {
        let inv = if s_sum[r] == 0.0 { 0.0 } else { 1.0 / s_sum[r] };
        for d in 0..hd {
            out_tile[r * hd + d] = acc[d * rows + r] * inv;
        }
    }
}

/// Bidirectional attention of one (sequence, head) of a packed batch: the reference.
///
/// # Safety
/// None beyond the signature's (safe to call; `unsafe` for the kernel table's type).
pub unsafe fn attend_packed(job: &crate::cpu::attention::packed::PackedJob, out: &mut [f32]) {
    crate::cpu::attention::packed::attend_packed_ref(job, out)
}
