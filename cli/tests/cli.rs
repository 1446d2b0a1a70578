//! End-to-end tests of the `tinyrt` binary: the error contract (one line on stderr, exit 2 for
//! bad usage or input, never a panic) and `info`, checked against the Python `gguf` oracle.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;
use tinyrt_tests::{
    assert_bad_input, gguf_oracle, model, stderr, unknown_arch_gguf, TempDir, GEMMA3, SMOLLM2,
    UNKNOWN_ARCH,
};

fn tinyrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .expect("run tinyrt")
}

#[test]
fn info_rejects_unreadable_and_malformed_models_with_exit_2() {
    let dir = TempDir::new("cli-bad");
    let missing = dir.path().join("missing.gguf");
    let e = assert_bad_input(
        &tinyrt(&["info", missing.to_str().unwrap()]),
        "missing file",
    );
    assert!(e.contains("missing.gguf"), "{e}");
    assert_bad_input(
        &tinyrt(&["info", dir.path().to_str().unwrap()]),
        "directory",
    );
    assert_bad_input(&tinyrt(&["info", ""]), "empty path");

    let valid = unknown_arch_gguf();
    let truncated = dir.write("truncated.gguf", &valid[..valid.len() / 2]);
    let e = assert_bad_input(&tinyrt(&["info", truncated.to_str().unwrap()]), "truncated");
    assert!(e.contains("truncated.gguf"), "{e}");
    let empty = dir.write("empty.gguf", &[]);
    assert_bad_input(&tinyrt(&["info", empty.to_str().unwrap()]), "empty file");

    // Deterministic pseudo-random bytes, with and without a valid magic.
    let mut rng = tinyrt::kernels::rng::SplitMix64::new(0x9E37_79B9_7F4A_7C15);
    let mut random: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
    let noise = dir.write("noise.gguf", &random);
    assert_bad_input(&tinyrt(&["info", noise.to_str().unwrap()]), "random bytes");
    random[..8].copy_from_slice(b"GGUF\x03\0\0\0");
    let noise = dir.write("noise-magic.gguf", &random);
    assert_bad_input(
        &tinyrt(&["info", noise.to_str().unwrap()]),
        "random bytes after a header",
    );
}

#[test]
fn bad_usage_is_one_line_and_exit_2() {
    assert_bad_input(&tinyrt(&[]), "no subcommand");
    assert_bad_input(&tinyrt(&["frobnicate"]), "unknown subcommand");
    assert_bad_input(&tinyrt(&["info"]), "missing argument");
    assert_bad_input(
        &tinyrt(&["info", "--no-such-flag", "x.gguf"]),
        "unknown flag",
    );
    let help = tinyrt(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("info"));
}

#[test]
fn info_describes_an_unknown_architecture() {
    let dir = TempDir::new("cli-unknown");
    let path = dir.write("frob.gguf", &unknown_arch_gguf());
    let o = tinyrt(&["info", "--json", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j: Json = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(j["architecture"], UNKNOWN_ARCH);
    assert_eq!(j["block_count"], 1);
    assert_eq!(j["head_dim"], 4);
    assert_eq!(j["vocab_size"], 2);
    assert_eq!(j["tensor_count"], 1);
    assert_eq!(j["tensor_types"]["F32"], 1);
    assert_eq!(j["parameter_count"], 16);

    let text = tinyrt(&["info", path.to_str().unwrap()]);
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    assert!(String::from_utf8_lossy(&text.stdout).contains(UNKNOWN_ARCH));
}

#[test]
fn info_stops_quietly_when_stdout_is_closed() {
    let dir = TempDir::new("cli-epipe");
    let path = dir.write("frob.gguf", &unknown_arch_gguf());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(["info", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tinyrt");
    drop(child.stdout.take()); // close the read end before tinyrt writes
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
}

/// `info --json` on a real model against the Python `gguf` oracle's view of the same file.
fn check_info_against_oracle(name: &str, path: &Path) {
    let o = tinyrt(&["info", "--json", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let info: Json = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let oracle = &gguf_oracle()[name];
    let md = &oracle["metadata"];
    let arch = md["general.architecture"]["value"].as_str().unwrap();
    assert_eq!(info["architecture"], arch);
    assert_eq!(info["name"], md["general.name"]["value"]);

    // Every `<arch>.*` scalar key appears under its name without the prefix.
    let prefix = format!("{arch}.");
    let mut checked = 0;
    for (key, v) in md.as_object().unwrap() {
        let Some(short) = key.strip_prefix(&prefix) else {
            continue;
        };
        let (got, want) = (&info[short], &v["value"]);
        if v["type"] == "f32" {
            let (g, w) = (got.as_f64().unwrap(), want.as_f64().unwrap());
            assert!((g - w).abs() <= 1e-6 * w.abs(), "{short}: {g} vs {w}");
        } else {
            assert_eq!(got, want, "{short}");
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} architecture keys");
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
    ] {
        assert_eq!(info[key], md[key]["value"], "{key}");
    }
    assert_eq!(info["vocab_size"], md["tokenizer.ggml.tokens"]["len"]);
    assert_eq!(info["tensor_count"], oracle["tensor_count"]);
    assert_eq!(info["tensor_types"], oracle["tensor_types"]);
    assert_eq!(info["parameter_count"], oracle["parameter_count"]);
    assert_eq!(info["file_size"], oracle["file_size"]);

    // Memory: tensor bytes + an f16 KV cache for the whole context, from the oracle's values.
    let get = |k: &str| md[format!("{prefix}{k}")]["value"].as_u64();
    let weights: u64 = oracle["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["size"].as_u64().unwrap())
        .sum();
    let n_head = get("attention.head_count").unwrap();
    let head_dim = get("attention.key_length").unwrap_or(get("embedding_length").unwrap() / n_head);
    let k = get("attention.key_length").unwrap_or(head_dim);
    let v = get("attention.value_length").unwrap_or(head_dim);
    let n_kv = get("attention.head_count_kv").unwrap_or(n_head);
    let kv = get("block_count").unwrap() * get("context_length").unwrap() * n_kv * (k + v) * 2;
    assert_eq!(info["head_dim"], head_dim);
    assert_eq!(info["memory_bytes"], weights + kv);
}

#[test]
fn info_json_matches_the_oracle_on_smollm2() {
    let Some(path) = model(SMOLLM2) else { return };
    check_info_against_oracle(SMOLLM2, &path);
    // The values the architecture contract quotes, as the oracle gives them.
    let o = tinyrt(&["info", "--json", path.to_str().unwrap()]);
    let info: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["block_count"], 30);
    assert_eq!(info["attention.head_count"], 9);
    assert_eq!(info["vocab_size"], 49152);
    assert_eq!(info["tensor_count"], 272);
}

/// An encoder's info: bidirectional attention, its pooling, and a classifier's outputs and
/// labels (as the oracle folder's config.json names them: negative, neutral, positive).
#[test]
fn info_shows_an_encoder_s_attention_pooling_and_labels() {
    let Some(path) = model("distilbert-tiny-cls-f32.gguf") else {
        return;
    };
    let o = tinyrt(&["info", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("bidirectional (encoder)"), "{text}");
    assert!(
        text.contains("3 outputs: negative, neutral, positive"),
        "{text}"
    );
    let o = tinyrt(&["info", "--json", path.to_str().unwrap()]);
    let info: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["classifier_outputs"], 3);
    assert_eq!(info["attention.causal"], false);
    if let Some(minilm) = model("all-MiniLM-L6-v2-q8_0.gguf") {
        let o = tinyrt(&["info", minilm.to_str().unwrap()]);
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.contains("pooling         mean"), "{text}");
    }
}

#[test]
fn info_json_matches_the_oracle_on_gemma3() {
    let Some(path) = model(GEMMA3) else { return };
    check_info_against_oracle(GEMMA3, &path);
}

/// `tinyrt embed -f FILE --json`: one embedding per line in the OpenAI embeddings shape, equal
/// to sentence-transformers' for the oracle's first sentences.
#[test]
fn embed_prints_openai_shaped_json_per_line() {
    let Some(model) = tinyrt_tests::model("all-MiniLM-L6-v2-f32.gguf") else {
        return;
    };
    let reference = std::fs::read_to_string(
        tinyrt_tests::workspace_root().join("../shared/oracles/minilm/reference.jsonl"),
    )
    .expect("the MiniLM oracle");
    let rows: Vec<serde_json::Value> = reference
        .lines()
        .take(3)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dir = tinyrt_tests::TempDir::new("embed");
    let mut lines = String::new();
    for r in &rows {
        lines.push_str(r["text"].as_str().unwrap());
        lines.push('\n');
    }
    let file = dir.write("texts.txt", lines.as_bytes());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args([
            "embed",
            model.to_str().unwrap(),
            "-f",
            file.to_str().unwrap(),
        ])
        .args(["--json", "--max-length", "256"])
        .output()
        .expect("run tinyrt");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(j["dim"], 384);
    assert_eq!(j["model"], "all-MiniLM-L6-v2-f32.gguf");
    let data = j["data"].as_array().unwrap();
    assert_eq!(data.len(), rows.len());
    let mut tokens = 0;
    for (i, (d, r)) in data.iter().zip(&rows).enumerate() {
        assert_eq!(d["index"], i);
        let got = d["embedding"].as_array().unwrap();
        let want = r["embedding"]["f32"].as_array().unwrap();
        assert_eq!(got.len(), 384);
        for (g, w) in got.iter().zip(want) {
            assert!((g.as_f64().unwrap() - w.as_f64().unwrap()).abs() <= 1e-4);
        }
        tokens += r["ids"].as_array().unwrap().len();
    }
    assert_eq!(j["usage"]["prompt_tokens"], tokens);
}
