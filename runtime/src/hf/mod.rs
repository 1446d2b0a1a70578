//! Hugging Face model folders (`config.json`, `generation_config.json`, safetensors weights,
//! single or sharded) as the GGUF llama.cpp's `convert_hf_to_gguf.py` writes for them.
//!
//! [`open`] gives that GGUF in memory at the stored type: the same metadata keys, values and
//! order, the same tensor names, order and shapes; matrices that need no change lie in place in
//! the memory-mapped shards (zero copy), the few tensors the converter changes (Q/K rows of the
//! llama family, Gemma norms as 1 + w, 1-D tensors as F32, `rope_freqs.weight` for llama3 rope
//! scaling) are computed into owned buffers. Decoders: Llama (and Mistral), Qwen2, Qwen3,
//! Phi-2, StableLM, Gemma 3; encoders: BERT and DistilBERT with their sequence-classification
//! heads, BERT's pooler (which the converter drops) kept as `cls.weight` / `cls.bias`, the
//! names `arch/bert.rs` reads it under (llama.cpp's rank pooling applies `cls` with the same
//! tanh). [`convert`] writes it as a file at f32, f16 or bf16 (the converter's bytes) or at any
//! `tinyrt quantize` target.
//!
//! The rules come from llama.cpp 11434's converter (`conversion/base.py`, `llama.py`,
//! `qwen.py`, `phi.py`, `stablelm.py`, `gemma.py`, `bert.py`, `gguf-py/gguf/metadata.py`); the
//! oracles `shared/oracles/hf/` and `shared/oracles/cls/` hold its conversions of tiny folders of
//! every supported class. Where
//! this reader differs: `config.json` is read as written (the converter goes through
//! transformers' `AutoConfig`, which fills in class defaults a complete `config.json` already
//! has), a model card's front matter is not read, and what the converter would accept but the
//! runtime cannot hold (dtypes other than F32/F16/BF16, unknown tensor names, shapes other than
//! the config's) is an error.

mod arch;
mod hparams;
mod naming;
mod params;
mod tensors;
mod weights;

use std::path::{Path, PathBuf};

pub use arch::SUPPORTED;

use crate::gguf::{GgmlType, GgufError, GgufFile, Metadata, Value};
use crate::tools::quantize::{
    self, GgufStreamWriter, QuantizeError, QuantizeOptions, Target, TensorPlan,
};

/// Everything that can be wrong with a folder, or go wrong converting it. `Display` is one
/// line naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HfError {
    #[error("{}: not a Hugging Face model folder (no config.json)", dir.display())]
    NoConfig { dir: PathBuf },
    #[error("{} is not a folder", path.display())]
    NotAFolder { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error("{}: invalid JSON: {msg}", path.display())]
    Json { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    #[error("{}: architecture {found} is not supported (supported: {})", path.display(), SUPPORTED.join(", "))]
    UnknownArchitecture { path: PathBuf, found: String },
    #[error("{}: no model.safetensors or model.safetensors.index.json", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("{}: shard {shard} named by the index is missing", index.display())]
    MissingShard { index: PathBuf, shard: String },
    #[error("{}: safetensors header length {header_len} runs past the end of the {file_len}-byte file", path.display())]
    HeaderPastEnd {
        path: PathBuf,
        header_len: u64,
        file_len: u64,
    },
    #[error("{}: invalid safetensors file: {msg}", path.display())]
    Safetensors { path: PathBuf, msg: String },
    #[error("{}: tensor {name} has dtype {dtype}; only F32, F16 and BF16 are supported", path.display())]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{}: tensor {name} has shape {found:?}, but config.json implies {expected:?}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("{}: tensor {name} is not a tensor of a {arch} model", path.display())]
    UnknownTensor {
        path: PathBuf,
        name: String,
        arch: &'static str,
    },
    #[error("{}: the {arch} tensor {name} is missing", dir.display())]
    MissingTensor {
        dir: PathBuf,
        name: String,
        arch: &'static str,
    },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Quantize(#[from] QuantizeError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
}

impl HfError {
    /// Whether the error is about the folder (bad input) rather than writing the output.
    pub fn is_bad_input(&self) -> bool {
        match self {
            HfError::Gguf(GgufError::Write(_)) => false,
            HfError::Quantize(QuantizeError::File(crate::files::FileError::NotRegular {
                ..
            })) => true,
            HfError::Quantize(q) => !matches!(
                q,
                QuantizeError::Write { .. } | QuantizeError::File(_) | QuantizeError::Internal(_)
            ),
            _ => true,
        }
    }
}

/// The type [`convert`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    /// The converter's `auto`: bf16 when the first matrix is stored bf16, f16 otherwise.
    Auto,
    /// f32, f16 and bf16 as the converter writes them; any other target through
    /// [`quantize::quantize_file`].
    Target(Target),
}

impl OutType {
    /// `auto` or a [`Target`] name.
    pub fn parse(s: &str) -> Result<OutType, QuantizeError> {
        if s.eq_ignore_ascii_case("auto") {
            Ok(OutType::Auto)
        } else {
            Target::parse(s).map(OutType::Target)
        }
    }
}

/// Progress of [`convert`]: called after each tensor with (index, count, GGUF name).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &str);

/// What [`convert`] wrote.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    /// The target the outtype resolved to.
    pub target: Target,
    /// Tensors written.
    pub tensors: usize,
    /// Size of the file written.
    pub output_bytes: u64,
}

/// The folder `dir` as the GGUF llama.cpp's converter writes at the stored type, in memory
/// (see the module documentation).
pub fn open(dir: &Path) -> Result<GgufFile, HfError> {
    if !dir.is_dir() {
        return Err(HfError::NotAFolder {
            path: dir.to_owned(),
        });
    }
    let hp = hparams::Hparams::read(dir)?;
    let arch = arch::Arch::of(&hp)?;
    let rope = params::rope_parameters(&hp)?;
    let weights = weights::read(dir)?;
    let plan = tensors::plan(dir, arch, &hp, &rope, weights)?;
    let file_type = match plan.first_matrix_type {
        Some(GgmlType::BF16) => Target::Bf16.ftype(),
        Some(GgmlType::F16) => Target::F16.ftype(),
        _ => Target::F32.ftype(),
    };
    let mut md = params::metadata(dir, arch, &hp, plan.total_params, file_type)?;
    for (key, value) in tokenizer_metadata(dir, arch.gguf_name(), &hp)? {
        // `set`: a key the hyperparameters already wrote (phi-2's add_bos_token) keeps its
        // place, as in the converter.
        md.set(&key, value);
    }
    Ok(GgufFile::from_parts(md, plan.tensors, plan.segments)?)
}

/// The `tokenizer.*` keys of the folder, in the converter's order, appended after the
/// hyperparameters ([`crate::tokenizer::hf::gguf_metadata`]).
fn tokenizer_metadata(
    dir: &Path,
    arch: &str,
    hparams: &hparams::Hparams,
) -> Result<Vec<(String, Value)>, HfError> {
    Ok(crate::tokenizer::hf::gguf_metadata(
        dir,
        arch,
        &hparams.json(),
    )?)
}

/// Writes the folder `dir` as a GGUF file at `out` (a temporary file renamed into place on
/// success; nothing is left on failure). f32, f16 and bf16 give the converter's file; other
/// targets quantize [`open`]'s model with `tinyrt quantize`'s rules.
pub fn convert(
    dir: &Path,
    out: &Path,
    outtype: OutType,
    progress: Progress<'_>,
) -> Result<ConvertReport, HfError> {
    let model = open(dir)?;
    let target = match outtype {
        OutType::Target(t) => t,
        OutType::Auto => match model.metadata().opt_u32("general.file_type")? {
            Some(32) => Target::Bf16,
            _ => Target::F16,
        },
    };
    let tensors = model.tensor_infos().len();
    if !matches!(target, Target::F32 | Target::F16 | Target::Bf16) {
        let options = QuantizeOptions {
            target,
            output_type: None,
        };
        let report = quantize::quantize_file(&model, out, &options, &mut |i, n, t| {
            progress(i, n, &t.name)
        })?;
        return Ok(ConvertReport {
            target,
            tensors,
            output_bytes: report.output_bytes,
        });
    }
    let output_bytes = write_float(&model, out, target, progress)?;
    Ok(ConvertReport {
        target,
        tensors,
        output_bytes,
    })
}

/// Writes `model` with every matrix at `target` (F32, F16 or BF16) and the converter's F32
/// tensors as F32, in the model's order.
fn write_float(
    model: &GgufFile,
    out: &Path,
    target: Target,
    progress: Progress<'_>,
) -> Result<u64, HfError> {
    let ty = target.default_type();
    let plans: Vec<TensorPlan> = model
        .tensor_infos()
        .iter()
        .map(|t| TensorPlan {
            name: t.name.clone(),
            ty: if tensors::forced_f32(&t.name, t.shape.len()) {
                GgmlType::F32
            } else {
                ty
            },
            shape: t.shape.clone(),
        })
        .collect();
    let mut md: Metadata = model.metadata().clone();
    md.set("general.file_type", Value::U32(target.ftype()));
    let mut writer = GgufStreamWriter::create(out, &md, plans.clone())?;
    let n = plans.len();
    for (i, (plan, t)) in plans.iter().zip(model.tensors()).enumerate() {
        let data = tensors::retype(t.data, t.ty, plan.ty);
        writer.write_tensor(&plan.name, &data)?;
        progress(i, n, &plan.name);
    }
    writer.finish()?;
    let len = std::fs::metadata(out)
        .map_err(|source| HfError::Io {
            path: out.to_owned(),
            source,
        })?
        .len();
    Ok(len)
}
