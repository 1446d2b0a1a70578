//! One session's device state: activation buffers, the KV cache, the Q8_1 and attention
//! scratch, token ids and positions, RoPE tables, and the host-side preparation of each op.

use std::sync::Arc;

use tinyrt_cuda::cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, SyncOnDrop};
use tinyrt_cuda::{AttentionShape, CudaDevice, CudaError, DeviceBuffer, WeightType};

use super::lora::DeviceLora;
use super::plan::{FusionInfo, Op};
use super::weights::{CudaWeights, DeviceWeight};
use crate::backend::{AttnParams, BufId, LoraTerm, RopeParams, WeightId};
use crate::kernels::cpu::ops::RopeCache;
use crate::kernels::quant;
use crate::kv_cache::{KvCacheSpec, KvType};

/// Positions per attention split (flash-decoding); recorded decode steps round their KV length
/// up to a multiple of it, so one graph serves this many consecutive tokens.
pub(super) const ATTENTION_CHUNK: usize = 256;

/// A range of device memory by address: lets one buffer be both input and output of a kernel
/// that allows it (norms, element-wise ops), and names sub-ranges (rows, columns).
pub(super) struct Raw {
    pub(super) ptr: u64,
    pub(super) len: usize,
    pub(super) stream: Arc<CudaStream>,
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

pub(super) fn addr<T, S: DevicePtr<T>>(dev: &CudaDevice, s: &S) -> u64 {
    s.device_ptr(dev.stream()).0
}

/// All of `b` by address.
pub(super) fn raw_of<T, S: DevicePtr<T>>(dev: &CudaDevice, b: &S) -> Raw {
    Raw {
        ptr: addr(dev, b),
        len: b.len(),
        stream: Arc::clone(dev.stream()),
    }
}

pub(super) struct Buf {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) data: DeviceBuffer<f32>,
}

pub(super) struct LayerKv<T> {
    pub(super) k: DeviceBuffer<T>,
    pub(super) v: DeviceBuffer<T>,
}

/// The KV cache of every layer, in the element type the session asked for.
pub(super) enum KvCache {
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
pub(super) struct RopeTable {
    pub(super) params: RopeParams,
    pub(super) n_pos: usize,
    pub(super) data: DeviceBuffer<f32>,
}

/// The device memory of one session and what the recorded ops need to launch.
pub(super) struct DeviceState {
    pub(super) w: Arc<CudaWeights>,
    pub(super) bufs: Vec<Buf>,
    pub(super) kv: Option<KvCache>,
    pub(super) kv_spec: Option<KvCacheSpec>,
    /// The current matmul input quantized to Q8_1 (one row in decode, all rows in prefill).
    pub(super) q8: Option<DeviceBuffer<u8>>,
    /// Token ids of the current pass.
    pub(super) ids: Option<DeviceBuffer<i32>>,
    /// Positions `pos0..pos0+n` of the current pass, and which ones they are.
    pub(super) pos: Option<DeviceBuffer<i32>>,
    pub(super) pos_written: Option<(usize, usize)>,
    /// Sequence boundaries of the packed encoder ops, and the host copy last written.
    pub(super) seqs: Option<DeviceBuffer<i32>>,
    pub(super) seqs_written: Vec<u32>,
    pub(super) attn_scratch: Option<DeviceBuffer<f32>>,
    pub(super) argmax_out: Option<DeviceBuffer<i32>>,
    pub(super) rope_tables: Vec<RopeTable>,
    /// The session's LoRA pairs on the device and its active terms.
    pub(super) lora: DeviceLora,
    /// `A·x` of the LoRA op being run (`n × rank`), shared by all of them (one stream).
    pub(super) lora_t: Option<DeviceBuffer<f32>>,
    /// Bumped whenever a buffer that recorded ops point into is (re)allocated.
    pub(super) alloc_gen: u64,
    pub(super) fuse: bool,
    /// Batched products on the int8 tensor cores where the type allows (else f32 tiles).
    pub(super) mmq: bool,
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

impl FusionInfo for DeviceState {
    fn q8_cols(&self, outs: &[(WeightId, BufId)]) -> Option<usize> {
        let mut cols = None;
        for &(w, _) in outs {
            match &self.w.tensors[w.0 as usize] {
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
            &self.w.tensors[gate.0 as usize],
            &self.w.tensors[up.0 as usize],
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
        self.cols(b)
    }
    fn matrix_rows(&self, w: WeightId) -> Option<usize> {
        match &self.w.tensors[w.0 as usize] {
            DeviceWeight::Matrix { rows, .. } => Some(*rows),
            DeviceWeight::Vector(_) => None,
        }
    }
}

impl DeviceState {
    pub(super) fn new(w: Arc<CudaWeights>, fuse: bool, mmq: bool) -> DeviceState {
        DeviceState {
            w,
            bufs: Vec::new(),
            kv: None,
            kv_spec: None,
            q8: None,
            ids: None,
            pos: None,
            pos_written: None,
            seqs: None,
            seqs_written: Vec::new(),
            attn_scratch: None,
            argmax_out: None,
            rope_tables: Vec::new(),
            lora: DeviceLora::default(),
            lora_t: None,
            alloc_gen: 0,
            fuse,
            mmq,
        }
    }

    pub(super) fn dev(&self) -> &CudaDevice {
        &self.w.dev
    }

    /// `len` floats of buffer `id` from float offset `off`.
    pub(super) fn view(&self, id: BufId, off: usize, len: usize) -> Result<Raw, String> {
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
    pub(super) fn rows(&self, id: BufId, n: usize) -> Result<Raw, String> {
        self.view(id, 0, n * self.bufs[id.0 as usize].cols)
    }

    pub(super) fn cols(&self, id: BufId) -> usize {
        self.bufs[id.0 as usize].cols
    }

    pub(super) fn vector(&self, id: WeightId) -> Result<&DeviceBuffer<f32>, String> {
        match &self.w.tensors[id.0 as usize] {
            DeviceWeight::Vector(v) => Ok(v),
            DeviceWeight::Matrix { .. } => {
                Err(format!("{} used as a vector", self.w.table.entry(id).name))
            }
        }
    }

    pub(super) fn grow<
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
    pub(super) fn positions(&mut self, pos0: usize, n: usize) -> Result<(), String> {
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

    /// Write the sequence boundaries of a packed op to the device unless they are there
    /// already; returns the number of sequences. The boundaries start at 0 and never decrease.
    pub(super) fn write_seqs(&mut self, seqs: &[u32]) -> Result<usize, String> {
        if seqs.first().is_some_and(|&s| s != 0) || seqs.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!(
                "packed sequence boundaries must start at 0 and not decrease: {seqs:?}"
            ));
        }
        let n_seq = seqs.len().saturating_sub(1);
        if self.seqs_written == seqs {
            return Ok(n_seq);
        }
        let host: Vec<i32> = seqs
            .iter()
            .map(|&s| i32::try_from(s).map_err(|_| format!("sequence boundary {s} too large")))
            .collect::<Result<_, _>>()?;
        let dev = Arc::clone(&self.w.dev);
        Self::grow(&dev, &mut self.seqs, host.len(), &mut self.alloc_gen)?;
        let buf = self.seqs.as_mut().ok_or("no sequence buffer")?;
        dev.write(&host, buf).map_err(|e| e.to_string())?;
        self.seqs_written = seqs.to_vec();
        Ok(n_seq)
    }

    pub(super) fn seqs_raw(&self) -> Result<Raw, String> {
        let seqs = self.seqs.as_ref().ok_or("no sequence buffer")?;
        Ok(raw_of(self.dev(), seqs))
    }

    /// The index of the device RoPE table for `p` holding at least `n_pos` positions.
    pub(super) fn rope_table(&mut self, p: &RopeParams, n_pos: usize) -> Result<usize, String> {
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
    pub(super) fn prepare(&mut self, op: &Op, pos0: usize) -> Result<(), String> {
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
            Op::Lora { n, slot, .. } => {
                let rank = self.lora.slots.get(*slot).ok_or("no such LoRA slot")?.rank;
                Self::grow(&dev, &mut self.lora_t, n * rank, &mut self.alloc_gen)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether a batched product of a `ty` matrix of `cols` columns runs on the int8 tensor
    /// cores over Q8_1 activations (`matmul_q8_1_mma`; compute capability 8.0 or newer).
    pub(super) fn uses_mmq(&self, ty: WeightType, cols: usize) -> bool {
        self.mmq
            && self.w.dev.supports_mma()
            && cols.is_multiple_of(32)
            && tinyrt_cuda::Kernel::matmul_mmq(ty).is_some()
    }

    pub(super) fn attention_shape(
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

    pub(super) fn pos_raw(&self) -> Result<Raw, String> {
        let pos = self.pos.as_ref().ok_or("no position buffer")?;
        Ok(raw_of(self.dev(), pos))
    }

    pub(super) fn q8_raw(&self) -> Result<Raw, String> {
        let q8 = self.q8.as_ref().ok_or("no Q8_1 buffer")?;
        Ok(raw_of(self.dev(), q8))
    }

    /// A KV cache of `spec` for every layer, replacing the old one.
    pub(super) fn alloc_kv(&mut self, spec: &KvCacheSpec) -> Result<(), String> {
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
    }

    /// Makes `terms` the session's LoRA set (`Backend::set_lora`; recorded ops must have run).
    /// The graph of the last step is not replayed after it (its ops name the old slots).
    pub(super) fn set_lora(&mut self, terms: &[LoraTerm]) -> Result<(), String> {
        self.alloc_gen += 1;
        let w = &self.w;
        self.lora.set(
            &w.dev,
            &w.tensors,
            |id| w.table.entry(id).name.clone(),
            terms,
        )
    }

    /// The token ids of the current pass to the device.
    pub(super) fn write_ids(&mut self, tokens: &[u32]) -> Result<(), String> {
        let ids: Vec<i32> = tokens
            .iter()
            .map(|&t| i32::try_from(t).map_err(|_| format!("token id {t} too large")))
            .collect::<Result<_, _>>()?;
        let dev = Arc::clone(&self.w.dev);
        Self::grow(&dev, &mut self.ids, ids.len(), &mut self.alloc_gen)?;
        let idb = self.ids.as_mut().ok_or("no id buffer")?;
        dev.write(&ids, idb).map_err(|e| e.to_string())
    }
}
