//! Compute backends.
//!
//! An architecture (`crate::arch`) describes its forward pass as calls to the [`Backend`]
//! trait on opaque handles: [`WeightId`] for weight tensors (registered once at load in a
//! [`WeightTable`], shared by every session) and [`BufId`] for activation buffers (allocated
//! once per session by the backend, on its own device). A backend owns its buffers and the KV
//! cache, so a CUDA backend plugs in without any change to the architecture files.
//!
//! Every activation buffer is a row-major matrix of f32: one row per token of the batch.
//! Operations take `n`, the number of rows (tokens) to process.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dump;
pub mod requant;
mod weights;

pub use weights::{WeightEntry, WeightError, WeightTable};

use crate::config::RopeStyle;
use crate::kernels::cpu::ops::{RopeCache, RopeCfg, RopeMode};
use crate::kv_cache::KvCacheSpec;

/// A weight tensor registered in a [`WeightTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightId(pub(crate) u32);

/// An activation buffer allocated by a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufId(pub(crate) u32);

/// One LoRA term of a session: `matmul` outputs for `weight` get `scale · B·(A·x)` added, with
/// `A`, `B` pair `pair` of `adapter`. In a multi-sequence batch ([`Backend::set_batch`]) a
/// term applies only to the rows of the sequences whose [`Segment::lora_set`] is its `set`;
/// otherwise to every row.
#[derive(Clone, Debug)]
pub struct LoraTerm {
    pub weight: WeightId,
    pub adapter: std::sync::Arc<crate::adapters::LoraAdapter>,
    pub pair: usize,
    pub scale: f32,
    pub set: u32,
}

/// Consecutive rows of a multi-sequence batch that belong to one sequence
/// ([`Backend::set_batch`]): `len` tokens of KV slot `seq` at positions `pos0..pos0 + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub seq: u32,
    pub pos0: u32,
    pub len: u32,
    /// The LoRA terms of these rows: those whose [`LoraTerm::set`] is this.
    pub lora_set: u32,
}

/// How [`Backend::pool`] reduces a sequence's rows to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// The mean of the rows (sequential f32 sums in row order, then one division).
    Mean,
    /// The first row (`[CLS]`).
    First,
    /// The last row.
    Last,
}

impl PoolKind {
    /// `dst` (`dst.len()` columns) = the pooling of `rows` (row-major, `dst.len()` values per
    /// row); zeros for no rows. The host backends' reduction, one for all.
    pub fn reduce(self, rows: &[f32], dst: &mut [f32]) {
        let e = dst.len();
        let n = rows.len() / e.max(1);
        match self {
            _ if n == 0 => dst.fill(0.0),
            PoolKind::First => dst.copy_from_slice(&rows[..e]),
            PoolKind::Last => dst.copy_from_slice(&rows[(n - 1) * e..n * e]),
            PoolKind::Mean => {
                dst.fill(0.0);
                for row in rows.chunks_exact(e) {
                    dst.iter_mut().zip(row).for_each(|(a, &b)| *a += b);
                }
                dst.iter_mut().for_each(|a| *a /= n as f32);
            }
        }
    }
}

/// Rotary position embedding of one Q or K buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    /// Rotated dimensions at the start of each head (the rest pass through).
    pub n_rot: usize,
    pub style: RopeStyle,
    pub freq_base: f32,
    /// Position multiplier (`1 / linear scaling factor`).
    pub freq_scale: f32,
    /// Per-frequency divisors (`rope_freqs.weight`, Llama-3), `n_rot / 2` values.
    pub freq_factors: Option<WeightId>,
    /// Multiplies cos and sin (llama.cpp's `attn_factor` of `ggml_rope_ext`); 1 unless the file
    /// sets `rope.scaling.attn_factor` or uses YaRN.
    pub attn_factor: f32,
    /// YaRN's ramp between interpolated and extrapolated frequencies; `None` without YaRN.
    pub yarn: Option<YarnParams>,
}

/// The YaRN settings of one RoPE (Peng et al., 2023, "YaRN: Efficient Context Window Extension
/// of Large Language Models"), as llama.cpp passes them to `ggml_rope_ext`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YarnParams {
    /// Mix of extrapolation in the ramp (llama.cpp: 1 for YaRN files).
    pub ext_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// The context the model was trained with before the extension
    /// (`rope.scaling.original_context_length`).
    pub n_ctx_orig: usize,
}

impl RopeParams {
    /// The kernels' form of these settings, with the frequency factors' values.
    pub fn kernel_cfg<'a>(&self, freq_factors: Option<&'a [f32]>) -> RopeCfg<'a> {
        let mut cfg = RopeCfg {
            mode: match self.style {
                RopeStyle::Normal => RopeMode::Normal,
                RopeStyle::Neox => RopeMode::Neox,
            },
            freq_scale: self.freq_scale,
            freq_factors,
            attn_factor: self.attn_factor,
            ..RopeCfg::new(RopeMode::Normal, self.n_rot, self.freq_base)
        };
        if let Some(y) = self.yarn {
            cfg.ext_factor = y.ext_factor;
            cfg.beta_fast = y.beta_fast;
            cfg.beta_slow = y.beta_slow;
            cfg.n_ctx_orig = y.n_ctx_orig;
        }
        cfg
    }

    /// Checks the settings the way every backend's RoPE tables will use them (an error here is
    /// bad input, reported when the architecture is loaded).
    pub fn validate(&self) -> Result<(), String> {
        // The frequency factors' length is checked by the weight table (`n_rot / 2` values).
        RopeCache::new(&self.kernel_cfg(None), 1)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Self-attention of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    /// Multiplier of Q·K (usually `1/sqrt(head_dim_k)`).
    pub scale: f32,
    /// Sliding window: a query at position p sees keys in `(p - window, p]`; `None` = all.
    pub window: Option<usize>,
    /// Causal (decoders). Not causal (encoders): every token of the call also sees the keys of
    /// the tokens after it in the call, so a sequence must come in one call.
    pub causal: bool,
}

/// The operations an architecture's forward pass is made of.
///
/// Buffers are `rows × cols` f32 matrices; every op processes rows `0..n`. Unless said
/// otherwise, `out` may not alias an input.
pub trait Backend: Send {
    /// A short name for logs (`cpu-avx512`, `cuda`).
    fn name(&self) -> String;

    /// A zeroed `rows × cols` activation buffer.
    fn alloc(&mut self, rows: usize, cols: usize) -> BufId;

    /// The LoRA terms every later `matmul` adds (replacing the previous set; empty: none).
    /// Backends without adapters report an error through [`Backend::take_error`] for a
    /// non-empty set.
    fn set_lora(&mut self, terms: &[LoraTerm]);

    /// Allocate the KV cache (once per session, before any `attention`).
    fn alloc_kv_cache(&mut self, spec: &KvCacheSpec);

    /// Allocate `n_seq` KV caches of `spec` (slots of a multi-sequence batch, see
    /// [`Backend::set_batch`]) instead of one. Backends without multi-sequence batches refuse.
    fn alloc_kv_slots(&mut self, _spec: &KvCacheSpec, _n_seq: usize) -> Result<(), String> {
        Err(format!(
            "{}: multi-sequence batches are not on this backend yet",
            self.name()
        ))
    }

    /// The layout of the following forward pass: its rows are `segs` back to back, each its
    /// own sequence (KV slot, positions, LoRA set). `rope` and `attention` then take positions
    /// and caches from the segments (their `pos0` is ignored, `n` is the total), and
    /// `attention` takes the batch-invariant path (`attention_invariant`: a row's result
    /// depends only on its own sequence). Empty: one sequence in slot 0 at `pos0..`, the
    /// default. Backends without multi-sequence batches refuse a non-empty layout.
    fn set_batch(&mut self, segs: &[Segment]) -> Result<(), String> {
        if segs.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{}: multi-sequence batches are not on this backend yet",
            self.name()
        ))
    }

    /// `out[t] = table[tokens[t]]` (dequantized rows of an embedding matrix).
    fn embed(&mut self, table: WeightId, tokens: &[u32], out: BufId);

    /// `out[t] = x[t] / rms(x[t]) * w` (in place when `out == x`).
    fn rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, out: BufId, n: usize);

    /// `out[t] = (x[t] - mean) / std * w + b` (in place when `out == x`).
    fn layer_norm(
        &mut self,
        x: BufId,
        w: WeightId,
        b: Option<WeightId>,
        eps: f32,
        out: BufId,
        n: usize,
    );

    /// RMSNorm of each `head_dim`-wide head of each row, in place, with a shared `head_dim` weight.
    fn head_rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, head_dim: usize, n: usize);

    /// For each `(w, out)`: `out[t] = W · x[t]` where `W` is `rows × cols(x)`. The input is
    /// prepared (e.g. quantized) once and shared by all the products.
    fn matmul(&mut self, x: BufId, outs: &[(WeightId, BufId)], n: usize);

    /// `x[t] += b`.
    fn add_bias(&mut self, x: BufId, b: WeightId, n: usize);

    /// `dst[t] += src[t]`.
    fn add(&mut self, dst: BufId, src: BufId, n: usize);

    /// `x[t] *= s`.
    fn scale(&mut self, x: BufId, s: f32, n: usize);

    /// Rotate the first `n_rot` dims of each of the `n_heads` heads of row t by position `pos0 + t`.
    fn rope(
        &mut self,
        x: BufId,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        n: usize,
        p: &RopeParams,
    );

    /// Store `k`, `v` rows at positions `pos0..pos0+n` of layer `layer`'s cache, then
    /// `out[t] = softmax(scale · q[t] · K[..=pos0+t]) · V` per head (GQA: query head h reads
    /// kv head `h / (n_head / n_head_kv)`).
    #[allow(clippy::too_many_arguments)]
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
    );

    /// Bidirectional attention of packed sequences, without a cache (encoders): rows
    /// `seqs[i]..seqs[i + 1]` of `q`, `k` and `v` are sequence `i` (`seqs[0] = 0`, the last
    /// entry is the row count), and each row attends every row of its own sequence:
    /// `out[t] = softmax(scale · q[t] · K[seq]) · V[seq]` per head (GQA as in
    /// [`Backend::attention`]). `p.causal` and `p.window` are ignored.
    fn attention_packed(
        &mut self,
        q: BufId,
        k: BufId,
        v: BufId,
        seqs: &[u32],
        p: &AttnParams,
        out: BufId,
    );

    /// `out[i]` = the pooling of rows `seqs[i]..seqs[i + 1]` of `x` (same boundaries as
    /// [`Backend::attention_packed`]): their mean, the first row or the last.
    fn pool(&mut self, x: BufId, seqs: &[u32], kind: PoolKind, out: BufId);

    /// `gate[t] = silu(gate[t]) * up[t]`.
    fn swiglu(&mut self, gate: BufId, up: BufId, n: usize);

    /// `x = gelu_erf(x)`, the exact GELU (BERT). Backends without it report an error through
    /// [`Backend::take_error`].
    fn gelu_erf(&mut self, x: BufId, n: usize);

    /// `gate[t] = gelu_tanh(gate[t]) * up[t]`.
    fn geglu(&mut self, gate: BufId, up: BufId, n: usize);

    /// `x[t] = gelu_tanh(x[t])`.
    fn gelu(&mut self, x: BufId, n: usize);

    /// Copy columns `src_col..src_col+width` of rows `0..n` into `dst` at `dst_col`.
    fn copy_cols(
        &mut self,
        src: BufId,
        src_col: usize,
        dst: BufId,
        dst_col: usize,
        width: usize,
        n: usize,
    );

    /// Copy one row.
    fn copy_row(&mut self, src: BufId, src_row: usize, dst: BufId, dst_row: usize);

    /// Read rows `row0..row0+out.len()/cols` into `out`.
    fn read(&mut self, buf: BufId, row0: usize, out: &mut [f32]);

    /// Index of the largest of the `cols` values of row `row` of `buf` (ties: the lowest
    /// index; 0 when none is larger than -inf): greedy decoding. A device backend computes it
    /// where the logits are, so only the id comes back.
    fn argmax(&mut self, buf: BufId, row: usize, cols: usize) -> u32 {
        let mut v = vec![0.0f32; cols];
        self.read(buf, row, &mut v);
        crate::sampler::argmax(&v)
    }

    /// Overwrite rows `row0..row0+data.len()/cols` of `buf` with `data` (debugging: the
    /// op-by-op comparison of `dump.rs`). Returns false where the backend does not support it.
    fn write(&mut self, _buf: BufId, _row0: usize, _data: &[f32]) -> bool {
        false
    }

    /// The first error since the last call (a device backend's ops cannot return one).
    fn take_error(&mut self) -> Option<String> {
        None
    }
}
