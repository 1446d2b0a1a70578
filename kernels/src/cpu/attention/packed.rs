//! Bidirectional attention of packed sequences, without a cache (encoders): the batch holds
//! several sequences back to back, each row attends every row of its own sequence and none of
//! the others. A job is one (sequence, query head); the kernels of each ISA
//! ([`crate::cpu::Kernels`]'s `attend_packed`) compute one job, [`attention_packed`] hands the
//! jobs out on a thread pool.
//!
//! Numerics (every ISA gives the same bits as [`attend_packed_ref`]): each score is a
//! sequential f32 FMA chain over the head dimension, times the scale; the softmax takes
//! `scalar::expf_ggml_v` of `score - max` and sums the weights in key order; each output value
//! is a sequential FMA chain over the keys, divided by that sum.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cpu::pool::ParallelRun;
use crate::cpu::scalar::ops::expf_ggml_v;
use crate::cpu::{Isa, Kernels};

/// One (sequence, query head) of [`attention_packed`].
#[derive(Clone, Debug)]
pub struct PackedJob<'a> {
    /// All query rows of the batch, `n_heads × head_dim` values each.
    pub q: &'a [f32],
    /// All key and value rows of the batch, `n_kv_heads × head_dim` values each.
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// The sequence's rows.
    pub rows: Range<usize>,
    /// The query head (its kv head is `head / (n_heads / n_kv_heads)`).
    pub head: usize,
}

impl PackedJob<'_> {
    /// Rows of the sequence.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The query head's values of the sequence's row `t`.
    pub fn q_row(&self, t: usize) -> &[f32] {
        let hd = self.head_dim;
        let off = (self.rows.start + t) * self.n_heads * hd + self.head * hd;
        &self.q[off..off + hd]
    }

    /// Offset of the sequence's row `j` of the job's kv head in `k` and `v`.
    pub fn kv_offset(&self, j: usize) -> usize {
        let hd = self.head_dim;
        let kvh = self.head / (self.n_heads / self.n_kv_heads);
        (self.rows.start + j) * self.n_kv_heads * hd + kvh * hd
    }

    fn check(&self) {
        let hd = self.head_dim;
        assert!(hd > 0 && self.n_kv_heads > 0 && self.head < self.n_heads);
        assert!(self.n_heads.is_multiple_of(self.n_kv_heads));
        assert!(self.rows.end * self.n_heads * hd <= self.q.len());
        let kv_len = self.rows.end * self.n_kv_heads * hd;
        assert!(kv_len <= self.k.len() && kv_len <= self.v.len());
    }
}

/// The reference of one job: `out[t * head_dim + d]` for the sequence's rows `t`.
pub fn attend_packed_ref(job: &PackedJob, out: &mut [f32]) {
    job.check();
    let (hd, n) = (job.head_dim, job.len());
    assert!(out.len() >= n * hd);
    let mut p = vec![0.0f32; n];
    for t in 0..n {
        let q = job.q_row(t);
        for (j, pj) in p.iter_mut().enumerate() {
            let k = &job.k[job.kv_offset(j)..][..hd];
            let dot = q.iter().zip(k).fold(0.0f32, |d, (&a, &b)| a.mul_add(b, d));
            *pj = dot * job.scale;
        }
        let sum = softmax_weights(&mut p);
        for d in 0..hd {
            let acc = (0..n).fold(0.0f32, |acc, j| {
                p[j].mul_add(job.v[job.kv_offset(j) + d], acc)
            });
            out[t * hd + d] = acc / sum;
        }
    }
}

/// Replaces the scores by `expf_ggml_v(s - max)` and returns their sum in order (shared by
/// every ISA's kernel, so the weights have the same bits everywhere).
pub fn softmax_weights(s: &mut [f32]) -> f32 {
    let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for x in s.iter_mut() {
        *x = expf_ggml_v(*x - m);
        sum += *x;
    }
    sum
}

/// The output buffer shared by the jobs.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each job writes only its own (sequence rows, head columns), which no other job
// writes, within a buffer that outlives the pool run.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// # Safety
    /// `offset` is within the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(offset) }
    }
}

/// Attention of the packed sequences `seqs` (boundaries: rows `seqs[i]..seqs[i + 1]` are
/// sequence `i`, `seqs[0] == 0`): `q`/`out` have `n_heads × head_dim` values per row, `k`/`v`
/// `n_kv_heads × head_dim`. The result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn attention_packed(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &[u32],
    (n_heads, n_kv_heads, head_dim): (usize, usize, usize),
    scale: f32,
    out: &mut [f32],
    par: &dyn ParallelRun,
) {
    assert!(head_dim > 0 && n_kv_heads > 0 && n_heads.is_multiple_of(n_kv_heads));
    assert!(
        seqs.first().is_none_or(|&s| s == 0),
        "attention_packed: seqs[0] must be 0"
    );
    assert!(
        seqs.windows(2).all(|w| w[0] <= w[1]),
        "attention_packed: seqs must not decrease"
    );
    let n_rows = seqs.last().map_or(0, |&n| n as usize);
    let qw = n_heads * head_dim;
    let kw = n_kv_heads * head_dim;
    assert!(q.len() >= n_rows * qw && out.len() >= n_rows * qw);
    assert!(k.len() >= n_rows * kw && v.len() >= n_rows * kw);
    let n_seqs = seqs.len().saturating_sub(1);
    let n_jobs = n_seqs * n_heads;
    if n_jobs == 0 {
        return;
    }
    let kern = Kernels::get(isa).expect("attention_packed: an ISA this CPU supports");
    // Longest sequences first, so that a long one does not start last and hold up the rest.
    let mut order: Vec<usize> = (0..n_seqs).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(seqs[i + 1] - seqs[i]));
    let next = AtomicUsize::new(0);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let work = || {
        let mut tmp = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n_jobs {
                return;
            }
            let (s, head) = (order[i / n_heads], i % n_heads);
            let rows = seqs[s] as usize..seqs[s + 1] as usize;
            if rows.is_empty() {
                continue;
            }
            let job = PackedJob {
                q,
                k,
                v,
                n_heads,
                n_kv_heads,
                head_dim,
                scale,
                rows: rows.clone(),
                head,
            };
            job.check();
            tmp.clear();
            tmp.resize(rows.len() * head_dim, 0.0);
            // SAFETY: the table came from `Kernels::get` (a supported ISA); the job was checked
            // and `tmp` holds its rows × head_dim values.
            unsafe { (kern.ops.attend_packed)(&job, &mut tmp) };
            for (t, r) in rows.enumerate() {
                let off = r * qw + head * head_dim;
                // SAFETY: row r < n_rows and the head's columns lie within the row, so the
                // range is inside `out`; job (s, head) is handed out once (`next`) and is the
                // only one writing these values.
                let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.at(off), head_dim) };
                dst.copy_from_slice(&tmp[t * head_dim..(t + 1) * head_dim]);
            }
        }
    };
    if par.n_threads() > 1 && n_jobs > 1 {
        par.run_dynamic(&|_, _| work());
    } else {
        work();
    }
}
