//! The encoder ops: the exact (erf) GELU, bidirectional attention of packed sequences and
//! per-sequence pooling, against the scalar CPU references.

use crate::common::*;
use tinyrt_cuda::{PackedAttentionShape, PoolMode};
use tinyrt_kernels::cpu::attention::packed::{attend_packed_ref, PackedJob};
use tinyrt_kernels::cpu::scalar::ops::gelu_erf_inplace;

/// Sequence boundaries of `lens` packed back to back (`[0, l0, l0 + l1, ...]`).
fn boundaries(lens: &[usize]) -> Vec<u32> {
    let mut seqs = vec![0u32];
    for &l in lens {
        seqs.push(seqs.last().unwrap() + l as u32);
    }
    seqs
}

/// The scalar CPU reference over every (sequence, head), into rows of `n_head × hd`.
fn packed_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &[u32],
    (n_head, n_kv, hd): (usize, usize, usize),
    scale: f32,
) -> Vec<f32> {
    let rows = *seqs.last().unwrap() as usize;
    let mut out = vec![0.0f32; rows * n_head * hd];
    for w in seqs.windows(2) {
        let r = w[0] as usize..w[1] as usize;
        for head in 0..n_head {
            let job = PackedJob {
                q,
                k,
                v,
                n_heads: n_head,
                n_kv_heads: n_kv,
                head_dim: hd,
                scale,
                rows: r.clone(),
                head,
            };
            let mut o = vec![0.0f32; r.len() * hd];
            attend_packed_ref(&job, &mut o);
            for (t, row) in o.chunks_exact(hd).enumerate() {
                let at = ((r.start + t) * n_head + head) * hd;
                out[at..at + hd].copy_from_slice(row);
            }
        }
    }
    out
}

/// The same attention in f64: the formula, to check the reference and the test's layout.
fn packed_f64(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &[u32],
    (n_head, n_kv, hd): (usize, usize, usize),
    scale: f32,
) -> Vec<f32> {
    let rows = *seqs.last().unwrap() as usize;
    let mut out = vec![0.0f32; rows * n_head * hd];
    for w in seqs.windows(2) {
        let (r0, r1) = (w[0] as usize, w[1] as usize);
        for t in r0..r1 {
            for h in 0..n_head {
                let kvh = h / (n_head / n_kv);
                let qh = &q[(t * n_head + h) * hd..][..hd];
                let s: Vec<f64> = (r0..r1)
                    .map(|j| {
                        let kj = &k[(j * n_kv + kvh) * hd..][..hd];
                        qh.iter()
                            .zip(kj)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = p.iter().sum();
                for e in 0..hd {
                    let acc: f64 = (r0..r1)
                        .map(|j| p[j - r0] * v[(j * n_kv + kvh) * hd + e] as f64)
                        .sum();
                    out[(t * n_head + h) * hd + e] = (acc / sum) as f32;
                }
            }
        }
    }
    out
}

#[test]
fn gelu_erf_matches_the_scalar_reference() {
    let gpu = device();
    let mut rng = Rng::new(31);
    for n in [1, 255, 256, 10_000, 4097] {
        let mut x = rng.vec(n, 6.0);
        // The tails and zero: erf saturates, gelu(x) -> x and -> 0.
        if n > 4 {
            x[..4].copy_from_slice(&[0.0, -9.0, 9.0, -0.0]);
        }
        let mut want = x.clone();
        gelu_erf_inplace(&mut want);
        let Some(dev) = gpu.as_ref() else { continue };
        let xd = dev.upload(&x).unwrap();
        let mut out = poison_f32(dev, n);
        dev.gelu_erf(&xd, &mut out, n).unwrap();
        // erff (CUDA, within 2 ulp) and the reference's erf (absolute error below 1.5e-7).
        assert_close("gelu_erf", &dev.download(&out).unwrap(), &want, |i| {
            3e-7 * x[i].abs().max(1.0)
        });
        // In place, as the backend runs it.
        let mut xd = dev.upload(&x).unwrap();
        let xr = dev.upload(&x).unwrap();
        dev.gelu_erf(&xr, &mut xd, n).unwrap();
        assert_close(
            "gelu_erf in place",
            &dev.download(&xd).unwrap(),
            &want,
            |i| 3e-7 * x[i].abs().max(1.0),
        );
    }
}

#[test]
fn attention_packed_matches_the_scalar_reference() {
    let gpu = device();
    let mut rng = Rng::new(32);
    // (sequence lengths, n_head, n_kv, head_dim): BERT-like shapes, ragged batches with
    // single-row and empty sequences, sequences over 256 rows up to BERT's 512, GQA, head
    // sizes that are not multiples of 32, and the largest head the kernel takes.
    let cases: &[(&[usize], usize, usize, usize)] = &[
        (&[1], 2, 2, 64),
        (&[7, 1, 12, 3], 4, 4, 64),
        (&[5, 0, 9, 1, 0], 6, 2, 40),
        (&[300, 1, 17], 2, 1, 100),
        (&[512], 2, 2, 64),
        (&[33, 65, 2], 8, 2, 256),
        (&[3, 260, 4], 3, 3, 80),
        (&[0, 2], 1, 1, 1),
    ];
    for &(lens, n_head, n_kv, hd) in cases {
        let seqs = boundaries(lens);
        let rows = *seqs.last().unwrap() as usize;
        let q = rng.vec(rows * n_head * hd, 2.0);
        let k = rng.vec(rows * n_kv * hd, 2.0);
        let v = rng.vec(rows * n_kv * hd, 1.0);
        let scale = 1.0 / (hd as f32).sqrt();
        let shape = (n_head, n_kv, hd);
        let want = packed_ref(&q, &k, &v, &seqs, shape, scale);
        let what = format!("attention_packed lens {lens:?} heads {n_head}/{n_kv} hd {hd}");
        // The reference against the formula (runs without a GPU as well).
        let exact = packed_f64(&q, &k, &v, &seqs, shape, scale);
        assert_close(&format!("{what}: reference vs f64"), &want, &exact, |_| {
            2e-5
        });

        let Some(dev) = gpu.as_ref() else { continue };
        let seqs_i32: Vec<i32> = seqs.iter().map(|&s| s as i32).collect();
        let (qd, kd, vd) = (
            dev.upload(&q).unwrap(),
            dev.upload(&k).unwrap(),
            dev.upload(&v).unwrap(),
        );
        let sd = dev.upload(&seqs_i32).unwrap();
        let mut out = poison_f32(dev, rows * n_head * hd);
        let s = PackedAttentionShape {
            rows,
            n_seq: lens.len(),
            n_head,
            n_kv,
            head_dim: hd,
            q_stride: n_head * hd,
            kv_stride: n_kv * hd,
            out_stride: n_head * hd,
        };
        dev.attention_packed(&qd, &kd, &vd, &sd, &mut out, s, scale)
            .unwrap();
        let got = dev.download(&out).unwrap();
        assert_close(&what, &got, &want, |_| 2e-5);
        assert_close(&format!("{what} vs f64"), &got, &exact, |_| 2e-5);
    }
}

#[test]
fn attention_packed_reads_and_writes_through_row_strides() {
    let gpu = device();
    let mut rng = Rng::new(33);
    let (lens, n_head, n_kv, hd) = ([4usize, 1, 9], 4, 2, 48);
    let seqs = boundaries(&lens);
    let rows = *seqs.last().unwrap() as usize;
    let (qw, kw) = (n_head * hd, n_kv * hd);
    // Rows with room after the heads (a fused QKV buffer, a wider output buffer).
    let (qs, ks, os) = (qw + 16, kw + 40, qw + 8);
    let q_wide = rng.vec(rows * qs, 2.0);
    let k_wide = rng.vec(rows * ks, 2.0);
    let v_wide = rng.vec(rows * ks, 1.0);
    let dense = |x: &[f32], stride: usize, w: usize| -> Vec<f32> {
        x.chunks_exact(stride)
            .flat_map(|r| r[..w].to_vec())
            .collect()
    };
    let scale = 0.3;
    let want = packed_ref(
        &dense(&q_wide, qs, qw),
        &dense(&k_wide, ks, kw),
        &dense(&v_wide, ks, kw),
        &seqs,
        (n_head, n_kv, hd),
        scale,
    );
    let Some(dev) = gpu.as_ref() else { return };
    let seqs_i32: Vec<i32> = seqs.iter().map(|&s| s as i32).collect();
    let (qd, kd, vd, sd) = (
        dev.upload(&q_wide).unwrap(),
        dev.upload(&k_wide).unwrap(),
        dev.upload(&v_wide).unwrap(),
        dev.upload(&seqs_i32).unwrap(),
    );
    let mut out = poison_f32(dev, rows * os);
    let s = PackedAttentionShape {
        rows,
        n_seq: lens.len(),
        n_head,
        n_kv,
        head_dim: hd,
        q_stride: qs,
        kv_stride: ks,
        out_stride: os,
    };
    dev.attention_packed(&qd, &kd, &vd, &sd, &mut out, s, scale)
        .unwrap();
    let got = dev.download(&out).unwrap();
    assert_close(
        "strided attention_packed",
        &dense(&got, os, qw),
        &want,
        |_| 2e-5,
    );
    // The columns past the heads are not written.
    assert!(got
        .chunks_exact(os)
        .all(|r| r[qw..].iter().all(|x| x.is_nan())));
    // Shapes the kernel does not take are refused before any launch.
    for bad in [
        PackedAttentionShape { n_kv: 3, ..s },
        PackedAttentionShape { head_dim: 257, ..s },
        PackedAttentionShape {
            q_stride: qw - 1,
            ..s
        },
        PackedAttentionShape {
            rows: rows + 1,
            ..s
        },
        PackedAttentionShape { n_seq: 4, ..s },
    ] {
        assert!(
            dev.attention_packed(&qd, &kd, &vd, &sd, &mut out, bad, scale)
                .is_err(),
            "{bad:?} accepted"
        );
    }
}

/// Pooling as the CPU backend does it: f32 sums in row order, one division; zeros when empty.
fn pool_ref(x: &[f32], cols: usize, seqs: &[u32], mode: PoolMode) -> Vec<f32> {
    let mut out = vec![0.0f32; (seqs.len() - 1) * cols];
    for (i, w) in seqs.windows(2).enumerate() {
        let (r0, r1) = (w[0] as usize, w[1] as usize);
        let dst = &mut out[i * cols..(i + 1) * cols];
        if r0 == r1 {
            continue;
        }
        match mode {
            PoolMode::First => dst.copy_from_slice(&x[r0 * cols..(r0 + 1) * cols]),
            PoolMode::Last => dst.copy_from_slice(&x[(r1 - 1) * cols..r1 * cols]),
            PoolMode::Mean => {
                for row in x[r0 * cols..r1 * cols].chunks_exact(cols) {
                    dst.iter_mut().zip(row).for_each(|(a, &b)| *a += b);
                }
                dst.iter_mut().for_each(|a| *a /= (r1 - r0) as f32);
            }
        }
    }
    out
}

#[test]
fn pool_rows_matches_the_reference() {
    let gpu = device();
    let mut rng = Rng::new(34);
    let cases: &[(&[usize], usize)] = &[
        (&[1], 384),
        (&[7, 1, 12, 3], 384),
        (&[5, 0, 9, 1, 0], 300),
        (&[512, 2], 768),
        (&[0], 5),
    ];
    for &(lens, cols) in cases {
        let seqs = boundaries(lens);
        let rows = *seqs.last().unwrap() as usize;
        // (At least one row: a device buffer is never empty.)
        let x = rng.vec(rows.max(1) * cols, 3.0);
        for mode in [PoolMode::Mean, PoolMode::First, PoolMode::Last] {
            let want = pool_ref(&x, cols, &seqs, mode);
            let what = format!("pool {mode:?} lens {lens:?} cols {cols}");
            // The mean against an f64 mean (runs without a GPU as well).
            if mode == PoolMode::Mean {
                let mut exact = vec![0.0f32; lens.len() * cols];
                for (i, w) in seqs.windows(2).enumerate() {
                    let (r0, r1) = (w[0] as usize, w[1] as usize);
                    for c in 0..cols {
                        let s: f64 = (r0..r1).map(|r| x[r * cols + c] as f64).sum();
                        exact[i * cols + c] = (s / (r1 - r0).max(1) as f64) as f32;
                    }
                }
                assert_close(&format!("{what}: reference vs f64"), &want, &exact, |_| {
                    1e-5
                });
            }
            let Some(dev) = gpu.as_ref() else { continue };
            let seqs_i32: Vec<i32> = seqs.iter().map(|&s| s as i32).collect();
            let (xd, sd) = (dev.upload(&x).unwrap(), dev.upload(&seqs_i32).unwrap());
            // Output rows wider than the pooled columns: the rest is left alone.
            let os = cols + 3;
            let mut out = poison_f32(dev, lens.len() * os);
            dev.pool_rows(&xd, &sd, &mut out, mode, lens.len(), rows, cols, cols, os)
                .unwrap();
            let got = dev.download(&out).unwrap();
            let pooled: Vec<f32> = got
                .chunks_exact(os)
                .flat_map(|r| r[..cols].to_vec())
                .collect();
            // Same additions in the same order and an IEEE division: the same bits.
            assert_eq!(pooled, want, "{what}");
            assert!(got
                .chunks_exact(os)
                .all(|r| r[cols..].iter().all(|x| x.is_nan())));
        }
    }
}
