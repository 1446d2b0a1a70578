//! Random-weight models of real shapes, for benchmarks and loader tests where the real model is
//! not at hand (`tinyrt synth`).
//!
//! A [`Shape`] names an architecture and its dimensions (SmolLM2-135M, Gemma-3-270M,
//! TinyLlama-1.1B, Phi-2, Llama-7B, and a `tiny` one for tests). [`synthesize`] writes a GGUF file
//! with that shape's metadata and tensor table (the names and shapes llama.cpp's loader expects
//! for the architecture), weights drawn from a seeded PRNG (≈ N(0, 0.02) for matrices, 1 for norm
//! weights, 0 for biases) and quantized with the per-tensor type choice of `llama-quantize`
//! ([`crate::tools::quantize::TypeChooser`]). The tokenizer is copied from another GGUF file or
//! synthesized ([`synthetic_tokenizer`]: a byte-level BPE vocabulary that llama.cpp accepts).
//!
//! Every row is drawn from its own PRNG stream (seeded by seed, tensor and row), so the output
//! does not depend on the number of threads.

use std::collections::HashSet;
use std::path::Path;

use rayon::prelude::*;
use tinyrt_kernels::quant::{self, GgmlType};

use crate::gguf::{Array, GgufFile, Metadata, Value};
use crate::kernels::rng::SplitMix64;
use crate::tools::quantize::{
    GgufStreamWriter, ModelFacts, QuantizeError, Target, TensorPlan, TypeChooser,
};

/// Architectures [`synthesize`] can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Gemma3,
    Phi2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gemma3 => "gemma3",
            Arch::Phi2 => "phi2",
        }
    }
}

/// The dimensions of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub name: &'static str,
    pub arch: Arch,
    pub n_embd: u64,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim: u64,
    pub n_ff: u64,
    /// Vocabulary size when the tokenizer is synthesized and `--vocab` is not given.
    pub default_vocab: u64,
    /// No `output.weight`: the output projection is `token_embd.weight`.
    pub tied: bool,
    pub context_length: u32,
    /// Rotary dimensions per head (phi2 rotates only part of each head).
    pub rope_dims: u32,
    pub rope_freq_base: f32,
    pub norm_eps: f32,
    /// Gemma-3's sliding-window attention.
    pub sliding_window: Option<u32>,
}

/// The shapes [`Shape::by_name`] knows (dimensions from each model's published GGUF).
pub const SHAPE_NAMES: [&str; 6] = [
    "smollm2-135m",
    "gemma3-270m",
    "tinyllama-1.1b",
    "phi2-2.7b",
    "llama-7b",
    "tiny",
];

impl Shape {
    pub fn by_name(name: &str) -> Option<Shape> {
        let llama = |name, n_embd, n_layer, n_head, n_head_kv, n_ff, vocab, tied, ctx| Shape {
            name,
            arch: Arch::Llama,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim: n_embd / n_head,
            n_ff,
            default_vocab: vocab,
            tied,
            context_length: ctx,
            rope_dims: (n_embd / n_head) as u32,
            rope_freq_base: 10000.0,
            norm_eps: 1e-5,
            sliding_window: None,
        };
        Some(match name {
            "smollm2-135m" => Shape {
                rope_freq_base: 100000.0,
                ..llama("smollm2-135m", 576, 30, 9, 3, 1536, 49152, true, 8192)
            },
            "tinyllama-1.1b" => llama("tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, false, 2048),
            "llama-7b" => llama("llama-7b", 4096, 32, 32, 32, 11008, 32000, false, 4096),
            // Small enough for tests; rows of 256 so that every k-quant applies.
            "tiny" => llama("tiny", 256, 2, 4, 2, 512, 512, false, 512),
            "gemma3-270m" => Shape {
                name: "gemma3-270m",
                arch: Arch::Gemma3,
                n_embd: 640,
                n_layer: 18,
                n_head: 4,
                n_head_kv: 1,
                head_dim: 256,
                n_ff: 2048,
                default_vocab: 262144,
                tied: true,
                context_length: 32768,
                rope_dims: 256,
                rope_freq_base: 1_000_000.0,
                norm_eps: 1e-6,
                sliding_window: Some(512),
            },
            "phi2-2.7b" => Shape {
                name: "phi2-2.7b",
                arch: Arch::Phi2,
                n_embd: 2560,
                n_layer: 32,
                n_head: 32,
                n_head_kv: 32,
                head_dim: 80,
                n_ff: 10240,
                default_vocab: 51200,
                tied: false,
                context_length: 2048,
                rope_dims: 32,
                rope_freq_base: 10000.0,
                norm_eps: 1e-5,
                sliding_window: None,
            },
            _ => return None,
        })
    }

    /// The architecture's metadata (`general.*` and `<arch>.*`), for a vocabulary of `n_vocab`.
    pub fn metadata(&self, n_vocab: u64) -> Metadata {
        let a = self.arch.name();
        let mut md = Metadata::new();
        let u32v = |x: u64| Value::U32(x as u32);
        md.set("general.architecture", Value::String(a.to_owned()));
        md.set("general.type", Value::String("model".to_owned()));
        md.set(
            "general.name",
            Value::String(format!("tinyrt synth {} (random weights)", self.name)),
        );
        md.set(
            &format!("{a}.context_length"),
            Value::U32(self.context_length),
        );
        md.set(&format!("{a}.embedding_length"), u32v(self.n_embd));
        md.set(&format!("{a}.block_count"), u32v(self.n_layer));
        md.set(&format!("{a}.feed_forward_length"), u32v(self.n_ff));
        md.set(&format!("{a}.attention.head_count"), u32v(self.n_head));
        md.set(
            &format!("{a}.attention.head_count_kv"),
            u32v(self.n_head_kv),
        );
        match self.arch {
            Arch::Phi2 => md.set(
                &format!("{a}.attention.layer_norm_epsilon"),
                Value::F32(self.norm_eps),
            ),
            Arch::Llama | Arch::Gemma3 => md.set(
                &format!("{a}.attention.layer_norm_rms_epsilon"),
                Value::F32(self.norm_eps),
            ),
        }
        match self.arch {
            Arch::Gemma3 => {
                md.set(&format!("{a}.attention.key_length"), u32v(self.head_dim));
                md.set(&format!("{a}.attention.value_length"), u32v(self.head_dim));
                md.set(
                    &format!("{a}.rope.freq_base"),
                    Value::F32(self.rope_freq_base),
                );
                if let Some(w) = self.sliding_window {
                    md.set(&format!("{a}.attention.sliding_window"), Value::U32(w));
                }
            }
            Arch::Llama => {
                md.set(
                    &format!("{a}.rope.freq_base"),
                    Value::F32(self.rope_freq_base),
                );
                md.set(
                    &format!("{a}.rope.dimension_count"),
                    Value::U32(self.rope_dims),
                );
                md.set(&format!("{a}.vocab_size"), u32v(n_vocab));
            }
            Arch::Phi2 => {
                md.set(
                    &format!("{a}.rope.dimension_count"),
                    Value::U32(self.rope_dims),
                );
            }
        }
        md
    }

    /// The tensor table in file order: (name, shape in ggml `ne` order, initial value kind).
    pub fn tensors(&self, n_vocab: u64) -> Vec<(String, Vec<u64>, Init)> {
        let (e, ff) = (self.n_embd, self.n_ff);
        let q = self.n_head * self.head_dim;
        let kv = self.n_head_kv * self.head_dim;
        let mut t: Vec<(String, Vec<u64>, Init)> = Vec::new();
        let mut add = |name: String, shape: Vec<u64>, init: Init| t.push((name, shape, init));
        add("token_embd.weight".into(), vec![e, n_vocab], Init::Random);
        for i in 0..self.n_layer {
            let b = |s: &str| format!("blk.{i}.{s}");
            match self.arch {
                Arch::Llama => {
                    add(b("attn_norm.weight"), vec![e], Init::One);
                    add(b("attn_q.weight"), vec![e, q], Init::Random);
                    add(b("attn_k.weight"), vec![e, kv], Init::Random);
                    add(b("attn_v.weight"), vec![e, kv], Init::Random);
                    add(b("attn_output.weight"), vec![q, e], Init::Random);
                    add(b("ffn_norm.weight"), vec![e], Init::One);
                    add(b("ffn_gate.weight"), vec![e, ff], Init::Random);
                    add(b("ffn_up.weight"), vec![e, ff], Init::Random);
                    add(b("ffn_down.weight"), vec![ff, e], Init::Random);
                }
                // Tensor names and shapes of gemma-3-270m-q4_k_m.gguf.
                Arch::Gemma3 => {
                    add(b("attn_norm.weight"), vec![e], Init::One);
                    add(b("attn_q.weight"), vec![e, q], Init::Random);
                    add(b("attn_k.weight"), vec![e, kv], Init::Random);
                    add(b("attn_v.weight"), vec![e, kv], Init::Random);
                    add(b("attn_q_norm.weight"), vec![self.head_dim], Init::One);
                    add(b("attn_k_norm.weight"), vec![self.head_dim], Init::One);
                    add(b("attn_output.weight"), vec![q, e], Init::Random);
                    add(b("post_attention_norm.weight"), vec![e], Init::One);
                    add(b("ffn_norm.weight"), vec![e], Init::One);
                    add(b("ffn_gate.weight"), vec![e, ff], Init::Random);
                    add(b("ffn_up.weight"), vec![e, ff], Init::Random);
                    add(b("ffn_down.weight"), vec![ff, e], Init::Random);
                    add(b("post_ffw_norm.weight"), vec![e], Init::One);
                }
                // llama.cpp's phi2 tensors (fused QKV, biases everywhere).
                Arch::Phi2 => {
                    add(b("attn_norm.weight"), vec![e], Init::One);
                    add(b("attn_norm.bias"), vec![e], Init::Zero);
                    add(b("attn_qkv.weight"), vec![e, q + 2 * kv], Init::Random);
                    add(b("attn_qkv.bias"), vec![q + 2 * kv], Init::Zero);
                    add(b("attn_output.weight"), vec![q, e], Init::Random);
                    add(b("attn_output.bias"), vec![e], Init::Zero);
                    add(b("ffn_up.weight"), vec![e, ff], Init::Random);
                    add(b("ffn_up.bias"), vec![ff], Init::Zero);
                    add(b("ffn_down.weight"), vec![ff, e], Init::Random);
                    add(b("ffn_down.bias"), vec![e], Init::Zero);
                }
            }
        }
        add("output_norm.weight".into(), vec![e], Init::One);
        if self.arch == Arch::Phi2 {
            add("output_norm.bias".into(), vec![e], Init::Zero);
        }
        if !self.tied {
            add("output.weight".into(), vec![e, n_vocab], Init::Random);
            if self.arch == Arch::Phi2 {
                add("output.bias".into(), vec![n_vocab], Init::Zero);
            }
        }
        t
    }
}

/// How a tensor's values are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// ≈ N(0, 0.02).
    Random,
    /// All 1 (norm weights).
    One,
    /// All 0 (biases).
    Zero,
}

/// Where the vocabulary comes from.
#[derive(Clone, Debug)]
pub enum TokenizerSource {
    /// The `tokenizer.*` keys of another GGUF file.
    Copy(Metadata),
    /// A synthetic byte-level BPE vocabulary of this many tokens.
    Synthetic(u64),
    /// A synthetic vocabulary of the shape's default size.
    Default,
}

/// The `tokenizer.*` keys of a GGUF file (all of `tokenizer.ggml.*` and the chat template).
pub fn tokenizer_keys(file: &GgufFile) -> Metadata {
    let mut md = Metadata::new();
    for (k, v) in file.metadata().iter() {
        if k.starts_with("tokenizer.") {
            md.set(k, v.clone());
        }
    }
    md
}

/// The smallest synthetic vocabulary: the 256 byte tokens and `<|endoftext|>`.
pub const MIN_SYNTHETIC_VOCAB: u64 = 257;
/// The largest synthetic vocabulary: four times the largest real one (Gemma-3's 262,144).
pub const MAX_SYNTHETIC_VOCAB: u64 = 1 << 20;

/// GPT-2's `bytes_to_unicode`: the printable character each byte is written as in a byte-level
/// BPE vocabulary (printable Latin-1 bytes stand for themselves, the others map to U+0100...).
fn byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let c = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        table[b as usize] = char::from_u32(c).unwrap_or('?');
    }
    table
}

/// A byte-level BPE vocabulary of `n_vocab` tokens (`tokenizer.ggml.model = gpt2`,
/// `pre = default`): `<|endoftext|>` (id 0, control, also BOS and EOS), the 256 byte tokens,
/// then merged tokens, each the concatenation of two earlier tokens with its merge rule, biased
/// towards letters and the space so that English text gets multi-byte tokens.
pub fn synthetic_tokenizer(n_vocab: u64, seed: u64) -> Result<Metadata, QuantizeError> {
    if !(MIN_SYNTHETIC_VOCAB..=MAX_SYNTHETIC_VOCAB).contains(&n_vocab) {
        return Err(QuantizeError::Internal(format!(
            "a synthetic vocabulary needs {MIN_SYNTHETIC_VOCAB} to {MAX_SYNTHETIC_VOCAB} tokens, not {n_vocab}"
        )));
    }
    let bytes = byte_to_unicode();
    let mut tokens: Vec<String> = vec!["<|endoftext|>".to_owned()];
    let mut types: Vec<i32> = vec![3];
    tokens.extend(bytes.iter().map(|c| c.to_string()));
    types.extend(std::iter::repeat_n(1, 256));
    // Preferred building blocks: letters and the space (written 'Ġ').
    let mut preferred: Vec<usize> = (b'a'..=b'z')
        .chain(b'A'..=b'Z')
        .chain([b' ', b' ', b' ', b'e', b't', b'a'])
        .map(|b| 1 + b as usize)
        .collect();
    let mut seen: HashSet<String> = tokens.iter().cloned().collect();
    let mut merges: Vec<String> = Vec::new();
    let mut rng = SplitMix64(seed ^ 0x746f_6b65_6e73);
    let mut attempts = 0u64;
    while (tokens.len() as u64) < n_vocab {
        attempts += 1;
        let pick = |rng: &mut SplitMix64| -> usize {
            let r = rng.next_u64();
            if r % 10 < 8 || attempts > 64 * n_vocab {
                preferred[(r >> 8) as usize % preferred.len()]
            } else {
                1 + ((r >> 8) % 256) as usize
            }
        };
        let (a, b) = (pick(&mut rng), pick(&mut rng));
        let text = format!("{}{}", tokens[a], tokens[b]);
        if text.chars().count() > 16 || seen.contains(&text) {
            if attempts > 1024 * n_vocab {
                return Err(QuantizeError::Internal(
                    "cannot build the synthetic vocabulary".into(),
                ));
            }
            continue;
        }
        merges.push(format!("{} {}", tokens[a], tokens[b]));
        seen.insert(text.clone());
        preferred.push(tokens.len());
        tokens.push(text);
        types.push(1);
    }
    let mut md = Metadata::new();
    md.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    md.set("tokenizer.ggml.pre", Value::String("default".into()));
    md.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    md.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    md.set("tokenizer.ggml.merges", Value::Array(Array::String(merges)));
    md.set("tokenizer.ggml.bos_token_id", Value::U32(0));
    md.set("tokenizer.ggml.eos_token_id", Value::U32(0));
    md.set("tokenizer.ggml.add_bos_token", Value::Bool(false));
    Ok(md)
}

/// Options of [`synthesize`].
#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub shape: Shape,
    pub target: Target,
    pub tokenizer: TokenizerSource,
    pub seed: u64,
}

/// What [`synthesize`] wrote.
#[derive(Clone, Debug)]
pub struct SynthReport {
    pub n_vocab: u64,
    pub n_params: u64,
    pub tensors: Vec<TensorPlan>,
    pub fallbacks: Vec<(String, GgmlType, GgmlType)>,
    pub bytes: u64,
}

/// Writes a random-weight model of `options.shape` to `path` (see the module documentation).
/// `progress` is called after each tensor with (index, count, tensor). Runs on the current
/// rayon pool.
pub fn synthesize(
    path: &Path,
    options: &SynthOptions,
    progress: &mut dyn FnMut(usize, usize, &TensorPlan),
) -> Result<SynthReport, QuantizeError> {
    let shape = &options.shape;
    let tok = match &options.tokenizer {
        TokenizerSource::Copy(md) => md.clone(),
        TokenizerSource::Synthetic(n) => synthetic_tokenizer(*n, options.seed)?,
        TokenizerSource::Default => synthetic_tokenizer(shape.default_vocab, options.seed)?,
    };
    let n_vocab = match tok.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) if !a.is_empty() => a.len() as u64,
        _ => {
            return Err(QuantizeError::Internal(
                "the tokenizer has no tokenizer.ggml.tokens".into(),
            ))
        }
    };

    let mut md = shape.metadata(n_vocab);
    for (k, v) in tok.iter() {
        md.set(k, v.clone());
    }
    md.set("general.quantization_version", Value::U32(2));
    md.set("general.file_type", Value::U32(options.target.ftype()));

    // llama-quantize's tensor order, so that the mixes' per-layer choices match its own.
    let mut table = shape.tensors(n_vocab);
    let order = crate::tools::quantize::llama_order(
        &table.iter().map(|(n, _, _)| n.as_str()).collect::<Vec<_>>(),
    );
    let mut slots: Vec<Option<_>> = table.into_iter().map(Some).collect();
    table = order.iter().filter_map(|&i| slots[i].take()).collect();
    let facts = ModelFacts::from_parts(&md, table.iter().map(|(n, _, _)| n.as_str()));
    let mut chooser = TypeChooser::new(options.target, None, facts);
    let plans: Vec<TensorPlan> = table
        .iter()
        .map(|(name, shape, _)| TensorPlan {
            name: name.clone(),
            ty: chooser.choose(name, shape).unwrap_or(GgmlType::F32),
            shape: shape.clone(),
        })
        .collect();
    let mut writer = GgufStreamWriter::create(path, &md, plans.clone())?;
    let count = plans.len();
    let mut n_params = 0u64;
    for (i, (plan, (_, _, init))) in plans.iter().zip(&table).enumerate() {
        let data = tensor_data(plan, *init, options.seed, i as u64)?;
        writer.write_tensor(&plan.name, &data)?;
        n_params += plan.shape.iter().product::<u64>();
        progress(i, count, plan);
    }
    writer.finish()?;
    let bytes =
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|source| QuantizeError::Write {
                path: path.to_owned(),
                source,
            })?;
    Ok(SynthReport {
        n_vocab,
        n_params,
        tensors: plans,
        fallbacks: chooser.fallbacks,
        bytes,
    })
}

/// Values per parallel work item.
const CHUNK_VALUES: usize = 1 << 16;

/// Random matrices are assembled from a pool of at least this many quantized random blocks
/// (and 64 rows) when they have more than four times as many rows as the pool.
const POOL_BLOCKS: usize = 1024;
const POOL_MIN_ROWS: usize = 64;

/// The bytes of one tensor, in parallel. Values are made row by row (row `r` of tensor `t` from
/// its own PRNG stream) and quantized to the plan's type. Quantizing a billion values with the
/// k-quant reference quantizers takes minutes, so large random matrices are instead assembled
/// from a pool of quantized random rows: every block of a row is a copy of a pool block picked
/// at random (blocks are self-contained), its scales multiplied by a random factor in
/// [0.5, 1.5) (which multiplies every value of the block by that factor), so that rows stay
/// distinct and the values keep a spread of about 0.02.
fn tensor_data(plan: &TensorPlan, init: Init, seed: u64, t: u64) -> Result<Vec<u8>, QuantizeError> {
    let row_len = plan.shape[0] as usize;
    let n_rows: u64 = plan.shape[1..].iter().product();
    let row_bytes =
        plan.ty.row_bytes(row_len as u64).ok_or_else(|| {
            QuantizeError::Internal(format!("tensor '{}': bad row length", plan.name))
        })? as usize;
    let n_rows = usize::try_from(n_rows).map_err(|_| QuantizeError::TooLarge {
        name: plan.name.clone(),
        rows: n_rows,
    })?;
    let block_bytes = plan.ty.type_size();
    let blocks_per_row = (row_bytes / block_bytes).max(1);
    let pool_rows = POOL_BLOCKS.div_ceil(blocks_per_row).max(POOL_MIN_ROWS);
    // Float types cost no quantization: only the quantized ones take the pool.
    let quantized = plan.ty.block_size() > 1;
    if let (Init::Random, Some(scales), true) = (init, block_scales(plan.ty), quantized) {
        if n_rows > 4 * pool_rows {
            let pool_plan = TensorPlan {
                shape: vec![row_len as u64, pool_rows as u64],
                ..plan.clone()
            };
            let pool = tensor_data(&pool_plan, init, seed, t)?;
            let n_pool_blocks = (pool.len() / block_bytes) as u64;
            let mut out = vec![0u8; n_rows * row_bytes];
            out.par_chunks_mut(row_bytes)
                .enumerate()
                .for_each(|(r, dst)| {
                    let mut rng = SplitMix64(stream_seed(seed, t, (r as u64) | 1 << 62));
                    for block in dst.chunks_exact_mut(block_bytes) {
                        let x = rng.next_u64();
                        let p = (x % n_pool_blocks) as usize;
                        block.copy_from_slice(&pool[p * block_bytes..(p + 1) * block_bytes]);
                        let factor = 0.5 + (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                        scales.apply(block, factor);
                    }
                });
            return Ok(out);
        }
    }
    let rows_per_chunk = (CHUNK_VALUES / row_len.max(1)).max(1);
    let mut out = vec![0u8; n_rows * row_bytes];
    out.par_chunks_mut(rows_per_chunk * row_bytes)
        .enumerate()
        .try_for_each_init(Vec::new, |values: &mut Vec<f32>, (c, dst)| {
            let rows = dst.len() / row_bytes;
            values.resize(rows * row_len, 0.0);
            for (r, row) in values.chunks_exact_mut(row_len).enumerate() {
                let row_index = (c * rows_per_chunk + r) as u64;
                match init {
                    Init::One => row.fill(1.0),
                    Init::Zero => row.fill(0.0),
                    Init::Random => fill_normal(row, 0.02, stream_seed(seed, t, row_index)),
                }
            }
            quant::quantize(plan.ty, values, dst).map_err(|source| QuantizeError::Quant {
                name: plan.name.clone(),
                source,
            })
        })?;
    Ok(out)
}

/// Where a block's scales are and how they are encoded: multiplying them all by `f`
/// multiplies every value of the block by `f`.
#[derive(Clone, Copy)]
struct BlockScales {
    /// Byte offsets of the scale fields in the block.
    offsets: &'static [usize],
    encoding: ScaleEncoding,
}

#[derive(Clone, Copy)]
enum ScaleEncoding {
    F16,
    Bf16,
    F32,
}

impl BlockScales {
    fn apply(self, block: &mut [u8], f: f32) {
        for &o in self.offsets {
            match self.encoding {
                ScaleEncoding::F16 => {
                    let v = half::f16::from_le_bytes([block[o], block[o + 1]]);
                    let v = half::f16::from_f32(v.to_f32() * f);
                    block[o..o + 2].copy_from_slice(&v.to_le_bytes());
                }
                ScaleEncoding::Bf16 => {
                    let v = half::bf16::from_le_bytes([block[o], block[o + 1]]);
                    let v = half::bf16::from_f32(v.to_f32() * f);
                    block[o..o + 2].copy_from_slice(&v.to_le_bytes());
                }
                ScaleEncoding::F32 => {
                    let v =
                        f32::from_le_bytes([block[o], block[o + 1], block[o + 2], block[o + 3]]);
                    block[o..o + 4].copy_from_slice(&(v * f).to_le_bytes());
                }
            }
        }
    }
}

/// The scale fields of each block layout (ggml-common.h): `d` (and `m` / `dmin`, which scale
/// with it) as f16 at the start of the legacy and k-quant blocks, at the end of Q6_K and Q3_K.
fn block_scales(ty: GgmlType) -> Option<BlockScales> {
    use GgmlType as T;
    let (offsets, encoding): (&'static [usize], ScaleEncoding) = match ty {
        T::F32 => (&[0], ScaleEncoding::F32),
        T::F16 => (&[0], ScaleEncoding::F16),
        T::BF16 => (&[0], ScaleEncoding::Bf16),
        T::Q4_0 | T::Q5_0 | T::Q8_0 | T::IQ4_NL => (&[0], ScaleEncoding::F16),
        T::Q4_1 | T::Q5_1 | T::Q4_K | T::Q5_K => (&[0, 2], ScaleEncoding::F16),
        T::Q2_K => (&[80, 82], ScaleEncoding::F16),
        T::Q3_K => (&[108], ScaleEncoding::F16),
        T::Q6_K => (&[208], ScaleEncoding::F16),
        _ => return None,
    };
    Some(BlockScales { offsets, encoding })
}

fn stream_seed(seed: u64, tensor: u64, row: u64) -> u64 {
    let mut s = SplitMix64(seed ^ tensor.wrapping_mul(0xd1b5_4a32_d192_ed03));
    s.0 ^= row.wrapping_mul(0x8cb9_2ba7_2f3d_8dd7);
    s.next_u64()
}

/// Fills `out` with ≈ N(0, std²) values: the Irwin–Hall sum of four 16-bit uniforms (mean 2,
/// variance 1/3), centred and scaled. Tails end at ±2√3·std, which random weights do not miss.
fn fill_normal(out: &mut [f32], std: f32, seed: u64) {
    let mut rng = SplitMix64(seed);
    let scale = std * 3f32.sqrt() / 65536.0;
    for x in out.iter_mut() {
        let r = rng.next_u64();
        let sum = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
        *x = (sum as f32 - 131_070.0) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_values_have_the_asked_spread() {
        let mut v = vec![0f32; 100_000];
        fill_normal(&mut v, 0.02, 7);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        assert!(mean.abs() < 5e-4, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 5e-4, "std {}", var.sqrt());
    }

    /// Scaling a block's scale fields scales every dequantized value of the block.
    #[test]
    fn block_scales_scale_every_value() {
        use GgmlType as T;
        let mut x = vec![0f32; 512];
        fill_normal(&mut x, 0.02, 3);
        for ty in [
            T::F32,
            T::F16,
            T::BF16,
            T::Q4_0,
            T::Q4_1,
            T::Q5_0,
            T::Q5_1,
            T::Q8_0,
            T::IQ4_NL,
            T::Q2_K,
            T::Q3_K,
            T::Q4_K,
            T::Q5_K,
            T::Q6_K,
        ] {
            let mut q = vec![0u8; ty.row_bytes(512).unwrap() as usize];
            quant::quantize(ty, &x, &mut q).unwrap();
            let mut before = vec![0f32; 512];
            quant::dequantize(ty, &q, &mut before).unwrap();
            let s = block_scales(ty).unwrap();
            for block in q.chunks_exact_mut(ty.type_size()) {
                s.apply(block, 1.25);
            }
            let mut after = vec![0f32; 512];
            quant::dequantize(ty, &q, &mut after).unwrap();
            for (a, b) in before.iter().zip(&after) {
                // f16 / bf16 rounding of the scaled scale (and of the minimum of Q4_1 / Q5_1,
                // whose rounding error is relative to the block's minimum, not to the value).
                assert!(
                    (a * 1.25 - b).abs() <= 1e-2 * a.abs() + 1e-4,
                    "{ty}: {a} {b}"
                );
            }
        }
    }

    #[test]
    fn byte_table_is_gpt2s() {
        let t = byte_to_unicode();
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        let distinct: HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn synthetic_vocabulary_is_consistent() {
        let md = synthetic_tokenizer(1000, 1).unwrap();
        let tokens = md.get_str_array("tokenizer.ggml.tokens").unwrap();
        let merges = md.get_str_array("tokenizer.ggml.merges").unwrap();
        assert_eq!(tokens.len(), 1000);
        assert_eq!(merges.len(), 1000 - 257);
        let set: HashSet<&str> = tokens.iter().map(String::as_str).collect();
        assert_eq!(set.len(), 1000);
        for m in merges {
            let (a, b) = m.split_once(' ').unwrap();
            assert!(set.contains(a) && set.contains(b) && set.contains(format!("{a}{b}").as_str()));
        }
        assert!(synthetic_tokenizer(100, 1).is_err());
    }

    #[test]
    fn shapes_have_consistent_dimensions() {
        for name in SHAPE_NAMES {
            let s = Shape::by_name(name).unwrap();
            assert_eq!(s.name, name);
            assert_eq!(s.n_head % s.n_head_kv, 0);
            let t = s.tensors(s.default_vocab);
            assert_eq!(t.iter().any(|(n, _, _)| n == "output.weight"), !s.tied);
        }
        assert!(Shape::by_name("gpt-5").is_none());
    }
}
