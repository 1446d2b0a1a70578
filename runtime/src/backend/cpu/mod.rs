//! The CPU backend over `tinyrt-kernels`.
//!
//! Weights stay in place in the memory-mapped file; only 1-D tensors (norm weights, biases,
//! rope frequency factors) are copied to f32 once per model. Activation buffers and the KV
//! cache are allocated once per session.

mod kv;
mod weights;

pub use kv::{CpuKvCache, KvRows};
pub use weights::{CpuError, CpuWeights};

use std::sync::Arc;

use super::{AttnParams, Backend, BufId, LoraTerm, PoolKind, RopeParams, Segment, WeightId};
use crate::kernels::cpu::fgemm::FloatPanels;
use crate::kernels::cpu::matmul::{MatmulJob, QuantizedActs};
use crate::kernels::cpu::ops::{self, par_rows_mut, KvView, RopeCache};
use crate::kernels::cpu::pool::ThreadPool;
use crate::kernels::cpu::{Isa, Kernels};
use crate::kernels::quant::GgmlType;
use crate::kv_cache::KvCacheSpec;
use weights::dequantize_row;

struct Buf {
    cols: usize,
    data: Vec<f32>,
}

impl Buf {
    fn rows(&self, n: usize) -> &[f32] {
        &self.data[..n * self.cols]
    }
    fn rows_mut(&mut self, n: usize) -> &mut [f32] {
        &mut self.data[..n * self.cols]
    }
}

/// `(&bufs[a], &mut bufs[b])` for two distinct buffers (borrows only `bufs`, so the pool
/// stays usable).
fn pair_mut(bufs: &mut [Buf], a: usize, b: usize) -> (&Buf, &mut Buf) {
    assert_ne!(a, b, "input and output buffers must differ");
    if a < b {
        let (lo, hi) = bufs.split_at_mut(b);
        (&lo[a], &mut hi[0])
    } else {
        let (lo, hi) = bufs.split_at_mut(a);
        (&hi[0], &mut lo[b])
    }
}

/// One session's CPU state: activation buffers, KV cache, threads.
pub struct CpuBackend {
    w: Arc<CpuWeights>,
    isa: Isa,
    kernels: &'static Kernels,
    pool: Arc<ThreadPool>,
    /// The current matmul input converted for each activation type in use.
    acts: Vec<QuantizedActs>,
    bufs: Vec<Buf>,
    /// One KV cache per sequence slot (one for a session).
    kv: Vec<CpuKvCache>,
    /// The layout of the current forward pass (`Backend::set_batch`; empty: one sequence).
    segs: Vec<Segment>,
    /// RoPE tables per distinct setting, built at first use for the whole context.
    rope_caches: Vec<(RopeParams, RopeCache)>,
    /// Reused scratch (no allocation per token): positions, a row copy, activation types.
    positions: Vec<usize>,
    tmp: Vec<f32>,
    act_types: Vec<GgmlType>,
    /// The session's LoRA terms (`Backend::set_lora`).
    lora: Vec<LoraTerm>,
    /// GELU in f32 without ggml's f16 table (models read from Hugging Face folders).
    exact_gelu: bool,
}

impl CpuBackend {
    /// A session's backend over the model's weights and thread pool, shared by every session
    /// of the model: an op that finds the pool busy with another session's op runs on its own
    /// calling thread alone (`ThreadPool::run`), so sessions never oversubscribe the cores.
    /// The kernels are the weights' (whose ISA was checked when they were made).
    pub fn new(w: Arc<CpuWeights>, pool: Arc<ThreadPool>) -> CpuBackend {
        let kernels = w.kernels();
        CpuBackend {
            w,
            isa: kernels.isa,
            kernels,
            pool,
            acts: Vec::new(),
            bufs: Vec::new(),
            kv: Vec::new(),
            segs: Vec::new(),
            rope_caches: Vec::new(),
            positions: Vec::new(),
            tmp: Vec::new(),
            act_types: Vec::new(),
            lora: Vec::new(),
            exact_gelu: false,
        }
    }

    /// GELU and GeGLU computed in f32 as PyTorch does, instead of through ggml's f16 table
    /// (llama.cpp's numerics, the default): for models whose reference is Hugging Face.
    pub fn with_exact_gelu(mut self, exact: bool) -> CpuBackend {
        self.exact_gelu = exact;
        self
    }

    /// The base products of `Backend::matmul` (no adapters).
    fn matmul_base(&mut self, x: BufId, outs: &[(WeightId, BufId)], n: usize) {
        let w = Arc::clone(&self.w);
        let (packed, rest): (Vec<_>, Vec<_>) =
            outs.iter().partition(|&&(wid, _)| w.panels(wid).is_some());
        if !packed.is_empty() {
            self.matmul_packed(&w, x, &packed, n);
            if rest.is_empty() {
                return;
            }
        }
        let outs = &rest[..];
        let kernels = self.kernels;
        // Convert the input once per activation type and share it across the products.
        let mut done = std::mem::take(&mut self.act_types);
        done.clear();
        let mut mats = Vec::with_capacity(outs.len());
        for &(wid, out) in outs {
            let e = w.table.entry(wid);
            let m = w.qmatrix(wid);
            let ty = m.ty;
            let Some(act) = kernels.act_type(ty) else {
                panic!("{}: no {ty} kernel (checked at load)", e.name);
            };
            let slot = match done.iter().position(|&t| t == act) {
                Some(i) => i,
                None => {
                    done.push(act);
                    if self.acts.len() < done.len() {
                        self.acts.push(QuantizedActs::new());
                    }
                    let i = done.len() - 1;
                    let xb = &self.bufs[x.0 as usize];
                    let acts = &mut self.acts[i];
                    let pool = Some(&*self.pool);
                    if let Err(err) =
                        kernels.quantize_acts_on(pool, act, xb.rows(n), n, xb.cols, acts)
                    {
                        panic!("quantize activations for {}: {err}", e.name);
                    }
                    i
                }
            };
            mats.push((m, slot, out.0 as usize));
        }
        self.act_types = done;
        // The output buffers, distinct from each other and from the input (model code), as
        // disjoint borrows of `bufs`.
        let mut dsts: Vec<Option<&mut Buf>> = (0..outs.len()).map(|_| None).collect();
        for (i, b) in self.bufs.iter_mut().enumerate() {
            if let Some(k) = mats.iter().position(|&(_, _, o)| o == i) {
                dsts[k] = Some(b);
            }
        }
        let mut jobs = Vec::with_capacity(outs.len());
        for ((m, slot, _), dst) in mats.iter().zip(dsts) {
            let dst = dst.expect("matmul outputs are distinct buffers");
            jobs.push(MatmulJob {
                w: m,
                acts: &self.acts[*slot],
                out: &mut dst.data[..n * m.rows],
            });
        }
        if let Err(err) = kernels.matmul_q_group(&self.pool, &mut jobs) {
            let names: Vec<&str> = outs
                .iter()
                .map(|&(wid, _)| w.table.entry(wid).name.as_str())
                .collect();
            panic!("matmul {}: {err}", names.join(", "));
        }
    }

    /// Adds the LoRA terms of the weights of `outs` to their outputs: `out += s · B·(A·x)`,
    /// the adapters in their order (llama.cpp's: the product scaled, then added). In a
    /// multi-sequence batch a term adds to the rows of its set's segments only (gathered, so
    /// each row's result is the same as alone: the float GEMM's rows are independent).
    fn apply_lora(&mut self, x: BufId, outs: &[(WeightId, BufId)], n: usize) {
        let mut rows: Vec<usize> = Vec::new();
        let mut xs: Vec<f32> = Vec::new();
        for &(wid, out) in outs {
            for term in self.lora.iter().filter(|t| t.weight == wid) {
                let p = &term.adapter.pairs[term.pair];
                let xb = &self.bufs[x.0 as usize];
                let cols = xb.cols;
                // The rows this term adds to (all of them for one sequence).
                let src: &[f32] = if self.segs.is_empty() {
                    rows.clear();
                    rows.extend(0..n);
                    xb.rows(n)
                } else {
                    rows.clear();
                    let mut r0 = 0;
                    for g in &self.segs {
                        let len = g.len as usize;
                        if g.lora_set == term.set {
                            rows.extend(r0..r0 + len);
                        }
                        r0 += len;
                    }
                    if rows.is_empty() {
                        continue;
                    }
                    xs.clear();
                    for &r in &rows {
                        xs.extend_from_slice(&xb.data[r * cols..(r + 1) * cols]);
                    }
                    &xs
                };
                let m = rows.len();
                let mut t = vec![0.0f32; m * p.rank];
                self.kernels.matmul_panels(&self.pool, &p.a, src, m, &mut t);
                let mut u = vec![0.0f32; m * p.n_out];
                self.kernels.matmul_panels(&self.pool, &p.b, &t, m, &mut u);
                let ob = &mut self.bufs[out.0 as usize];
                let oc = ob.cols;
                for (i, &r) in rows.iter().enumerate() {
                    let dst = &mut ob.data[r * oc..r * oc + p.n_out];
                    for (o, &v) in dst.iter_mut().zip(&u[i * p.n_out..(i + 1) * p.n_out]) {
                        *o += term.scale * v;
                    }
                }
            }
        }
    }

    /// `(&a, &mut b)` for two distinct buffers.
    /// The products of weights packed for the float GEMM (f32 activations read in place).
    fn matmul_packed(&mut self, w: &CpuWeights, x: BufId, outs: &[(WeightId, BufId)], n: usize) {
        let xi = x.0 as usize;
        let mut dsts: Vec<Option<Vec<f32>>> = Vec::with_capacity(outs.len());
        for &(_, out) in outs {
            assert_ne!(
                out.0 as usize, xi,
                "matmul output must differ from its input"
            );
            dsts.push(Some(std::mem::take(&mut self.bufs[out.0 as usize].data)));
        }
        {
            let xb = &self.bufs[xi];
            let mut jobs: Vec<(&FloatPanels, &mut [f32])> = outs
                .iter()
                .zip(dsts.iter_mut())
                .map(|(&(wid, _), d)| {
                    let p = w.panels(wid).expect("partitioned on panels");
                    let d = d.as_mut().expect("distinct outputs");
                    (p, &mut d[..n * p.rows])
                })
                .collect();
            self.kernels
                .matmul_panels_group(&self.pool, &mut jobs, xb.rows(n), n);
        }
        for (&(_, out), d) in outs.iter().zip(dsts) {
            self.bufs[out.0 as usize].data = d.expect("distinct outputs");
        }
    }

    fn pair(&mut self, a: BufId, b: BufId) -> (&Buf, &mut Buf) {
        let (a, b) = (a.0 as usize, b.0 as usize);
        assert_ne!(a, b, "input and output buffers must differ");
        if a < b {
            let (lo, hi) = self.bufs.split_at_mut(b);
            (&lo[a], &mut hi[0])
        } else {
            let (lo, hi) = self.bufs.split_at_mut(a);
            (&hi[0], &mut lo[b])
        }
    }

    fn buf_mut(&mut self, id: BufId) -> &mut Buf {
        &mut self.bufs[id.0 as usize]
    }
}

impl CpuBackend {
    fn weights(&self) -> Arc<CpuWeights> {
        Arc::clone(&self.w)
    }

    /// The RoPE table of `p` holding at least positions `0..need`. Tables grow by doubling
    /// (from 256 positions, at most the context): a short prompt does not pay for the cos/sin
    /// of a whole 4096-position context before its first token.
    fn rope_cache(&mut self, p: &RopeParams, need: usize) -> usize {
        let found = self.rope_caches.iter().position(|(q, _)| q == p);
        if let Some(i) = found {
            if self.rope_caches[i].1.max_pos() >= need {
                return i;
            }
        }
        let w = Arc::clone(&self.w);
        let n_ctx = self.kv.first().map_or(1, |kv| kv.spec.n_ctx);
        let max_pos = need.max(256).next_power_of_two().min(n_ctx).max(need);
        let cfg = p.kernel_cfg(p.freq_factors.map(|f| w.vector(f)));
        // The settings were validated when the architecture was loaded (`RopeParams::validate`).
        let cache = match RopeCache::new(&cfg, max_pos) {
            Ok(c) => c,
            Err(e) => panic!("rope settings passed validation but fail: {e}"),
        };
        match found {
            Some(i) => {
                self.rope_caches[i].1 = cache;
                i
            }
            None => {
                self.rope_caches.push((*p, cache));
                self.rope_caches.len() - 1
            }
        }
    }
}

impl CpuBackend {
    /// Stores rows `r0..r0 + n` of `k`, `v` at positions `pos0..` of slot `seq`'s cache for
    /// `layer`.
    fn store_kv(
        &mut self,
        seq: usize,
        layer: usize,
        (k, v): (BufId, BufId),
        r0: usize,
        (pos0, n): (usize, usize),
    ) {
        let isa = self.isa;
        let kv = &mut self.kv[seq];
        let (kw, vw) = (kv.spec.k_width, kv.spec.v_width);
        let kb = &self.bufs[k.0 as usize];
        let vb = &self.bufs[v.0 as usize];
        kv.reserve(layer, pos0 + n);
        kv.k[layer].write(isa, pos0 * kw, &kb.data[r0 * kw..(r0 + n) * kw]);
        kv.v[layer].write(isa, pos0 * vw, &vb.data[r0 * vw..(r0 + n) * vw]);
    }

    /// Slot `seq`'s cache of `layer` as the attention kernels read it.
    fn kv_view(&self, seq: usize, layer: usize, p: &AttnParams) -> KvView<'_> {
        debug_assert_eq!(p.head_dim_k, p.head_dim_v);
        let kv = &self.kv[seq];
        KvView {
            k: kv.k[layer].data(),
            v: kv.v[layer].data(),
            n_kv_heads: p.n_head_kv,
            head_dim: p.head_dim_k,
        }
    }

    /// The kernels' attention parameters.
    fn ops_params(p: &AttnParams) -> ops::AttnParams {
        ops::AttnParams {
            causal: p.causal,
            n_heads: p.n_head,
            scale: p.scale,
            window: p.window,
        }
    }

    /// One sequence (slot 0): stores the `n` new K/V rows at `pos0..`, then attends with the
    /// `n` rows of `q` into `out` on ggml's paths (`attention_parallel`).
    fn attend(
        &mut self,
        layer: usize,
        (q, k, v, out): (BufId, BufId, BufId, BufId),
        pos0: usize,
        n: usize,
        p: &AttnParams,
    ) {
        self.store_kv(0, layer, (k, v), 0, (pos0, n));
        let (qi, oi) = (q.0 as usize, out.0 as usize);
        assert_ne!(qi, oi, "attention input and output must differ");
        let width = p.n_head * p.head_dim_v;
        let mut ob = std::mem::take(&mut self.bufs[oi].data);
        let qs = &self.bufs[qi].data[..n * width];
        let view = self.kv_view(0, layer, p);
        let params = Self::ops_params(p);
        ops::attention_parallel(
            self.isa,
            qs,
            &view,
            pos0,
            &params,
            &mut ob[..n * width],
            &*self.pool,
        );
        self.bufs[oi].data = ob;
    }

    /// The multi-sequence batch's attention: stores every segment's K/V rows in its slot, then
    /// attends all segments in one parallel run (`attention_invariant_many`; each segment's
    /// bits are those of `attention_invariant` on it alone).
    fn attend_segments(
        &mut self,
        segs: &[Segment],
        layer: usize,
        (q, k, v, out): (BufId, BufId, BufId, BufId),
        n: usize,
        p: &AttnParams,
    ) {
        let mut r0 = 0;
        for g in segs {
            let (pos0, len) = (g.pos0 as usize, g.len as usize);
            self.store_kv(g.seq as usize, layer, (k, v), r0, (pos0, len));
            r0 += len;
        }
        debug_assert_eq!(r0, n, "attention rows vs the batch layout");
        let params = Self::ops_params(p);
        let width = p.n_head * p.head_dim_v;
        let (qi, oi) = (q.0 as usize, out.0 as usize);
        assert_ne!(qi, oi, "attention input and output must differ");
        let mut ob = std::mem::take(&mut self.bufs[oi].data);
        let qb = &self.bufs[qi];
        let mut rest = &mut ob[..n * width];
        let mut calls = Vec::with_capacity(segs.len());
        let mut r0 = 0;
        for g in segs {
            let len = g.len as usize;
            let (os, tail) = std::mem::take(&mut rest).split_at_mut(len * width);
            rest = tail;
            calls.push(ops::InvariantCall {
                q: &qb.data[r0 * width..(r0 + len) * width],
                kv: self.kv_view(g.seq as usize, layer, p),
                n_past: g.pos0 as usize,
                out: os,
            });
            r0 += len;
        }
        ops::attention_invariant_many(self.isa, &mut calls, &params, &*self.pool);
        drop(calls);
        self.bufs[oi].data = ob;
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu-{}", self.isa.name())
    }

    fn alloc(&mut self, rows: usize, cols: usize) -> BufId {
        self.bufs.push(Buf {
            cols,
            data: vec![0.0; rows * cols],
        });
        BufId((self.bufs.len() - 1) as u32)
    }

    fn alloc_kv_cache(&mut self, spec: &KvCacheSpec) {
        self.kv = vec![CpuKvCache::new(*spec)];
        self.rope_caches.clear();
    }

    fn alloc_kv_slots(&mut self, spec: &KvCacheSpec, n_seq: usize) -> Result<(), String> {
        // Each slot's storage grows as its positions are written.
        self.kv = (0..n_seq).map(|_| CpuKvCache::new(*spec)).collect();
        self.rope_caches.clear();
        Ok(())
    }

    fn set_batch(&mut self, segs: &[Segment]) -> Result<(), String> {
        for g in segs {
            let Some(kv) = self.kv.get(g.seq as usize) else {
                return Err(format!("sequence slot {} is not allocated", g.seq));
            };
            if g.pos0 as usize + g.len as usize > kv.spec.n_ctx {
                return Err(format!(
                    "positions {}..{} outside slot {}'s {} positions",
                    g.pos0,
                    g.pos0 + g.len,
                    g.seq,
                    kv.spec.n_ctx
                ));
            }
        }
        self.segs.clear();
        self.segs.extend_from_slice(segs);
        Ok(())
    }

    fn embed(&mut self, table: WeightId, tokens: &[u32], out: BufId) {
        let w = Arc::clone(&self.w);
        let e = w.table.entry(table);
        let data = w.table.data(table);
        let row_bytes = data.len() / e.rows();
        // A tied output head repacked at load had its stored pages given back: its rows are
        // put back together from the repacked bytes instead (the same bytes).
        let repacked = w.repacked_of(table).filter(|r| r.ty() == e.ty);
        let mut row = vec![0u8; if repacked.is_some() { row_bytes } else { 0 }];
        let o = self.buf_mut(out);
        let cols = o.cols;
        for (t, &tok) in tokens.iter().enumerate() {
            // Token ids were checked against the vocabulary by the session.
            let src = match repacked {
                Some(r) => {
                    r.row(tok as usize, &mut row);
                    &row[..]
                }
                None => &data[tok as usize * row_bytes..(tok as usize + 1) * row_bytes],
            };
            dequantize_row(e.ty, src, &mut o.data[t * cols..(t + 1) * cols]);
        }
    }

    fn rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, out: BufId, n: usize) {
        let (wv, isa) = (self.weights(), self.isa);
        let g = wv.vector(w);
        // Element-wise ops of a batch run on the pool (`par_rows_mut` keeps small ones serial).
        let pool = &*self.pool;
        if x == out {
            let b = &mut self.bufs[x.0 as usize];
            let cols = b.cols;
            par_rows_mut(pool, &mut b.data[..n * cols], cols, &|_, rows| {
                ops::rms_norm_inplace(isa, rows, g, eps)
            });
        } else {
            let (a, o) = (x.0 as usize, out.0 as usize);
            let (xb, ob) = pair_mut(&mut self.bufs, a, o);
            let (cols, src) = (xb.cols, xb.rows(n));
            par_rows_mut(pool, ob.rows_mut(n), cols, &|r0, rows| {
                ops::rms_norm(isa, &src[r0 * cols..r0 * cols + rows.len()], g, eps, rows)
            });
        }
    }

    fn layer_norm(
        &mut self,
        x: BufId,
        w: WeightId,
        b: Option<WeightId>,
        eps: f32,
        out: BufId,
        n: usize,
    ) {
        let (wv, isa) = (self.weights(), self.isa);
        let g = wv.vector(w);
        let bias = b.map(|b| wv.vector(b));
        if x == out {
            let mut tmp = std::mem::take(&mut self.tmp);
            let buf = self.buf_mut(x);
            let cols = buf.cols;
            tmp.resize(cols, 0.0);
            for row in buf.rows_mut(n).chunks_mut(cols) {
                ops::layer_norm(isa, row, g, bias, eps, &mut tmp);
                row.copy_from_slice(&tmp);
            }
            self.tmp = tmp;
        } else {
            let (xb, ob) = self.pair(x, out);
            ops::layer_norm(isa, xb.rows(n), g, bias, eps, ob.rows_mut(n));
        }
    }

    fn head_rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, head_dim: usize, n: usize) {
        let (wv, isa) = (self.weights(), self.isa);
        let g = wv.vector(w);
        debug_assert_eq!(g.len(), head_dim);
        let b = &mut self.bufs[x.0 as usize];
        let cols = b.cols;
        par_rows_mut(&*self.pool, &mut b.data[..n * cols], cols, &|_, rows| {
            ops::rms_norm_inplace(isa, rows, g, eps)
        });
    }

    fn set_lora(&mut self, terms: &[LoraTerm]) {
        self.lora = terms.to_vec();
    }

    fn matmul(&mut self, x: BufId, outs: &[(WeightId, BufId)], n: usize) {
        self.matmul_base(x, outs, n);
        if !self.lora.is_empty() {
            self.apply_lora(x, outs, n);
        }
    }

    fn add_bias(&mut self, x: BufId, b: WeightId, n: usize) {
        let (wv, isa) = (self.weights(), self.isa);
        let bias = wv.vector(b);
        let buf = self.buf_mut(x);
        let cols = buf.cols;
        for row in buf.rows_mut(n).chunks_mut(cols) {
            ops::add_inplace(isa, row, bias);
        }
    }

    fn add(&mut self, dst: BufId, src: BufId, n: usize) {
        let isa = self.isa;
        let (s, d) = (src.0 as usize, dst.0 as usize);
        let (sb, db) = pair_mut(&mut self.bufs, s, d);
        let (cols, src) = (sb.cols, sb.rows(n));
        par_rows_mut(&*self.pool, db.rows_mut(n), cols, &|r0, rows| {
            ops::add_inplace(isa, rows, &src[r0 * cols..r0 * cols + rows.len()])
        });
    }

    fn scale(&mut self, x: BufId, s: f32, n: usize) {
        let isa = self.isa;
        let b = &mut self.bufs[x.0 as usize];
        let cols = b.cols;
        par_rows_mut(&*self.pool, &mut b.data[..n * cols], cols, &|_, rows| {
            ops::scale_inplace(isa, rows, s)
        });
    }

    fn rope(
        &mut self,
        x: BufId,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        n: usize,
        p: &RopeParams,
    ) {
        self.positions.clear();
        if self.segs.is_empty() {
            self.positions.extend(pos0..pos0 + n);
        } else {
            for g in &self.segs {
                self.positions
                    .extend(g.pos0 as usize..(g.pos0 + g.len) as usize);
            }
            debug_assert_eq!(self.positions.len(), n, "rope rows vs the batch layout");
        }
        let need = self.positions.iter().max().map_or(0, |&m| m + 1);
        let ci = self.rope_cache(p, need);
        let positions = &self.positions;
        let isa = self.isa;
        let cache = &self.rope_caches[ci].1;
        let buf = &mut self.bufs[x.0 as usize];
        let row = n_heads * head_dim;
        par_rows_mut(&*self.pool, &mut buf.data[..n * row], row, &|r0, rows| {
            let pos = &positions[r0..r0 + rows.len() / row];
            ops::rope(isa, rows, n_heads, head_dim, pos, cache)
        });
    }

    fn attention(
        &mut self,
        layer: usize,
        q: BufId,
        k: BufId,
        v: BufId,
        pos0: usize,
        n: usize,
        p: &AttnParams,
        out: BufId,
    ) {
        if self.segs.is_empty() {
            self.attend(layer, (q, k, v, out), pos0, n, p);
        } else {
            let segs = std::mem::take(&mut self.segs);
            self.attend_segments(&segs, layer, (q, k, v, out), n, p);
            self.segs = segs;
        }
    }

    fn attention_packed(
        &mut self,
        q: BufId,
        k: BufId,
        v: BufId,
        seqs: &[u32],
        p: &AttnParams,
        out: BufId,
    ) {
        let n = seqs.last().map_or(0, |&n| n as usize);
        let (qi, oi) = (q.0 as usize, out.0 as usize);
        assert!(qi != oi && k.0 as usize != oi && v.0 as usize != oi);
        let mut ob = std::mem::take(&mut self.bufs[oi].data);
        let (qb, kb, vb) = (
            &self.bufs[qi],
            &self.bufs[k.0 as usize],
            &self.bufs[v.0 as usize],
        );
        crate::kernels::cpu::attention::packed::attention_packed(
            self.isa,
            &qb.data[..n * qb.cols],
            &kb.data[..n * kb.cols],
            &vb.data[..n * vb.cols],
            seqs,
            (p.n_head, p.n_head_kv, p.head_dim_k),
            p.scale,
            &mut ob[..n * p.n_head * p.head_dim_v],
            &*self.pool,
        );
        self.bufs[oi].data = ob;
    }

    fn pool(&mut self, x: BufId, seqs: &[u32], kind: PoolKind, out: BufId) {
        let (xb, ob) = self.pair(x, out);
        let e = xb.cols;
        for (i, w) in seqs.windows(2).enumerate() {
            let (r0, r1) = (w[0] as usize, w[1] as usize);
            let dst = &mut ob.data[i * ob.cols..i * ob.cols + e];
            kind.reduce(&xb.data[r0 * e..r1 * e], dst);
        }
    }

    fn swiglu(&mut self, gate: BufId, up: BufId, n: usize) {
        let isa = self.isa;
        let (u, g) = (up.0 as usize, gate.0 as usize);
        let (ub, gb) = pair_mut(&mut self.bufs, u, g);
        let (cols, up) = (ub.cols, ub.rows(n));
        par_rows_mut(&*self.pool, gb.rows_mut(n), cols, &|r0, rows| {
            ops::swiglu_inplace(isa, rows, &up[r0 * cols..r0 * cols + rows.len()])
        });
    }

    fn geglu(&mut self, gate: BufId, up: BufId, n: usize) {
        let isa = self.isa;
        let (u, g) = (up.0 as usize, gate.0 as usize);
        let (ub, gb) = pair_mut(&mut self.bufs, u, g);
        let (cols, up) = (ub.cols, ub.rows(n));
        let exact = self.exact_gelu;
        par_rows_mut(&*self.pool, gb.rows_mut(n), cols, &|r0, rows| {
            let up = &up[r0 * cols..r0 * cols + rows.len()];
            if exact {
                ops::geglu_tanh_exact_inplace(rows, up)
            } else {
                ops::geglu_tanh_inplace(isa, rows, up)
            }
        });
    }

    fn gelu(&mut self, x: BufId, n: usize) {
        let isa = self.isa;
        let b = &mut self.bufs[x.0 as usize];
        let cols = b.cols;
        let exact = self.exact_gelu;
        par_rows_mut(&*self.pool, &mut b.data[..n * cols], cols, &|_, rows| {
            if exact {
                ops::gelu_tanh_exact_inplace(rows)
            } else {
                ops::gelu_tanh_inplace(isa, rows)
            }
        });
    }

    fn gelu_erf(&mut self, x: BufId, n: usize) {
        let isa = self.isa;
        let b = &mut self.bufs[x.0 as usize];
        let cols = b.cols;
        par_rows_mut(&*self.pool, &mut b.data[..n * cols], cols, &|_, rows| {
            ops::gelu_erf_inplace(isa, rows)
        });
    }

    fn copy_cols(
        &mut self,
        src: BufId,
        src_col: usize,
        dst: BufId,
        dst_col: usize,
        width: usize,
        n: usize,
    ) {
        let (sb, db) = self.pair(src, dst);
        for t in 0..n {
            let s = &sb.data[t * sb.cols + src_col..t * sb.cols + src_col + width];
            db.data[t * db.cols + dst_col..t * db.cols + dst_col + width].copy_from_slice(s);
        }
    }

    fn copy_row(&mut self, src: BufId, src_row: usize, dst: BufId, dst_row: usize) {
        if src == dst {
            let b = self.buf_mut(src);
            let c = b.cols;
            b.data
                .copy_within(src_row * c..(src_row + 1) * c, dst_row * c);
            return;
        }
        let (sb, db) = self.pair(src, dst);
        let c = sb.cols;
        db.data[dst_row * c..(dst_row + 1) * c]
            .copy_from_slice(&sb.data[src_row * c..(src_row + 1) * c]);
    }

    fn read(&mut self, buf: BufId, row0: usize, out: &mut [f32]) {
        let b = &self.bufs[buf.0 as usize];
        out.copy_from_slice(&b.data[row0 * b.cols..row0 * b.cols + out.len()]);
    }

    fn write(&mut self, buf: BufId, row0: usize, data: &[f32]) -> bool {
        let b = &mut self.bufs[buf.0 as usize];
        b.data[row0 * b.cols..row0 * b.cols + data.len()].copy_from_slice(data);
        true
    }
}
