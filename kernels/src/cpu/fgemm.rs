//! The float GEMM: `out[t][r] = Σ_c w[r][c] · x[t][c]` with f32 activations and weights packed
//! at load into panels of [`FPANEL`] rows ([`FloatPanels`], f32 or f16 values). The encoders
//! (BERT) run on it: their accuracy target (Hugging Face's f32 model within 1e-4) rules out
//! the 8-bit activations of the quantized dot products, and the packed panels let one
//! register tile serve several tokens and 32 rows per weight load.
//!
//! Numerics: each output is one sequential FMA chain over the columns in order,
//! `acc = fma(w[r][c], x[t][c], acc)` from 0, with f16 weights widened exactly. Every ISA's
//! kernel computes exactly that chain per lane, so every ISA gives the bits of
//! [`panel_ref`], whatever the thread count or the way tokens are split into calls.

use std::sync::atomic::{AtomicUsize, Ordering};

use half::f16;

use crate::cpu::pool::ThreadPool;
use crate::cpu::Kernels;

/// Rows per panel.
pub const FPANEL: usize = 32;

/// The values of a panel.
#[derive(Clone, Debug)]
pub enum PanelData {
    F32(Vec<f32>),
    /// f16 bits (half the memory and bandwidth; for weights stored as f16 or converted to it).
    F16(Vec<u16>),
}

/// A weight matrix packed for the float GEMM: panel `p` holds rows `p * 32 .. p * 32 + 32`
/// as `cols` steps of 32 values (step `c` = column `c` of the 32 rows), the rows past the
/// matrix zero.
#[derive(Clone, Debug)]
pub struct FloatPanels {
    pub rows: usize,
    pub cols: usize,
    pub data: PanelData,
}

impl FloatPanels {
    /// Packs `rows × cols`; `row(r, buf)` writes row `r` as f32 into `buf` (`cols` values).
    /// With `f16`, the values are rounded to f16 (exact for weights stored as f16).
    pub fn pack(rows: usize, cols: usize, f16: bool, row: impl Fn(usize, &mut [f32])) -> Self {
        let n_panels = rows.div_ceil(FPANEL);
        let len = n_panels * FPANEL * cols;
        let mut vals = vec![0.0f32; len];
        let mut buf = vec![0.0f32; cols];
        for r in 0..rows {
            row(r, &mut buf);
            let (p, lane) = (r / FPANEL, r % FPANEL);
            let base = p * FPANEL * cols;
            for (c, &x) in buf.iter().enumerate() {
                vals[base + c * FPANEL + lane] = x;
            }
        }
        let data = if f16 {
            PanelData::F16(vals.iter().map(|&x| f16::from_f32(x).to_bits()).collect())
        } else {
            PanelData::F32(vals)
        };
        FloatPanels { rows, cols, data }
    }

    pub fn n_panels(&self) -> usize {
        self.rows.div_ceil(FPANEL)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match &self.data {
            PanelData::F32(v) => v.len() * 4,
            PanelData::F16(v) => v.len() * 2,
        }
    }

    /// The matrix back as row-major f32 (`rows × cols`), f16 values widened exactly: for code
    /// that needs the values themselves, e.g. merging a LoRA pair into its base weight.
    pub fn to_rows(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            let (p, lane) = (r / FPANEL, r % FPANEL);
            let base = p * FPANEL * self.cols;
            for (c, x) in row.iter_mut().enumerate() {
                let i = base + c * FPANEL + lane;
                *x = match &self.data {
                    PanelData::F32(v) => v[i],
                    PanelData::F16(v) => f16::from_bits(v[i]).to_f32(),
                };
            }
        }
        out
    }

    /// Panel `p`'s values.
    pub fn panel(&self, p: usize) -> PanelRef<'_> {
        let n = FPANEL * self.cols;
        match &self.data {
            PanelData::F32(v) => PanelRef::F32(&v[p * n..(p + 1) * n]),
            PanelData::F16(v) => PanelRef::F16(&v[p * n..(p + 1) * n]),
        }
    }
}

/// One panel's values.
#[derive(Clone, Copy, Debug)]
pub enum PanelRef<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

/// One panel times every token: the arguments of a [`FloatPanelFn`].
pub struct PanelJob<'a> {
    pub panel: PanelRef<'a>,
    pub cols: usize,
    /// `n_tokens × cols` activations, token-major.
    pub x: &'a [f32],
    pub n_tokens: usize,
    /// Output of token `t`, row `r0 + i`: `out[t * out_stride + i]`, for `i < n_rows`.
    pub out: *mut f32,
    pub out_stride: usize,
    pub n_rows: usize,
}

/// The kernel of one ISA for one [`PanelJob`].
///
/// # Safety
/// The CPU supports the table's ISA; `panel` holds `32 × cols` values, `x` `n_tokens × cols`;
/// `out` is valid for writes at `t * out_stride + i` for `t < n_tokens`, `i < n_rows ≤ 32`,
/// and nothing else writes there meanwhile.
pub type FloatPanelFn = unsafe fn(job: &PanelJob);

/// The reference kernel (the scalar table's entry).
///
/// # Safety
/// As [`FloatPanelFn`].
pub unsafe fn panel_ref(job: &PanelJob) {
    let cols = job.cols;
    let widened;
    let panel: &[f32] = match job.panel {
        PanelRef::F32(p) => p,
        PanelRef::F16(p) => {
            widened = p
                .iter()
                .map(|&b| f16::from_bits(b).to_f32())
                .collect::<Vec<f32>>();
            &widened
        }
    };
    for t in 0..job.n_tokens {
        let x = &job.x[t * cols..(t + 1) * cols];
        // All 32 lanes at once, each its own chain over the columns in order.
        let mut acc = [0.0f32; FPANEL];
        for (c, &xc) in x.iter().enumerate() {
            let w = &panel[c * FPANEL..(c + 1) * FPANEL];
            for (a, &wi) in acc.iter_mut().zip(w) {
                *a = wi.mul_add(xc, *a);
            }
        }
        for (i, &a) in acc.iter().enumerate().take(job.n_rows) {
            // SAFETY: the caller's contract (t < n_tokens, i < n_rows).
            unsafe { *job.out.add(t * job.out_stride + i) = a };
        }
    }
}

/// The output pointer shared by the threads of one product.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each panel's rows are written by the one thread that claimed it.
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

/// Below this many multiply-adds a product runs on the calling thread only.
const MIN_PARALLEL_MACS: usize = 1 << 16;

impl Kernels {
    /// `out[t * w.rows + r] = Σ_c w[r][c] · x[t][c]` for `n_tokens` tokens of `x` (`n_tokens ×
    /// w.cols`), the panels shared out on `pool`.
    pub fn matmul_panels(
        &self,
        pool: &ThreadPool,
        w: &FloatPanels,
        x: &[f32],
        n_tokens: usize,
        out: &mut [f32],
    ) {
        self.matmul_panels_group(pool, &mut [(w, out)], x, n_tokens)
    }

    /// Several products of the same input (Q, K and V) in one hand-out of the pool.
    pub fn matmul_panels_group(
        &self,
        pool: &ThreadPool,
        jobs: &mut [(&FloatPanels, &mut [f32])],
        x: &[f32],
        n_tokens: usize,
    ) {
        let mut outs = Vec::with_capacity(jobs.len());
        let mut macs = 0usize;
        for (w, out) in jobs.iter_mut() {
            assert_eq!(x.len(), n_tokens * w.cols, "matmul_panels: input size");
            assert!(out.len() >= n_tokens * w.rows, "matmul_panels: output size");
            outs.push(OutPtr(out.as_mut_ptr()));
            macs += n_tokens * w.rows * w.cols;
        }
        let ws: Vec<&FloatPanels> = jobs.iter().map(|(w, _)| *w).collect();
        // (job, panel) pairs in one sequence, claimed one at a time.
        let starts: Vec<usize> = ws
            .iter()
            .scan(0, |acc, w| {
                let s = *acc;
                *acc += w.n_panels();
                Some(s)
            })
            .collect();
        let total: usize = ws.iter().map(|w| w.n_panels()).sum();
        let next = AtomicUsize::new(0);
        let f = self.float_panel;
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= total {
                return;
            }
            let j = starts.partition_point(|&s| s <= i) - 1;
            let (w, p) = (ws[j], i - starts[j]);
            let r0 = p * FPANEL;
            let job = PanelJob {
                panel: w.panel(p),
                cols: w.cols,
                x,
                n_tokens,
                // SAFETY: r0 < w.rows, inside the n_tokens × rows output.
                out: unsafe { outs[j].at(r0) },
                out_stride: w.rows,
                n_rows: (w.rows - r0).min(FPANEL),
            };
            // SAFETY: a supported ISA (`Kernels::get`); the sizes were checked above; panel p
            // is claimed once (`next`), so its rows of the output are written by this call only.
            unsafe { f(&job) };
        };
        if macs < MIN_PARALLEL_MACS || pool.n_threads() == 1 {
            work();
        } else {
            pool.run_dynamic(|_, _| work());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows past one panel and a partial last panel come back as packed, in f32 exactly and in
    /// f16 as the f16 rounding of each value.
    #[test]
    fn to_rows_reads_back_what_was_packed() {
        let (rows, cols) = (70, 5);
        let value = |r: usize, c: usize| (r * cols + c) as f32 * 0.37 - 11.0;
        let fill = |r: usize, buf: &mut [f32]| {
            for (c, x) in buf.iter_mut().enumerate() {
                *x = value(r, c);
            }
        };
        let want: Vec<f32> = (0..rows * cols)
            .map(|i| value(i / cols, i % cols))
            .collect();
        assert_eq!(FloatPanels::pack(rows, cols, false, fill).to_rows(), want);
        let want16: Vec<f32> = want.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        assert_eq!(FloatPanels::pack(rows, cols, true, fill).to_rows(), want16);
    }
}
