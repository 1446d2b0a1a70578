//! The CUDA backend over `tinyrt-cuda`'s kernels.
//!
//! At load, every weight matrix is uploaded once in its GGUF layout (Q4_0 matrices also in
//! the planar layout the decode kernel reads with 128-bit loads); 1-D tensors (norm weights,
//! biases) are dequantized to f32 and uploaded. Per session: activation buffers, the f16 KV
//! cache, the Q8_1 activation buffer and the attention scratch live on the device; every op
//! is a kernel launch on one stream. Host ↔ device traffic per forward pass: the token ids,
//! the positions (written once per pass, read by RoPE, the KV store and attention from
//! device memory), and `read` of the logits.
//!
//! The [`Backend`] trait's methods return nothing, so the first CUDA error is kept and
//! reported through [`Backend::take_error`]; later ops are skipped.

use std::sync::Arc;

use tinyrt_cuda::cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, SyncOnDrop};
use tinyrt_cuda::{AttentionShape, CudaDevice, CudaError, DeviceBuffer, RopeMode, WeightType};

use super::{AttnParams, Backend, BufId, RopeParams, WeightId, WeightTable};
use crate::config::RopeStyle;
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

struct Buf {
    rows: usize,
    cols: usize,
    data: DeviceBuffer<f32>,
}

struct LayerKv {
    k: DeviceBuffer<u16>,
    v: DeviceBuffer<u16>,
}

/// One session's GPU state.
pub struct CudaBackend {
    w: Arc<CudaWeights>,
    bufs: Vec<Buf>,
    kv: Vec<LayerKv>,
    kv_spec: Option<KvCacheSpec>,
    /// The current matmul input quantized to Q8_1.
    q8: Option<DeviceBuffer<u8>>,
    /// Token ids of the current pass.
    ids: Option<DeviceBuffer<i32>>,
    /// Positions `pos0..pos0+n` of the current pass, and which ones they are.
    pos: Option<DeviceBuffer<i32>>,
    pos_written: Option<(usize, usize)>,
    attn_scratch: Option<DeviceBuffer<f32>>,
    error: Option<String>,
}

/// Grow `slot` to at least `len` values (contents not kept).
fn ensure<
    T: tinyrt_cuda::cudarc::driver::DeviceRepr + tinyrt_cuda::cudarc::driver::ValidAsZeroBits,
>(
    dev: &CudaDevice,
    slot: &mut Option<DeviceBuffer<T>>,
    len: usize,
) -> Result<(), CudaError> {
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = Some(dev.alloc_zeros(len.max(1))?);
    }
    Ok(())
}

impl CudaBackend {
    pub fn new(w: Arc<CudaWeights>) -> CudaBackend {
        CudaBackend {
            w,
            bufs: Vec::new(),
            kv: Vec::new(),
            kv_spec: None,
            q8: None,
            ids: None,
            pos: None,
            pos_written: None,
            attn_scratch: None,
            error: None,
        }
    }

    fn dev(&self) -> &CudaDevice {
        &self.w.dev
    }

    /// Run `f` unless an error is pending; keep its error.
    fn guard(&mut self, f: impl FnOnce(&mut Self) -> Result<(), String>) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = f(self) {
            self.error = Some(e);
        }
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

    /// Write positions `pos0..pos0+n` to the device unless they are there already.
    fn positions(&mut self, pos0: usize, n: usize) -> Result<(), String> {
        if self.pos_written == Some((pos0, n)) {
            return Ok(());
        }
        let host: Vec<i32> = (pos0..pos0 + n)
            .map(|p| i32::try_from(p).map_err(|_| format!("position {p} too large")))
            .collect::<Result<_, _>>()?;
        let dev = Arc::clone(&self.w.dev);
        ensure(&dev, &mut self.pos, n).map_err(|e| e.to_string())?;
        let pos = self.pos.as_mut().ok_or("no position buffer")?;
        dev.write(&host, pos).map_err(|e| e.to_string())?;
        self.pos_written = Some((pos0, n));
        Ok(())
    }

    fn matmul_impl(
        &mut self,
        x: BufId,
        outs: &[(WeightId, BufId)],
        n: usize,
    ) -> Result<(), String> {
        let w = Arc::clone(&self.w);
        let dev = &*w.dev;
        let err = |e: CudaError| e.to_string();
        let mut quantized_cols: Option<usize> = None;
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
                let mut y = self.view(out, 0, rows)?;
                if ty.is_quantized() {
                    if quantized_cols != Some(cols) {
                        // The same input is quantized once for every product that reads it.
                        let need = cols / 32 * tinyrt_cuda::Q8_1_BLOCK_BYTES;
                        let mut q8 = self.q8.take();
                        let r = ensure(dev, &mut q8, need).and_then(|_| {
                            dev.quantize_q8_1(&xv, q8.as_mut().expect("allocated"), cols)
                        });
                        self.q8 = q8;
                        r.map_err(err)?;
                        quantized_cols = Some(cols);
                    }
                    let q8 = self.q8.as_ref().ok_or("no Q8_1 buffer")?;
                    match planar {
                        Some(p) => dev.matvec_q4_0_planar(p, q8, &mut y, false, rows, cols),
                        None => dev.matvec_q8_1(ty, data, q8, &mut y, false, rows, cols),
                    }
                    .map_err(err)?;
                } else {
                    dev.matvec_f32_input(ty, data, &xv, &mut y, false, rows, cols)
                        .map_err(err)?;
                }
            } else {
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
                dev.matmul(ty, data, &xv, &mut y, rows, cols, n)
                    .map_err(err)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_impl(
        &mut self,
        layer: usize,
        q: BufId,
        k: BufId,
        v: BufId,
        pos0: usize,
        n: usize,
        p: &AttnParams,
        out: BufId,
    ) -> Result<(), String> {
        let spec = self
            .kv_spec
            .ok_or("attention before the KV cache was allocated")?;
        if p.head_dim_k != p.head_dim_v {
            return Err(format!(
                "the CUDA attention kernel needs equal K and V head sizes ({} != {})",
                p.head_dim_k, p.head_dim_v
            ));
        }
        if layer >= self.kv.len() {
            return Err(format!("layer {layer} has no KV cache"));
        }
        self.positions(pos0, n)?;
        let w = Arc::clone(&self.w);
        let dev = &*w.dev;
        let row = spec.k_width;
        let shape = AttentionShape {
            ntok: n,
            n_head: p.n_head,
            n_kv: p.n_head_kv,
            head_dim: p.head_dim_k,
            n_ctx: spec.n_ctx,
            q_stride: self.cols(q),
            out_stride: self.cols(out),
            max_kv_len: pos0 + n,
            chunk: 256,
            window: p.window,
        };
        let mut scratch = self.attn_scratch.take();
        ensure(dev, &mut scratch, shape.scratch_len()).map_err(|e| e.to_string())?;
        self.attn_scratch = scratch;
        let pos = self.pos.as_ref().ok_or("no position buffer")?;
        let kn = self.rows(k, n)?;
        let vn = self.rows(v, n)?;
        let kk = self.cols(k);
        let LayerKv { k: kc, v: vc } = &mut self.kv[layer];
        dev.kv_store_f16(&kn, &vn, kc, vc, pos, n, kk, row, spec.n_ctx)
            .map_err(|e| e.to_string())?;
        let (kc, vc) = (&self.kv[layer].k, &self.kv[layer].v);
        let qv = self.rows(q, n)?;
        let mut ov = self.rows(out, n)?;
        let scratch = self.attn_scratch.as_ref().ok_or("no attention scratch")?;
        let mut sv = Raw {
            ptr: addr(dev, scratch),
            len: scratch.len(),
            stream: Arc::clone(dev.stream()),
        };
        dev.attention(&qv, kc, vc, pos, &mut ov, &mut sv, shape, p.scale)
            .map_err(|e| e.to_string())
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
        self.guard(|s| {
            if spec.ty != KvType::F16 {
                return Err(format!(
                    "the CUDA backend keeps the KV cache in f16 (asked for {})",
                    spec.ty.name()
                ));
            }
            if spec.k_width != spec.v_width {
                return Err("the CUDA backend needs equal K and V widths".into());
            }
            let dev = Arc::clone(&s.w.dev);
            s.kv.clear();
            for _ in 0..spec.n_layer {
                let k = dev.alloc_zeros::<u16>(spec.n_ctx * spec.k_width);
                let v = dev.alloc_zeros::<u16>(spec.n_ctx * spec.v_width);
                s.kv.push(LayerKv {
                    k: k.map_err(|e| e.to_string())?,
                    v: v.map_err(|e| e.to_string())?,
                });
            }
            s.kv_spec = Some(*spec);
            Ok(())
        });
    }

    fn embed(&mut self, table: WeightId, tokens: &[u32], out: BufId) {
        self.guard(|s| {
            let w = Arc::clone(&s.w);
            let dev = &*w.dev;
            let DeviceWeight::Matrix {
                ty,
                rows,
                cols,
                data,
                ..
            } = &w.tensors[table.0 as usize]
            else {
                return Err("embedding table is a vector".into());
            };
            let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
            let mut idb = s.ids.take();
            let r = ensure(dev, &mut idb, ids.len())
                .and_then(|_| dev.write(&ids, idb.as_mut().expect("allocated")));
            s.ids = idb;
            r.map_err(|e| e.to_string())?;
            let idb = s.ids.as_ref().ok_or("no id buffer")?;
            let mut o = s.view(out, 0, tokens.len() * cols)?;
            dev.get_rows(*ty, data, idb, &mut o, tokens.len(), *rows, *cols)
                .map_err(|e| e.to_string())
        });
    }

    fn rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, out: BufId, n: usize) {
        self.guard(|s| {
            let cols = s.cols(x);
            let (xv, mut ov, g) = (s.rows(x, n)?, s.rows(out, n)?, s.vector(w)?);
            s.dev()
                .rms_norm(&xv, g, &mut ov, n, cols, eps)
                .map_err(|e| e.to_string())
        });
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
        self.guard(|s| {
            let cols = s.cols(x);
            let (xv, mut ov, g) = (s.rows(x, n)?, s.rows(out, n)?, s.vector(w)?);
            let bias = match b {
                Some(b) => Some(s.vector(b)?),
                None => None,
            };
            s.dev()
                .layer_norm(
                    &xv,
                    g,
                    bias.map(|b| b as &dyn tinyrt_cuda::DevicePtrF32),
                    &mut ov,
                    n,
                    cols,
                    eps,
                )
                .map_err(|e| e.to_string())
        });
    }

    fn head_rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, head_dim: usize, n: usize) {
        self.guard(|s| {
            let cols = s.cols(x);
            if head_dim == 0 || !cols.is_multiple_of(head_dim) {
                return Err(format!("head size {head_dim} does not divide {cols}"));
            }
            let (xv, mut ov, g) = (s.rows(x, n)?, s.rows(x, n)?, s.vector(w)?);
            s.dev()
                .rms_norm(&xv, g, &mut ov, n * cols / head_dim, head_dim, eps)
                .map_err(|e| e.to_string())
        });
    }

    fn matmul(&mut self, x: BufId, outs: &[(WeightId, BufId)], n: usize) {
        if n == 0 {
            return;
        }
        self.guard(|s| s.matmul_impl(x, outs, n));
    }

    fn add_bias(&mut self, x: BufId, b: WeightId, n: usize) {
        self.guard(|s| {
            let cols = s.cols(x);
            let (xv, mut ov, bv) = (s.rows(x, n)?, s.rows(x, n)?, s.vector(b)?);
            s.dev()
                .add_rows(&xv, bv, &mut ov, n, cols)
                .map_err(|e| e.to_string())
        });
    }

    fn add(&mut self, dst: BufId, src: BufId, n: usize) {
        self.guard(|s| {
            let len = n * s.cols(dst);
            let (a, b, mut o) = (
                s.view(dst, 0, len)?,
                s.view(src, 0, len)?,
                s.view(dst, 0, len)?,
            );
            s.dev().add(&a, &b, &mut o, len).map_err(|e| e.to_string())
        });
    }

    fn scale(&mut self, x: BufId, f: f32, n: usize) {
        self.guard(|s| {
            let len = n * s.cols(x);
            let (a, mut o) = (s.view(x, 0, len)?, s.view(x, 0, len)?);
            s.dev().scale(&a, &mut o, f, len).map_err(|e| e.to_string())
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
        self.guard(|s| {
            if p.freq_factors.is_some() {
                return Err("the CUDA RoPE kernel has no frequency factors (rope_freqs)".into());
            }
            s.positions(pos0, n)?;
            let stride = s.cols(x);
            let mut xv = s.rows(x, n)?;
            let pos = s.pos.as_ref().ok_or("no position buffer")?;
            let mode = match p.style {
                RopeStyle::Normal => RopeMode::Normal,
                RopeStyle::Neox => RopeMode::Neox,
            };
            s.dev()
                .rope(
                    &mut xv,
                    pos,
                    n,
                    stride,
                    n_heads,
                    head_dim,
                    p.n_rot,
                    mode,
                    p.freq_base,
                    p.freq_scale,
                )
                .map_err(|e| e.to_string())
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
        self.guard(|s| s.attention_impl(layer, q, k, v, pos0, n, p, out));
    }

    fn swiglu(&mut self, gate: BufId, up: BufId, n: usize) {
        self.guard(|s| {
            let len = n * s.cols(gate);
            let (g, u, mut o) = (
                s.view(gate, 0, len)?,
                s.view(up, 0, len)?,
                s.view(gate, 0, len)?,
            );
            s.dev()
                .swiglu(&g, &u, &mut o, len)
                .map_err(|e| e.to_string())
        });
    }

    fn geglu(&mut self, gate: BufId, up: BufId, n: usize) {
        self.guard(|s| {
            let len = n * s.cols(gate);
            let (g, u, mut o) = (
                s.view(gate, 0, len)?,
                s.view(up, 0, len)?,
                s.view(gate, 0, len)?,
            );
            s.dev()
                .geglu(&g, &u, &mut o, len)
                .map_err(|e| e.to_string())
        });
    }

    fn gelu(&mut self, x: BufId, n: usize) {
        self.guard(|s| {
            let len = n * s.cols(x);
            let (a, mut o) = (s.view(x, 0, len)?, s.view(x, 0, len)?);
            s.dev().gelu(&a, &mut o, len).map_err(|e| e.to_string())
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
        self.guard(|s| {
            let (sc, dc) = (s.cols(src), s.cols(dst));
            if src_col + width > sc || dst_col + width > dc {
                return Err(format!(
                    "copy of columns {src_col}+{width} of {sc} into {dst_col} of {dc}"
                ));
            }
            for t in 0..n {
                let a = s.view(src, t * sc + src_col, width)?;
                let mut b = s.view(dst, t * dc + dst_col, width)?;
                s.dev()
                    .copy::<f32, _, _>(&a, &mut b)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
    }

    fn copy_row(&mut self, src: BufId, src_row: usize, dst: BufId, dst_row: usize) {
        self.guard(|s| {
            let c = s.cols(src);
            let a = s.view(src, src_row * c, c)?;
            let mut b = s.view(dst, dst_row * s.cols(dst), c)?;
            s.dev()
                .copy::<f32, _, _>(&a, &mut b)
                .map_err(|e| e.to_string())
        });
    }

    fn read(&mut self, buf: BufId, row0: usize, out: &mut [f32]) {
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

    #[test]
    fn types_without_a_cuda_kernel_are_rejected() {
        assert_eq!(upload_plan(GgmlType::Q5_1, 64, 64), None);
        assert_eq!(upload_plan(GgmlType::Q2_K, 64, 256), None);
    }
}
