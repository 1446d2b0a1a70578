//! Requantizing GGUF files, and the per-tensor type choice shared with [`crate::tools::synth`].
//!
//! [`quantize_file`] reads any GGUF file whose tensor types [`tinyrt_kernels::quant`]
//! supports, dequantizes each weight matrix to f32 and quantizes it again to the target
//! type; tensors that stay as they are (1-D norms and biases, or a matrix already of the chosen
//! type) are copied byte for byte. Which tensor gets which type follows llama.cpp's
//! `llama-quantize` (`src/llama-quant.cpp`, build 11434: `tensor_allows_quantization`,
//! `llama_tensor_get_type_impl`, `tensor_type_fallback`), so that a file quantized here from
//! an f32 source has the same tensor types and, since the kernels' quantizers are ggml's
//! reference ones, the same bytes as `llama-quantize` gives without an importance matrix.
//!
//! [`GgufStreamWriter`] writes a GGUF file one tensor at a time, so that requantizing or
//! synthesizing a 7B model never holds more than one tensor in memory.

use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tinyrt_kernels::quant::{self, GgmlType, QuantError};

use crate::files::AtomicFile;
use crate::gguf::{GgufError, GgufFile, GgufWriter, Metadata, Value, DEFAULT_ALIGNMENT};

/// Errors of [`quantize_file`], [`crate::tools::synth`] and [`GgufStreamWriter`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("tensor '{name}': {source}")]
    Quant {
        name: String,
        #[source]
        source: QuantError,
    },
    #[error("tensor '{name}' has type {ty}, which cannot be converted yet")]
    UnsupportedSource { name: String, ty: GgmlType },
    #[error("unknown quantization type '{0}' (expected one of: {list})", list = Target::NAMES.join(", "))]
    UnknownTarget(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tensor '{name}' has {rows} rows, too many to convert on this machine")]
    TooLarge { name: String, rows: u64 },
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error("internal error: {0}")]
    Internal(String),
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

/// A quantization target: one type for every weight matrix, or one of llama.cpp's mixes.
/// The mix of each target is that of the llama.cpp `llama_ftype` named in [`Target::ftype`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    /// llama.cpp's Q4_K_S: Q4_K, with Q5_K for the first attn_v and the first ffn_down layers.
    Q4K,
    /// llama.cpp's Q4_K_M: Q4_K, Q6_K for half of attn_v and ffn_down.
    Q4KM,
    /// llama.cpp's Q5_K_S.
    Q5K,
    /// llama.cpp's Q5_K_M: Q5_K, Q6_K for half of attn_v and ffn_down.
    Q5KM,
    Q6K,
    Iq4Nl,
}

impl Target {
    /// The names [`Target::parse`] accepts.
    pub const NAMES: [&'static str; 16] = [
        "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q4_k_s", "q4_k_m",
        "q5_k", "q5_k_s", "q5_k_m", "q6_k", "iq4_nl",
    ];

    /// Parses a target name, case-insensitively (`q4_k_m`, `Q8_0`, ...).
    pub fn parse(s: &str) -> Result<Target, QuantizeError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => Target::F32,
            "f16" => Target::F16,
            "bf16" => Target::Bf16,
            "q8_0" => Target::Q8_0,
            "q4_0" => Target::Q4_0,
            "q4_1" => Target::Q4_1,
            "q5_0" => Target::Q5_0,
            "q5_1" => Target::Q5_1,
            "q4_k" | "q4_k_s" => Target::Q4K,
            "q4_k_m" => Target::Q4KM,
            "q5_k" | "q5_k_s" => Target::Q5K,
            "q5_k_m" => Target::Q5KM,
            "q6_k" => Target::Q6K,
            "iq4_nl" => Target::Iq4Nl,
            _ => return Err(QuantizeError::UnknownTarget(s.to_owned())),
        })
    }

    /// The canonical name (llama-quantize's spelling, upper case).
    pub fn name(self) -> &'static str {
        match self {
            Target::F32 => "F32",
            Target::F16 => "F16",
            Target::Bf16 => "BF16",
            Target::Q8_0 => "Q8_0",
            Target::Q4_0 => "Q4_0",
            Target::Q4_1 => "Q4_1",
            Target::Q5_0 => "Q5_0",
            Target::Q5_1 => "Q5_1",
            Target::Q4K => "Q4_K_S",
            Target::Q4KM => "Q4_K_M",
            Target::Q5K => "Q5_K_S",
            Target::Q5KM => "Q5_K_M",
            Target::Q6K => "Q6_K",
            Target::Iq4Nl => "IQ4_NL",
        }
    }

    /// The `llama_ftype` number written as `general.file_type` (llama.h, build 11434).
    pub fn ftype(self) -> u32 {
        match self {
            Target::F32 => 0,
            Target::F16 => 1,
            Target::Q4_0 => 2,
            Target::Q4_1 => 3,
            Target::Q8_0 => 7,
            Target::Q5_0 => 8,
            Target::Q5_1 => 9,
            Target::Q4K => 14,
            Target::Q4KM => 15,
            Target::Q5K => 16,
            Target::Q5KM => 17,
            Target::Q6K => 18,
            Target::Iq4Nl => 25,
            Target::Bf16 => 32,
        }
    }

    /// The type of most weight matrices (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        match self {
            Target::F32 => GgmlType::F32,
            Target::F16 => GgmlType::F16,
            Target::Bf16 => GgmlType::BF16,
            Target::Q8_0 => GgmlType::Q8_0,
            Target::Q4_0 => GgmlType::Q4_0,
            Target::Q4_1 => GgmlType::Q4_1,
            Target::Q5_0 => GgmlType::Q5_0,
            Target::Q5_1 => GgmlType::Q5_1,
            Target::Q4K | Target::Q4KM => GgmlType::Q4_K,
            Target::Q5K | Target::Q5KM => GgmlType::Q5_K,
            Target::Q6K => GgmlType::Q6_K,
            Target::Iq4Nl => GgmlType::IQ4_NL,
        }
    }

    fn is_quantized(self) -> bool {
        !matches!(self, Target::F32 | Target::F16 | Target::Bf16)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a single tensor type name for `--keep-output` (`f16`, `q8_0`, `q6_k`, ...).
pub fn parse_tensor_type(s: &str) -> Option<GgmlType> {
    GgmlType::ALL
        .iter()
        .copied()
        .find(|t| t.name().eq_ignore_ascii_case(s) && quant::vec_dot_type(*t).is_some())
}

// ---------------------------------------------------------------------------------------------
// Per-tensor type choice (llama.cpp's llama-quant.cpp)
// ---------------------------------------------------------------------------------------------

/// llama.cpp's `tensor_category`: broad roles found from the tensor name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttentionQkv,
    AttentionV,
    AttentionK,
    AttentionQ,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        Category::AttentionQkv
    } else if name.contains("attn_v.weight") {
        Category::AttentionV
    } else if name.contains("attn_k.weight") {
        Category::AttentionK
    } else if name.contains("attn_q.weight") {
        Category::AttentionQ
    } else if name.contains("attn_output.weight") {
        Category::AttentionOutput
    } else if name.contains("ffn_up") {
        Category::FfnUp
    } else if name.contains("ffn_gate") {
        Category::FfnGate
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// llama.cpp's `tensor_allows_quantization` for the architectures tinyrt knows: matrices whose
/// name ends in `weight`, except norms.
pub fn allows_quantization(name: &str, n_dims: usize) -> bool {
    n_dims >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && !name.contains("ffn_gate_inp.weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// What the type choice needs to know about the model, read once from the tensor table.
#[derive(Clone, Debug)]
pub struct ModelFacts {
    /// `<arch>.block_count`.
    pub n_layer: u32,
    /// `head_count / head_count_kv` (llama.cpp's `n_gqa`).
    pub n_gqa: u32,
    /// Number of attn_v-like tensors (attn_v, attn_qkv).
    pub n_attention_wv: u32,
    /// No `output.weight`: the token embedding is also the output projection.
    pub tied_embeddings: bool,
}

impl ModelFacts {
    /// Facts from a file's metadata and tensor names.
    pub fn from_parts<'a>(md: &Metadata, names: impl Iterator<Item = &'a str>) -> ModelFacts {
        let arch = md
            .opt_str("general.architecture")
            .ok()
            .flatten()
            .unwrap_or("");
        let get = |k: &str| md.opt_u32(&format!("{arch}.{k}")).ok().flatten();
        let (mut n_wv, mut tied, mut n_ffn_down) = (0u32, true, 0u32);
        for name in names {
            match category(name) {
                Category::AttentionV | Category::AttentionQkv => n_wv += 1,
                Category::Output => tied = false,
                Category::FfnDown => n_ffn_down += 1,
                _ => {}
            }
        }
        let n_head = get("attention.head_count").unwrap_or(1).max(1);
        let n_head_kv = get("attention.head_count_kv").unwrap_or(n_head).max(1);
        ModelFacts {
            n_layer: get("block_count").unwrap_or(n_ffn_down),
            n_gqa: n_head / n_head_kv,
            n_attention_wv: n_wv,
            tied_embeddings: tied,
        }
    }
}

/// The type of each tensor, chosen in file order (the attn_v and ffn_down counters of
/// llama.cpp depend on the order).
#[derive(Clone, Debug)]
pub struct TypeChooser {
    target: Target,
    output_type: Option<GgmlType>,
    facts: ModelFacts,
    i_attention_wv: u32,
    i_ffn_down: u32,
    /// Tensors whose row length forced a fallback type: (name, wanted, got).
    pub fallbacks: Vec<(String, GgmlType, GgmlType)>,
}

impl TypeChooser {
    /// `output_type` overrides the type of `output.weight` (and of a tied `token_embd.weight`),
    /// like llama-quantize's `--output-tensor-type`.
    pub fn new(target: Target, output_type: Option<GgmlType>, facts: ModelFacts) -> TypeChooser {
        TypeChooser {
            target,
            output_type,
            facts,
            i_attention_wv: 0,
            i_ffn_down: 0,
            fallbacks: Vec::new(),
        }
    }

    /// The type for the next tensor (call once per tensor, in file order); `None` keeps the
    /// source type.
    pub fn choose(&mut self, name: &str, shape: &[u64]) -> Option<GgmlType> {
        if !allows_quantization(name, shape.len()) {
            return None;
        }
        let cat = category(name);
        let is_output =
            cat == Category::Output || (self.facts.tied_embeddings && cat == Category::TokenEmbd);
        let wanted = match self.output_type {
            Some(t) if is_output => t,
            _ if self.target.is_quantized() => self.mix_type(shape, cat),
            _ => self.target.default_type(),
        };
        let got = fallback(wanted, shape[0]);
        if got != wanted {
            self.fallbacks.push((name.to_owned(), wanted, got));
        }
        Some(got)
    }

    /// `llama_tensor_get_type_impl` for the ftypes of [`Target`].
    fn mix_type(&mut self, shape: &[u64], cat: Category) -> GgmlType {
        use GgmlType as T;
        let use_more_bits = |i: u32, n: u32| -> bool {
            let (i, n) = (i64::from(i), i64::from(n));
            i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
        };
        let target = self.target;
        let mut ty = target.default_type();
        if cat == Category::Output || (self.facts.tied_embeddings && cat == Category::TokenEmbd) {
            if !shape[0].is_multiple_of(ty.block_size() as u64) {
                ty = T::Q8_0;
            } else if ty != T::Q8_0 {
                ty = T::Q6_K;
            }
            return ty;
        }
        match cat {
            // attn_qkv is attn_v-like in llama.cpp: counted with attn_v, and the attn_v branch
            // is taken before the one that would give it Q5_K / Q6_K.
            Category::AttentionV | Category::AttentionQkv => {
                let i = self.i_attention_wv;
                self.i_attention_wv += 1;
                match target {
                    Target::Iq4Nl if self.facts.n_gqa >= 4 => ty = T::Q5_K,
                    Target::Q4KM | Target::Q5KM if use_more_bits(i, self.facts.n_attention_wv) => {
                        ty = T::Q6_K
                    }
                    Target::Q4K if i < 4 => ty = T::Q5_K,
                    _ => {}
                }
            }
            Category::FfnDown => {
                let (i, n) = (self.i_ffn_down, self.facts.n_layer);
                self.i_ffn_down += 1;
                match target {
                    Target::Q4KM | Target::Q5KM if use_more_bits(i, n) => ty = T::Q6_K,
                    Target::Iq4Nl if i < n / 8 => ty = T::Q5_K,
                    Target::Q4K if i < n / 8 => ty = T::Q5_K,
                    _ => {}
                }
            }
            _ => {}
        }
        ty
    }
}

/// The order in which llama-quantize visits (and writes) tensors: by layer number (`blk.N.`,
/// tensors outside the blocks first), then by name (`weight_name_comparer` of
/// llama-model-loader.h). The attn_v / ffn_down counters of the mixes follow this order.
pub fn llama_order<S: AsRef<str>>(names: &[S]) -> Vec<usize> {
    let layer = |n: &str| -> i64 {
        n.strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|d| d.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (names[a].as_ref(), names[b].as_ref());
        (layer(a), a).cmp(&(layer(b), b))
    });
    order
}

/// llama.cpp's `tensor_type_fallback`: a type whose block does not divide the row length is
/// replaced by one whose block does (Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0, ...), and by F16 when
/// even that does not fit.
pub fn fallback(ty: GgmlType, row_len: u64) -> GgmlType {
    use GgmlType as T;
    if row_len.is_multiple_of(ty.block_size() as u64) {
        return ty;
    }
    let fb = match ty {
        T::IQ1_S
        | T::IQ1_M
        | T::IQ2_XXS
        | T::IQ2_XS
        | T::IQ2_S
        | T::IQ3_XXS
        | T::IQ3_S
        | T::IQ4_XS => T::IQ4_NL,
        T::Q2_K | T::Q3_K | T::TQ1_0 | T::TQ2_0 => T::Q4_0,
        T::Q4_K => T::Q5_0,
        T::Q5_K => T::Q5_1,
        T::Q6_K => T::Q8_0,
        t => t,
    };
    if !row_len.is_multiple_of(fb.block_size() as u64) {
        T::F16
    } else {
        fb
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming writer
// ---------------------------------------------------------------------------------------------

/// One tensor of a file written by [`GgufStreamWriter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    pub name: String,
    pub ty: GgmlType,
    /// ggml `ne` order: `shape[0]` is the row length.
    pub shape: Vec<u64>,
}

impl TensorPlan {
    /// Bytes of the tensor's data, or `None` when the row length is not a whole number of
    /// blocks or the size overflows.
    pub fn byte_size(&self) -> Option<u64> {
        let row = self.ty.row_bytes(*self.shape.first()?)?;
        self.shape[1..]
            .iter()
            .try_fold(row, |acc, &d| acc.checked_mul(d))
    }
}

/// Writes a GGUF v3 file whose tensor table is known up front and whose tensor data arrives one
/// tensor at a time, in table order. The layout is [`GgufWriter`]'s (which writes the header and
/// metadata): tensor offsets relative to the data section, every tensor padded to the alignment.
pub struct GgufStreamWriter {
    out: AtomicFile,
    path: PathBuf,
    alignment: u64,
    plans: Vec<(TensorPlan, u64)>,
    next: usize,
}

impl GgufStreamWriter {
    /// Creates `path` and writes the header, the metadata and the tensor table.
    pub fn create(
        path: &Path,
        metadata: &Metadata,
        tensors: Vec<TensorPlan>,
    ) -> Result<GgufStreamWriter, QuantizeError> {
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(_) => u64::from(metadata.get_u32("general.alignment")?),
        };
        // The header and metadata as GgufWriter writes them for a file without tensors
        // (which then ends after the metadata), with the tensor count patched in.
        let mut header = GgufWriter::new();
        header.set_all(metadata);
        let mut bytes = header.to_bytes()?;
        bytes[8..16].copy_from_slice(&(tensors.len() as u64).to_le_bytes());
        let mut plans = Vec::with_capacity(tensors.len());
        let mut offset = 0u64;
        for t in tensors {
            let size = t.byte_size().ok_or_else(|| {
                QuantizeError::Internal(format!("tensor '{}' has an impossible shape", t.name))
            })?;
            bytes.extend_from_slice(&(t.name.len() as u64).to_le_bytes());
            bytes.extend_from_slice(t.name.as_bytes());
            bytes.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                bytes.extend_from_slice(&d.to_le_bytes());
            }
            bytes.extend_from_slice(&t.ty.id().to_le_bytes());
            bytes.extend_from_slice(&offset.to_le_bytes());
            offset += size.next_multiple_of(alignment);
            plans.push((t, size));
        }
        if !plans.is_empty() {
            bytes.resize((bytes.len() as u64).next_multiple_of(alignment) as usize, 0);
        }
        let write_err = |source| QuantizeError::Write {
            path: path.to_owned(),
            source,
        };
        // Written under a temporary name, renamed over `path` by `finish` (see crate::files).
        let mut out = AtomicFile::create(path).map_err(QuantizeError::File)?;
        out.write_all(&bytes).map_err(write_err)?;
        Ok(GgufStreamWriter {
            out,
            path: path.to_owned(),
            alignment,
            plans,
            next: 0,
        })
    }

    /// The tensor whose data [`GgufStreamWriter::write_tensor`] expects next.
    pub fn next_tensor(&self) -> Option<&TensorPlan> {
        self.plans.get(self.next).map(|(p, _)| p)
    }

    /// Appends the data of the next tensor of the table (checked by name and size).
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), QuantizeError> {
        let Some((plan, size)) = self.plans.get(self.next) else {
            return Err(QuantizeError::Internal(format!(
                "tensor '{name}' is not in the table"
            )));
        };
        if plan.name != name || *size != data.len() as u64 {
            return Err(QuantizeError::Internal(format!(
                "expected {} bytes of tensor '{}', got {} bytes of '{name}'",
                size,
                plan.name,
                data.len()
            )));
        }
        let pad = (data.len() as u64).next_multiple_of(self.alignment) - data.len() as u64;
        let path = &self.path;
        let write_err = |source| QuantizeError::Write {
            path: path.clone(),
            source,
        };
        self.out.write_all(data).map_err(write_err)?;
        self.out
            .write_all(&vec![0u8; pad as usize])
            .map_err(write_err)?;
        self.next += 1;
        Ok(())
    }

    /// Checks that every tensor was written, then flushes, syncs and renames the file into
    /// place. Dropped before this, the writer removes its temporary file and leaves the target
    /// as it was.
    pub fn finish(mut self) -> Result<(), QuantizeError> {
        if let Some((plan, _)) = self.plans.get(self.next) {
            return Err(QuantizeError::Internal(format!(
                "tensor '{}' was never written",
                plan.name
            )));
        }
        let path = self.path.clone();
        self.out
            .flush()
            .map_err(|source| QuantizeError::Write { path, source })?;
        self.out.commit().map_err(QuantizeError::File)
    }
}

// ---------------------------------------------------------------------------------------------
// Requantizing a file
// ---------------------------------------------------------------------------------------------

/// Options of [`quantize_file`].
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub target: Target,
    /// Type of `output.weight` (and of a tied `token_embd.weight`) instead of the mix's choice.
    pub output_type: Option<GgmlType>,
}

/// What [`quantize_file`] did to one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    pub bytes: u64,
}

/// What [`quantize_file`] did.
#[derive(Clone, Debug, Default)]
pub struct QuantizeReport {
    pub tensors: Vec<TensorReport>,
    /// Tensors whose row length forced a fallback type: (name, wanted, got).
    pub fallbacks: Vec<(String, GgmlType, GgmlType)>,
    pub input_bytes: u64,
    pub output_bytes: u64,
}

/// Progress of [`quantize_file`]: called after each tensor with (index, count, report).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &TensorReport);

/// Requantizes `input` into a new file at `output` (see the module documentation), tensors in
/// llama-quantize's order ([`llama_order`]). Metadata is
/// carried over with `general.file_type` set to the target's `llama_ftype` and
/// `general.quantization_version` to 2. Runs on the current rayon pool.
pub fn quantize_file(
    input: &GgufFile,
    output: &Path,
    options: &QuantizeOptions,
    progress: Progress<'_>,
) -> Result<QuantizeReport, QuantizeError> {
    let md = input.metadata();
    let facts = ModelFacts::from_parts(md, input.tensor_infos().iter().map(|t| t.name.as_str()));
    let mut chooser = TypeChooser::new(options.target, options.output_type, facts);
    let infos = input.tensor_infos();
    let order = llama_order(&infos.iter().map(|t| t.name.as_str()).collect::<Vec<_>>());
    let plans: Vec<TensorPlan> = order
        .iter()
        .map(|&i| {
            let t = &infos[i];
            TensorPlan {
                name: t.name.clone(),
                ty: chooser.choose(&t.name, &t.shape).unwrap_or(t.ty),
                shape: t.shape.clone(),
            }
        })
        .collect();
    for (plan, &i) in plans.iter().zip(&order) {
        let info = &infos[i];
        if plan.ty != info.ty {
            for ty in [info.ty, plan.ty] {
                if !quant::is_supported(ty) {
                    return Err(QuantizeError::UnsupportedSource {
                        name: info.name.clone(),
                        ty,
                    });
                }
            }
        }
    }

    let mut metadata = md.clone();
    metadata.set("general.quantization_version", Value::U32(2));
    metadata.set("general.file_type", Value::U32(options.target.ftype()));
    let mut writer = GgufStreamWriter::create(output, &metadata, plans.clone())?;

    let mut report = QuantizeReport {
        input_bytes: input.file_size(),
        fallbacks: chooser.fallbacks.clone(),
        ..QuantizeReport::default()
    };
    let count = plans.len();
    for (i, (plan, &index)) in plans.iter().zip(&order).enumerate() {
        let tensor = input
            .tensor(&infos[index].name)
            .ok_or_else(|| QuantizeError::Internal(format!("tensor '{}' vanished", plan.name)))?;
        let converted;
        let data: &[u8] = if plan.ty == tensor.ty {
            tensor.data
        } else {
            converted = convert(
                tensor.name,
                tensor.ty,
                tensor.data,
                tensor.row_len(),
                plan.ty,
            )?;
            &converted
        };
        writer.write_tensor(&plan.name, data)?;
        let r = TensorReport {
            name: plan.name.clone(),
            shape: plan.shape.clone(),
            from: tensor.ty,
            to: plan.ty,
            bytes: data.len() as u64,
        };
        progress(i, count, &r);
        report.tensors.push(r);
    }
    writer.finish()?;
    report.output_bytes = std::fs::metadata(output)
        .map(|m| m.len())
        .map_err(|source| QuantizeError::Write {
            path: output.to_owned(),
            source,
        })?;
    Ok(report)
}

/// Values per parallel work item: big enough to amortise the scheduling, small enough to
/// spread a tensor over the threads.
const CHUNK_VALUES: usize = 1 << 16;

/// Converts whole rows of `row_len` values from type `from` to type `to`, in parallel.
pub fn convert(
    name: &str,
    from: GgmlType,
    data: &[u8],
    row_len: u64,
    to: GgmlType,
) -> Result<Vec<u8>, QuantizeError> {
    let quant_err = |source| QuantizeError::Quant {
        name: name.to_owned(),
        source,
    };
    let row_len = usize::try_from(row_len).map_err(|_| QuantizeError::TooLarge {
        name: name.to_owned(),
        rows: row_len,
    })?;
    let in_row = from
        .row_bytes(row_len as u64)
        .ok_or_else(|| QuantizeError::Internal(format!("tensor '{name}': bad row length")))?
        as usize;
    let out_row = to
        .row_bytes(row_len as u64)
        .ok_or(quant_err(QuantError::NotWholeBlocks {
            ty: to.name(),
            values: row_len,
            block_size: to.block_size(),
        }))? as usize;
    if in_row == 0 || !data.len().is_multiple_of(in_row) {
        return Err(QuantizeError::Internal(format!(
            "tensor '{name}': data is not whole rows"
        )));
    }
    let n_rows = data.len() / in_row;
    let rows_per_chunk = (CHUNK_VALUES / row_len.max(1)).max(1);
    let mut out = vec![0u8; n_rows * out_row];
    out.par_chunks_mut(rows_per_chunk * out_row)
        .zip(data.par_chunks(rows_per_chunk * in_row))
        .try_for_each_init(Vec::new, |values: &mut Vec<f32>, (dst, src)| {
            let rows = src.len() / in_row;
            values.resize(rows * row_len, 0.0);
            quant::dequantize(from, src, values).map_err(quant_err)?;
            quant::quantize(to, values, dst).map_err(quant_err)
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(n_layer: u32, n_wv: u32, tied: bool) -> ModelFacts {
        ModelFacts {
            n_layer,
            n_gqa: 1,
            n_attention_wv: n_wv,
            tied_embeddings: tied,
        }
    }

    #[test]
    fn fallbacks_follow_llama_cpp() {
        assert_eq!(fallback(GgmlType::Q4_K, 576), GgmlType::Q5_0);
        assert_eq!(fallback(GgmlType::Q5_K, 640), GgmlType::Q5_1);
        assert_eq!(fallback(GgmlType::Q6_K, 576), GgmlType::Q8_0);
        assert_eq!(fallback(GgmlType::Q4_K, 512), GgmlType::Q4_K);
        assert_eq!(fallback(GgmlType::Q4_0, 48), GgmlType::F16);
    }

    /// The types of gemma-3-270m-q4_k_m.gguf (made by llama-quantize Q4_K_M), checked for the
    /// first layers: attn_v Q8_0/Q5_0 and ffn_down Q6_K/Q4_K by use_more_bits, 640-wide rows
    /// falling back, the tied embedding at Q8_0.
    #[test]
    fn q4_k_m_mix_matches_gemma_file() {
        let mut c = TypeChooser::new(Target::Q4KM, None, facts(18, 18, true));
        assert_eq!(
            c.choose("token_embd.weight", &[640, 262144]),
            Some(GgmlType::Q8_0)
        );
        assert_eq!(c.choose("output_norm.weight", &[640]), None);
        let expect_v = [
            "Q8_0", "Q8_0", "Q5_0", "Q5_0", "Q8_0", "Q5_0", "Q5_0", "Q8_0",
        ];
        let expect_down = [
            "Q6_K", "Q6_K", "Q4_K", "Q4_K", "Q6_K", "Q4_K", "Q4_K", "Q6_K",
        ];
        for layer in 0..8 {
            let k = c.choose(&format!("blk.{layer}.attn_k.weight"), &[640, 256]);
            assert_eq!(k, Some(GgmlType::Q5_0));
            let v = c.choose(&format!("blk.{layer}.attn_v.weight"), &[640, 256]);
            assert_eq!(v.map(|t| t.name()), Some(expect_v[layer]), "layer {layer}");
            let o = c.choose(&format!("blk.{layer}.attn_output.weight"), &[1024, 640]);
            assert_eq!(o, Some(GgmlType::Q4_K));
            let d = c.choose(&format!("blk.{layer}.ffn_down.weight"), &[2048, 640]);
            assert_eq!(
                d.map(|t| t.name()),
                Some(expect_down[layer]),
                "layer {layer}"
            );
        }
    }

    #[test]
    fn plain_targets_and_output_override() {
        let mut c = TypeChooser::new(Target::Q4_0, None, facts(2, 2, false));
        assert_eq!(
            c.choose("output.weight", &[2048, 32000]),
            Some(GgmlType::Q6_K)
        );
        assert_eq!(
            c.choose("token_embd.weight", &[2048, 32000]),
            Some(GgmlType::Q4_0)
        );
        let mut c = TypeChooser::new(Target::F16, None, facts(2, 2, false));
        assert_eq!(
            c.choose("output.weight", &[2048, 32000]),
            Some(GgmlType::F16)
        );
        assert_eq!(c.choose("blk.0.attn_norm.weight", &[2048]), None);
        let mut c = TypeChooser::new(Target::Q4KM, Some(GgmlType::F16), facts(2, 2, true));
        assert_eq!(
            c.choose("token_embd.weight", &[576, 100]),
            Some(GgmlType::F16)
        );
    }

    #[test]
    fn target_names_parse() {
        for name in Target::NAMES {
            let t = Target::parse(name).unwrap();
            assert_eq!(Target::parse(&t.name().to_ascii_lowercase()).unwrap(), t);
        }
        assert!(Target::parse("q3_xx").is_err());
        assert_eq!(parse_tensor_type("q6_k"), Some(GgmlType::Q6_K));
        assert_eq!(parse_tensor_type("q8_k"), None);
        assert_eq!(parse_tensor_type("iq2_xxs"), None);
    }
}
