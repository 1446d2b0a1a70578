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

/// The path of a real model in `models/` (a GGUF file, or a Hugging Face folder with its
/// `config.json`), or `None` (after printing a notice) when it is absent. Panics when it is
/// absent and `TINYRT_REQUIRE_MODELS=1`.
pub fn model(name: &str) -> Option<PathBuf> {
    let path = workspace_root().join("models").join(name);
    if path.is_file() || path.join("config.json").is_file() {
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

/// The SHA-256 of `data` in lower-case hex (FIPS 180-4), for comparing tensor bytes with the
/// oracles' manifests.
pub fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [
                t1.wrapping_add(t2),
                v[0],
                v[1],
                v[2],
                v[3].wrapping_add(t1),
                v[4],
                v[5],
                v[6],
            ];
        }
        for (x, y) in h.iter_mut().zip(v) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

/// The Hugging Face folder oracle of `../shared/oracles/hf/` (its README): tiny folders of
/// every supported decoder class and manifests of llama.cpp's conversions of them.
pub mod hf_oracle {
    use std::path::PathBuf;

    /// The folders, in the README's order.
    pub const FOLDERS: [&str; 8] = [
        "tiny-llama",
        "tiny-mistral",
        "tiny-llama3",
        "tiny-qwen2",
        "tiny-qwen3",
        "tiny-phi2",
        "tiny-stablelm2",
        "tiny-gemma3",
    ];

    /// The oracle's folder.
    pub fn oracle() -> PathBuf {
        super::workspace_root().join("../shared/oracles/hf")
    }

    /// The model folder `name`.
    pub fn folder(name: &str) -> PathBuf {
        oracle().join("models").join(name)
    }

    /// `expected/NAME.convert.json`.
    pub fn manifest(name: &str) -> serde_json::Value {
        let path = oracle().join(format!("expected/{name}.convert.json"));
        let text = std::fs::read_to_string(&path).expect("oracle manifest");
        serde_json::from_str(&text).expect("oracle JSON parses")
    }

    /// The keys of `expected/NAME.convert.json`'s `metadata` object in file order (the order
    /// of the converted file; `serde_json`'s map does not keep it).
    pub fn metadata_key_order(name: &str) -> Vec<String> {
        let path = oracle().join(format!("expected/{name}.convert.json"));
        let text = std::fs::read_to_string(&path).expect("oracle manifest");
        let mut p = KeyScanner {
            b: text.as_bytes(),
            i: 0,
        };
        p.object_keys_at("metadata")
    }

    /// A minimal JSON scanner that lists the keys of one object of the top-level object.
    struct KeyScanner<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl KeyScanner<'_> {
        fn ws(&mut self) {
            while self.b[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
        }
        /// A string token, returned decoded.
        fn string(&mut self) -> String {
            let start = self.i;
            self.i += 1;
            while self.b[self.i] != b'"' {
                self.i += if self.b[self.i] == b'\\' { 2 } else { 1 };
            }
            self.i += 1;
            serde_json::from_slice(&self.b[start..self.i]).expect("JSON string")
        }
        /// Skips one value; returns the keys if it is an object.
        fn value(&mut self) -> Vec<String> {
            self.ws();
            let mut keys = Vec::new();
            match self.b[self.i] {
                b'{' | b'[' => {
                    let object = self.b[self.i] == b'{';
                    self.i += 1;
                    loop {
                        self.ws();
                        if matches!(self.b[self.i], b'}' | b']') {
                            self.i += 1;
                            break;
                        }
                        if object {
                            keys.push(self.string());
                            self.ws();
                            self.i += 1; // ':'
                        }
                        self.value();
                        self.ws();
                        if self.b[self.i] == b',' {
                            self.i += 1;
                        }
                    }
                }
                b'"' => {
                    self.string();
                }
                _ => {
                    while !matches!(self.b[self.i], b',' | b'}' | b']')
                        && !self.b[self.i].is_ascii_whitespace()
                    {
                        self.i += 1;
                    }
                }
            }
            keys
        }
        /// The keys of the top-level object's `key` object.
        fn object_keys_at(&mut self, key: &str) -> Vec<String> {
            self.ws();
            self.i += 1; // '{'
            loop {
                self.ws();
                let k = self.string();
                self.ws();
                self.i += 1; // ':'
                let keys = self.value();
                if k == key {
                    return keys;
                }
                self.ws();
                self.i += 1; // ',' (a missing key runs off the end and panics)
            }
        }
    }

    /// A copy of the model folder `name` in a fresh temporary directory, under the same name
    /// (the converter names the model after its folder), writable so that tests can break it.
    pub fn copy(name: &str, tag: &str) -> (super::TempDir, PathBuf) {
        let tmp = super::TempDir::new(tag);
        let dst = tmp.path().join(name);
        std::fs::create_dir_all(&dst).expect("create folder copy");
        for entry in std::fs::read_dir(folder(name)).expect("oracle folder") {
            let entry = entry.expect("folder entry");
            let to = dst.join(entry.file_name());
            std::fs::copy(entry.path(), &to).expect("copy oracle file");
            let mut perms = std::fs::metadata(&to).expect("copied file").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&to, perms).expect("make copy writable");
        }
        (tmp, dst)
    }

    /// Rewrites the safetensors file at `path` after `edit` changed its header's tensor
    /// entries (dtype, shape, or removed entries); the data of the entries that remain is
    /// copied in their order, each keeping its bytes.
    pub fn edit_safetensors(
        path: &std::path::Path,
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) {
        let bytes = std::fs::read(path).expect("read shard");
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let mut map = header.as_object().unwrap().clone();
        let data = &bytes[8 + n..];
        edit(&mut map);
        let range = |v: &serde_json::Value| -> (usize, usize) {
            let o = v["data_offsets"].as_array().unwrap();
            (
                o[0].as_u64().unwrap() as usize,
                o[1].as_u64().unwrap() as usize,
            )
        };
        let mut names: Vec<String> = map
            .keys()
            .filter(|k| *k != "__metadata__")
            .cloned()
            .collect();
        names.sort_by_key(|k| range(&map[k]).0);
        let mut out_data = Vec::new();
        for name in names {
            let (a, b) = range(&map[&name]);
            let start = out_data.len();
            out_data.extend_from_slice(&data[a..b]);
            map[&name]["data_offsets"] = serde_json::json!([start, out_data.len()]);
        }
        let mut header = serde_json::to_vec(&serde_json::Value::Object(map)).unwrap();
        while !header.len().is_multiple_of(8) {
            header.push(b' ');
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&out_data);
        std::fs::write(path, out).expect("write shard");
    }

    /// A way to break a copied folder: (what, the folder it applies to, the break).
    pub type Break = (&'static str, &'static str, fn(&std::path::Path));

    /// The malformed folders of the oracle's README, made from copies of its folders.
    pub fn breaks() -> Vec<Break> {
        use std::path::Path;
        vec![
            ("no config.json", "tiny-qwen2", |d: &Path| {
                std::fs::remove_file(d.join("config.json")).unwrap()
            }),
            ("a shard missing", "tiny-llama", |d: &Path| {
                std::fs::remove_file(d.join("model-00002-of-00003.safetensors")).unwrap()
            }),
            ("header length past the end", "tiny-qwen2", |d: &Path| {
                let p = d.join("model.safetensors");
                let mut b = std::fs::read(&p).unwrap();
                let len = b.len() as u64;
                b[..8].copy_from_slice(&len.to_le_bytes());
                std::fs::write(&p, b).unwrap();
            }),
            ("dtype I64", "tiny-qwen2", |d: &Path| {
                edit_safetensors(&d.join("model.safetensors"), |m| {
                    // 64 bf16 values are the bytes of 16 i64 values.
                    m["model.norm.weight"]["dtype"] = "I64".into();
                    m["model.norm.weight"]["shape"] = serde_json::json!([16]);
                })
            }),
            ("shape not the config's", "tiny-qwen2", |d: &Path| {
                edit_safetensors(&d.join("model.safetensors"), |m| {
                    let t = &mut m["model.layers.1.mlp.gate_proj.weight"];
                    let s = t["shape"].as_array().unwrap().clone();
                    t["shape"] = serde_json::json!([s[1], s[0]]);
                })
            }),
            ("a tensor missing", "tiny-phi2", |d: &Path| {
                edit_safetensors(&d.join("model.safetensors"), |m| {
                    m.remove("model.layers.1.mlp.fc2.weight");
                })
            }),
            ("unknown architecture", "tiny-stablelm2", |d: &Path| {
                let p = d.join("config.json");
                let t = std::fs::read_to_string(&p).unwrap();
                std::fs::write(
                    &p,
                    t.replace("StableLmForCausalLM", "FrobnicatorForCausalLM"),
                )
                .unwrap();
            }),
            ("a shard outside the folder", "tiny-llama", |d: &Path| {
                let p = d.join("model.safetensors.index.json");
                let t = std::fs::read_to_string(&p).unwrap();
                let t = t.replace(
                    "\"model-00003-of-00003.safetensors\"",
                    "\"../model-00003-of-00003.safetensors\"",
                );
                std::fs::write(&p, t).unwrap();
            }),
            (
                "a layer count past the tensors",
                "tiny-qwen3",
                |d: &Path| {
                    let p = d.join("config.json");
                    let t = std::fs::read_to_string(&p).unwrap();
                    let t = t.replace(
                        "\"num_hidden_layers\": 2,",
                        "\"num_hidden_layers\": 4000000000,",
                    );
                    std::fs::write(&p, t).unwrap();
                },
            ),
            ("config.json cut in half", "tiny-gemma3", |d: &Path| {
                let p = d.join("config.json");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            }),
            ("tokenizer.json cut in half", "tiny-llama3", |d: &Path| {
                let p = d.join("tokenizer.json");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            }),
        ]
    }
}
