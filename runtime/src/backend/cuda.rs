//! The CUDA backend over `tinyrt-cuda`'s kernels.
//!
//! At load, every weight matrix is uploaded once in its GGUF layout (Q4_0 matrices also in
//! the planar layout the decode kernel reads with 128-bit loads); 1-D tensors (norm weights,
//! biases) are dequantized to f32 and uploaded. Per session: activation buffers, the KV cache
//! (f16, or f32 when the session asks), the Q8_1 activation buffer, the attention scratch and
//! the RoPE cos/sin tables (built on the host by the CPU backend's `RopeCache`, so Llama-3
//! frequency factors and linear scaling match it) live on the device.
//!
//! Batched ops (prefill) launch at once. Single-token ops (decode) are recorded and run at the
//! next sync point (`read`, `argmax`): planned with fusions (RMSNorm writing its Q8_1 copy for
//! the matmul after it, gate/up and SwiGLU/GeGLU in one matrix-vector kernel, RoPE of Q and K
//! with the KV-cache write in one kernel, a projection and the residual add after it as one
//! accumulating matrix-vector launch, the Q/K/V projections of one input as one `matvec3_*`
//! launch, the attention's combine pass writing the Q8_1 input of the output projection) and,
//! for a whole decode step, captured once as a graph
//! and replayed while the recorded step stays the same (positions and token ids live in device
//! memory; the KV length is rounded up to a whole attention split, so one graph serves 256
//! tokens). A failed capture falls back to plain launches. `TINYRT_CUDA_GRAPH=0` and
//! `TINYRT_CUDA_FUSE=0` turn graphs / fusions off (for comparisons). Batched products of
//! Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL, Q4_K and Q5_K matrices run on the int8 tensor cores over
//! Q8_1-quantized activations (`matmul_q8_1_mma`; `TINYRT_CUDA_MMQ=0`: the f32 tiled kernel),
//! other types on the f32 tiled kernel. Host ↔ device traffic per token: the token id, the
//! position, and the logits or (greedy, `Backend::argmax`) one id.
//!
//! The [`Backend`] trait's methods return nothing, so the first CUDA error is kept and
//! reported through [`Backend::take_error`]; later ops are skipped.

use std::sync::Arc;

use tinyrt_cuda::cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, SyncOnDrop};
use tinyrt_cuda::{
    AttentionShape, CudaDevice, CudaError, DeviceBuffer, GluActivation, RopeKvShape, RopeMode,
    WeightType,
};

use super::{AttnParams, Backend, BufId, RopeParams, WeightId, WeightTable};
use crate::config::RopeStyle;
use crate::kernels::cpu::ops::RopeCache;
use crate::kernels::quant::{self, GgmlType};
use crate::kv_cache::{KvCacheSpec, KvType};

/// Errors preparing weights for the GPU.
#[derive(Debug, thiserror::Error)]
pub enum CudaBackendError {
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error("tensor {name} has type {ty}, which the CUDA backend does not support")]
    UnsupportedType { name: String, ty: GgmlType },
}

/// How one registered tensor is stored on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadPlan {
    /// A 1-D tensor, dequantized to f32 on the host.
    Vector,
    /// A matrix in its GGUF layout; `planar`: also a Q4_0 planar copy for decode.
    Matrix { ty: WeightType, planar: bool },
}

/// Decide how a tensor of type `ty`, `rows × cols`, is uploaded (`None`: no CUDA kernel).
pub fn upload_plan(ty: GgmlType, rows: usize, cols: usize) -> Option<UploadPlan> {
    if rows == 1 {
        return quant::is_supported(ty).then_some(UploadPlan::Vector);
    }
    let wt = WeightType::from_ggml(ty)?;
    wt.row_bytes(cols)?;
    Some(UploadPlan::Matrix {
        ty: wt,
        planar: wt == WeightType::Q4_0,
    })
}

enum DeviceWeight {
    Vector(DeviceBuffer<f32>),
    Matrix {
        ty: WeightType,
        rows: usize,
        cols: usize,
        data: DeviceBuffer<u8>,
        planar: Option<DeviceBuffer<u8>>,
    },
}

/// A model's weights on one GPU; shared by every session.
pub struct CudaWeights {
    dev: Arc<CudaDevice>,
    table: Arc<WeightTable>,
    tensors: Vec<DeviceWeight>,
    /// Bytes of weights a decode step reads (all matrices but the embedding when untied).
    bytes: usize,
}

impl CudaWeights {
    /// Upload every registered tensor to `dev` and compile the kernels.
    pub fn new(
        dev: Arc<CudaDevice>,
        table: Arc<WeightTable>,
    ) -> Result<Arc<CudaWeights>, CudaBackendError> {
        let mut tensors = Vec::with_capacity(table.entries().len());
        let mut bytes = 0;
        for (i, e) in table.entries().iter().enumerate() {
            let data = table.data(WeightId(i as u32));
            let plan = upload_plan(e.ty, e.rows(), e.cols()).ok_or_else(|| {
                CudaBackendError::UnsupportedType {
                    name: e.name.clone(),
                    ty: e.ty,
                }
            })?;
            match plan {
                UploadPlan::Vector => {
                    let mut v = vec![0.0f32; e.cols()];
                    quant::dequantize(e.ty, data, &mut v).map_err(|_| {
                        CudaBackendError::UnsupportedType {
                            name: e.name.clone(),
                            ty: e.ty,
                        }
                    })?;
                    tensors.push(DeviceWeight::Vector(dev.upload(&v)?));
                }
                UploadPlan::Matrix { ty, planar } => {
                    let buf = dev.upload(data)?;
                    let planar = if planar {
                        let mut p = dev.alloc_zeros::<u8>(data.len())?;
                        dev.repack_q4_0_planar(&buf, &mut p, e.rows(), e.cols())?;
                        Some(p)
                    } else {
                        None
                    };
                    bytes += data.len();
                    tensors.push(DeviceWeight::Matrix {
                        ty,
                        rows: e.rows(),
                        cols: e.cols(),
                        data: buf,
                        planar,
                    });
                }
            }
        }
        dev.load_all()?;
        dev.synchronize()?;
        Ok(Arc::new(CudaWeights {
            dev,
            table,
            tensors,
            bytes,
        }))
    }

    /// Total bytes of the uploaded matrices (GGUF layout).
    pub fn matrix_bytes(&self) -> usize {
        self.bytes
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }
}

/// A range of device memory by address: lets one buffer be both input and output of a kernel
/// that allows it (norms, element-wise ops), and names sub-ranges (rows, columns).
struct Raw {
    ptr: u64,
    len: usize,
    stream: Arc<CudaStream>,
}

impl<T> DeviceSlice<T> for Raw {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

impl<T> DevicePtr<T> for Raw {
    fn device_ptr<'b>(&'b self, _stream: &'b CudaStream) -> (u64, SyncOnDrop<'b>) {
        // One stream orders every launch (event tracking is off in CudaDevice).
        (self.ptr, SyncOnDrop::Sync(None))
    }
}

impl<T> DevicePtrMut<T> for Raw {
    fn device_ptr_mut<'b>(&'b mut self, _stream: &'b CudaStream) -> (u64, SyncOnDrop<'b>) {
        (self.ptr, SyncOnDrop::Sync(None))
    }
}

fn addr<T, S: DevicePtr<T>>(dev: &CudaDevice, s: &S) -> u64 {
    s.device_ptr(dev.stream()).0
}

/// All of `b` by address.
fn raw_of<T, S: DevicePtr<T>>(dev: &CudaDevice, b: &S) -> Raw {
    Raw {
        ptr: addr(dev, b),
        len: b.len(),
        stream: Arc::clone(dev.stream()),
    }
}

struct Buf {
    rows: usize,
    cols: usize,
    data: DeviceBuffer<f32>,
}

struct LayerKv<T> {
    k: DeviceBuffer<T>,
    v: DeviceBuffer<T>,
}

/// The KV cache of every layer, in the element type the session asked for.
enum KvCache {
    F16(Vec<LayerKv<u16>>),
    F32(Vec<LayerKv<f32>>),
}

impl KvCache {
    fn len(&self) -> usize {
        match self {
            KvCache::F16(v) => v.len(),
            KvCache::F32(v) => v.len(),
        }
    }
}

/// A RoPE cos/sin table on the device, built on the host by the CPU backend's `RopeCache`
/// (so frequency factors, linear scaling and the angles match the CPU value for value).
struct RopeTable {
    params: RopeParams,
    n_pos: usize,
    data: DeviceBuffer<f32>,
}

/// One recorded operation of a decode step: buffer and weight handles and shapes, never a
/// position or a token id (those live in device memory), so the same step replays as a graph.
#[derive(Clone, Debug, PartialEq)]
enum Op {
    Embed {
        table: WeightId,
        out: BufId,
        n: usize,
    },
    RmsNorm {
        x: BufId,
        w: WeightId,
        eps: f32,
        out: BufId,
        n: usize,
    },
    LayerNorm {
        x: BufId,
        w: WeightId,
        b: Option<WeightId>,
        eps: f32,
        out: BufId,
        n: usize,
    },
    HeadRmsNorm {
        x: BufId,
        w: WeightId,
        eps: f32,
        head_dim: usize,
        n: usize,
    },
    Matmul {
        x: BufId,
        outs: Vec<(WeightId, BufId)>,
        n: usize,
    },
    AddBias {
        x: BufId,
        b: WeightId,
        n: usize,
    },
    Add {
        dst: BufId,
        src: BufId,
        n: usize,
    },
    Scale {
        x: BufId,
        s: f32,
        n: usize,
    },
    Rope {
        x: BufId,
        n_heads: usize,
        head_dim: usize,
        n: usize,
        /// Index into the backend's RoPE tables.
        table: usize,
    },
    Attention {
        layer: usize,
        q: BufId,
        k: BufId,
        v: BufId,
        n: usize,
        p: AttnParams,
        out: BufId,
        /// An upper bound of `pos0 + n`, rounded up to a whole KV split so that consecutive
        /// decode steps record the same operation.
        max_kv_len: usize,
    },
    Glu {
        gate: BufId,
        up: BufId,
        n: usize,
        act: GluActivation,
    },
    Gelu {
        x: BufId,
        n: usize,
    },
    CopyCols {
        src: BufId,
        src_col: usize,
        dst: BufId,
        dst_col: usize,
        width: usize,
        n: usize,
    },
    CopyRow {
        src: BufId,
        src_row: usize,
        dst: BufId,
        dst_row: usize,
    },
    Argmax {
        buf: BufId,
        row: usize,
        cols: usize,
    },
}

impl Op {
    /// Rows the op processes (`CopyRow` and `Argmax`: one).
    fn n(&self) -> usize {
        match *self {
            Op::Embed { n, .. }
            | Op::RmsNorm { n, .. }
            | Op::LayerNorm { n, .. }
            | Op::HeadRmsNorm { n, .. }
            | Op::Matmul { n, .. }
            | Op::AddBias { n, .. }
            | Op::Add { n, .. }
            | Op::Scale { n, .. }
            | Op::Rope { n, .. }
            | Op::Attention { n, .. }
            | Op::Glu { n, .. }
            | Op::Gelu { n, .. }
            | Op::CopyCols { n, .. } => n,
            Op::CopyRow { .. } | Op::Argmax { .. } => 1,
        }
    }
}

/// How one recorded op (or a run of them) is executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exec {
    /// The op by itself; a matmul quantizes its input first unless `q8_ready`.
    Plain { op: usize, q8_ready: bool },
    /// RMSNorm writing the f32 row and its Q8_1 copy (`rms_norm_f32_q8_1`) for the matmul after it.
    NormQ8 { op: usize },
    /// A gate/up matmul and the GLU after it as one `matvec_glu_*` launch (`up` is not written).
    Glu {
        matmul: usize,
        glu: usize,
        q8_ready: bool,
    },
    /// A single-product matmul and the residual add after it as one matrix-vector launch that
    /// accumulates into the residual (the product's own output buffer is not written: the
    /// planner checks that the step overwrites it before reading it).
    MatmulAdd {
        matmul: usize,
        add: usize,
        q8_ready: bool,
    },
    /// RoPE of Q, RoPE of K and the attention's KV-cache write as one `rope_kv_store_*`
    /// launch, then the attention (the f32 K rows stay unrotated; only the cache is read).
    RopeKvAttention {
        rope_q: usize,
        rope_k: usize,
        attn: usize,
        /// The attention also writes its output as Q8_1 for the matmul after it.
        q8_out: bool,
    },
    /// An attention (KV store included) whose output is also written as Q8_1 for the matmul
    /// after it (`attention_q8_1`: the combine pass quantizes).
    AttentionQ8 { op: usize },
}

/// What the planner needs to know about the weights.
trait FusionInfo {
    /// The input width of a matmul's products when all of them take a Q8_1 input, else `None`.
    fn q8_cols(&self, outs: &[(WeightId, BufId)]) -> Option<usize>;
    /// Whether a gate/up pair has a fused `matvec_glu_*` kernel (same quantized type and shape).
    fn glu_pair(&self, gate: WeightId, up: WeightId) -> bool;
    /// Columns of a buffer.
    fn buf_cols(&self, b: BufId) -> usize;
    /// Rows of a weight matrix (`None`: a vector).
    fn matrix_rows(&self, w: WeightId) -> Option<usize>;
}

/// Whether `op` reads or writes buffer `b`.
fn touches(op: &Op, b: BufId) -> bool {
    match op {
        Op::Embed { out, .. } => *out == b,
        Op::RmsNorm { x, out, .. } | Op::LayerNorm { x, out, .. } => *x == b || *out == b,
        Op::HeadRmsNorm { x, .. }
        | Op::AddBias { x, .. }
        | Op::Scale { x, .. }
        | Op::Rope { x, .. }
        | Op::Gelu { x, .. } => *x == b,
        Op::Matmul { x, outs, .. } => *x == b || outs.iter().any(|(_, o)| *o == b),
        Op::Add { dst, src, .. } => *dst == b || *src == b,
        Op::Attention { q, k, v, out, .. } => [*q, *k, *v, *out].contains(&b),
        Op::Glu { gate, up, .. } => *gate == b || *up == b,
        Op::CopyCols { src, dst, .. } | Op::CopyRow { src, dst, .. } => *src == b || *dst == b,
        Op::Argmax { buf, .. } => *buf == b,
    }
}

/// Whether the first of `ops` that touches `b` overwrites it without reading it (a matmul
/// output), so that skipping an earlier write of `b` cannot be observed.
fn overwritten_before_read(ops: &[Op], b: BufId) -> bool {
    match ops.iter().find(|op| touches(op, b)) {
        Some(Op::Matmul { x, outs, .. }) => *x != b && outs.iter().any(|(_, o)| *o == b),
        _ => false,
    }
}

/// Plans the execution of recorded single-token ops, fusing where the kernels allow:
/// RMSNorm + Q8_1 quantization (when the next op is a matmul of the normalised rows), gate/up
/// matmul + SwiGLU/GeGLU, and RoPE(Q) + RoPE(K) + KV-cache write before attention.
fn plan(ops: &[Op], info: &dyn FusionInfo, fuse: bool) -> Vec<Exec> {
    let mut plan = Vec::with_capacity(ops.len());
    let mut q8_of: Option<BufId> = None;
    // The output of the attention at `at` when the op after it is a matmul that can take it
    // as Q8_1 written by the attention's combine pass (whole 32-blocks per head).
    let attn_q8 = |at: usize| -> Option<BufId> {
        let Some(Op::Attention { out, n: 1, p, .. }) = ops.get(at) else {
            return None;
        };
        let width = info.buf_cols(*out);
        let feeds = matches!(ops.get(at + 1), Some(Op::Matmul { x, outs, n: 1 })
            if x == out && info.q8_cols(outs) == Some(width));
        (fuse
            && feeds
            && width == p.n_head * p.head_dim_v
            && p.head_dim_v.is_multiple_of(32)
            && width.is_multiple_of(32))
        .then_some(*out)
    };
    let mut i = 0;
    while i < ops.len() {
        let next = ops.get(i + 1);
        let ready = |x: BufId, q8_of: Option<BufId>| fuse && q8_of == Some(x);
        match &ops[i] {
            Op::RmsNorm { out, n: 1, .. } if fuse => {
                let feeds_matmul = matches!(next, Some(Op::Matmul { x, outs, n: 1 })
                    if x == out && info.q8_cols(outs) == Some(info.buf_cols(*out)));
                if feeds_matmul && info.buf_cols(*out).is_multiple_of(32) {
                    plan.push(Exec::NormQ8 { op: i });
                    q8_of = Some(*out);
                } else {
                    plan.push(Exec::Plain {
                        op: i,
                        q8_ready: false,
                    });
                    q8_of = None;
                }
                i += 1;
            }
            Op::Matmul { x, outs, n: 1 } => {
                let q8_ready = ready(*x, q8_of);
                let glu = matches!(
                    (outs.as_slice(), next),
                    ([(wg, g), (wu, u)], Some(Op::Glu { gate, up, n: 1, .. }))
                        if fuse && g == gate && u == up && info.glu_pair(*wg, *wu)
                );
                let residual = matches!(
                    (outs.as_slice(), next),
                    ([(w, o)], Some(Op::Add { dst, src, n: 1 }))
                        if fuse
                            && src == o
                            && dst != x
                            && dst != o
                            && info.matrix_rows(*w) == Some(info.buf_cols(*dst))
                            && info.buf_cols(*dst) == info.buf_cols(*o)
                            && overwritten_before_read(&ops[i + 2..], *o)
                );
                if glu {
                    plan.push(Exec::Glu {
                        matmul: i,
                        glu: i + 1,
                        q8_ready,
                    });
                    i += 2;
                } else if residual {
                    plan.push(Exec::MatmulAdd {
                        matmul: i,
                        add: i + 1,
                        q8_ready,
                    });
                    i += 2;
                } else {
                    plan.push(Exec::Plain { op: i, q8_ready });
                    i += 1;
                }
                // The matmul left its whole input row quantized in the Q8_1 buffer (when its
                // products read all of it).
                q8_of = (info.q8_cols(outs) == Some(info.buf_cols(*x))).then_some(*x);
            }
            Op::Rope {
                x: xq,
                n_heads: hq,
                head_dim: dq,
                n: 1,
                table: tq,
            } if fuse => {
                let fused = match (next, ops.get(i + 2)) {
                    (
                        Some(Op::Rope {
                            x: xk,
                            n_heads: hk,
                            head_dim: dk,
                            n: 1,
                            table: tk,
                        }),
                        Some(Op::Attention { q, k, n: 1, p, .. }),
                    ) => {
                        q == xq
                            && k == xk
                            && tq == tk
                            && dq == dk
                            && *dq == p.head_dim_k
                            && p.head_dim_k == p.head_dim_v
                            && *hq == p.n_head
                            && *hk == p.n_head_kv
                    }
                    _ => false,
                };
                if fused {
                    let q8_out = attn_q8(i + 2);
                    plan.push(Exec::RopeKvAttention {
                        rope_q: i,
                        rope_k: i + 1,
                        attn: i + 2,
                        q8_out: q8_out.is_some(),
                    });
                    q8_of = q8_out;
                    i += 3;
                } else {
                    plan.push(Exec::Plain {
                        op: i,
                        q8_ready: false,
                    });
                    q8_of = None;
                    i += 1;
                }
            }
            Op::Attention { .. } if attn_q8(i).is_some() => {
                plan.push(Exec::AttentionQ8 { op: i });
                q8_of = attn_q8(i);
                i += 1;
            }
            _ => {
                plan.push(Exec::Plain {
                    op: i,
                    q8_ready: false,
                });
                q8_of = None;
                i += 1;
            }
        }
    }
    plan
}

/// The captured graph of the last decode step and the ops it was recorded from.
struct CachedGraph {
    ops: Vec<Op>,
    /// `CudaBackend::alloc_gen` at capture: a reallocated buffer invalidates the graph.
    alloc_gen: u64,
    graph: tinyrt_cuda::DeviceGraph,
}

/// Whether an environment switch is off (`0`, `off`, `false`, `no`).
fn env_off(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.as_str(), "0" | "off" | "false" | "no"))
}

/// One session's GPU state.
pub struct CudaBackend {
    w: Arc<CudaWeights>,
    bufs: Vec<Buf>,
    kv: Option<KvCache>,
    kv_spec: Option<KvCacheSpec>,
    /// The current matmul input quantized to Q8_1 (one row in decode, all rows in prefill).
    q8: Option<DeviceBuffer<u8>>,
    /// Token ids of the current pass.
    ids: Option<DeviceBuffer<i32>>,
    /// Positions `pos0..pos0+n` of the current pass, and which ones they are.
    pos: Option<DeviceBuffer<i32>>,
    pos_written: Option<(usize, usize)>,
    attn_scratch: Option<DeviceBuffer<f32>>,
    argmax_out: Option<DeviceBuffer<i32>>,
    rope_tables: Vec<RopeTable>,
    /// Bumped whenever a buffer that recorded ops point into is (re)allocated.
    alloc_gen: u64,
    /// Single-token ops recorded since the last sync point, run (fused, as a graph) at the next.
    ops: Vec<Op>,
    /// Whether `ops` holds an `Embed` (its ids are in `ids` already).
    ops_embed: bool,
    graph: Option<CachedGraph>,
    graphs: bool,
    fuse: bool,
    /// Batched products on the int8 tensor cores where the type allows (else f32 tiles).
    mmq: bool,
    error: Option<String>,
}

/// Grow `slot` to at least `len` values (contents not kept); `true` when it reallocated.
fn ensure<
    T: tinyrt_cuda::cudarc::driver::DeviceRepr + tinyrt_cuda::cudarc::driver::ValidAsZeroBits,
>(
    dev: &CudaDevice,
    slot: &mut Option<DeviceBuffer<T>>,
    len: usize,
) -> Result<bool, CudaError> {
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = Some(dev.alloc_zeros(len.max(1))?);
        return Ok(true);
    }
    Ok(false)
}

struct Planner<'a>(&'a CudaBackend);

impl FusionInfo for Planner<'_> {
    fn q8_cols(&self, outs: &[(WeightId, BufId)]) -> Option<usize> {
        let mut cols = None;
        for &(w, _) in outs {
            match &self.0.w.tensors[w.0 as usize] {
                DeviceWeight::Matrix { ty, cols: c, .. } if ty.is_quantized() => {
                    if cols.is_some_and(|x| x != *c) {
                        return None;
                    }
                    cols = Some(*c);
                }
                _ => return None,
            }
        }
        cols
    }
    fn glu_pair(&self, gate: WeightId, up: WeightId) -> bool {
        match (
            &self.0.w.tensors[gate.0 as usize],
            &self.0.w.tensors[up.0 as usize],
        ) {
            (
                DeviceWeight::Matrix {
                    ty: tg,
                    rows: rg,
                    cols: cg,
                    ..
                },
                DeviceWeight::Matrix {
                    ty: tu,
                    rows: ru,
                    cols: cu,
                    ..
                },
            ) => tg == tu && rg == ru && cg == cu && tinyrt_cuda::Kernel::matvec_glu(*tg).is_some(),
            _ => false,
        }
    }
    fn buf_cols(&self, b: BufId) -> usize {
        self.0.cols(b)
    }
    fn matrix_rows(&self, w: WeightId) -> Option<usize> {
        match &self.0.w.tensors[w.0 as usize] {
            DeviceWeight::Matrix { rows, .. } => Some(*rows),
            DeviceWeight::Vector(_) => None,
        }
    }
}

impl CudaBackend {
    pub fn new(w: Arc<CudaWeights>) -> CudaBackend {
        CudaBackend {
            w,
            bufs: Vec::new(),
            kv: None,
            kv_spec: None,
            q8: None,
            ids: None,
            pos: None,
            pos_written: None,
            attn_scratch: None,
            argmax_out: None,
            rope_tables: Vec::new(),
            alloc_gen: 0,
            ops: Vec::new(),
            ops_embed: false,
            graph: None,
            // TINYRT_CUDA_GRAPH=0 / TINYRT_CUDA_FUSE=0: plain launches, for comparisons.
            graphs: !env_off("TINYRT_CUDA_GRAPH"),
            fuse: !env_off("TINYRT_CUDA_FUSE"),
            mmq: !env_off("TINYRT_CUDA_MMQ"),
            error: None,
        }
    }

    fn dev(&self) -> &CudaDevice {
        &self.w.dev
    }

    /// Record or run `op` unless an error is pending; keep the first error.
    ///
    /// Single-token ops are recorded and run at the next sync point (`read`, `argmax`, or an
    /// op over more rows), fused and, for a whole decode step, as one CUDA graph. Everything
    /// that needs the host (token ids, positions, buffer sizes, RoPE tables) is done here, at
    /// record time, so the recorded launches never allocate or copy from the host.
    fn submit(&mut self, op: Op, pos0: usize) {
        if self.error.is_some() {
            return;
        }
        let r = (|| {
            let single = op.n() == 1;
            // A second embed or another position range cannot share the device-side ids and
            // positions with the ops already recorded: run those first.
            let clash = matches!(op, Op::Embed { .. }) && self.ops_embed
                || matches!(op, Op::Rope { .. } | Op::Attention { .. })
                    && self.pos_written.is_some_and(|p| p != (pos0, op.n()))
                    && self
                        .ops
                        .iter()
                        .any(|o| matches!(o, Op::Rope { .. } | Op::Attention { .. }));
            if !single || clash {
                self.flush()?;
            }
            self.prepare(&op, pos0)?;
            if single {
                self.ops_embed |= matches!(op, Op::Embed { .. });
                self.ops.push(op);
                Ok(())
            } else {
                self.exec(
                    std::slice::from_ref(&op),
                    Exec::Plain {
                        op: 0,
                        q8_ready: false,
                    },
                )
            }
        })();
        if let Err(e) = r {
            self.error = Some(e);
        }
    }

    /// Run the recorded ops: replay the cached graph when they are the same step, else plan,
    /// fuse and (for a whole decode step) capture a new graph; plain launches when capture fails.
    fn flush(&mut self) -> Result<(), String> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.ops);
        let whole_step = self.ops_embed;
        self.ops_embed = false;
        if let Some(g) = &self.graph {
            if g.ops == ops && g.alloc_gen == self.alloc_gen {
                return g.graph.replay().map_err(|e| e.to_string());
            }
        }
        let steps = plan(&ops, &Planner(self), self.fuse);
        if self.graphs && whole_step {
            self.graph = None;
            let dev = Arc::clone(&self.w.dev);
            let captured = dev.capture(|_| {
                steps
                    .iter()
                    .try_for_each(|&s| self.exec(&ops, s))
                    .map_err(CudaError::Driver)
            });
            match captured {
                Ok(graph) => {
                    graph.replay().map_err(|e| e.to_string())?;
                    self.graph = Some(CachedGraph {
                        ops,
                        alloc_gen: self.alloc_gen,
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
        steps.iter().try_for_each(|&s| self.exec(&ops, s))
    }

    /// `len` floats of buffer `id` from float offset `off`.
    fn view(&self, id: BufId, off: usize, len: usize) -> Result<Raw, String> {
        let b = &self.bufs[id.0 as usize];
        if off + len > b.data.len() {
            return Err(format!(
                "buffer of {}x{} accessed at {off}+{len}",
                b.rows, b.cols
            ));
        }
        Ok(Raw {
            ptr: addr(self.dev(), &b.data) + (off * 4) as u64,
            len,
            stream: Arc::clone(self.dev().stream()),
        })
    }

    /// Rows `0..n` of `id`.
    fn rows(&self, id: BufId, n: usize) -> Result<Raw, String> {
        self.view(id, 0, n * self.bufs[id.0 as usize].cols)
    }

    fn cols(&self, id: BufId) -> usize {
        self.bufs[id.0 as usize].cols
    }

    fn vector(&self, id: WeightId) -> Result<&DeviceBuffer<f32>, String> {
        match &self.w.tensors[id.0 as usize] {
            DeviceWeight::Vector(v) => Ok(v),
            DeviceWeight::Matrix { .. } => {
                Err(format!("{} used as a vector", self.w.table.entry(id).name))
            }
        }
    }

    fn grow<
        T: tinyrt_cuda::cudarc::driver::DeviceRepr + tinyrt_cuda::cudarc::driver::ValidAsZeroBits,
    >(
        dev: &CudaDevice,
        slot: &mut Option<DeviceBuffer<T>>,
        len: usize,
        alloc_gen: &mut u64,
    ) -> Result<(), String> {
        if ensure(dev, slot, len).map_err(|e| e.to_string())? {
            *alloc_gen += 1;
        }
        Ok(())
    }

    /// Write positions `pos0..pos0+n` to the device unless they are there already.
    fn positions(&mut self, pos0: usize, n: usize) -> Result<(), String> {
        if self.pos_written == Some((pos0, n)) {
            return Ok(());
        }
        let host: Vec<i32> = (pos0..pos0 + n)
            .map(|p| i32::try_from(p).map_err(|_| format!("position {p} too large")))
            .collect::<Result<_, _>>()?;
        let dev = Arc::clone(&self.w.dev);
        Self::grow(&dev, &mut self.pos, n, &mut self.alloc_gen)?;
        let pos = self.pos.as_mut().ok_or("no position buffer")?;
        dev.write(&host, pos).map_err(|e| e.to_string())?;
        self.pos_written = Some((pos0, n));
        Ok(())
    }

    /// The index of the device RoPE table for `p` holding at least `n_pos` positions.
    fn rope_table(&mut self, p: &RopeParams, n_pos: usize) -> Result<usize, String> {
        let n_pos = n_pos.max(self.kv_spec.map_or(1, |s| s.n_ctx));
        if let Some(i) = self.rope_tables.iter().position(|t| t.params == *p) {
            if self.rope_tables[i].n_pos >= n_pos {
                return Ok(i);
            }
        }
        let factors = match p.freq_factors {
            Some(id) => {
                let e = self.w.table.entry(id);
                let mut v = vec![0.0f32; e.cols()];
                quant::dequantize(e.ty, self.w.table.data(id), &mut v)
                    .map_err(|err| format!("{}: {err}", e.name))?;
                Some(v)
            }
            None => None,
        };
        let cfg = p.kernel_cfg(factors.as_deref());
        let cache = RopeCache::new(&cfg, n_pos).map_err(|e| e.to_string())?;
        let mut host = Vec::with_capacity(n_pos * p.n_rot);
        for pos in 0..n_pos {
            host.extend_from_slice(cache.row(pos));
        }
        let data = self.dev().upload(&host).map_err(|e| e.to_string())?;
        self.alloc_gen += 1;
        let t = RopeTable {
            params: *p,
            n_pos,
            data,
        };
        match self.rope_tables.iter().position(|t| t.params == *p) {
            Some(i) => {
                self.rope_tables[i] = t;
                Ok(i)
            }
            None => {
                self.rope_tables.push(t);
                Ok(self.rope_tables.len() - 1)
            }
        }
    }

    /// The host-side part of an op, done when it is recorded: checks, buffer sizes, ids and
    /// positions written to the device.
    fn prepare(&mut self, op: &Op, pos0: usize) -> Result<(), String> {
        let dev = Arc::clone(&self.w.dev);
        match op {
            Op::Matmul { outs, n, .. } => {
                let mut need = 0;
                for &(wid, _) in outs {
                    if let DeviceWeight::Matrix { ty, cols, .. } = &self.w.tensors[wid.0 as usize] {
                        if *n == 1 && ty.is_quantized() || *n > 1 && self.uses_mmq(*ty, *cols) {
                            need = need.max(n * cols / 32 * tinyrt_cuda::Q8_1_BLOCK_BYTES);
                        }
                    }
                }
                Self::grow(&dev, &mut self.q8, need, &mut self.alloc_gen)?;
            }
            Op::RmsNorm { out, n: 1, .. } => {
                let need = self.cols(*out) / 32 * tinyrt_cuda::Q8_1_BLOCK_BYTES;
                Self::grow(&dev, &mut self.q8, need, &mut self.alloc_gen)?;
            }
            Op::Rope { n, .. } => self.positions(pos0, *n)?,
            Op::Attention {
                n,
                p,
                q,
                out,
                max_kv_len,
                ..
            } => {
                self.positions(pos0, *n)?;
                let shape = self.attention_shape(*q, *out, *n, p, *max_kv_len)?;
                Self::grow(
                    &dev,
                    &mut self.attn_scratch,
                    shape.scratch_len(),
                    &mut self.alloc_gen,
                )?;
            }
            Op::Argmax { .. } => Self::grow(&dev, &mut self.argmax_out, 1, &mut self.alloc_gen)?,
            _ => {}
        }
        Ok(())
    }

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

    /// Whether a batched product of a `ty` matrix of `cols` columns runs on the int8 tensor
    /// cores over Q8_1 activations (`matmul_q8_1_mma`; compute capability 8.0 or newer).
    fn uses_mmq(&self, ty: WeightType, cols: usize) -> bool {
        self.mmq
            && self.w.dev.supports_mma()
            && cols.is_multiple_of(32)
            && tinyrt_cuda::Kernel::matmul_mmq(ty).is_some()
    }

    fn attention_shape(
        &self,
        q: BufId,
        out: BufId,
        n: usize,
        p: &AttnParams,
        max_kv_len: usize,
    ) -> Result<AttentionShape, String> {
        let spec = self
            .kv_spec
            .ok_or("attention before the KV cache was allocated")?;
        if p.head_dim_k != p.head_dim_v {
            return Err(format!(
                "the CUDA attention kernel needs equal K and V head sizes ({} != {})",
                p.head_dim_k, p.head_dim_v
            ));
        }
        Ok(AttentionShape {
            ntok: n,
            n_head: p.n_head,
            n_kv: p.n_head_kv,
            head_dim: p.head_dim_k,
            n_ctx: spec.n_ctx,
            q_stride: self.cols(q),
            out_stride: self.cols(out),
            max_kv_len,
            chunk: ATTENTION_CHUNK,
            window: p.window,
        })
    }

    fn pos_raw(&self) -> Result<Raw, String> {
        let pos = self.pos.as_ref().ok_or("no position buffer")?;
        Ok(raw_of(self.dev(), pos))
    }

    fn q8_raw(&self) -> Result<Raw, String> {
        let q8 = self.q8.as_ref().ok_or("no Q8_1 buffer")?;
        Ok(raw_of(self.dev(), q8))
    }

    /// Run one planned step of `ops` (launches only: no allocation, no host copies).
    fn exec(&self, ops: &[Op], step: Exec) -> Result<(), String> {
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

/// Positions per attention split (flash-decoding); recorded decode steps round their KV length
/// up to a multiple of it, so one graph serves this many consecutive tokens.
const ATTENTION_CHUNK: usize = 256;

fn rope_mode(style: RopeStyle) -> RopeMode {
    match style {
        RopeStyle::Normal => RopeMode::Normal,
        RopeStyle::Neox => RopeMode::Neox,
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        format!("cuda-{}", self.dev().name())
    }

    fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }

    fn alloc(&mut self, rows: usize, cols: usize) -> BufId {
        let data = match self.dev().alloc_zeros::<f32>((rows * cols).max(1)) {
            Ok(d) => d,
            Err(e) => {
                self.error.get_or_insert(e.to_string());
                // A one-float buffer keeps the id valid; every use of it fails its size check.
                match self.dev().alloc_zeros::<f32>(1) {
                    Ok(d) => d,
                    Err(e) => panic!("CUDA allocation of one float failed: {e}"),
                }
            }
        };
        self.bufs.push(Buf { rows, cols, data });
        BufId((self.bufs.len() - 1) as u32)
    }

    fn alloc_kv_cache(&mut self, spec: &KvCacheSpec) {
        if self.error.is_some() {
            return;
        }
        let r = (|| {
            self.flush()?;
            if spec.k_width != spec.v_width {
                return Err("the CUDA backend needs equal K and V widths".to_string());
            }
            let dev = Arc::clone(&self.w.dev);
            let e = |e: CudaError| e.to_string();
            let (len_k, len_v) = (spec.n_ctx * spec.k_width, spec.n_ctx * spec.v_width);
            self.kv = None;
            let kv = match spec.ty {
                KvType::F16 => KvCache::F16(
                    (0..spec.n_layer)
                        .map(|_| {
                            Ok(LayerKv {
                                k: dev.alloc_zeros::<u16>(len_k).map_err(e)?,
                                v: dev.alloc_zeros::<u16>(len_v).map_err(e)?,
                            })
                        })
                        .collect::<Result<_, String>>()?,
                ),
                KvType::F32 => KvCache::F32(
                    (0..spec.n_layer)
                        .map(|_| {
                            Ok(LayerKv {
                                k: dev.alloc_zeros::<f32>(len_k).map_err(e)?,
                                v: dev.alloc_zeros::<f32>(len_v).map_err(e)?,
                            })
                        })
                        .collect::<Result<_, String>>()?,
                ),
            };
            debug_assert_eq!(kv.len(), spec.n_layer);
            self.kv = Some(kv);
            self.kv_spec = Some(*spec);
            self.alloc_gen += 1;
            Ok(())
        })();
        if let Err(e) = r {
            self.error = Some(e);
        }
    }

    fn embed(&mut self, table: WeightId, tokens: &[u32], out: BufId) {
        if self.error.is_some() {
            return;
        }
        // The ids go to the device now (before any recorded op that could read them runs).
        if self.ops_embed || tokens.len() != 1 {
            if let Err(e) = self.flush() {
                self.error = Some(e);
                return;
            }
        }
        let r = (|| {
            let ids: Vec<i32> = tokens
                .iter()
                .map(|&t| i32::try_from(t).map_err(|_| format!("token id {t} too large")))
                .collect::<Result<_, _>>()?;
            let dev = Arc::clone(&self.w.dev);
            Self::grow(&dev, &mut self.ids, ids.len(), &mut self.alloc_gen)?;
            let idb = self.ids.as_mut().ok_or("no id buffer")?;
            dev.write(&ids, idb).map_err(|e| e.to_string())
        })();
        if let Err(e) = r {
            self.error = Some(e);
            return;
        }
        self.submit(
            Op::Embed {
                table,
                out,
                n: tokens.len(),
            },
            0,
        );
    }

    fn rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, out: BufId, n: usize) {
        self.submit(Op::RmsNorm { x, w, eps, out, n }, 0);
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
        self.submit(
            Op::LayerNorm {
                x,
                w,
                b,
                eps,
                out,
                n,
            },
            0,
        );
    }

    fn head_rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, head_dim: usize, n: usize) {
        self.submit(
            Op::HeadRmsNorm {
                x,
                w,
                eps,
                head_dim,
                n,
            },
            0,
        );
    }

    fn matmul(&mut self, x: BufId, outs: &[(WeightId, BufId)], n: usize) {
        if n == 0 {
            return;
        }
        self.submit(
            Op::Matmul {
                x,
                outs: outs.to_vec(),
                n,
            },
            0,
        );
    }

    fn add_bias(&mut self, x: BufId, b: WeightId, n: usize) {
        self.submit(Op::AddBias { x, b, n }, 0);
    }

    fn add(&mut self, dst: BufId, src: BufId, n: usize) {
        self.submit(Op::Add { dst, src, n }, 0);
    }

    fn scale(&mut self, x: BufId, s: f32, n: usize) {
        self.submit(Op::Scale { x, s, n }, 0);
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
        if self.error.is_some() {
            return;
        }
        match self.rope_table(p, pos0 + n) {
            Ok(table) => self.submit(
                Op::Rope {
                    x,
                    n_heads,
                    head_dim,
                    n,
                    table,
                },
                pos0,
            ),
            Err(e) => self.error = Some(e),
        }
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
        let n_ctx = self.kv_spec.map_or(pos0 + n, |s| s.n_ctx);
        let max_kv_len = (pos0 + n)
            .next_multiple_of(ATTENTION_CHUNK)
            .min(n_ctx.max(1));
        self.submit(
            Op::Attention {
                layer,
                q,
                k,
                v,
                n,
                p: *p,
                out,
                max_kv_len,
            },
            pos0,
        );
    }

    fn swiglu(&mut self, gate: BufId, up: BufId, n: usize) {
        self.submit(
            Op::Glu {
                gate,
                up,
                n,
                act: GluActivation::Silu,
            },
            0,
        );
    }

    fn geglu(&mut self, gate: BufId, up: BufId, n: usize) {
        self.submit(
            Op::Glu {
                gate,
                up,
                n,
                act: GluActivation::GeluTanh,
            },
            0,
        );
    }

    fn gelu(&mut self, x: BufId, n: usize) {
        self.submit(Op::Gelu { x, n }, 0);
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
        self.submit(
            Op::CopyCols {
                src,
                src_col,
                dst,
                dst_col,
                width,
                n,
            },
            0,
        );
    }

    fn copy_row(&mut self, src: BufId, src_row: usize, dst: BufId, dst_row: usize) {
        self.submit(
            Op::CopyRow {
                src,
                src_row,
                dst,
                dst_row,
            },
            0,
        );
    }

    fn read(&mut self, buf: BufId, row0: usize, out: &mut [f32]) {
        if self.error.is_none() {
            if let Err(e) = self.flush() {
                self.error = Some(e);
            }
        }
        if self.error.is_some() {
            out.fill(f32::NAN);
            return;
        }
        let r = (|| {
            let v = self.view(buf, row0 * self.cols(buf), out.len())?;
            let host: Vec<f32> = self.dev().download(&v).map_err(|e| e.to_string())?;
            out.copy_from_slice(&host);
            Ok::<(), String>(())
        })();
        if let Err(e) = r {
            out.fill(f32::NAN);
            self.error = Some(e);
        }
    }

    fn argmax(&mut self, buf: BufId, row: usize, cols: usize) -> u32 {
        self.submit(Op::Argmax { buf, row, cols }, 0);
        if self.error.is_none() {
            if let Err(e) = self.flush() {
                self.error = Some(e);
            }
        }
        if self.error.is_some() {
            return 0;
        }
        let r = (|| {
            let out = self.argmax_out.as_ref().ok_or("no argmax buffer")?;
            let host = self.dev().download(out).map_err(|e| e.to_string())?;
            Ok::<u32, String>(host.first().map_or(0, |&i| u32::try_from(i).unwrap_or(0)))
        })();
        match r {
            // The kernel reports `cols` when no value is larger than -inf (all NaN or -inf):
            // token 0, like the host argmax.
            Ok(id) if (id as usize) < cols => id,
            Ok(_) => 0,
            Err(e) => {
                self.error = Some(e);
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_uploaded_as_f32_and_q4_0_matrices_also_planar() {
        assert_eq!(upload_plan(GgmlType::F32, 1, 576), Some(UploadPlan::Vector));
        assert_eq!(
            upload_plan(GgmlType::Q4_0, 576, 576),
            Some(UploadPlan::Matrix {
                ty: WeightType::Q4_0,
                planar: true
            })
        );
        assert_eq!(
            upload_plan(GgmlType::Q6_K, 49152, 576),
            None,
            "576 columns are not a whole number of Q6_K super-blocks"
        );
        assert_eq!(
            upload_plan(GgmlType::Q8_0, 1536, 576),
            Some(UploadPlan::Matrix {
                ty: WeightType::Q8_0,
                planar: false
            })
        );
    }

    /// Weights 0..10 are quantized with 64 columns (10..: F16); pairs of quantized weights fuse.
    struct Mock;

    impl FusionInfo for Mock {
        fn q8_cols(&self, outs: &[(WeightId, BufId)]) -> Option<usize> {
            outs.iter().all(|(w, _)| w.0 < 10).then_some(64)
        }
        fn glu_pair(&self, gate: WeightId, up: WeightId) -> bool {
            gate.0 < 10 && up.0 < 10
        }
        fn buf_cols(&self, _b: BufId) -> usize {
            64
        }
        fn matrix_rows(&self, _w: WeightId) -> Option<usize> {
            Some(64)
        }
    }

    const X: BufId = BufId(0);
    const XN: BufId = BufId(1);
    const OUT: BufId = BufId(2);
    const Q: BufId = BufId(3);
    const K: BufId = BufId(4);
    const V: BufId = BufId(5);
    const ATT: BufId = BufId(6);
    const GATE: BufId = BufId(7);
    const UP: BufId = BufId(8);
    const XO: BufId = BufId(9);
    const LOGITS: BufId = BufId(10);

    /// 2 query heads of 32 on 1 KV head: 64 columns, like every buffer of the mock.
    fn attn_params() -> AttnParams {
        AttnParams {
            n_head: 2,
            n_head_kv: 1,
            head_dim_k: 32,
            head_dim_v: 32,
            scale: 0.25,
            window: None,
        }
    }

    fn rope(x: BufId, n_heads: usize) -> Op {
        Op::Rope {
            x,
            n_heads,
            head_dim: 32,
            n: 1,
            table: 0,
        }
    }

    fn norm(x: BufId, out: BufId) -> Op {
        Op::RmsNorm {
            x,
            w: WeightId(20),
            eps: 1e-5,
            out,
            n: 1,
        }
    }

    fn matmul(x: BufId, outs: &[(u32, BufId)]) -> Op {
        Op::Matmul {
            x,
            outs: outs.iter().map(|&(w, b)| (WeightId(w), b)).collect(),
            n: 1,
        }
    }

    /// One llama decode step as the architecture issues it.
    fn llama_step(glu_weights: (u32, u32)) -> Vec<Op> {
        vec![
            Op::Embed {
                table: WeightId(30),
                out: X,
                n: 1,
            },
            norm(X, XN),
            matmul(XN, &[(0, Q), (1, K), (2, V)]),
            rope(Q, 2),
            rope(K, 1),
            Op::Attention {
                layer: 0,
                q: Q,
                k: K,
                v: V,
                n: 1,
                p: attn_params(),
                out: ATT,
                max_kv_len: 256,
            },
            matmul(ATT, &[(3, OUT)]),
            Op::Add {
                dst: X,
                src: OUT,
                n: 1,
            },
            norm(X, XN),
            matmul(XN, &[(glu_weights.0, GATE), (glu_weights.1, UP)]),
            Op::Glu {
                gate: GATE,
                up: UP,
                n: 1,
                act: GluActivation::Silu,
            },
            matmul(GATE, &[(6, OUT)]),
            Op::Add {
                dst: X,
                src: OUT,
                n: 1,
            },
            Op::CopyRow {
                src: X,
                src_row: 0,
                dst: XO,
                dst_row: 0,
            },
            norm(XO, XO),
            matmul(XO, &[(7, LOGITS)]),
            Op::Argmax {
                buf: LOGITS,
                row: 0,
                cols: 64,
            },
        ]
    }

    fn plain(op: usize, q8_ready: bool) -> Exec {
        Exec::Plain { op, q8_ready }
    }

    #[test]
    fn a_decode_step_fuses_norm_quantize_glu_and_rope_kv_write() {
        let ops = llama_step((4, 5));
        let want = vec![
            plain(0, false),
            Exec::NormQ8 { op: 1 },
            plain(2, true),
            // The attention's combine pass also quantizes its output for the wo matmul.
            Exec::RopeKvAttention {
                rope_q: 3,
                rope_k: 4,
                attn: 5,
                q8_out: true,
            },
            // The next write of OUT is the FFN's down projection: the residual add fuses.
            Exec::MatmulAdd {
                matmul: 6,
                add: 7,
                q8_ready: true,
            },
            Exec::NormQ8 { op: 8 },
            Exec::Glu {
                matmul: 9,
                glu: 10,
                q8_ready: true,
            },
            // Nothing after the last layer's down projection overwrites OUT: no fusion.
            plain(11, false),
            plain(12, false),
            plain(13, false),
            Exec::NormQ8 { op: 14 },
            plain(15, true),
            plain(16, false),
        ];
        assert_eq!(plan(&ops, &Mock, true), want);
    }

    #[test]
    fn without_fusion_every_op_runs_by_itself() {
        let ops = llama_step((4, 5));
        let want: Vec<Exec> = (0..ops.len()).map(|i| plain(i, false)).collect();
        assert_eq!(plan(&ops, &Mock, false), want);
    }

    #[test]
    fn ops_between_the_fusable_ones_keep_them_apart() {
        // F16 gate/up weights: no fused GLU kernel, and the norm cannot feed a Q8_1 input.
        let ops = llama_step((11, 12));
        let p = plan(&ops, &Mock, true);
        // (plan[4] is the fused wo + residual add of ops 6 and 7.)
        assert_eq!(p[5], plain(8, false));
        assert_eq!(p[6], plain(9, false));
        assert_eq!(p[7], plain(10, false));
        // Phi-2 scales Q between RoPE and attention: the ropes run by themselves.
        let ops = vec![
            rope(Q, 2),
            rope(K, 1),
            Op::Scale { x: Q, s: 0.5, n: 1 },
            Op::Attention {
                layer: 0,
                q: Q,
                k: K,
                v: V,
                n: 1,
                p: attn_params(),
                out: ATT,
                max_kv_len: 256,
            },
        ];
        let want: Vec<Exec> = (0..4).map(|i| plain(i, false)).collect();
        assert_eq!(plan(&ops, &Mock, true), want);
        // A residual add whose addend is read before it is overwritten (Gemma-3's post-norm
        // reads OUT) does not fuse.
        let add = Op::Add {
            dst: X,
            src: OUT,
            n: 1,
        };
        let ops = vec![
            matmul(ATT, &[(3, OUT)]),
            add.clone(),
            norm(OUT, OUT),
            matmul(GATE, &[(6, OUT)]),
        ];
        assert_eq!(
            plan(&ops, &Mock, true)[..2],
            [plain(0, false), plain(1, false)]
        );
        let ops = vec![matmul(ATT, &[(3, OUT)]), add, matmul(GATE, &[(6, OUT)])];
        assert_eq!(
            plan(&ops, &Mock, true)[0],
            Exec::MatmulAdd {
                matmul: 0,
                add: 1,
                q8_ready: false
            }
        );
        // An attention whose output feeds a quantized matmul quantizes it in its combine pass.
        let ops = vec![
            Op::Attention {
                layer: 0,
                q: Q,
                k: K,
                v: V,
                n: 1,
                p: attn_params(),
                out: ATT,
                max_kv_len: 256,
            },
            matmul(ATT, &[(3, OUT)]),
        ];
        assert_eq!(
            plan(&ops, &Mock, true),
            vec![Exec::AttentionQ8 { op: 0 }, plain(1, true)]
        );
        // A norm whose output is not the next matmul's input is not quantized.
        let ops = vec![norm(X, XN), matmul(X, &[(0, Q)])];
        assert_eq!(
            plan(&ops, &Mock, true),
            vec![plain(0, false), plain(1, false)]
        );
    }

    #[test]
    fn types_without_a_cuda_kernel_are_rejected() {
        assert_eq!(upload_plan(GgmlType::Q5_1, 64, 64), None);
        assert_eq!(upload_plan(GgmlType::Q2_K, 64, 256), None);
    }
}
