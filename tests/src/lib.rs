//! Shared helpers of tinyrt's integration tests (`tests/tests/*.rs`, `cli/tests/*.rs`):
//! paths of fixtures and real models, temporary directories, small synthetic GGUF files and
//! the Python `gguf` oracle (`tests/data/gguf_oracle.json`, made by `tests/scripts/gguf_oracle.py`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};

use tinyrt::gguf::{Array, GgmlType, GgufWriter, Value};

/// The workspace root (the folder holding `models/` and `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A file in `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(name)
}

/// Every `*.gguf` in `tests/fixtures/`, sorted.
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("tests/fixtures"))
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    v.sort();
    v
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
/// The real models fetched by `scripts/fetch-models.sh`.
pub const REAL_MODELS: [&str; 2] = [SMOLLM2, GEMMA3];

/// Whether tests must fail rather than skip when a real model is absent (CI sets it).
pub fn models_required() -> bool {
    std::env::var("TINYRT_REQUIRE_MODELS").is_ok_and(|v| v == "1")
}

/// The path of a real model in `models/`, or `None` (after printing a notice) when it is
/// absent. Panics when it is absent and `TINYRT_REQUIRE_MODELS=1`.
pub fn model(name: &str) -> Option<PathBuf> {
    let path = workspace_root().join("models").join(name);
    if path.is_file() {
        return Some(path);
    }
    if models_required() {
        panic!(
            "{} is missing and TINYRT_REQUIRE_MODELS=1: run scripts/fetch-models.sh",
            path.display()
        );
    }
    eprintln!(
        "skipping: {} is absent (run scripts/fetch-models.sh)",
        path.display()
    );
    None
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "tinyrt-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` to `name` inside the directory and returns the path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The architecture name of [`unknown_arch_gguf`].
pub const UNKNOWN_ARCH: &str = "frobnicator";

/// A small, valid GGUF file of an architecture no runtime knows: llama-like hyperparameters
/// under `frobnicator.*`, a two-token vocabulary and one F32 tensor. `info` must describe
/// it; `generate` must reject it with exit status 2.
pub fn unknown_arch_gguf() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String(UNKNOWN_ARCH.into()))
        .set("general.name", Value::String("frob-test".into()))
        .set("frobnicator.context_length", Value::U32(64))
        .set("frobnicator.embedding_length", Value::U32(8))
        .set("frobnicator.block_count", Value::U32(1))
        .set("frobnicator.attention.head_count", Value::U32(2))
        .set("tokenizer.ggml.model", Value::String("gpt2".into()))
        .set(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(vec!["a".into(), "b".into()])),
        )
        .set(
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(vec![1, 1])),
        )
        .set("tokenizer.ggml.merges", Value::Array(Array::String(vec![])))
        .set("tokenizer.ggml.bos_token_id", Value::U32(0))
        .set("tokenizer.ggml.eos_token_id", Value::U32(1));
    let data: Vec<u8> = (0..16u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.add_tensor("token_embd.weight", GgmlType::F32, &[8, 2], data)
        .expect("valid tensor");
    w.to_bytes().expect("valid file")
}

/// The Python `gguf` oracle: `{file name: {metadata, tensors, ...}}`, see
/// `tests/scripts/gguf_oracle.py`.
pub fn gguf_oracle() -> serde_json::Value {
    let path = workspace_root().join("tests/data/gguf_oracle.json");
    let text = std::fs::read_to_string(&path).expect("tests/data/gguf_oracle.json");
    serde_json::from_str(&text).expect("oracle JSON parses")
}

/// A llama.cpp reference tool (`llama-simple`, `llama-tokenize`, ...) from `$TINYRT_REF_BIN`
/// or `~/.cache/tinyrt-ref/bin` (built by `shared/reference/build-llamacpp.sh`), or `None`
/// after printing a notice when it is not there (CI has no reference build).
pub fn reference_tool(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("TINYRT_REF_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tinyrt-ref/bin"))
        });
    let path = dir.map(|d| d.join(name)).filter(|p| p.is_file());
    if path.is_none() {
        eprintln!("skipping: llama.cpp reference tool {name} is not built");
    }
    path
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit status 2 and no panic or internal-error text: the start of every bad-input check.
fn assert_exit_2(o: &Output, what: &str) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{what}: status {:?}, stderr {err:?}",
        o.status
    );
    assert!(
        !err.contains("panicked")
            && !err.contains("RUST_BACKTRACE")
            && !err.contains("internal error"),
        "{what}: {err:?}"
    );
    err
}

/// The CLI's bad-input contract: exit status 2 and exactly one line on stderr, starting with
/// `error: `, no panic text. Returns that line.
pub fn assert_bad_input(o: &Output, what: &str) -> String {
    let err = assert_exit_2(o, what);
    assert_eq!(
        err.lines().count(),
        1,
        "{what}: stderr is not one line: {err:?}"
    );
    assert!(err.starts_with("error: "), "{what}: {err:?}");
    assert!(err.ends_with('\n'), "{what}: {err:?}");
    err
}

/// The bad-input contract of a command that prints notices before it fails (`chat` says what
/// it loaded): exit status 2 and one `error: ` line, the last. Returns that line.
pub fn assert_bad_input_last(o: &Output, what: &str) -> String {
    let err = assert_exit_2(o, what);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{what}: {err:?}");
    assert_eq!(err.lines().last(), Some(errors[0]), "{what}: {err:?}");
    errors[0].to_string()
}

/// Writes a copy of the GGUF file `src` to `dst` with `extra` metadata set (added, or replacing
/// a key of the same name); tensors and the rest of the metadata are kept as they are.
pub fn copy_with_metadata(src: &Path, dst: &Path, extra: &[(&str, Value)]) {
    let file = tinyrt::gguf::GgufFile::open(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    let mut w = GgufWriter::new();
    w.set_all(file.metadata());
    for (k, v) in extra {
        w.set(k, v.clone());
    }
    for t in file.tensors() {
        w.add_tensor(t.name, t.ty, t.shape, t.data)
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
    }
    w.write_to_path(dst)
        .unwrap_or_else(|e| panic!("{dst:?}: {e}"));
}

/// The fixture of the YaRN parity test (`tests/golden/qwen2-tiny-q8_0-yarn.jsonl`, made by
/// `scripts/make-yarn-golden.sh`): `qwen2-tiny-q8_0.gguf` with `rope.scaling.type = yarn`,
/// factor 4 over an original context of 64 positions (so the prompts run past it), written to
/// `dst`.
pub fn write_yarn_fixture(dst: &Path) {
    copy_with_metadata(
        &fixture("qwen2-tiny-q8_0.gguf"),
        dst,
        &[
            ("qwen2.rope.scaling.type", Value::String("yarn".into())),
            ("qwen2.rope.scaling.factor", Value::F32(4.0)),
            ("qwen2.rope.scaling.original_context_length", Value::U32(64)),
        ],
    );
}

/// The LoRA oracle of `../shared/oracles/lora/` (its README): paths, JSON rows and the tiny
/// Llama base, shared by `tests/lora.rs`, `tests/lora_peft.rs` and the CLI's LoRA tests.
pub mod lora {
    use std::path::PathBuf;

    use serde_json::Value;
    use tinyrt::kv_cache::KvType;
    use tinyrt::{LoadOptions, Model, Session, SessionOptions};

    /// The oracle's folder.
    pub fn oracle() -> PathBuf {
        super::workspace_root().join("../shared/oracles/lora")
    }

    /// The objects of one of its JSON-lines files (`hf.jsonl`, `llamacpp.jsonl`, ...).
    pub fn rows(file: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(oracle().join(file)).expect("oracle file");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("oracle JSON parses"))
            .collect()
    }

    /// A JSON array of token ids.
    pub fn ids(v: &Value) -> Vec<u32> {
        v.as_array()
            .expect("an array of ids")
            .iter()
            .map(|x| x.as_u64().expect("an id") as u32)
            .collect()
    }

    /// Max |Δ| between our logits and a reference top-8 list `[[id, logit], ...]`.
    pub fn top_diff(logits: &[f32], top: &Value) -> f32 {
        top.as_array()
            .expect("a top list")
            .iter()
            .map(|p| {
                (logits[p[0].as_u64().expect("an id") as usize]
                    - p[1].as_f64().expect("a logit") as f32)
                    .abs()
            })
            .fold(0.0, f32::max)
    }

    /// The f32 base `llama-lora-tiny-f32.gguf` and a session with a `kv` cache.
    pub fn base(kv: KvType) -> (Model, Session) {
        let m = Model::load(
            oracle().join("llama-lora-tiny-f32.gguf"),
            LoadOptions::default(),
        )
        .expect("the tiny base loads");
        let s = Session::new(
            &m,
            SessionOptions {
                kv_type: kv,
                ..SessionOptions::default()
            },
        )
        .expect("a session");
        (m, s)
    }
}
