//! Layers shared by the architectures: norms, attention (QKV, RoPE, cache, output), FFNs and
//! the output head. Tensor names follow llama.cpp's `LLM_TENSOR_*` table (src/llama-arch.cpp).

use super::{ArchError, Logits};
use crate::backend::{AttnParams, Backend, BufId, RopeParams, WeightId, WeightTable, YarnParams};
use crate::config::{ModelConfig, RopeScaling, RopeStyle};

/// Activation buffers of one session, allocated once for the largest batch.
#[derive(Clone, Debug)]
pub struct Scratch {
    pub max_batch: usize,
    pub n_embd: usize,
    /// Residual stream, `max_batch × n_embd`.
    pub x: BufId,
    /// Normalised input of a block, `max_batch × n_embd`.
    pub xn: BufId,
    /// Output of a block before the residual add, `max_batch × n_embd`.
    pub out: BufId,
    /// Fused QKV projection, `max_batch × (q + k + v width)`.
    pub qkv: BufId,
    pub q: BufId,
    pub k: BufId,
    pub v: BufId,
    /// Attention output (all heads), `max_batch × n_head·head_dim_v`.
    pub att: BufId,
    /// FFN hidden, `max_batch × n_ff`.
    pub gate: BufId,
    pub up: BufId,
    /// Rows gathered for the output head, `logit_rows × n_embd`.
    pub xo: BufId,
    /// Logits, `logit_rows × vocab`.
    pub logits: BufId,
    pub logit_rows: usize,
}

impl Scratch {
    pub fn new(b: &mut dyn Backend, cfg: &ModelConfig, max_batch: usize) -> Scratch {
        let max_batch = max_batch.max(1);
        // Keep the logits buffer near 64 MiB even for 256k vocabularies.
        let logit_rows = ((64 << 20) / (cfg.vocab_size * 4)).clamp(1, max_batch);
        let e = cfg.n_embd;
        Scratch {
            max_batch,
            n_embd: e,
            x: b.alloc(max_batch, e),
            xn: b.alloc(max_batch, e),
            out: b.alloc(max_batch, e),
            qkv: b.alloc(max_batch, cfg.q_width() + cfg.k_width() + cfg.v_width()),
            q: b.alloc(max_batch, cfg.q_width()),
            k: b.alloc(max_batch, cfg.k_width()),
            v: b.alloc(max_batch, cfg.v_width()),
            att: b.alloc(max_batch, cfg.n_head * cfg.head_dim_v),
            gate: b.alloc(max_batch, cfg.n_ff),
            up: b.alloc(max_batch, cfg.n_ff),
            xo: b.alloc(logit_rows, e),
            logits: b.alloc(logit_rows, cfg.vocab_size),
            logit_rows,
        }
    }
}

/// `blk.{layer}.{name}`.
pub fn blk(layer: usize, name: &str) -> String {
    format!("blk.{layer}.{name}")
}

/// A normalisation with its weights.
#[derive(Clone, Copy, Debug)]
pub enum Norm {
    Rms {
        w: WeightId,
        eps: f32,
    },
    Layer {
        w: WeightId,
        b: Option<WeightId>,
        eps: f32,
    },
}

impl Norm {
    /// RMSNorm `{name}.weight` of width `n`.
    pub fn rms(w: &mut WeightTable, name: &str, n: usize, eps: f32) -> Result<Norm, ArchError> {
        Ok(Norm::Rms {
            w: w.require(&format!("{name}.weight"), &[n])?,
            eps,
        })
    }

    /// LayerNorm `{name}.weight` with optional `{name}.bias`.
    pub fn layer(w: &mut WeightTable, name: &str, n: usize, eps: f32) -> Result<Norm, ArchError> {
        Ok(Norm::Layer {
            w: w.require(&format!("{name}.weight"), &[n])?,
            b: w.optional(&format!("{name}.bias"), &[n])?,
            eps,
        })
    }

    pub fn apply(&self, b: &mut dyn Backend, x: BufId, out: BufId, n: usize) {
        match *self {
            Norm::Rms { w, eps } => b.rms_norm(x, w, eps, out, n),
            Norm::Layer { w, b: bias, eps } => b.layer_norm(x, w, bias, eps, out, n),
        }
    }
}

/// The Q/K/V projections of a layer: separate matrices or one fused matrix.
#[derive(Clone, Copy, Debug)]
pub enum Qkv {
    Separate {
        wq: WeightId, // (n_embd → n_head·head_dim_k)
        wk: WeightId, // (n_embd → n_head_kv·head_dim_k)
        wv: WeightId, // (n_embd → n_head_kv·head_dim_v)
        bq: Option<WeightId>,
        bk: Option<WeightId>,
        bv: Option<WeightId>,
    },
    Fused {
        wqkv: WeightId, // (n_embd → q + k + v widths)
        bqkv: Option<WeightId>,
    },
}

/// Self-attention weights of one layer.
#[derive(Clone, Copy, Debug)]
pub struct AttnWeights {
    pub qkv: Qkv,
    /// Per-head RMSNorm of Q and K before RoPE (qwen3, gemma3), `head_dim_k` each.
    pub q_norm: Option<WeightId>,
    pub k_norm: Option<WeightId>,
    pub wo: WeightId, // (n_head·head_dim_v → n_embd)
    pub bo: Option<WeightId>,
}

impl AttnWeights {
    /// `attn_q/k/v` (+ optional biases) or `attn_qkv`, `attn_output` (+ optional bias), and
    /// optional `attn_q_norm`/`attn_k_norm`.
    pub fn load(w: &mut WeightTable, cfg: &ModelConfig, l: usize) -> Result<Self, ArchError> {
        let (e, qw, kw, vw) = (cfg.n_embd, cfg.q_width(), cfg.k_width(), cfg.v_width());
        let qkv = match w.optional(&blk(l, "attn_qkv.weight"), &[e, qw + kw + vw])? {
            Some(wqkv) => Qkv::Fused {
                wqkv,
                bqkv: w.optional(&blk(l, "attn_qkv.bias"), &[qw + kw + vw])?,
            },
            None => Qkv::Separate {
                wq: w.require(&blk(l, "attn_q.weight"), &[e, qw])?,
                wk: w.require(&blk(l, "attn_k.weight"), &[e, kw])?,
                wv: w.require(&blk(l, "attn_v.weight"), &[e, vw])?,
                bq: w.optional(&blk(l, "attn_q.bias"), &[qw])?,
                bk: w.optional(&blk(l, "attn_k.bias"), &[kw])?,
                bv: w.optional(&blk(l, "attn_v.bias"), &[vw])?,
            },
        };
        Ok(AttnWeights {
            qkv,
            q_norm: w.optional(&blk(l, "attn_q_norm.weight"), &[cfg.head_dim_k])?,
            k_norm: w.optional(&blk(l, "attn_k_norm.weight"), &[cfg.head_dim_k])?,
            wo: w.require(
                &blk(l, "attn_output.weight"),
                &[cfg.n_head * cfg.head_dim_v, e],
            )?,
            bo: w.optional(&blk(l, "attn_output.bias"), &[e])?,
        })
    }
}

/// Hyperparameters of the attention of one layer.
#[derive(Clone, Copy, Debug)]
pub struct AttnConfig {
    pub attn: AttnParams,
    /// RoPE of Q and K; `None` for models with learned absolute positions (BERT).
    pub rope: Option<RopeParams>,
    /// Epsilon of the per-head Q/K norms.
    pub qk_norm_eps: f32,
    /// Multiply Q by this after RoPE and attend with scale 1 (phi2 does, for precision).
    pub q_prescale: Option<f32>,
}

impl AttnConfig {
    /// The usual setting: scale `1/sqrt(head_dim_k)`, no window, RoPE from the config.
    pub fn new(
        cfg: &ModelConfig,
        style: RopeStyle,
        freq_factors: Option<WeightId>,
    ) -> Result<AttnConfig, ArchError> {
        let rope = rope_params(cfg, style, freq_factors);
        rope.validate().map_err(ArchError::Hyperparameter)?;
        Ok(AttnConfig {
            attn: AttnParams {
                n_head: cfg.n_head,
                n_head_kv: cfg.n_head_kv,
                head_dim_k: cfg.head_dim_k,
                head_dim_v: cfg.head_dim_v,
                scale: 1.0 / (cfg.head_dim_k as f32).sqrt(),
                window: None,
                causal: true,
            },
            rope: Some(rope),
            qk_norm_eps: cfg.rms_eps,
            q_prescale: None,
        })
    }
}

/// The RoPE of `cfg` as llama.cpp derives it (`llama_context` constructor, build 11434): the
/// scaling factor's inverse as `freq_scale`; for YaRN an extrapolation mix of 1, betas 32 and 1,
/// and an attention factor of `mscale(factor) / (1 + 0.1 ln factor)` — ggml's `rope_yarn`
/// multiplies by `1 + 0.1 ln factor` again, so cos and sin end up scaled by HF's `mscale` —
/// all times `rope.scaling.attn_factor`. The f32 operations are llama.cpp's, in its order.
fn rope_params(cfg: &ModelConfig, style: RopeStyle, freq_factors: Option<WeightId>) -> RopeParams {
    let (freq_scale, yarn) = match cfg.rope_scaling {
        RopeScaling::None => (1.0, None),
        RopeScaling::Linear { factor } => (1.0 / factor, None),
        RopeScaling::Yarn { factor, orig_ctx } => (
            1.0 / factor,
            Some(YarnParams {
                ext_factor: 1.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
                n_ctx_orig: orig_ctx as usize,
            }),
        ),
    };
    let mut attn_factor = 1.0f32;
    if yarn.is_some() {
        let factor = 1.0f32 / freq_scale;
        let mscale = if factor <= 1.0 {
            1.0
        } else {
            0.1f32 * 1.0 * factor.ln() + 1.0
        };
        attn_factor = mscale;
        attn_factor *= 1.0f32 / (1.0 + 0.1 * factor.ln());
    }
    attn_factor *= cfg.rope_attn_factor;
    RopeParams {
        n_rot: cfg.n_rot,
        style,
        freq_base: cfg.rope_freq_base,
        freq_scale,
        freq_factors,
        attn_factor,
        yarn,
    }
}

/// Self-attention of layer `layer` on `s.xn` (rows `0..n` at positions `pos0..`); result in `s.out`.
pub fn attention(
    b: &mut dyn Backend,
    s: &Scratch,
    w: &AttnWeights,
    c: &AttnConfig,
    layer: usize,
    pos0: usize,
    n: usize,
) {
    project_qkv(b, s, w, c, pos0, n);
    let a = &c.attn;
    match c.q_prescale {
        Some(q_scale) => {
            b.scale(s.q, q_scale, n);
            let a = AttnParams { scale: 1.0, ..*a };
            b.attention(layer, s.q, s.k, s.v, pos0, n, &a, s.att);
        }
        None => b.attention(layer, s.q, s.k, s.v, pos0, n, a, s.att),
    }
    project_out(b, s, w, n);
}

/// Self-attention of packed sequences on `s.xn` (`seqs`: the boundaries of
/// [`Backend::attention_packed`]; each sequence attends only itself, no cache); result in
/// `s.out`. Positions restart at 0 in every sequence (RoPE models: not used by any encoder yet).
pub fn attention_packed(
    b: &mut dyn Backend,
    s: &Scratch,
    w: &AttnWeights,
    c: &AttnConfig,
    seqs: &[u32],
) {
    let n = seqs.last().map_or(0, |&n| n as usize);
    assert!(
        c.rope.is_none(),
        "packed attention with RoPE: positions per sequence"
    );
    project_qkv(b, s, w, c, 0, n);
    match c.q_prescale {
        Some(q_scale) => {
            b.scale(s.q, q_scale, n);
            let a = AttnParams {
                scale: 1.0,
                ..c.attn
            };
            b.attention_packed(s.q, s.k, s.v, seqs, &a, s.att);
        }
        None => b.attention_packed(s.q, s.k, s.v, seqs, &c.attn, s.att),
    }
    project_out(b, s, w, n);
}

/// Q, K and V of `s.xn` (biases, QK norms and RoPE applied) into `s.q`, `s.k`, `s.v`.
fn project_qkv(
    b: &mut dyn Backend,
    s: &Scratch,
    w: &AttnWeights,
    c: &AttnConfig,
    pos0: usize,
    n: usize,
) {
    let a = &c.attn;
    match w.qkv {
        Qkv::Separate {
            wq,
            wk,
            wv,
            bq,
            bk,
            bv,
        } => {
            b.matmul(s.xn, &[(wq, s.q), (wk, s.k), (wv, s.v)], n);
            for (bias, buf) in [(bq, s.q), (bk, s.k), (bv, s.v)] {
                if let Some(bias) = bias {
                    b.add_bias(buf, bias, n);
                }
            }
        }
        Qkv::Fused { wqkv, bqkv } => {
            b.matmul(s.xn, &[(wqkv, s.qkv)], n);
            if let Some(bias) = bqkv {
                b.add_bias(s.qkv, bias, n);
            }
            let qw = a.n_head * a.head_dim_k;
            let kw = a.n_head_kv * a.head_dim_k;
            let vw = a.n_head_kv * a.head_dim_v;
            b.copy_cols(s.qkv, 0, s.q, 0, qw, n);
            b.copy_cols(s.qkv, qw, s.k, 0, kw, n);
            b.copy_cols(s.qkv, qw + kw, s.v, 0, vw, n);
        }
    }
    if let Some(qn) = w.q_norm {
        b.head_rms_norm(s.q, qn, c.qk_norm_eps, a.head_dim_k, n);
    }
    if let Some(kn) = w.k_norm {
        b.head_rms_norm(s.k, kn, c.qk_norm_eps, a.head_dim_k, n);
    }
    if let Some(rope) = &c.rope {
        b.rope(s.q, a.n_head, a.head_dim_k, pos0, n, rope);
        b.rope(s.k, a.n_head_kv, a.head_dim_k, pos0, n, rope);
    }
}

/// The output projection of `s.att` into `s.out`.
fn project_out(b: &mut dyn Backend, s: &Scratch, w: &AttnWeights, n: usize) {
    b.matmul(s.att, &[(w.wo, s.out)], n);
    if let Some(bo) = w.bo {
        b.add_bias(s.out, bo, n);
    }
}

/// Which GELU an FFN applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gelu {
    /// ggml's tanh approximation (phi2, and how llama.cpp runs every GELU model).
    Tanh,
    /// The exact erf form (Hugging Face's `gelu`, BERT).
    Erf,
}

/// Gated feed-forward weights: `down(act(gate(x)) * up(x))`.
#[derive(Clone, Copy, Debug)]
pub struct GatedFfn {
    pub gate: WeightId, // (n_embd → n_ff)
    pub up: WeightId,   // (n_embd → n_ff)
    pub down: WeightId, // (n_ff → n_embd)
}

impl GatedFfn {
    pub fn load(w: &mut WeightTable, cfg: &ModelConfig, l: usize) -> Result<Self, ArchError> {
        let (e, f) = (cfg.n_embd, cfg.n_ff);
        Ok(GatedFfn {
            gate: w.require(&blk(l, "ffn_gate.weight"), &[e, f])?,
            up: w.require(&blk(l, "ffn_up.weight"), &[e, f])?,
            down: w.require(&blk(l, "ffn_down.weight"), &[f, e])?,
        })
    }

    /// SwiGLU FFN of `s.xn` into `s.out`.
    pub fn swiglu(&self, b: &mut dyn Backend, s: &Scratch, n: usize) {
        b.matmul(s.xn, &[(self.gate, s.gate), (self.up, s.up)], n);
        b.swiglu(s.gate, s.up, n);
        b.matmul(s.gate, &[(self.down, s.out)], n);
    }

    /// GeGLU (tanh GELU) FFN of `s.xn` into `s.out`.
    pub fn geglu(&self, b: &mut dyn Backend, s: &Scratch, n: usize) {
        b.matmul(s.xn, &[(self.gate, s.gate), (self.up, s.up)], n);
        b.geglu(s.gate, s.up, n);
        b.matmul(s.gate, &[(self.down, s.out)], n);
    }
}

/// Plain feed-forward weights with optional biases: `down(gelu(up(x)))`.
#[derive(Clone, Copy, Debug)]
pub struct Ffn {
    pub up: WeightId, // (n_embd → n_ff)
    pub up_b: Option<WeightId>,
    pub down: WeightId, // (n_ff → n_embd)
    pub down_b: Option<WeightId>,
}

impl Ffn {
    pub fn load(w: &mut WeightTable, cfg: &ModelConfig, l: usize) -> Result<Self, ArchError> {
        let (e, f) = (cfg.n_embd, cfg.n_ff);
        Ok(Ffn {
            up: w.require(&blk(l, "ffn_up.weight"), &[e, f])?,
            up_b: w.optional(&blk(l, "ffn_up.bias"), &[f])?,
            down: w.require(&blk(l, "ffn_down.weight"), &[f, e])?,
            down_b: w.optional(&blk(l, "ffn_down.bias"), &[e])?,
        })
    }

    /// tanh-GELU FFN of `s.xn` into `s.out`.
    pub fn gelu(&self, b: &mut dyn Backend, s: &Scratch, n: usize) {
        self.forward(b, s, s.xn, Gelu::Tanh, n);
    }

    /// The FFN of `x` (`s.xn` or `s.x`) with GELU `act`, into `s.out`.
    pub fn forward(&self, b: &mut dyn Backend, s: &Scratch, x: BufId, act: Gelu, n: usize) {
        b.matmul(x, &[(self.up, s.gate)], n);
        if let Some(bias) = self.up_b {
            b.add_bias(s.gate, bias, n);
        }
        match act {
            Gelu::Tanh => b.gelu(s.gate, n),
            Gelu::Erf => b.gelu_erf(s.gate, n),
        }
        b.matmul(s.gate, &[(self.down, s.out)], n);
        if let Some(bias) = self.down_b {
            b.add_bias(s.out, bias, n);
        }
    }
}

/// The output head: `output.weight`, or the token embeddings when the file ties them.
pub fn output_weight(w: &mut WeightTable, cfg: &ModelConfig) -> Result<WeightId, ArchError> {
    let shape = [cfg.n_embd, cfg.vocab_size];
    match w.optional("output.weight", &shape)? {
        Some(o) => Ok(o),
        None => Ok(w.require("token_embd.weight", &shape)?),
    }
}

/// Final norm and output projection of the rows `which` asks for (from `s.x`) into `logits`.
#[allow(clippy::too_many_arguments)]
pub fn output_logits(
    b: &mut dyn Backend,
    s: &Scratch,
    norm: &Norm,
    output: WeightId,
    output_bias: Option<WeightId>,
    vocab: usize,
    n: usize,
    which: Logits<'_>,
    logits: &mut Vec<f32>,
) {
    let last = [n - 1];
    let all: Vec<usize>;
    let rows: &[usize] = match which {
        Logits::Last | Logits::KeepLast => &last,
        Logits::All | Logits::Hidden => {
            all = (0..n).collect();
            &all
        }
        Logits::Rows(r) => r,
    };
    if which == Logits::Hidden {
        let e = s.n_embd;
        logits.clear();
        logits.resize(rows.len() * e, 0.0);
        let mut done = 0;
        for chunk in rows.chunks(s.logit_rows) {
            let m = chunk.len();
            for (i, &r) in chunk.iter().enumerate() {
                b.copy_row(s.x, r, s.xo, i);
            }
            norm.apply(b, s.xo, s.xo, m);
            b.read(s.xo, 0, &mut logits[done * e..(done + m) * e]);
            done += m;
        }
        return;
    }
    let keep = which == Logits::KeepLast;
    logits.clear();
    logits.resize(if keep { 0 } else { rows.len() * vocab }, 0.0);
    let mut done = 0;
    for chunk in rows.chunks(s.logit_rows) {
        let m = chunk.len();
        for (i, &r) in chunk.iter().enumerate() {
            b.copy_row(s.x, r, s.xo, i);
        }
        norm.apply(b, s.xo, s.xo, m);
        b.matmul(s.xo, &[(output, s.logits)], m);
        if let Some(bias) = output_bias {
            b.add_bias(s.logits, bias, m);
        }
        if !keep {
            b.read(s.logits, 0, &mut logits[done * vocab..(done + m) * vocab]);
        }
        done += m;
    }
}
