//! Transformer ops on the CPU: norms, RoPE, softmax, activations, element-wise arithmetic,
//! f16 row conversion and causal GQA attention over a KV cache.
//!
//! # Dispatch
//! Every function takes the [`Isa`] first (usually `Isa::default_for_process()`, chosen once by
//! the caller) and runs that ISA's implementation from `cpu/{scalar,avx2,avx512}/ops.rs`. An ISA
//! this CPU lacks is never executed: it is clamped to [`Isa::detect`], so every call is sound.
//!
//! # Shapes
//! Shapes are the caller's contract (they come from checked model hyperparameters, not from a
//! user): a mismatch is a bug and panics with a message. Values from a file that a constructor
//! checks (RoPE settings) give an [`OpsError`].
//!
//! # Numerics
//! The ops follow ggml's CPU backend (llama.cpp build 11434), which made the goldens; see the
//! scalar reference `cpu/scalar/ops.rs` for each op's exact recipe. The ops a model runs give
//! the same bits on every ISA (`tests/ggml_bits.rs`): GELU/GeGLU, SiLU/SwiGLU, the norms, RoPE
//! and the per-key attention path (every decode step) are computed with the very operations
//! of ggml's AVX-512 build, and match ggml's own outputs bit for bit on data written by
//! `tests/data/ops-ggml/gen_ops_ggml.c`. This matters because ggml rounds to f16 and to 8 bits
//! between ops: a last-bit difference can flip such a rounding and grow into tenths of a logit.
//! The tiled attention path (batches of 64+ tokens) and the softmax sum in other orders than
//! the scalar reference (within a few ulp; `tests/ops.rs`).

use std::ops::Range;

use thiserror::Error;

use crate::cpu::scalar::ops as scalar;
use crate::cpu::Isa;

#[cfg(target_arch = "x86_64")]
use crate::cpu::{avx2::ops as avx2, avx512::ops as avx512};

/// Invalid settings for an op (from a model file).
#[derive(Debug, Error, PartialEq)]
pub enum OpsError {
    #[error("rope: rotary dimension count {0} must be even and non-zero")]
    RopeDims(usize),
    #[error("rope: {got} frequency factors given, {need} needed (n_rot / 2)")]
    RopeFreqFactors { got: usize, need: usize },
    #[error("rope: invalid {name} = {value}")]
    RopeParam { name: &'static str, value: f32 },
}

/// The ISA that actually runs: `isa` when this CPU has it, else the best it has.
#[inline]
fn effective(isa: Isa) -> Isa {
    if isa == Isa::Scalar || isa.is_supported() {
        isa
    } else {
        Isa::detect()
    }
}

/// Runs `$scalar`, `$avx2` or `$avx512` for the effective ISA. The SIMD arms are `unsafe`
/// target-feature functions; `effective` has checked that the CPU supports them.
macro_rules! dispatch {
    ($isa:expr, $name:ident ( $($arg:expr),* )) => {{
        match effective($isa) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `effective` returns Avx512 only when `Isa::Avx512.is_supported()`.
            Isa::Avx512 => unsafe { avx512::$name($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `effective` returns Avx2 only when `Isa::Avx2.is_supported()`.
            Isa::Avx2 => unsafe { avx2::$name($($arg),*) },
            _ => scalar::$name($($arg),*),
        }
    }};
}

// ---------------------------------------------------------------------------------------------
// Norms

/// RMSNorm of each row of `x` (rows of `weight.len()` values), times `weight`, into `out`.
/// ggml: `ggml_mul(ggml_rms_norm(x, eps), weight)`.
pub fn rms_norm(isa: Isa, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "rms_norm: out length");
    out.copy_from_slice(x);
    rms_norm_inplace(isa, out, weight, eps)
}

/// [`rms_norm`] in place. Also the per-head Q/K norm of qwen3 / gemma3 (`weight` of one head).
pub fn rms_norm_inplace(isa: Isa, x: &mut [f32], weight: &[f32], eps: f32) {
    check_rows("rms_norm", x.len(), weight.len());
    dispatch!(isa, rms_norm_inplace(x, weight, eps))
}

/// LayerNorm of each row of `x` (rows of `weight.len()` values): subtract the mean, divide by
/// sqrt(variance + eps), times `weight`, plus `bias` when given (phi2, stablelm).
/// ggml: `ggml_add(ggml_mul(ggml_norm(x, eps), weight), bias)`.
pub fn layer_norm(
    isa: Isa,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    assert_eq!(x.len(), out.len(), "layer_norm: out length");
    out.copy_from_slice(x);
    layer_norm_inplace(isa, out, weight, bias, eps)
}

/// [`layer_norm`] in place.
pub fn layer_norm_inplace(isa: Isa, x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    check_rows("layer_norm", x.len(), weight.len());
    if let Some(b) = bias {
        assert_eq!(b.len(), weight.len(), "layer_norm: bias length");
    }
    dispatch!(isa, layer_norm_inplace(x, weight, bias, eps))
}

fn check_rows(op: &str, len: usize, row: usize) {
    assert!(
        row > 0 && len.is_multiple_of(row),
        "{op}: length {len} is not a multiple of the row length {row}"
    );
}

// ---------------------------------------------------------------------------------------------
// RoPE

/// Which pairs of a head RoPE rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// GGUF llama convention (`LLAMA_ROPE_TYPE_NORM`): adjacent pairs `(x[2i], x[2i+1])`.
    Normal,
    /// GPT-NeoX convention (phi2, gemma, qwen, stablelm): `(x[i], x[i + n_rot/2])`.
    Neox,
}

/// RoPE settings, mirroring the arguments of ggml's `ggml_rope_ext`.
///
/// Angle of pair `i` (0 ≤ i < n_rot/2) at position `p`, as ggml computes it:
/// `theta = freq_scale * p * freq_base^(-2i/n_rot) / freq_factors[i]` (the power is built by
/// repeated multiplication in f32, like ggml), then `cos(theta) * attn_factor`,
/// `sin(theta) * attn_factor`. With `ext_factor != 0` the YaRN ramp between interpolated and
/// extrapolated angles and YaRN's magnitude scaling are applied exactly as in ggml's `rope_yarn`.
#[derive(Clone, Debug)]
pub struct RopeCfg<'a> {
    pub mode: RopeMode,
    /// Rotated dimensions per head (`rope.dimension_count`); the rest of the head is untouched.
    pub n_rot: usize,
    pub freq_base: f32,
    /// 1 / (linear scaling factor).
    pub freq_scale: f32,
    /// Llama-3 `rope_freqs.weight`: theta of pair `i` is divided by `freq_factors[i]`.
    pub freq_factors: Option<&'a [f32]>,
    /// YaRN extrapolation mix; 0 disables YaRN (the default and all current fixtures).
    pub ext_factor: f32,
    /// Multiplies cos and sin (YaRN attention factor); 1 by default.
    pub attn_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// Training context for YaRN's correction dims; unused when `ext_factor == 0`.
    pub n_ctx_orig: usize,
}

impl RopeCfg<'static> {
    /// Plain RoPE: no scaling, no frequency factors, no YaRN (llama.cpp's defaults).
    pub fn new(mode: RopeMode, n_rot: usize, freq_base: f32) -> Self {
        RopeCfg {
            mode,
            n_rot,
            freq_base,
            freq_scale: 1.0,
            freq_factors: None,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 0,
        }
    }
}

/// Precomputed cos/sin of every position `0..max_pos` for one [`RopeCfg`]. Build it once per
/// model (per distinct RoPE setting, e.g. Gemma-3's local and global layers).
#[derive(Clone, Debug)]
pub struct RopeCache {
    mode: RopeMode,
    n_rot: usize,
    max_pos: usize,
    /// `max_pos` rows of `n_rot` values. Normal: `[cos0, sin0, cos1, sin1, ...]` (ggml's own
    /// layout, lined up with the pairs it rotates); Neox: `[cos0..cos_{h-1}, sin0..sin_{h-1}]`.
    table: Vec<f32>,
}

impl RopeCache {
    pub fn new(cfg: &RopeCfg, max_pos: usize) -> Result<Self, OpsError> {
        let n_rot = cfg.n_rot;
        if n_rot == 0 || !n_rot.is_multiple_of(2) {
            return Err(OpsError::RopeDims(n_rot));
        }
        let half = n_rot / 2;
        if let Some(ff) = cfg.freq_factors {
            if ff.len() < half {
                return Err(OpsError::RopeFreqFactors {
                    got: ff.len(),
                    need: half,
                });
            }
        }
        for (name, value) in [("freq_base", cfg.freq_base), ("freq_scale", cfg.freq_scale)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(OpsError::RopeParam { name, value });
            }
        }
        for (name, value) in [
            ("ext_factor", cfg.ext_factor),
            ("attn_factor", cfg.attn_factor),
            ("beta_fast", cfg.beta_fast),
            ("beta_slow", cfg.beta_slow),
        ] {
            if !value.is_finite() {
                return Err(OpsError::RopeParam { name, value });
            }
        }
        // ggml `ggml_compute_forward_rope_flt` + `ggml_rope_cache_init` + `rope_yarn`.
        let theta_scale = cfg.freq_base.powf(-2.0 / n_rot as f32);
        let corr_dims = yarn_corr_dims(
            n_rot,
            cfg.n_ctx_orig,
            cfg.freq_base,
            cfg.beta_fast,
            cfg.beta_slow,
        );
        let mut table = vec![0.0f32; max_pos * n_rot];
        for (pos, row) in table.chunks_exact_mut(n_rot).enumerate() {
            let mut theta = pos as i32 as f32;
            for i in 0..half {
                let ff = cfg.freq_factors.map_or(1.0, |f| f[i]);
                let (c, s) = rope_yarn(
                    theta / ff,
                    cfg.freq_scale,
                    corr_dims,
                    2 * i,
                    cfg.ext_factor,
                    cfg.attn_factor,
                );
                match cfg.mode {
                    RopeMode::Normal => {
                        row[2 * i] = c;
                        row[2 * i + 1] = s;
                    }
                    RopeMode::Neox => {
                        row[i] = c;
                        row[half + i] = s;
                    }
                }
                theta *= theta_scale;
            }
        }
        Ok(RopeCache {
            mode: cfg.mode,
            n_rot,
            max_pos,
            table,
        })
    }

    pub fn mode(&self) -> RopeMode {
        self.mode
    }

    pub fn n_rot(&self) -> usize {
        self.n_rot
    }

    /// Positions `0..max_pos()` are in the table.
    pub fn max_pos(&self) -> usize {
        self.max_pos
    }

    /// The `n_rot` table values of one position (layout in the field's comment).
    #[inline]
    pub fn row(&self, pos: usize) -> &[f32] {
        &self.table[pos * self.n_rot..(pos + 1) * self.n_rot]
    }
}

/// ggml `ggml_rope_yarn_corr_dims`.
fn yarn_corr_dims(
    n_dims: usize,
    n_ctx_orig: usize,
    freq_base: f32,
    beta_fast: f32,
    beta_slow: f32,
) -> [f32; 2] {
    let corr_dim = |n_rot: f32| -> f32 {
        n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
            / (2.0 * freq_base.ln())
    };
    let start = corr_dim(beta_fast).floor();
    let end = corr_dim(beta_slow).ceil();
    [start.max(0.0), end.min(n_dims as f32 - 1.0)]
}

/// ggml `rope_yarn`: (cos, sin) of one pair.
fn rope_yarn(
    theta_extrap: f32,
    freq_scale: f32,
    corr_dims: [f32; 2],
    i0: usize,
    ext_factor: f32,
    attn_factor: f32,
) -> (f32, f32) {
    let theta_interp = freq_scale * theta_extrap;
    let mut theta = theta_interp;
    let mut mscale = attn_factor;
    if ext_factor != 0.0 {
        let y = ((i0 / 2) as f32 - corr_dims[0]) / (corr_dims[1] - corr_dims[0]).max(0.001);
        let ramp = 1.0 - y.clamp(0.0, 1.0);
        let ramp_mix = ramp * ext_factor;
        theta = theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix;
        mscale *= 1.0 + 0.1 * (1.0 / freq_scale).ln();
    }
    (theta.cos() * mscale, theta.sin() * mscale)
}

/// Rotates the first `cache.n_rot()` dimensions of every head of `x`
/// (`n_tokens × n_heads × head_dim`, token `t` at position `positions[t]`), in place.
///
/// # Panics
/// On a shape mismatch, `n_rot > head_dim`, or a position `>= cache.max_pos()`.
pub fn rope(
    isa: Isa,
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    positions: &[usize],
    cache: &RopeCache,
) {
    assert_eq!(
        x.len(),
        positions.len() * n_heads * head_dim,
        "rope: x must hold positions.len() × n_heads × head_dim values"
    );
    assert!(
        cache.n_rot() <= head_dim,
        "rope: n_rot {} > head_dim {head_dim}",
        cache.n_rot()
    );
    assert!(
        positions.is_empty() || n_heads * head_dim > 0,
        "rope: empty head shape"
    );
    if let Some(&p) = positions.iter().find(|&&p| p >= cache.max_pos()) {
        panic!("rope: position {p} beyond the cache ({})", cache.max_pos());
    }
    dispatch!(isa, rope(x, n_heads, head_dim, positions, cache))
}

// ---------------------------------------------------------------------------------------------
// Softmax, activations, element-wise

/// GELU, tanh approximation, as ggml's CPU backend computes it for f32 (input and result
/// rounded to f16 through its lookup table; see `scalar::gelu_tanh_ggml`): the same table on
/// every ISA, so the bits equal ggml's.
pub fn gelu_tanh_inplace(isa: Isa, x: &mut [f32]) {
    dispatch!(isa, gelu_tanh_inplace(x))
}

/// `out = silu(gate) * up`.
pub fn swiglu(isa: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert_eq!(gate.len(), out.len(), "swiglu: lengths");
    out.copy_from_slice(gate);
    swiglu_inplace(isa, out, up)
}

/// `gate = silu(gate) * up`.
pub fn swiglu_inplace(isa: Isa, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: lengths");
    dispatch!(isa, swiglu_inplace(gate, up))
}

/// `out = gelu_tanh(gate) * up` (ggml `geglu`, same f16 table semantics as [`gelu_tanh_inplace`]).
pub fn geglu_tanh(isa: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert_eq!(gate.len(), out.len(), "geglu_tanh: lengths");
    out.copy_from_slice(gate);
    geglu_tanh_inplace(isa, out, up)
}

/// `gate = gelu_tanh(gate) * up`.
pub fn geglu_tanh_inplace(isa: Isa, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu_tanh: lengths");
    dispatch!(isa, geglu_tanh_inplace(gate, up))
}

/// `x += y`.
pub fn add_inplace(isa: Isa, x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "add_inplace: lengths");
    dispatch!(isa, add_inplace(x, y))
}

/// `x *= s`.
pub fn scale_inplace(isa: Isa, x: &mut [f32], s: f32) {
    dispatch!(isa, scale_inplace(x, s))
}

/// f32 → f16 bits, round to nearest even (F16C's rounding), e.g. to store K/V rows.
pub fn f32_to_f16_row(isa: Isa, src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_f16_row: lengths");
    dispatch!(isa, f32_to_f16_row(src, dst))
}

/// f16 bits → f32 (exact).
pub fn f16_to_f32_row(isa: Isa, src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32_row: lengths");
    dispatch!(isa, f16_to_f32_row(src, dst))
}

// ---------------------------------------------------------------------------------------------
// Attention

/// The elements of one K or V cache: f32 values or f16 bits (llama.cpp's default cache type).
#[derive(Clone, Copy, Debug)]
pub enum KvData<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

impl KvData<'_> {
    pub fn len(&self) -> usize {
        match self {
            KvData::F32(d) => d.len(),
            KvData::F16(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One layer's KV cache. Layout of both K and V: `[position][kv_head][head_dim]`, contiguous
/// (one position is a row of `n_kv_heads * head_dim` values, exactly what the K/V projection
/// of one token produces). The slices may be longer than the positions in use.
#[derive(Clone, Copy, Debug)]
pub struct KvView<'a> {
    pub k: KvData<'a>,
    pub v: KvData<'a>,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl KvView<'_> {
    /// Positions the cache slices can hold.
    pub fn capacity(&self) -> usize {
        let row = self.n_kv_heads * self.head_dim;
        self.k.len().min(self.v.len()).checked_div(row).unwrap_or(0)
    }
}

/// Settings of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    /// Query heads; a multiple of the cache's `n_kv_heads` (GQA: `n_heads / n_kv_heads` query
    /// heads share one K/V head, query head `h` reads kv head `h / (n_heads / n_kv_heads)`).
    pub n_heads: usize,
    /// Multiplies Q·K (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// Sliding window (llama.cpp `LLAMA_SWA_TYPE_STANDARD`, Gemma-3 local layers): the query at
    /// position `p` attends keys at positions `p' ` with `p - p' < window`, i.e. `(p - window, p]`.
    pub window: Option<usize>,
}

/// The work of one query token and one kv head (for all or a run of the query heads that share
/// it), handed to the per-ISA kernels.
#[derive(Clone, Copy, Debug)]
pub struct AttnJob<'a> {
    pub kv: &'a KvView<'a>,
    pub kv_head: usize,
    pub head_dim: usize,
    /// Keys `key_lo..key_hi` (cache positions) are attended.
    pub key_lo: usize,
    pub key_hi: usize,
    pub scale: f32,
    /// ggml's per-key ("vec") path instead of its tiled path; see [`attention`].
    pub ggml_vec_path: bool,
    /// Write per head the unnormalised accumulator, the running max M and the sum S
    /// (`head_dim + 2` values) instead of the output: one chunk of a split key range.
    pub partial: bool,
}

/// A tile of consecutive query tokens × the query heads of one kv head, for ggml's tiled path
/// (batches of at least [`GGML_FA_TILE_Q`] tokens). Handed to the per-ISA kernels.
#[derive(Clone, Copy, Debug)]
pub struct AttnTile<'a> {
    pub kv: &'a KvView<'a>,
    pub kv_head: usize,
    pub head_dim: usize,
    /// Query heads per token in the tile: the GQA group of `kv_head`, or a run of its heads.
    pub group: usize,
    /// Position of the tile's first token; token `t` is at `first_pos + t`.
    pub first_pos: usize,
    pub n_tokens: usize,
    pub window: Option<usize>,
    pub scale: f32,
}

impl AttnTile<'_> {
    /// Token `t` of the tile as a one-token job on ggml's tiled path: the keys its position
    /// attends (causal, minus the sliding window) for all heads of the group.
    pub fn token_job(&self, t: usize) -> AttnJob<'_> {
        let keys = attended_keys(self.first_pos + t, self.window);
        AttnJob {
            kv: self.kv,
            kv_head: self.kv_head,
            head_dim: self.head_dim,
            key_lo: keys.start,
            key_hi: keys.end,
            scale: self.scale,
            ggml_vec_path: false,
            partial: false,
        }
    }

    /// The keys row `r` of the tile attends (rows are token-major, `group` query heads per
    /// token).
    pub fn row_keys(&self, r: usize) -> Range<usize> {
        attended_keys(self.first_pos + r / self.group, self.window)
    }

    /// The keys the first `rows` rows attend, all together: (lowest first key, highest end),
    /// `(usize::MAX, 0)` for no rows. Panics unless the cache holds them.
    pub fn key_span(&self, rows: usize) -> (usize, usize) {
        let (lo, hi) = (0..rows)
            .map(|r| self.row_keys(r))
            .fold((usize::MAX, 0), |(lo, hi), k| {
                (lo.min(k.start), hi.max(k.end))
            });
        let (hd, kv) = (self.head_dim, self.kv);
        assert!(
            hi == 0
                || (hi - 1) * kv.n_kv_heads * hd + (self.kv_head + 1) * hd
                    <= kv.k.len().min(kv.v.len()),
            "attention: cache too short"
        );
        (lo, hi)
    }

    /// Runs `attend` on each token of the tile as its one-token job ([`AttnTile::token_job`])
    /// with its rows of `q_tile` and `out_tile`: every ISA's fallback for tiles its tile kernel
    /// does not take.
    pub fn by_token(
        &self,
        q_tile: &[f32],
        out_tile: &mut [f32],
        mut attend: impl FnMut(&AttnJob, &[f32], &mut [f32]),
    ) {
        let len = self.group * self.head_dim;
        for (t, (qt, ot)) in q_tile
            .chunks_exact(len)
            .zip(out_tile.chunks_exact_mut(len))
            .enumerate()
        {
            attend(&self.token_job(t), qt, ot);
        }
    }
}

/// Query tokens from which ggml's CPU flash attention switches to its tiled path
/// (`GGML_FA_TILE_Q` in `ggml-cpu/common.h`).
pub const GGML_FA_TILE_Q: usize = 64;

/// Causal multi-head attention of `n_tokens` new query tokens over the cache.
///
/// - `q`: `n_tokens × n_heads × head_dim`, already roped and unscaled.
/// - `kv`: the layer's cache; the batch's own K/V are already stored at positions
///   `n_past..n_past + n_tokens`; token `t` sits at position `n_past + t` and attends keys
///   `0..=n_past + t` (minus those outside the sliding window).
/// - `out`: `n_tokens × n_heads × head_dim`.
///
/// Numerics follow llama.cpp's default on the CPU, flash attention (`ggml_compute_forward_flash_attn_ext_f16`):
/// - batches of fewer than [`GGML_FA_TILE_Q`] tokens (so every decode step) take ggml's per-key
///   path: Q is rounded to f16 when K is f16 (ggml converts Q to K's `vec_dot_type`), scores and
///   the running softmax are f32, and with an f16 V the output accumulator is rounded to f16
///   after every key, as ggml's `ggml_vec_mad_f16` does;
/// - larger batches take ggml's tiled path (when K and V have the same type, as in ggml):
///   f32 Q·K over K converted to f32, online softmax over blocks of 64 keys, f32 accumulator.
///
/// - a single query token over at least [`GGML_SPLIT_KV_MIN_KEYS`] keys takes ggml's split-KV
///   decode: the keys are cut into [`DECODE_KV_CHUNKS`] chunks (ggml: one per thread; the
///   goldens used 2), each run on the per-key path, merged in f32 like
///   `ggml_flash_attn_ext_reduce_partials`.
///
/// The chunk count does not depend on the thread count, so [`attention_parallel`] gives the
/// same bits on any number of threads. Tested against ggml's own `ggml_flash_attn_ext`
/// (`tests/data/ops-ggml`).
pub fn attention(
    isa: Isa,
    q: &[f32],
    kv: &KvView,
    n_past: usize,
    params: &AttnParams,
    out: &mut [f32],
) {
    attention_parallel(isa, q, kv, n_past, params, out, &Sequential)
}

/// Runs `f(thread_idx, n_threads)` once on each of `n_threads()` threads and returns when all
/// calls have returned. The seam through which ops use a thread pool.
pub trait ParallelRun: Sync {
    fn n_threads(&self) -> usize;
    fn run(&self, f: &(dyn Fn(usize, usize) + Sync));
    /// Runs `f` on the calling thread and on any other threads that join before it returns
    /// (`cpu::ThreadPool::run_dynamic`): `f` must share its work out dynamically, so that any
    /// subset of the calls completes it. By default the same as [`ParallelRun::run`].
    fn run_dynamic(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        self.run(f)
    }
}

/// Runs on the calling thread only.
pub struct Sequential;

impl ParallelRun for Sequential {
    fn n_threads(&self) -> usize {
        1
    }
    fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        f(0, 1)
    }
}

/// The persistent pool of `cpu::pool` (workers spin briefly, so back-to-back ops avoid wake-ups).
impl ParallelRun for crate::cpu::ThreadPool {
    fn n_threads(&self) -> usize {
        crate::cpu::ThreadPool::n_threads(self)
    }
    fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        crate::cpu::ThreadPool::run(self, f)
    }
    fn run_dynamic(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        crate::cpu::ThreadPool::run_dynamic(self, f)
    }
}

/// Values below which [`par_rows_mut`] stays on the calling thread: a pool round trip costs a
/// few microseconds, about what an element-wise op takes on this many values.
pub const PAR_MIN_VALUES: usize = 16 * 1024;

/// Runs `f(first_row, rows)` over consecutive runs of whole rows of `x` (rows of `row_len`
/// values) on `par`'s threads, taken dynamically in chunks: the caller alone completes the work
/// when the other threads are busy, so a descheduled worker never stalls it. Below
/// [`PAR_MIN_VALUES`] values (e.g. every decode step) `f(0, x)` runs on the calling thread.
/// `f` must give the same result for any split into runs of rows (a per-row op).
pub fn par_rows_mut<T: Send>(
    par: &dyn ParallelRun,
    x: &mut [T],
    row_len: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    assert!(
        row_len > 0 && x.len().is_multiple_of(row_len),
        "par_rows_mut: length {} is not a multiple of the row length {row_len}",
        x.len()
    );
    let n_rows = x.len() / row_len;
    let n_threads = par.n_threads();
    if n_threads <= 1 || n_rows <= 1 || x.len() < PAR_MIN_VALUES {
        f(0, x);
        return;
    }
    // A few chunks per thread, each at least PAR_MIN_VALUES / 4 values.
    let chunk_rows = n_rows
        .div_ceil(4 * n_threads)
        .max((PAR_MIN_VALUES / 4).div_ceil(row_len))
        .max(1);
    let n_chunks = n_rows.div_ceil(chunk_rows);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let base = SendPtr(x.as_mut_ptr());
    par.run_dynamic(&|_, _| loop {
        let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if c >= n_chunks {
            break;
        }
        let r0 = c * chunk_rows;
        let r1 = (r0 + chunk_rows).min(n_rows);
        // SAFETY: rows `r0..r1` lie inside `x` (r1 <= n_rows); each chunk index is taken by
        // exactly one call (atomic counter), so no two live slices overlap, and `x` is borrowed
        // mutably for the whole of `run_dynamic`, which returns only after every call has.
        let rows = unsafe {
            std::slice::from_raw_parts_mut(base.get().add(r0 * row_len), (r1 - r0) * row_len)
        };
        f(r0, rows);
    });
}

/// A raw pointer that may cross threads; the user guarantees disjoint access.
struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: only used by `par_rows_mut`, whose calls write disjoint runs of rows of `T: Send`.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above; the pointer itself is only copied, never dereferenced concurrently at
// overlapping places.
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// `n` rayon tasks on rayon's global pool.
pub struct RayonRun(pub usize);

impl ParallelRun for RayonRun {
    fn n_threads(&self) -> usize {
        self.0.max(1)
    }
    fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.n_threads();
        rayon::scope(|s| {
            for i in 1..n {
                s.spawn(move |_| f(i, n));
            }
            f(0, n);
        });
    }
}

/// [`attention`] with the (query token, GQA group) pairs split across `par`'s threads. The
/// result is identical to [`attention`] for any thread count (each pair is computed by the
/// same code, independent of the split).
pub fn attention_parallel(
    isa: Isa,
    q: &[f32],
    kv: &KvView,
    n_past: usize,
    params: &AttnParams,
    out: &mut [f32],
    par: &dyn ParallelRun,
) {
    let hd = kv.head_dim;
    let n_heads = params.n_heads;
    let n_kv = kv.n_kv_heads;
    assert!(hd > 0 && n_kv > 0, "attention: empty head shape");
    assert!(
        n_heads > 0 && n_heads.is_multiple_of(n_kv),
        "attention: n_heads {n_heads} is not a multiple of n_kv_heads {n_kv}"
    );
    let tok_len = n_heads * hd;
    assert!(
        q.len().is_multiple_of(tok_len),
        "attention: q length {} is not a multiple of n_heads × head_dim",
        q.len()
    );
    assert_eq!(q.len(), out.len(), "attention: out length");
    let n_tokens = q.len() / tok_len;
    assert!(
        n_past + n_tokens <= kv.capacity(),
        "attention: {} positions needed, the cache holds {}",
        n_past + n_tokens,
        kv.capacity()
    );
    if let Some(w) = params.window {
        assert!(w > 0, "attention: window of 0");
    }
    let group = n_heads / n_kv;
    let isa = effective(isa);
    let out_ptr = SharedMut(out.as_mut_ptr());
    // ggml takes its tiled and split-KV paths only when K and V have the same type.
    let same_kv_type = matches!(
        (kv.k, kv.v),
        (KvData::F32(_), KvData::F32(_)) | (KvData::F16(_), KvData::F16(_))
    );
    if n_tokens >= GGML_FA_TILE_Q && same_kv_type {
        // ggml's tiled path. A job is (tile of query tokens, kv head) with all the heads of the
        // group, so each K/V block is converted once for tokens × heads rows.
        //
        // ggml converts an f16 K/V block to f32 for every tile; the conversion is exact, so
        // converting the cache rows once per call gives the same bits, and the kernels then
        // read the f32 rows in place.
        let n_pos = n_past + n_tokens;
        let converted = match (kv.k, kv.v) {
            (KvData::F16(k), KvData::F16(v)) => {
                let len = n_pos * n_kv * hd;
                let mut kf = vec![0.0f32; len];
                let mut vf = vec![0.0f32; len];
                f16_to_f32_row(isa, &k[..len], &mut kf);
                f16_to_f32_row(isa, &v[..len], &mut vf);
                Some((kf, vf))
            }
            _ => None,
        };
        let kv_f32;
        let kv = match &converted {
            Some((kf, vf)) => {
                kv_f32 = KvView {
                    k: KvData::F32(kf),
                    v: KvData::F32(vf),
                    n_kv_heads: n_kv,
                    head_dim: hd,
                };
                &kv_f32
            }
            None => kv,
        };
        // A group of more query heads than the ISA's tile kernel holds rows is split into runs
        // of heads (each run still shares the kv head): the AVX kernels then never fall back to
        // their per-token path, whose sums are ordered per ISA, and every ISA gives the same
        // bits (each row's result does not depend on the other rows of its tile).
        let rows_cap = tile_rows(isa);
        let head_runs = group.div_ceil(rows_cap);
        let run_heads = group.div_ceil(head_runs);
        let tile_tokens = (rows_cap / run_heads).clamp(1, 16);
        let n_jobs = n_tokens.div_ceil(tile_tokens) * n_kv * head_runs;
        let glen = run_heads * hd;
        let init = || {
            (
                Vec::with_capacity(tile_tokens * glen),
                Vec::with_capacity(tile_tokens * glen),
            )
        };
        let job = |(q_tile, out_tile): &mut (Vec<f32>, Vec<f32>), job_idx: usize| {
            let run = job_idx % head_runs;
            let g = job_idx / head_runs % n_kv;
            let t0 = job_idx / (head_runs * n_kv) * tile_tokens;
            let nt = tile_tokens.min(n_tokens - t0);
            let h0 = run * run_heads;
            let nh = run_heads.min(group - h0);
            let len = nh * hd;
            let head_off = (g * group + h0) * hd;
            q_tile.clear();
            for t in t0..t0 + nt {
                let st = t * tok_len + head_off;
                q_tile.extend_from_slice(&q[st..st + len]);
            }
            out_tile.clear();
            out_tile.resize(nt * len, 0.0);
            let tile = AttnTile {
                kv,
                kv_head: g,
                head_dim: hd,
                group: nh,
                first_pos: n_past + t0,
                n_tokens: nt,
                window: params.window,
                scale: params.scale,
            };
            dispatch!(isa, attend_tile(&tile, q_tile, out_tile));
            for (i, t) in (t0..t0 + nt).enumerate() {
                let st = t * tok_len + head_off;
                // SAFETY: `st..st + len` lies inside `out` (same shape as `q`); distinct
                // jobs write distinct (token, head run) ranges and each job runs on exactly
                // one thread, so no two live slices overlap.
                let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(st), len) };
                dst.copy_from_slice(&out_tile[i * len..(i + 1) * len]);
            }
        };
        run_jobs(par, n_jobs, init, job);
        return;
    }
    // ggml's per-key path. A job is (query token, kv head, run of that group's query heads,
    // key chunk). Groups are split only when there are fewer (token, group, chunk) triples than
    // threads (decode with few kv heads, e.g. Gemma-3-270M's single one); a head's result does
    // not depend on that split.
    //
    // A single query token over at least GGML_SPLIT_KV_MIN_KEYS keys splits its keys into
    // DECODE_KV_CHUNKS chunks, as ggml's split-KV decode does (one chunk per thread; the goldens
    // were made with 2 threads): f16 accumulators per chunk, merged in f32. The chunk count is
    // fixed, so the result does not depend on `par`.
    let n_keys = attended_keys(n_past, params.window).len();
    let chunks = if n_tokens == 1 && n_keys >= GGML_SPLIT_KV_MIN_KEYS && same_kv_type {
        DECODE_KV_CHUNKS
    } else {
        1
    };
    let partial = chunks > 1;
    // Per chunk and head: the unnormalised accumulator, M and S.
    let mut scratch = vec![
        0.0f32;
        if partial {
            chunks * n_heads * (hd + 2)
        } else {
            0
        }
    ];
    let scratch_ptr = SharedMut(scratch.as_mut_ptr());
    let triples = n_tokens * n_kv * chunks;
    let splits = par.n_threads().div_ceil(triples.max(1)).clamp(1, group);
    let heads_per_job = group.div_ceil(splits);
    let jobs_per_group = group.div_ceil(heads_per_job);
    let n_jobs = triples * jobs_per_group;
    let job = |_: &mut (), job_idx: usize| {
        let part = job_idx % jobs_per_group;
        let triple = job_idx / jobs_per_group;
        let chunk = triple % chunks;
        let pair = triple / chunks;
        let t = pair / n_kv;
        let g = pair % n_kv;
        let keys = attended_keys(n_past + t, params.window);
        let chunk_keys = keys.len().div_ceil(chunks);
        let key_lo = (keys.start + chunk * chunk_keys).min(keys.end);
        let job = AttnJob {
            kv,
            kv_head: g,
            head_dim: hd,
            key_lo,
            key_hi: (key_lo + chunk_keys).min(keys.end),
            scale: params.scale,
            ggml_vec_path: true,
            partial,
        };
        let first_head = g * group + part * heads_per_job;
        let n_job_heads = heads_per_job.min((g + 1) * group - first_head);
        let start = t * tok_len + first_head * hd;
        let q_heads = &q[start..start + n_job_heads * hd];
        let out_heads = if partial {
            let at = (chunk * n_heads + first_head) * (hd + 2);
            // SAFETY: `at..at + n_job_heads*(hd+2)` lies inside `scratch` (chunk < chunks,
            // first_head + n_job_heads <= n_heads); distinct jobs write distinct
            // (chunk, head run) ranges, each on exactly one thread.
            unsafe {
                std::slice::from_raw_parts_mut(scratch_ptr.get().add(at), n_job_heads * (hd + 2))
            }
        } else {
            // SAFETY: `start..start + n_job_heads*hd` lies inside `out` (same shape as `q`,
            // checked above); distinct job indices map to disjoint head runs and each job
            // index runs on exactly one thread, so no two live slices overlap.
            unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(start), n_job_heads * hd) }
        };
        dispatch!(isa, attend_group(&job, q_heads, out_heads));
    };
    run_jobs(par, n_jobs, || (), job);
    if partial {
        // One token: `out` is `n_heads × hd`.
        for (h, oh) in out.chunks_exact_mut(hd).enumerate() {
            let parts = (0..chunks).map(|c| {
                let at = (c * n_heads + h) * (hd + 2);
                &scratch[at..at + hd + 2]
            });
            scalar::combine_partials(parts, oh);
        }
    }
}

/// Keys from which ggml's CPU flash attention splits one query token's keys across threads
/// (`use_split_kv_path` in `ggml_compute_forward_flash_attn_ext_f16`).
pub const GGML_SPLIT_KV_MIN_KEYS: usize = 512;

/// Key chunks of a long decode (ggml uses one per thread; 2 = the goldens' thread count).
pub const DECODE_KV_CHUNKS: usize = 2;

/// Query rows (tokens × heads) per tile of the tiled attention kernel of `isa`: what its
/// registers hold (4 vectors of rows).
fn tile_rows(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 64,
        Isa::Avx2 => 32,
        Isa::Scalar => 16,
    }
}

/// Runs `job(state, job_idx)` for every job index below `n_jobs` on `par`'s threads, each
/// thread with its own `init()` state. Jobs are taken from an atomic counter, highest index
/// first (with causal attention later tokens attend more keys: the biggest jobs go first and
/// the small ones fill the gaps), and the caller alone finishes them when the other threads are
/// busy ([`ParallelRun::run_dynamic`]). A job's result does not depend on who runs it.
fn run_jobs<S>(
    par: &dyn ParallelRun,
    n_jobs: usize,
    init: impl Fn() -> S + Sync,
    job: impl Fn(&mut S, usize) + Sync,
) {
    if par.n_threads() <= 1 || n_jobs <= 1 {
        let mut state = init();
        for j in (0..n_jobs).rev() {
            job(&mut state, j);
        }
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    par.run_dynamic(&|_, _| {
        let mut state = None;
        loop {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if k >= n_jobs {
                break;
            }
            job(state.get_or_insert_with(&init), n_jobs - 1 - k);
        }
    });
}

/// A raw pointer that may cross threads; the user guarantees disjoint access.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);

impl SharedMut {
    fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: only used by `attention_parallel`, whose jobs write disjoint ranges.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

/// The key positions a query at `pos` attends (for tests and callers building masks).
pub fn attended_keys(pos: usize, window: Option<usize>) -> Range<usize> {
    window.map_or(0, |w| (pos + 1).saturating_sub(w))..pos + 1
}
