//! `tinyrt info MODEL [--json]`: what a GGUF file holds and what it needs to run.
//!
//! Works on any architecture (it only reads metadata). `--json` prints one object whose keys
//! are the GGUF keys without the architecture prefix (`"block_count"`, `"attention.head_count"`,
//! ...) plus derived values (`"head_dim"`, `"vocab_size"`, `"tensor_types"`, `"parameter_count"`,
//! `"file_size"`, `"memory_bytes"`); a key is present only when the file has what it needs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::{json, Map, Value as Json};
use tinyrt::gguf::{Array, GgmlType, GgufFile, Metadata, Value};

use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let file = crate::args::open_gguf(&args.model)?;
    let info = summarize(&file);
    if args.json {
        output::println(&serde_json::to_string_pretty(&Json::Object(info))?)
    } else {
        output::print(&render_text(&args.model, &info))
    }
}

/// Tokenizer keys copied as they are.
const TOKENIZER_KEYS: [&str; 4] = [
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
];

/// The `--json` object.
pub fn summarize(file: &GgufFile) -> Map<String, Json> {
    let md = file.metadata();
    let mut m = Map::new();
    let arch = md.opt_str("general.architecture").ok().flatten();
    if let Some(arch) = arch {
        m.insert("architecture".into(), arch.into());
    }
    if let Some(name) = md.opt_str("general.name").ok().flatten() {
        m.insert("name".into(), name.into());
    }
    if let Some(arch) = arch {
        let prefix = format!("{arch}.");
        for (key, value) in md.iter() {
            if let Some(rest) = key.strip_prefix(&prefix) {
                m.insert(rest.to_owned(), to_json(value));
            }
        }
    }
    // The tokenizer's own vocabulary is what counts; `<arch>.vocab_size` is the fallback.
    if let Some(Value::Array(tokens)) = md.get("tokenizer.ggml.tokens") {
        m.insert("vocab_size".into(), tokens.len().into());
    }
    for key in TOKENIZER_KEYS {
        if let Some(v) = md.get(key) {
            m.insert(key.into(), to_json(v));
        }
    }

    // A LoRA adapter (llama.cpp's GGUF form): its kind, alpha, ranks, targets and bytes.
    if md.opt_str("general.type").ok().flatten() == Some("adapter") {
        m.insert("type".into(), "adapter".into());
        if let Some(t) = md.opt_str("adapter.type").ok().flatten() {
            m.insert("adapter_type".into(), t.into());
        }
        if let Some(a) = md.opt_f32("adapter.lora.alpha").ok().flatten() {
            m.insert("lora_alpha".into(), f32_json(a));
        }
        let mut ranks = std::collections::BTreeSet::new();
        let mut kinds = std::collections::BTreeSet::new();
        let mut pairs = 0u64;
        let mut bytes = 0u64;
        for t in file.tensor_infos() {
            bytes = bytes.saturating_add(t.size);
            if let Some(target) = t.name.strip_suffix(".lora_a") {
                pairs += 1;
                if let Some(&r) = t.shape.get(1) {
                    ranks.insert(r);
                }
                let kind = target
                    .strip_prefix("blk.")
                    .and_then(|r| r.split_once('.'))
                    .map_or(target, |(_, k)| k);
                kinds.insert(kind.trim_end_matches(".weight").to_string());
            }
        }
        m.insert("lora_pairs".into(), pairs.into());
        m.insert(
            "lora_ranks".into(),
            json!(ranks.into_iter().collect::<Vec<_>>()),
        );
        m.insert(
            "lora_targets".into(),
            json!(kinds.into_iter().collect::<Vec<_>>()),
        );
        m.insert("adapter_bytes".into(), bytes.into());
    }

    // A sequence-classification head (encoders): its output count.
    if let Some(t) = file.tensor_info("cls.output.weight") {
        if let Some(&n) = t.shape.get(1) {
            m.insert("classifier_outputs".into(), n.into());
        }
    }

    let shape = arch.map(|a| Shape::read(md, a)).unwrap_or_default();
    if let Some(head_dim) = shape.head_dim {
        m.insert("head_dim".into(), head_dim.into());
    }

    let mut types: BTreeMap<u32, (GgmlType, u64)> = BTreeMap::new();
    let (mut params, mut weight_bytes) = (0u64, 0u64);
    for t in file.tensor_infos() {
        types.entry(t.ty.id()).or_insert((t.ty, 0)).1 += 1;
        params = params.saturating_add(t.n_elements());
        weight_bytes = weight_bytes.saturating_add(t.size);
    }
    let types: Map<String, Json> = types
        .values()
        .map(|(ty, n)| (ty.name().to_owned(), json!(n)))
        .collect();
    m.insert("tensor_count".into(), file.tensor_infos().len().into());
    m.insert("tensor_types".into(), Json::Object(types));
    m.insert("parameter_count".into(), params.into());
    m.insert("file_size".into(), file.file_size().into());
    m.insert("weights_bytes".into(), weight_bytes.into());
    if let Some(kv) = shape.kv_cache_bytes() {
        m.insert("kv_cache_bytes".into(), kv.into());
        if let Some(total) = weight_bytes.checked_add(kv) {
            m.insert("memory_bytes".into(), total.into());
        }
    }
    m
}

/// The hyperparameters that the derived values need; `None` where absent or not a scalar.
#[derive(Default)]
struct Shape {
    n_layer: Option<u64>,
    n_ctx: Option<u64>,
    n_kv_heads: Option<u64>,
    head_dim: Option<u64>,
    key_len: Option<u64>,
    value_len: Option<u64>,
}

impl Shape {
    fn read(md: &Metadata, arch: &str) -> Shape {
        let get = |k: &str| md.opt_u64(&format!("{arch}.{k}")).ok().flatten();
        let n_embd = get("embedding_length");
        let n_head = get("attention.head_count");
        let key_len = get("attention.key_length");
        let head_dim = key_len.or_else(|| match (n_embd, n_head) {
            (Some(e), Some(h)) if h > 0 => Some(e / h),
            _ => None,
        });
        Shape {
            n_layer: get("block_count"),
            n_ctx: get("context_length"),
            n_kv_heads: get("attention.head_count_kv").or(n_head),
            head_dim,
            key_len: key_len.or(head_dim),
            value_len: get("attention.value_length").or(head_dim),
        }
    }

    /// An f16 K and V cache for the whole context: n_layer × n_ctx × n_kv_heads × (k + v) × 2 bytes.
    fn kv_cache_bytes(&self) -> Option<u64> {
        let per_token = self.key_len?.checked_add(self.value_len?)?;
        self.n_layer?
            .checked_mul(self.n_ctx?)?
            .checked_mul(self.n_kv_heads?)?
            .checked_mul(per_token)?
            .checked_mul(2)
    }
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => f32_json(*x),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => match a {
            Array::U8(v) => json!(v),
            Array::I8(v) => json!(v),
            Array::U16(v) => json!(v),
            Array::I16(v) => json!(v),
            Array::U32(v) => json!(v),
            Array::I32(v) => json!(v),
            Array::U64(v) => json!(v),
            Array::I64(v) => json!(v),
            Array::F32(v) => Json::Array(v.iter().map(|&x| f32_json(x)).collect()),
            Array::F64(v) => json!(v),
            Array::Bool(v) => json!(v),
            Array::String(v) => json!(v),
        },
    }
}

/// An f32 as the shortest decimal that reads back to it (1e-5, not 9.999999747378752e-6).
fn f32_json(x: f32) -> Json {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Json::Null, Json::Number)
}

fn render_text(path: &std::path::Path, m: &Map<String, Json>) -> String {
    let s = |k: &str| m.get(k).map(show);
    let mut lines: Vec<(&str, String)> = vec![("file", path.display().to_string())];
    let mut push = |label, value: Option<String>| {
        if let Some(v) = value {
            lines.push((label, v));
        }
    };
    push("architecture", s("architecture"));
    push("name", s("name"));
    push("context length", s("context_length"));
    push("embedding", s("embedding_length"));
    push("layers", s("block_count"));
    push("heads", s("attention.head_count"));
    push("KV heads", s("attention.head_count_kv"));
    push("head dim", s("head_dim"));
    push("feed-forward", s("feed_forward_length"));
    push(
        "attention",
        m.get("attention.causal").and_then(Json::as_bool).map(|c| {
            if c {
                "causal"
            } else {
                "bidirectional (encoder)"
            }
            .to_string()
        }),
    );
    push(
        "pooling",
        m.get("pooling_type").and_then(Json::as_u64).map(|p| {
            match p {
                0 => "none",
                1 => "mean",
                2 => "cls",
                3 => "last",
                4 => "rank",
                _ => "unknown",
            }
            .to_string()
        }),
    );
    if m.get("type").and_then(Json::as_str) == Some("adapter") {
        let list = |k: &str| {
            m.get(k).and_then(Json::as_array).map(|v| {
                v.iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        push(
            "adapter",
            Some(format!(
                "{} ({} pairs)",
                m.get("adapter_type").and_then(Json::as_str).unwrap_or("?"),
                m.get("lora_pairs").and_then(Json::as_u64).unwrap_or(0)
            )),
        );
        push("LoRA rank", list("lora_ranks"));
        push("LoRA alpha", s("lora_alpha"));
        push("LoRA targets", list("lora_targets"));
        push(
            "adapter size",
            m.get("adapter_bytes")
                .and_then(Json::as_u64)
                .map(|b| format!("{:.1} KiB ({b} bytes)", b as f64 / 1024.0)),
        );
    }
    push(
        "classifier",
        m.get("classifier_outputs").and_then(Json::as_u64).map(|n| {
            let labels: Vec<&str> = m
                .get("classifier.output_labels")
                .and_then(Json::as_array)
                .map(|l| l.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default();
            if labels.is_empty() {
                format!("{n} outputs")
            } else {
                format!("{n} outputs: {}", labels.join(", "))
            }
        }),
    );
    let rope: Vec<String> = [
        ("dims", "rope.dimension_count"),
        ("freq base", "rope.freq_base"),
        ("scaling", "rope.scaling.type"),
        ("factor", "rope.scaling.factor"),
    ]
    .iter()
    .filter_map(|(label, k)| s(k).map(|v| format!("{label} {v}")))
    .collect();
    push("rope", (!rope.is_empty()).then(|| rope.join(", ")));
    push(
        "norm epsilon",
        s("attention.layer_norm_rms_epsilon")
            .map(|v| format!("{v} (RMS)"))
            .or_else(|| s("attention.layer_norm_epsilon")),
    );
    let tokenizer = [s("tokenizer.ggml.model"), s("tokenizer.ggml.pre")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" / ");
    push(
        "vocabulary",
        s("vocab_size").map(|v| {
            if tokenizer.is_empty() {
                v
            } else {
                format!("{v} ({tokenizer})")
            }
        }),
    );
    push("BOS id", s("tokenizer.ggml.bos_token_id"));
    push("EOS id", s("tokenizer.ggml.eos_token_id"));
    let types = m
        .get("tensor_types")
        .and_then(Json::as_object)
        .map(|t| {
            t.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    push(
        "tensors",
        s("tensor_count").map(|n| {
            if types.is_empty() {
                n
            } else {
                format!("{n} ({types})")
            }
        }),
    );
    let num = |k: &str| m.get(k).and_then(Json::as_u64);
    push(
        "parameters",
        num("parameter_count").map(|n| format!("{} ({n})", human(n as f64, ""))),
    );
    push(
        "file size",
        num("file_size").map(|n| format!("{} ({n} bytes)", human_bytes(n))),
    );
    push(
        "memory",
        num("memory_bytes").map(|n| {
            format!(
                "{} at context {} (weights {} + f16 KV cache {})",
                human_bytes(n),
                s("context_length").unwrap_or_default(),
                human_bytes(num("weights_bytes").unwrap_or(0)),
                human_bytes(num("kv_cache_bytes").unwrap_or(0)),
            )
        }),
    );
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(label, value)| format!("{label:<width$}  {}\n", output::escape_controls(value)))
        .collect()
}

fn show(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn human(x: f64, unit: &str) -> String {
    let (value, prefix) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{value:.1} {prefix}{unit}").trim_end().to_owned()
}

fn human_bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let x = n as f64;
    if x >= 1024.0 * MIB {
        format!("{:.2} GiB", x / (1024.0 * MIB))
    } else if x >= MIB {
        format!("{:.1} MiB", x / MIB)
    } else {
        format!("{:.1} KiB", x / 1024.0)
    }
}
