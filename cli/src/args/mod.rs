//! The flag table shared by the commands (llama.cpp's `common/arg.cpp`): load, session,
//! sampling and requantization options are declared once here and flattened into each command
//! (`#[command(flatten)]`), with their checks, so every command spells and checks them alike.
//! The helpers that turn them into a loaded model live here too; commands never import each
//! other.

pub mod requant;
pub mod sampling;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tinyrt::gguf::{GgufError, GgufFile};
use tinyrt::kernels::cpu::Isa;
use tinyrt::kv_cache::KvType;
use tinyrt::model::Device;
use tinyrt::{LoadOptions, Model, SessionOptions};

use crate::error::bad_input;

pub use requant::RequantArgs;
pub use sampling::SamplingArgs;

/// CPU options of every command that computes: `-t` and `--isa`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CpuArgs {
    /// CPU threads (default: physical cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// CPU kernels: scalar, avx2, avx512, neon or neon-dotprod (default: $TINYRT_ISA, else the fastest this CPU has).
    #[arg(long, value_name = "ISA")]
    pub isa: Option<String>,
}

impl CpuArgs {
    /// The checked `-t` (at least 1, at most [`tinyrt::model::max_threads`]).
    pub fn threads(&self) -> Result<Option<usize>> {
        if let Some(n) = self.threads {
            tinyrt::model::check_threads(n).map_err(bad_input)?;
        }
        Ok(self.threads)
    }

    /// The ISA asked for: `--isa`, else `TINYRT_ISA` (read here, at the edge, and nowhere in
    /// the libraries), else `None` (the library picks the fastest the CPU has). One this CPU
    /// lacks, or an unknown name, is bad input.
    pub fn isa(&self) -> Result<Option<Isa>> {
        let Some(name) = self.isa.as_deref() else {
            return Isa::from_env().map_err(bad_input);
        };
        let setting = format!("--isa {name:?}");
        Isa::parse_supported(name, &setting)
            .map(Some)
            .map_err(bad_input)
    }
}

/// A rayon pool of `threads` threads (all cores by default) for the file tools (quantize,
/// synth), which run no model and so have no model pool to share.
pub fn rayon_pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    if let Some(n) = threads {
        tinyrt::model::check_threads(n).map_err(bad_input)?;
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .context("cannot start the worker threads")
}

/// How to load a model: CPU options, `--device` and `--requant`.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    #[command(flatten)]
    pub cpu: CpuArgs,
    /// Device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub requant: RequantArgs,
}

impl LoadArgs {
    /// The checked options (every bad value is bad input), before anything is read.
    pub fn options(&self) -> Result<LoadOptions> {
        let device: Device = self.device.parse().map_err(bad_input)?;
        Ok(LoadOptions {
            device,
            threads: self.cpu.threads()?,
            isa: self.cpu.isa()?,
            requant: self.requant.format()?,
            progress: requant::progress_bar(),
            ..LoadOptions::default()
        })
    }
}

/// The KV cache type (`--kv-type`).
#[derive(clap::Args, Clone, Debug)]
pub struct KvArgs {
    /// KV cache type: f16, f32, or auto (f32 for a Hugging Face folder, f16 for a GGUF file).
    #[arg(long, default_value = "auto")]
    pub kv_type: String,
}

impl KvArgs {
    /// The type asked for, `None` for auto (checked before anything is read).
    pub fn choice(&self) -> Result<Option<KvType>> {
        if self.kv_type.eq_ignore_ascii_case("auto") {
            return Ok(None);
        }
        self.kv_type
            .parse()
            .map(Some)
            .map_err(|e: String| bad_input(format!("{e} or auto")))
    }

    /// The type for `model`: the one asked for, or [`Model::default_kv_type`].
    pub fn for_model(&self, model: &Model) -> Result<KvType> {
        Ok(self.choice()?.unwrap_or_else(|| model.default_kv_type()))
    }
}

/// Session options of the commands that hold a conversation or a prompt: `-c` and `--kv-type`.
#[derive(clap::Args, Clone, Debug)]
pub struct SessionArgs {
    /// Context size (default: the model's, at most 4096).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    #[command(flatten)]
    pub kv: KvArgs,
}

impl SessionArgs {
    /// `opts` (from [`SessionArgs::options`]) with the KV cache type for `model`.
    pub fn for_model(&self, model: &Model, opts: SessionOptions) -> Result<SessionOptions> {
        Ok(SessionOptions {
            kv_type: self.kv.for_model(model)?,
            ..opts
        })
    }

    /// The checked options, before anything is read.
    pub fn options(&self) -> Result<SessionOptions> {
        if self.ctx_size == Some(0) {
            return Err(bad_input("-c must be at least 1"));
        }
        Ok(SessionOptions {
            n_ctx: self.ctx_size,
            // Settled once the model is loaded (`SessionArgs::for_model`).
            kv_type: self.kv.choice()?.unwrap_or_default(),
            ..SessionOptions::default()
        })
    }
}

/// LoRA adapters (llama.cpp's GGUF form) applied at run time over the unchanged base.
#[derive(clap::Args, Debug, Default)]
pub struct LoraArgs {
    /// A LoRA adapter (llama.cpp GGUF file or PEFT folder) at scale 1 (repeatable; their terms add up).
    #[arg(long = "lora", value_name = "FILE")]
    pub lora: Vec<PathBuf>,
    /// A LoRA adapter at a scale: --lora-scaled FILE SCALE (repeatable).
    #[arg(long = "lora-scaled", num_args = 2, value_names = ["FILE", "SCALE"])]
    pub lora_scaled: Vec<String>,
}

impl LoraArgs {
    /// Loads the adapters for `model` and sets them on `session`; any failure is bad input.
    pub fn apply(&self, model: &tinyrt::Model, session: &mut tinyrt::Session) -> Result<()> {
        let set = self.load(model.file())?;
        if !set.is_empty() {
            session.set_adapters(&set).map_err(bad_input)?;
        }
        Ok(())
    }

    /// Loads the adapters for the model `base` with their scales; any failure is bad input.
    pub fn load(
        &self,
        base: &GgufFile,
    ) -> Result<Vec<(std::sync::Arc<tinyrt::adapters::LoraAdapter>, f32)>> {
        let load = |f: &Path| {
            tinyrt::adapters::LoraAdapter::from_gguf(f, base)
                .map(std::sync::Arc::new)
                .map_err(bad_input)
        };
        let mut set = Vec::new();
        for f in &self.lora {
            set.push((load(f)?, 1.0f32));
        }
        for pair in self.lora_scaled.chunks(2) {
            let [file, scale] = pair else {
                return Err(bad_input("--lora-scaled takes FILE SCALE"));
            };
            let s: f32 = scale
                .parse()
                .ok()
                .filter(|s: &f32| s.is_finite())
                .ok_or_else(|| {
                    bad_input(format!(
                        "--lora-scaled {file} {scale}: the scale is not a number"
                    ))
                })?;
            set.push((load(Path::new(file))?, s));
        }
        Ok(set)
    }
}

/// A file's name as JSON outputs report it (`"model"`): its last path component, empty for
/// none.
pub fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Opens a GGUF file named on the command line, or a Hugging Face folder as the GGUF
/// llama.cpp's converter would write (`tinyrt::hf::open`). Every failure (missing,
/// unreadable, not a file, malformed) is bad input: exit status 2, one line naming the path.
pub fn open_gguf(path: &Path) -> Result<GgufFile> {
    if path.as_os_str().is_empty() {
        return Err(bad_input("the model path is empty"));
    }
    if path.is_dir() {
        // The folder errors name the file they are about.
        return tinyrt::hf::open(path).map_err(bad_input);
    }
    match GgufFile::open(path) {
        Ok(f) => Ok(f),
        // These variants already name the path.
        Err(e @ (GgufError::Io { .. } | GgufError::NotAFile { .. })) => Err(e.into()),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

/// Loads the model named on the command line (every failure is bad input: exit status 2, one
/// line naming the path).
pub fn load_model(path: &Path, options: LoadOptions) -> Result<Model> {
    if path.as_os_str().is_empty() {
        return Err(bad_input("the model path is empty"));
    }
    Model::load(path, options).map_err(|e| bad_input(format!("{}: {e}", path.display())))
}

/// Warns (stderr) when a context is longer than the one the model was trained with: it runs,
/// but quality past the trained length is not what the model was made for.
pub fn warn_above_trained_context(model: &Model, n_ctx: usize) {
    let trained = model.config().n_ctx_train;
    if n_ctx > trained {
        eprintln!(
            "warning: the context of {n_ctx} tokens is longer than the {trained} the model was trained with"
        );
    }
}

/// The inputs of `-p TEXT` (one) or `-f FILE` (one per line, `\r\n` too; a final newline ends
/// the last line rather than starting an empty one).
pub fn read_texts(prompt: Option<&str>, file: Option<&std::path::Path>) -> Result<Vec<Vec<u8>>> {
    match (prompt, file) {
        (Some(p), _) => Ok(vec![p.as_bytes().to_vec()]),
        (None, Some(f)) => {
            let bytes = tinyrt::files::read_input(f)
                .map_err(|e| bad_input(format!("cannot read the texts: {e}")))?;
            let mut lines: Vec<Vec<u8>> = bytes
                .split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
                .collect();
            if bytes.ends_with(b"\n") {
                lines.pop();
            }
            Ok(lines)
        }
        (None, None) => Err(bad_input("give a text with -p TEXT or -f FILE")),
    }
}
