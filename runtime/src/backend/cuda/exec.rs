//! Running a planned step: the kernel launches of every op and fusion, and the decode step
//! captured once as a CUDA graph and replayed while it stays the same.

use std::sync::Arc;

use tinyrt_cuda::{
    CudaError, GluActivation, PackedAttentionShape, PoolMode, RopeKvShape, RopeMode, WeightType,
};

use super::plan::{plan, Exec, Op};
use super::state::{raw_of, DeviceState, KvCache};
use super::weights::DeviceWeight;
use crate::backend::{AttnParams, BufId, PoolKind, WeightId};
use crate::config::RopeStyle;

/// The captured graph of the last decode step and the ops it was recorded from.
struct CachedGraph {
    ops: Vec<Op>,
    /// `DeviceState::alloc_gen` at capture: a reallocated buffer invalidates the graph.
    alloc_gen: u64,
    graph: tinyrt_cuda::DeviceGraph,
}

/// The single-token ops recorded since the last sync point, and the graph of the last step.
pub(super) struct Recorder {
    /// Single-token ops recorded since the last sync point, run (fused, as a graph) at the next.
    pub(super) ops: Vec<Op>,
    /// Whether `ops` holds an `Embed` (its ids are in the device's id buffer already).
    pub(super) ops_embed: bool,
    graph: Option<CachedGraph>,
    graphs: bool,
}

impl Recorder {
    pub(super) fn new(graphs: bool) -> Recorder {
        Recorder {
            ops: Vec::new(),
            ops_embed: false,
            graph: None,
            graphs,
        }
    }

    /// Run the recorded ops: replay the cached graph when they are the same step, else plan,
    /// fuse and (for a whole decode step) capture a new graph; plain launches when capture fails.
    pub(super) fn flush(&mut self, st: &DeviceState) -> Result<(), String> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.ops);
        let whole_step = self.ops_embed;
        self.ops_embed = false;
        if let Some(g) = &self.graph {
            if g.ops == ops && g.alloc_gen == st.alloc_gen {
                return g.graph.replay().map_err(|e| e.to_string());
            }
        }
        let steps = plan(&ops, st, st.fuse);
        if self.graphs && whole_step {
            self.graph = None;
            let dev = Arc::clone(&st.w.dev);
            let captured = dev.capture(|_| {
                steps
                    .iter()
                    .try_for_each(|&s| st.exec(&ops, s))
                    .map_err(CudaError::Driver)
            });
            match captured {
                Ok(graph) => {
                    graph.replay().map_err(|e| e.to_string())?;
                    self.graph = Some(CachedGraph {
                        ops,
                        alloc_gen: st.alloc_gen,
                        graph,
                    });
                    return Ok(());
                }
                Err(e) => {
                    // Plain launches from now on (the capture left nothing behind).
                    self.graphs = false;
                    if std::env::var_os("TINYRT_CUDA_DEBUG").is_some() {
                        let _ = std::io::Write::write_fmt(
                            &mut std::io::stderr(),
                            format_args!(
                                "tinyrt: CUDA graph capture failed, using plain launches: {e}\n"
                            ),
                        );
                    }
                }
            }
        }
        steps.iter().try_for_each(|&s| st.exec(&ops, s))
    }
}

impl DeviceState {
    /// When every product of a single-token matmul (2 or 3 of them) has the same quantized
    /// type and width, and all or none have a planar copy: one `matvec3_*` launch does them.
    fn matvec3_group(&self, outs: &[(WeightId, BufId)]) -> Option<(WeightType, usize, bool)> {
        if outs.len() > 3 {
            return None;
        }
        let mut group: Option<(WeightType, usize, bool)> = None;
        for &(wid, _) in outs {
            let DeviceWeight::Matrix {
                ty, cols, planar, ..
            } = &self.w.tensors[wid.0 as usize]
            else {
                return None;
            };
            let this = (*ty, *cols, planar.is_some());
            if !ty.is_quantized() || group.is_some_and(|g| g != this) {
                return None;
            }
            group = Some(this);
        }
        group.filter(|(ty, _, planar)| tinyrt_cuda::Kernel::matvec3(*ty, *planar).is_some())
    }

    /// Run one planned step of `ops` (launches only: no allocation, no host copies).
    pub(super) fn exec(&self, ops: &[Op], step: Exec) -> Result<(), String> {
        let dev = self.dev();
        let err = |e: CudaError| e.to_string();
        match step {
            Exec::Plain { op, q8_ready } => self.exec_op(&ops[op], q8_ready),
            Exec::NormQ8 { op } => {
                let Op::RmsNorm {
                    x, w, eps, out, n, ..
                } = &ops[op]
                else {
                    return Err("planner: NormQ8 on a non-norm op".into());
                };
                let cols = self.cols(*x);
                let (xv, mut ov, g) = (self.rows(*x, *n)?, self.rows(*out, *n)?, self.vector(*w)?);
                let mut q8 = self.q8_raw()?;
                dev.rms_norm_f32_q8_1(&xv, g, &mut ov, &mut q8, *n, cols, *eps)
                    .map_err(err)
            }
            Exec::Glu {
                matmul,
                glu,
                q8_ready,
            } => {
                let (Op::Matmul { x, outs, .. }, Op::Glu { gate, act, .. }) =
                    (&ops[matmul], &ops[glu])
                else {
                    return Err("planner: Glu on other ops".into());
                };
                let [(wg, _), (wu, _)] = outs.as_slice() else {
                    return Err("planner: Glu without two products".into());
                };
                let (
                    DeviceWeight::Matrix {
                        ty,
                        rows,
                        cols,
                        data: dg,
                        ..
                    },
                    DeviceWeight::Matrix { data: du, .. },
                ) = (
                    &self.w.tensors[wg.0 as usize],
                    &self.w.tensors[wu.0 as usize],
                )
                else {
                    return Err("planner: Glu on vectors".into());
                };
                let mut q8 = self.q8_raw()?;
                if !q8_ready {
                    let xv = self.view(*x, 0, *cols)?;
                    dev.quantize_q8_1(&xv, &mut q8, *cols).map_err(err)?;
                }
                let mut y = self.view(*gate, 0, *rows)?;
                dev.matvec_glu_q8_1(*ty, *act, dg, du, &q8, &mut y, *rows, *cols)
                    .map_err(err)
            }
            Exec::MatmulAdd {
                matmul,
                add,
                q8_ready,
            } => {
                let (Op::Matmul { x, outs, n }, Op::Add { dst, .. }) = (&ops[matmul], &ops[add])
                else {
                    return Err("planner: MatmulAdd on other ops".into());
                };
                self.matmul_exec(*x, outs, *n, q8_ready, Some(*dst))
            }
            Exec::AttentionQ8 { op } => self.exec_attention(&ops[op], true),
            Exec::RopeKvAttention {
                rope_q,
                rope_k,
                attn,
                q8_out,
            } => {
                let (
                    Op::Rope { table, .. },
                    Op::Rope { .. },
                    Op::Attention {
                        layer,
                        q,
                        k,
                        v,
                        n,
                        p,
                        out,
                        max_kv_len,
                    },
                ) = (&ops[rope_q], &ops[rope_k], &ops[attn])
                else {
                    return Err("planner: RopeKvAttention on other ops".into());
                };
                let t = &self.rope_tables[*table];
                let spec = self.kv_spec.ok_or("no KV cache")?;
                if self.cols(*k) != self.cols(*v) {
                    return Err("K and V rows of different widths".into());
                }
                let shape = RopeKvShape {
                    ntok: *n,
                    q_stride: self.cols(*q),
                    kv_stride: self.cols(*k),
                    n_head: p.n_head,
                    n_kv: p.n_head_kv,
                    head_dim: p.head_dim_k,
                    n_rot: t.params.n_rot,
                    mode: rope_mode(t.params.style),
                    n_ctx: spec.n_ctx,
                };
                let mut qv = self.rows(*q, *n)?;
                let (kn, vn) = (self.rows(*k, *n)?, self.rows(*v, *n)?);
                let pos = self.pos_raw()?;
                let table = raw_of(dev, &t.data);
                let kv = self.kv.as_ref().ok_or("no KV cache")?;
                match kv {
                    KvCache::F16(l) => {
                        let l = l.get(*layer).ok_or("no such layer in the KV cache")?;
                        let (mut kc, mut vc) = (raw_of(dev, &l.k), raw_of(dev, &l.v));
                        dev.rope_kv_store::<u16>(
                            &mut qv, &kn, &vn, &mut kc, &mut vc, &pos, &table, t.n_pos, shape,
                        )
                    }
                    KvCache::F32(l) => {
                        let l = l.get(*layer).ok_or("no such layer in the KV cache")?;
                        let (mut kc, mut vc) = (raw_of(dev, &l.k), raw_of(dev, &l.v));
                        dev.rope_kv_store::<f32>(
                            &mut qv, &kn, &vn, &mut kc, &mut vc, &pos, &table, t.n_pos, shape,
                        )
                    }
                }
                .map_err(err)?;
                self.attend(*layer, *q, *n, p, *out, *max_kv_len, q8_out)
            }
        }
    }

    /// The attention proper (the cache already holds this pass's keys and values); `q8`:
    /// also write the output as Q8_1 into the Q8_1 buffer.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        layer: usize,
        q: BufId,
        n: usize,
        p: &AttnParams,
        out: BufId,
        max_kv_len: usize,
        q8: bool,
    ) -> Result<(), String> {
        let dev = self.dev();
        let shape = self.attention_shape(q, out, n, p, max_kv_len)?;
        let qv = self.rows(q, n)?;
        let mut ov = self.rows(out, n)?;
        let pos = self.pos_raw()?;
        let scratch = self.attn_scratch.as_ref().ok_or("no attention scratch")?;
        let mut sv = raw_of(dev, scratch);
        let mut q8v = if q8 { Some(self.q8_raw()?) } else { None };
        match (self.kv.as_ref().ok_or("no KV cache")?, q8v.as_mut()) {
            (KvCache::F16(l), None) => {
                let l = l.get(layer).ok_or("no such layer in the KV cache")?;
                dev.attention(&qv, &l.k, &l.v, &pos, &mut ov, &mut sv, shape, p.scale)
            }
            (KvCache::F32(l), None) => {
                let l = l.get(layer).ok_or("no such layer in the KV cache")?;
                dev.attention(&qv, &l.k, &l.v, &pos, &mut ov, &mut sv, shape, p.scale)
            }
            (KvCache::F16(l), Some(q8)) => {
                let l = l.get(layer).ok_or("no such layer in the KV cache")?;
                dev.attention_q8_1(&qv, &l.k, &l.v, &pos, &mut ov, q8, &mut sv, shape, p.scale)
            }
            (KvCache::F32(l), Some(q8)) => {
                let l = l.get(layer).ok_or("no such layer in the KV cache")?;
                dev.attention_q8_1(&qv, &l.k, &l.v, &pos, &mut ov, q8, &mut sv, shape, p.scale)
            }
        }
        .map_err(|e| e.to_string())
    }

    /// An attention op: this pass's K/V into the cache, then the attention; `q8`: the output
    /// also as Q8_1.
    fn exec_attention(&self, op: &Op, q8: bool) -> Result<(), String> {
        let Op::Attention {
            layer,
            q,
            k,
            v,
            n,
            p,
            out,
            max_kv_len,
        } = op
        else {
            return Err("exec_attention of another op".into());
        };
        let dev = self.dev();
        let err = |e: CudaError| e.to_string();
        let spec = self.kv_spec.ok_or("no KV cache")?;
        let row = spec.k_width;
        let (kn, vn) = (self.rows(*k, *n)?, self.rows(*v, *n)?);
        let kk = self.cols(*k);
        if self.cols(*v) != kk {
            return Err("K and V rows of different widths".into());
        }
        let pos = self.pos_raw()?;
        match self.kv.as_ref().ok_or("no KV cache")? {
            KvCache::F16(l) => {
                let l = l.get(*layer).ok_or("no such layer in the KV cache")?;
                let (mut kc, mut vc) = (raw_of(dev, &l.k), raw_of(dev, &l.v));
                dev.kv_store::<u16>(&kn, &vn, &mut kc, &mut vc, &pos, *n, kk, row, spec.n_ctx)
            }
            KvCache::F32(l) => {
                let l = l.get(*layer).ok_or("no such layer in the KV cache")?;
                let (mut kc, mut vc) = (raw_of(dev, &l.k), raw_of(dev, &l.v));
                dev.kv_store::<f32>(&kn, &vn, &mut kc, &mut vc, &pos, *n, kk, row, spec.n_ctx)
            }
        }
        .map_err(err)?;
        self.attend(*layer, *q, *n, p, *out, *max_kv_len, q8)
    }

    /// Bidirectional attention of the packed sequences whose boundaries are on the device.
    fn exec_attention_packed(&self, op: &Op) -> Result<(), String> {
        let Op::AttentionPacked {
            q,
            k,
            v,
            n_seq,
            n,
            p,
            out,
        } = op
        else {
            return Err("exec_attention_packed of another op".into());
        };
        if [q, k, v].contains(&out) {
            return Err("packed attention into one of its inputs".into());
        }
        if p.head_dim_k != p.head_dim_v {
            return Err(format!(
                "the CUDA attention kernel needs equal K and V head sizes ({} != {})",
                p.head_dim_k, p.head_dim_v
            ));
        }
        if self.cols(*k) != self.cols(*v) {
            return Err("K and V rows of different widths".into());
        }
        let shape = PackedAttentionShape {
            rows: *n,
            n_seq: *n_seq,
            n_head: p.n_head,
            n_kv: p.n_head_kv,
            head_dim: p.head_dim_k,
            q_stride: self.cols(*q),
            kv_stride: self.cols(*k),
            out_stride: self.cols(*out),
        };
        let (qv, kv, vv) = (self.rows(*q, *n)?, self.rows(*k, *n)?, self.rows(*v, *n)?);
        let mut ov = self.rows(*out, *n)?;
        let sd = self.seqs_raw()?;
        self.dev()
            .attention_packed(&qv, &kv, &vv, &sd, &mut ov, shape, p.scale)
            .map_err(|e| e.to_string())
    }

    fn exec_op(&self, op: &Op, q8_ready: bool) -> Result<(), String> {
        let dev = self.dev();
        let err = |e: CudaError| e.to_string();
        match op {
            Op::Embed { table, out, n } => {
                let DeviceWeight::Matrix {
                    ty,
                    rows,
                    cols,
                    data,
                    ..
                } = &self.w.tensors[table.0 as usize]
                else {
                    return Err("embedding table is a vector".into());
                };
                let idb = self.ids.as_ref().ok_or("no id buffer")?;
                let mut o = self.view(*out, 0, n * cols)?;
                dev.get_rows(*ty, data, idb, &mut o, *n, *rows, *cols)
                    .map_err(err)
            }
            Op::RmsNorm { x, w, eps, out, n } => {
                let cols = self.cols(*x);
                let (xv, mut ov, g) = (self.rows(*x, *n)?, self.rows(*out, *n)?, self.vector(*w)?);
                dev.rms_norm(&xv, g, &mut ov, *n, cols, *eps).map_err(err)
            }
            Op::LayerNorm {
                x,
                w,
                b,
                eps,
                out,
                n,
            } => {
                let cols = self.cols(*x);
                let (xv, mut ov, g) = (self.rows(*x, *n)?, self.rows(*out, *n)?, self.vector(*w)?);
                let bias = match b {
                    Some(b) => Some(self.vector(*b)?),
                    None => None,
                };
                dev.layer_norm(
                    &xv,
                    g,
                    bias.map(|b| b as &dyn tinyrt_cuda::DevicePtrF32),
                    &mut ov,
                    *n,
                    cols,
                    *eps,
                )
                .map_err(err)
            }
            Op::HeadRmsNorm {
                x,
                w,
                eps,
                head_dim,
                n,
            } => {
                let cols = self.cols(*x);
                if *head_dim == 0 || !cols.is_multiple_of(*head_dim) {
                    return Err(format!("head size {head_dim} does not divide {cols}"));
                }
                let (xv, mut ov, g) = (self.rows(*x, *n)?, self.rows(*x, *n)?, self.vector(*w)?);
                dev.rms_norm(&xv, g, &mut ov, n * cols / head_dim, *head_dim, *eps)
                    .map_err(err)
            }
            Op::Matmul { x, outs, n } => self.matmul_exec(*x, outs, *n, q8_ready, None),
            Op::AddBias { x, b, n } => {
                let cols = self.cols(*x);
                let (xv, mut ov, bv) = (self.rows(*x, *n)?, self.rows(*x, *n)?, self.vector(*b)?);
                dev.add_rows(&xv, bv, &mut ov, *n, cols).map_err(err)
            }
            Op::Add { dst, src, n } => {
                let len = n * self.cols(*dst);
                let (a, b, mut o) = (
                    self.view(*dst, 0, len)?,
                    self.view(*src, 0, len)?,
                    self.view(*dst, 0, len)?,
                );
                dev.add(&a, &b, &mut o, len).map_err(err)
            }
            Op::Scale { x, s, n } => {
                let len = n * self.cols(*x);
                let (a, mut o) = (self.view(*x, 0, len)?, self.view(*x, 0, len)?);
                dev.scale(&a, &mut o, *s, len).map_err(err)
            }
            Op::Rope {
                x,
                n_heads,
                head_dim,
                n,
                table,
            } => {
                let t = &self.rope_tables[*table];
                let stride = self.cols(*x);
                let mut xv = self.rows(*x, *n)?;
                let pos = self.pos_raw()?;
                dev.rope_cached(
                    &mut xv,
                    &pos,
                    &t.data,
                    t.n_pos,
                    *n,
                    stride,
                    *n_heads,
                    *head_dim,
                    t.params.n_rot,
                    rope_mode(t.params.style),
                )
                .map_err(err)
            }
            Op::Attention { .. } => self.exec_attention(op, false),
            Op::Glu { gate, up, n, act } => {
                let len = n * self.cols(*gate);
                let (g, u, mut o) = (
                    self.view(*gate, 0, len)?,
                    self.view(*up, 0, len)?,
                    self.view(*gate, 0, len)?,
                );
                match act {
                    GluActivation::Silu => dev.swiglu(&g, &u, &mut o, len),
                    GluActivation::GeluTanh => dev.geglu(&g, &u, &mut o, len),
                }
                .map_err(err)
            }
            Op::Gelu { x, n } => {
                let len = n * self.cols(*x);
                let (a, mut o) = (self.view(*x, 0, len)?, self.view(*x, 0, len)?);
                dev.gelu(&a, &mut o, len).map_err(err)
            }
            Op::GeluErf { x, n } => {
                let len = n * self.cols(*x);
                let (a, mut o) = (self.view(*x, 0, len)?, self.view(*x, 0, len)?);
                dev.gelu_erf(&a, &mut o, len).map_err(err)
            }
            Op::AttentionPacked { .. } => self.exec_attention_packed(op),
            Op::Pool {
                x,
                n_seq,
                rows,
                kind,
                out,
            } => {
                if x == out {
                    return Err("pooling into its own input".into());
                }
                let (xc, oc) = (self.cols(*x), self.cols(*out));
                let xv = self.rows(*x, *rows)?;
                let mut ov = self.rows(*out, *n_seq)?;
                let mode = match kind {
                    PoolKind::Mean => PoolMode::Mean,
                    PoolKind::First => PoolMode::First,
                    PoolKind::Last => PoolMode::Last,
                };
                let sd = self.seqs_raw()?;
                dev.pool_rows(&xv, &sd, &mut ov, mode, *n_seq, *rows, xc, xc, oc)
                    .map_err(err)
            }
            Op::CopyCols {
                src,
                src_col,
                dst,
                dst_col,
                width,
                n,
            } => {
                let (sc, dc) = (self.cols(*src), self.cols(*dst));
                if src_col + width > sc || dst_col + width > dc {
                    return Err(format!(
                        "copy of columns {src_col}+{width} of {sc} into {dst_col} of {dc}"
                    ));
                }
                for t in 0..*n {
                    let a = self.view(*src, t * sc + src_col, *width)?;
                    let mut b = self.view(*dst, t * dc + dst_col, *width)?;
                    dev.copy::<f32, _, _>(&a, &mut b).map_err(err)?;
                }
                Ok(())
            }
            Op::CopyRow {
                src,
                src_row,
                dst,
                dst_row,
            } => {
                let c = self.cols(*src);
                let a = self.view(*src, src_row * c, c)?;
                let mut b = self.view(*dst, dst_row * self.cols(*dst), c)?;
                dev.copy::<f32, _, _>(&a, &mut b).map_err(err)
            }
            Op::Argmax { buf, row, cols } => {
                let v = self.view(*buf, row * self.cols(*buf), *cols)?;
                let out = self.argmax_out.as_ref().ok_or("no argmax buffer")?;
                let mut o = raw_of(dev, out);
                dev.argmax(&v, &mut o, *cols).map_err(err)
            }
            Op::Lora {
                x,
                out,
                slot,
                scale,
                n,
            } => {
                let s = self.lora.slots.get(*slot).ok_or("no such LoRA slot")?;
                let (xs, os) = (self.cols(*x), self.cols(*out));
                if xs < s.n_in || os < s.n_out {
                    return Err(format!(
                        "LoRA pair of {}x{} on rows of {xs} into rows of {os}",
                        s.n_out, s.n_in
                    ));
                }
                let xv = self.rows(*x, *n)?;
                let mut ov = self.rows(*out, *n)?;
                let t = self.lora_t.as_ref().ok_or("no LoRA scratch")?;
                let mut tv = raw_of(dev, t);
                dev.lora_down(&s.a, &xv, &mut tv, s.rank, s.n_in, *n, xs)
                    .map_err(err)?;
                dev.lora_up(&s.bt, &tv, &mut ov, *scale, s.n_out, s.rank, *n, os)
                    .map_err(err)
            }
        }
    }

    /// The products of one `Matmul` op. `residual`: single-token only, the product is added
    /// into that buffer instead of written to its output (the fused `down` + residual add).
    fn matmul_exec(
        &self,
        x: BufId,
        outs: &[(WeightId, BufId)],
        n: usize,
        q8_ready: bool,
        residual: Option<BufId>,
    ) -> Result<(), String> {
        let w = &self.w;
        let dev = &*w.dev;
        let err = |e: CudaError| e.to_string();
        let mut quantized_cols: Option<usize> = q8_ready.then(|| self.cols(x));
        if n == 1 && residual.is_none() && self.fuse && outs.len() > 1 {
            if let Some((ty, cols, planar)) = self.matvec3_group(outs) {
                let mut q8 = self.q8_raw()?;
                if quantized_cols != Some(cols) {
                    let xv = self.view(x, 0, cols)?;
                    dev.quantize_q8_1(&xv, &mut q8, cols).map_err(err)?;
                }
                let mut parts = Vec::with_capacity(outs.len());
                for &(wid, out) in outs {
                    let DeviceWeight::Matrix {
                        rows,
                        data,
                        planar: p,
                        ..
                    } = &w.tensors[wid.0 as usize]
                    else {
                        return Err("matvec3 of a vector".into());
                    };
                    let wbuf = if planar {
                        p.as_ref().unwrap_or(data)
                    } else {
                        data
                    };
                    parts.push((wbuf, self.view(out, 0, *rows)?, *rows));
                }
                return dev
                    .matvec3_q8_1(ty, planar, &mut parts, &q8, cols)
                    .map_err(err);
            }
        }
        for &(wid, out) in outs {
            let DeviceWeight::Matrix {
                ty,
                rows,
                cols,
                data,
                planar,
            } = &w.tensors[wid.0 as usize]
            else {
                return Err(format!("{} used as a matrix", w.table.entry(wid).name));
            };
            let (ty, rows, cols) = (*ty, *rows, *cols);
            let xv = self.view(x, 0, (n - 1) * self.cols(x) + cols)?;
            if n == 1 {
                let (ybuf, acc) = residual.map_or((out, false), |d| (d, true));
                let mut y = self.view(ybuf, 0, rows)?;
                if ty.is_quantized() {
                    let mut q8 = self.q8_raw()?;
                    if quantized_cols != Some(cols) {
                        // The same input is quantized once for every product that reads it.
                        dev.quantize_q8_1(&xv, &mut q8, cols).map_err(err)?;
                        quantized_cols = Some(cols);
                    }
                    match planar {
                        Some(p) => dev.matvec_q4_0_planar(p, &q8, &mut y, acc, rows, cols),
                        None => dev.matvec_q8_1(ty, data, &q8, &mut y, acc, rows, cols),
                    }
                    .map_err(err)?;
                } else {
                    dev.matvec_f32_input(ty, data, &xv, &mut y, acc, rows, cols)
                        .map_err(err)?;
                }
            } else {
                if residual.is_some() {
                    return Err("planner: residual add fused into a batched matmul".into());
                }
                if self.cols(x) != cols || self.cols(out) != rows {
                    return Err(format!(
                        "batched matmul of {}: input/output widths {}/{} differ from {cols}/{rows}",
                        w.table.entry(wid).name,
                        self.cols(x),
                        self.cols(out)
                    ));
                }
                let mut y = self.view(out, 0, n * rows)?;
                let xv = self.view(x, 0, n * cols)?;
                if self.uses_mmq(ty, cols) {
                    let mut q8 = self.q8_raw()?;
                    if quantized_cols != Some(cols) {
                        dev.quantize_q8_1(&xv, &mut q8, n * cols).map_err(err)?;
                        quantized_cols = Some(cols);
                    }
                    dev.matmul_q8_1_mma(ty, data, &q8, &mut y, rows, cols, n)
                        .map_err(err)?;
                } else {
                    dev.matmul(ty, data, &xv, &mut y, rows, cols, n)
                        .map_err(err)?;
                }
            }
        }
        Ok(())
    }
}

fn rope_mode(style: RopeStyle) -> RopeMode {
    match style {
        RopeStyle::Normal => RopeMode::Normal,
        RopeStyle::Neox => RopeMode::Neox,
    }
}
