//! Loading a model: map the file, read the hyperparameters, build the architecture and its
//! weights on the chosen device, and the tokenizer. A [`Model`] is loaded once and shared by
//! any number of sessions (`Session::new(&model, ..)`).

use std::path::Path;
use std::sync::Arc;

use crate::arch::{self, ArchError, Architecture};
use crate::backend::cpu::{CpuBackend, CpuError, CpuWeights};
use crate::backend::requant::RequantReport;
use crate::backend::{Backend, WeightTable};
use crate::config::{ConfigError, ModelConfig};
use crate::gguf::{GgufError, GgufFile};
use crate::kernels::cpu::{Isa, ThreadPool};
use crate::kernels::quant::QuantFormat;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Where the forward pass runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            other => Err(format!("unknown device {other:?} (expected cpu or cuda)")),
        }
    }
}

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub device: Device,
    /// Worker threads of the model's pool (the CPU backend of all its sessions, and the
    /// conversion at load); `None` = the number of physical cores
    /// ([`ThreadPool::default_threads`], the one place that decides the default).
    pub threads: Option<usize>,
    /// Kernel ISA of the CPU backend; `None` = the fastest this CPU has ([`Isa::detect`]).
    /// The library reads no environment: see [`LoadOptions::from_env`].
    pub isa: Option<Isa>,
    /// Convert every matmul weight to this format in memory at load (see
    /// [`crate::backend::requant`]: on the CPU the converted matrices replace the stored ones
    /// in every product, on CUDA they are uploaded). `None` = use the weights as stored.
    pub requant: Option<QuantFormat>,
    /// Told (matrices converted, matrices to convert) as `requant` converts them.
    pub progress: LoadProgress,
    /// Keep the CPU backend's weights in the GGUF layout: no repacking at load for the ISA's
    /// one-token product (`Kernels::repack`; AVX-512: Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL, Q6_K).
    /// The products give the same bits either way; this is for comparisons.
    pub no_repack: bool,
}

/// A callback for the conversion at load ([`LoadOptions::progress`]); none by default.
#[derive(Clone, Default)]
pub struct LoadProgress(pub Option<Arc<dyn Fn(usize, usize) + Send + Sync>>);

impl LoadProgress {
    fn call(&self, done: usize, total: usize) {
        if let Some(f) = &self.0 {
            f(done, total)
        }
    }
}

impl std::fmt::Debug for LoadProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "LoadProgress(..)"
        } else {
            "LoadProgress(None)"
        })
    }
}

impl LoadOptions {
    /// The defaults with the ISA that `TINYRT_ISA=scalar|avx2|avx512|neon|neon-dotprod` names, for programs that
    /// honour that variable as the `tinyrt` CLI does; an unknown ISA or one this CPU lacks is an
    /// error.
    pub fn from_env() -> Result<LoadOptions, ModelError> {
        Ok(LoadOptions {
            isa: Isa::from_env().map_err(ModelError::Invalid)?,
            ..LoadOptions::default()
        })
    }
}

/// Errors loading a model. All of them mean the input (file, options) is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Arch(#[from] ArchError),
    #[error(transparent)]
    Cpu(#[from] CpuError),
    #[error("{0}")]
    Device(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Hf(#[from] crate::hf::HfError),
}

/// The most worker threads a model may be given: 4 per logical CPU (at least 8, at most 512,
/// ggml's `GGML_MAX_N_THREADS`). More only adds stacks and scheduling, never speed.
pub fn max_threads() -> usize {
    (4 * logical_cpus()).clamp(8, 512)
}

/// The number of logical CPUs (1 when that cannot be told).
fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Checks a thread count the user asked for (`-t`): at least 1, at most [`max_threads`].
pub fn check_threads(n: usize) -> Result<(), String> {
    let max = max_threads();
    if n == 0 {
        Err("-t must be at least 1".into())
    } else if n > max {
        Err(format!(
            "-t {n} is too many threads: at most {max} (4 per logical CPU of this machine)"
        ))
    } else {
        Ok(())
    }
}

/// The metadata and tensor table of a GGUF file or of a Hugging Face folder
/// ([`crate::hf::open`]), without preparing any weights.
pub fn open_file(path: &Path) -> Result<GgufFile, ModelError> {
    if path.is_dir() {
        Ok(crate::hf::open(path)?)
    } else {
        Ok(GgufFile::open(path)?)
    }
}

/// The tokenizer a [`Model`] loaded from `path` would have (a GGUF file, a vocabulary-only one
/// too, or a Hugging Face folder), without preparing any weights.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, ModelError> {
    let file = open_file(path)?;
    if path.is_dir() {
        folder_tokenizer(path, file.metadata())
    } else {
        Ok(Tokenizer::from_gguf(file.metadata())?)
    }
}

/// A folder's tokenizer: the vocabulary, specials and decoding of its converted metadata, text
/// encoded by its `tokenizer.json` as Hugging Face's `tokenizers` does (llama.cpp's GGUF
/// tokenizer differs on some SentencePiece texts), and `generation_config.json`'s
/// `eos_token_id`s ending generation. Without a `tokenizer.json`, tinyrt's own tokenizer.
fn folder_tokenizer(dir: &Path, md: &crate::gguf::Metadata) -> Result<Tokenizer, ModelError> {
    use crate::tokenizer::hf;
    let json = dir.join("tokenizer.json");
    let mut tok = if json.is_file() {
        Tokenizer::from_gguf_with_encoder(md, hf::HfEncoder::from_file(&json)?)?
    } else {
        Tokenizer::from_gguf(md)?
    };
    tok.add_eog_ids(&hf::generation_eos_ids(dir)?)?;
    Ok(tok)
}

/// The CUDA device a model loads onto (`None`: the CPU).
#[cfg(feature = "cuda")]
type OpenDevice = Option<Arc<tinyrt_cuda::CudaDevice>>;
#[cfg(not(feature = "cuda"))]
type OpenDevice = ();

/// Opens `opts.device` and checks the options that do not need the file.
fn open_device(opts: &LoadOptions) -> Result<OpenDevice, ModelError> {
    if let Some(n) = opts.threads {
        check_threads(n).map_err(ModelError::Invalid)?;
    }
    #[cfg(feature = "cuda")]
    return match opts.device {
        Device::Cuda => Ok(Some(Arc::new(
            tinyrt_cuda::CudaDevice::new(0)
                .map_err(|e| ModelError::Device(format!("--device cuda: {e}")))?,
        ))),
        Device::Cpu => Ok(None),
    };
    #[cfg(not(feature = "cuda"))]
    if opts.device == Device::Cuda {
        return Err(ModelError::Device(
            "--device cuda: this build of tinyrt has no CUDA support (build with --features cuda)"
                .into(),
        ));
    }
    #[cfg(not(feature = "cuda"))]
    Ok(())
}

pub(crate) struct ModelInner {
    pub(crate) config: ModelConfig,
    pub(crate) arch: Box<dyn Architecture>,
    pub(crate) cpu_weights: Arc<CpuWeights>,
    #[cfg(feature = "cuda")]
    pub(crate) cuda_weights: Option<Arc<crate::backend::cuda::CudaWeights>>,
    /// What `--requant` did when the CUDA backend converted the weights.
    #[cfg(feature = "cuda")]
    pub(crate) cuda_requant: Option<RequantReport>,
    pub(crate) file: Arc<GgufFile>,
    /// The model's threads, shared by its sessions (sized by `LoadOptions::threads`).
    pub(crate) pool: Arc<ThreadPool>,
    /// `LoadOptions::requant` (an encoder's own f16 conversion is not reported as one).
    pub(crate) requested_requant: Option<QuantFormat>,
    pub(crate) tokenizer: Tokenizer,
    /// The constraint state of the tokenizer, built on first use ([`Model::grammars`]).
    pub(crate) grammars: std::sync::OnceLock<
        Result<Arc<crate::constraint::Grammars>, crate::constraint::ConstraintError>,
    >,
}

/// A loaded model (cheap to clone: the weights are shared).
#[derive(Clone)]
pub struct Model {
    pub(crate) inner: Arc<ModelInner>,
}

impl Model {
    /// Map `path`, check it, and prepare its weights for `opts.device`. `path` is a GGUF file
    /// or a Hugging Face model folder (`config.json`, safetensors weights, `tokenizer.json`:
    /// read in place as the GGUF llama.cpp's converter would write, [`crate::hf::open`], and
    /// tokenized by its own `tokenizer.json`, [`crate::tokenizer::hf::HfEncoder`]).
    pub fn load(path: impl AsRef<Path>, opts: LoadOptions) -> Result<Model, ModelError> {
        let path = path.as_ref();
        // The GPU is checked (driver library first) before the file is read.
        let device = open_device(&opts)?;
        if path.is_dir() {
            let file = crate::hf::open(path)?;
            let tokenizer = folder_tokenizer(path, file.metadata())?;
            return Model::from_file(file, tokenizer, opts, device);
        }
        let file = GgufFile::open(path)?;
        let tokenizer = Tokenizer::from_gguf(file.metadata())?;
        Model::from_file(file, tokenizer, opts, device)
    }

    /// A model from a parsed GGUF (a file, or a Hugging Face folder's in-memory GGUF) and its
    /// tokenizer, on the device [`open_device`] opened.
    fn from_file(
        file: GgufFile,
        tokenizer: Tokenizer,
        opts: LoadOptions,
        device: OpenDevice,
    ) -> Result<Model, ModelError> {
        #[cfg(feature = "cuda")]
        let cuda_dev = device;
        #[cfg(not(feature = "cuda"))]
        let () = device;
        let file = Arc::new(file);
        let config = ModelConfig::from_metadata(file.metadata())?;
        let mut table = WeightTable::new(Arc::clone(&file));
        let arch = arch::load(&config, &mut table)?;
        table
            .check_all_used(&config.arch, config.n_layer)
            .map_err(ArchError::Weight)?;
        // Checked against the CPU once, by the weights (`Kernels::get`).
        let isa = opts.isa.unwrap_or_else(Isa::detect);
        let table = Arc::new(table);
        let threads = opts
            .threads
            .unwrap_or_else(ThreadPool::default_threads)
            .max(1);
        let pool = Arc::new(
            ThreadPool::new(threads)
                .map_err(|e| ModelError::Cpu(CpuError::Threads(e.to_string())))?,
        );
        #[cfg(feature = "cuda")]
        let (cuda_weights, cuda_requant) = match cuda_dev {
            Some(dev) => {
                let cuda_err = |e| ModelError::Device(format!("--device cuda: {e}"));
                let converted = match opts.requant {
                    Some(fmt) => Some(
                        crate::backend::cuda::requant_matrices_with_progress(
                            &table,
                            fmt,
                            &pool,
                            &|d, n| opts.progress.call(d, n),
                        )
                        .map_err(cuda_err)?,
                    ),
                    None => None,
                };
                let requant = converted
                    .as_ref()
                    .zip(opts.requant)
                    .map(|((slots, _), fmt)| (fmt, slots.as_slice()));
                let w = crate::backend::cuda::CudaWeights::new(dev, Arc::clone(&table), requant)
                    .map_err(cuda_err)?;
                (Some(w), converted.map(|(_, report)| report))
            }
            None => (None, None),
        };
        // On CUDA the converted matrices went to the device; the CPU copy keeps the stored ones.
        #[cfg(feature = "cuda")]
        let cpu_requant = if cuda_weights.is_some() {
            None
        } else {
            opts.requant
        };
        #[cfg(not(feature = "cuda"))]
        let cpu_requant = opts.requant;
        // With CUDA the CPU copy stays as stored (the device holds what the products read).
        #[cfg(feature = "cuda")]
        let repack = !opts.no_repack && cuda_weights.is_none();
        #[cfg(not(feature = "cuda"))]
        let repack = !opts.no_repack;
        // Encoders run their block matrices on the float GEMM with f32 activations, packed at
        // load (as f32 when small, `CpuWeights::with_panels`): their matrices are small (a 22M
        // model is 42 MB in f32), and the 8-bit activations the quantized dot products take
        // cost accuracy that embeddings and classifier logits keep (all-MiniLM-L6-v2 q8_0: max
        // |Δ| 1.3e-2 from the true model with 8-bit activations, llama.cpp's way). The
        // embedding tables are only looked up and stay as stored.
        let encoder = arch.is_encoder();
        let cpu_weights = if encoder && cpu_requant.is_none() {
            CpuWeights::with_panels(table, isa, &|e| e.name.starts_with("blk."))?
        } else {
            CpuWeights::with_conversion(
                table,
                isa,
                cpu_requant,
                &pool,
                &|_| true,
                &|d, n| opts.progress.call(d, n),
                repack,
            )?
        };
        if tokenizer.n_vocab() != config.vocab_size {
            return Err(ModelError::Invalid(format!(
                "the vocabulary has {} tokens, the model {}",
                tokenizer.n_vocab(),
                config.vocab_size
            )));
        }
        Ok(Model {
            inner: Arc::new(ModelInner {
                tokenizer,
                config,
                arch,
                cpu_weights,
                #[cfg(feature = "cuda")]
                cuda_weights,
                #[cfg(feature = "cuda")]
                cuda_requant,
                file,
                pool,
                requested_requant: opts.requant,
                grammars: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Reads a LoRA adapter for this model (a llama.cpp GGUF adapter file, or a PEFT folder),
    /// once; sessions pick it with [`crate::Session::set_adapters`].
    pub fn load_adapter(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<Arc<crate::adapters::LoraAdapter>, crate::adapters::AdapterError> {
        crate::adapters::LoraAdapter::load(path.as_ref(), &self.inner.file).map(Arc::new)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.inner.config
    }

    /// The mapped file (metadata, tensor table).
    pub fn file(&self) -> &GgufFile {
        &self.inner.file
    }

    /// How many matrices the CPU backend repacked at load (see [`LoadOptions::no_repack`]), and
    /// their bytes.
    pub fn repacked(&self) -> (usize, usize) {
        self.inner.cpu_weights.repacked()
    }

    /// What `LoadOptions::requant` did, `None` without it.
    pub fn requant_report(&self) -> Option<&RequantReport> {
        self.inner.requested_requant?;
        #[cfg(feature = "cuda")]
        if let Some(r) = &self.inner.cuda_requant {
            return Some(r);
        }
        self.inner.cpu_weights.requant_report()
    }

    /// The kernel ISA the CPU backend uses.
    pub fn isa(&self) -> Isa {
        self.inner.cpu_weights.kernels().isa
    }

    /// Threads of the model's pool.
    pub fn threads(&self) -> usize {
        self.inner.pool.n_threads()
    }

    /// The constraint state (token trie, llguidance's parser factory) of this model's
    /// vocabulary, built on the first call and shared by every later one.
    pub fn grammars(
        &self,
    ) -> Result<Arc<crate::constraint::Grammars>, crate::constraint::ConstraintError> {
        self.inner
            .grammars
            .get_or_init(|| crate::constraint::Grammars::new(&self.inner.tokenizer))
            .clone()
    }

    /// The model's tokenizer (from its `tokenizer.ggml.*` metadata).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    /// The KV cache type sessions get when none is asked for: f32 for a model read from a
    /// Hugging Face folder (its reference, Hugging Face, computes attention in the weights'
    /// float precision or f32), f16 for a GGUF file (llama.cpp's default).
    pub fn default_kv_type(&self) -> crate::kv_cache::KvType {
        if self.inner.file.is_from_parts() {
            crate::kv_cache::KvType::F32
        } else {
            crate::kv_cache::KvType::F16
        }
    }

    /// Whether `id` ends generation (every end-of-generation token of the vocabulary).
    pub fn is_eog(&self, id: u32) -> bool {
        self.inner.tokenizer.is_eog(id)
    }

    /// Whether sessions run on the CUDA backend (their KV cache is in device memory).
    pub fn uses_cuda(&self) -> bool {
        #[cfg(feature = "cuda")]
        if self.inner.cuda_weights.is_some() {
            return true;
        }
        false
    }

    pub(crate) fn new_backend(&self) -> Result<Box<dyn Backend>, CpuError> {
        #[cfg(feature = "cuda")]
        if let Some(w) = &self.inner.cuda_weights {
            return Ok(Box::new(crate::backend::cuda::CudaBackend::new(
                Arc::clone(w),
            )));
        }
        // A Hugging Face folder's reference is Hugging Face: GELU in f32, not ggml's table.
        let cpu: Box<dyn Backend> = Box::new(
            CpuBackend::new(
                Arc::clone(&self.inner.cpu_weights),
                Arc::clone(&self.inner.pool),
            )
            .with_exact_gelu(self.inner.file.is_from_parts()),
        );
        // Debugging aid: every op's output written to a folder (see backend/dump.rs).
        match std::env::var_os("TINYRT_DUMP") {
            Some(dir) if !dir.is_empty() => Ok(Box::new(crate::backend::dump::DumpBackend::new(
                cpu,
                dir.into(),
                std::env::var_os("TINYRT_DUMP_REF").map(Into::into),
            ))),
            _ => Ok(cpu),
        }
    }
}
