//! `tinyrt generate --lora / --lora-scaled` on the LoRA oracle's tiny base: llama.cpp's greedy
//! path with the same adapter (`../shared/oracles/lora/llamacpp.jsonl`), and one-line errors
//! with exit 2 for an adapter of another model, a file that is not an adapter, a bad scale.

use std::process::Command;

use serde_json::Value;
use tinyrt_tests::workspace_root;

fn tinyrt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn generate_with_adapters_follows_llama_cpp() {
    let dir = workspace_root().join("../shared/oracles/lora");
    let base = dir.join("llama-lora-tiny-f32.gguf");
    let text = std::fs::read_to_string(dir.join("llamacpp.jsonl")).unwrap();
    let mut checked = 0;
    for r in text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
    {
        if r["base"] != "llama-lora-tiny-f32.gguf" || r["kv"] != "f16" {
            continue;
        }
        let set = r["adapters"].as_array().unwrap();
        if set.is_empty() || set.len() > 2 {
            continue;
        }
        let mut args = vec![
            "generate".to_string(),
            base.to_str().unwrap().to_string(),
            "-p".into(),
            r["prompt"].as_str().unwrap().into(),
            "-n".into(),
            "16".into(),
            "--temp".into(),
            "0".into(),
            "--json".into(),
        ];
        for a in set {
            let f = dir.join("gguf").join(a[0].as_str().unwrap());
            args.extend([
                "--lora-scaled".into(),
                f.to_str().unwrap().to_string(),
                a[1].to_string(),
            ]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = tinyrt(&refs);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["gen_ids"], r["gen_ids"], "{}", r["adapters"]);
        checked += 1;
    }
    assert!(checked >= 20, "{checked}");
}

#[test]
fn bad_adapters_are_one_line_errors() {
    let dir = workspace_root().join("../shared/oracles/lora");
    let base = dir.join("llama-lora-tiny-f32.gguf");
    let b = base.to_str().unwrap();
    let other = dir.join("smollm2-qv-r8-f16.gguf");
    let qv = dir.join("gguf/a-qv-r8-f32.gguf");
    for args in [
        vec!["--lora", other.to_str().unwrap()],
        vec!["--lora", b],
        vec!["--lora", "/nonexistent/adapter.gguf"],
        vec!["--lora-scaled", qv.to_str().unwrap(), "nan"],
        vec!["--lora-scaled", qv.to_str().unwrap(), "x"],
    ] {
        let mut all = vec!["generate", b, "-p", "hi", "-n", "1"];
        all.extend(&args);
        let o = tinyrt(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{err}");
    }
}

/// `tinyrt info ADAPTER`: kind, pair count, rank, alpha and targets as the oracle README
/// describes the adapter (b-all-r16: rank 16, alpha 32, q/k/v/o/gate/up/down of 2 layers).
#[test]
fn info_describes_an_adapter() {
    let f = workspace_root().join("../shared/oracles/lora/gguf/b-all-r16-f32.gguf");
    let o = tinyrt(&["info", "--json", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["type"], "adapter");
    assert_eq!(v["adapter_type"], "lora");
    assert_eq!(v["lora_pairs"], 14);
    assert_eq!(v["lora_ranks"], serde_json::json!([16]));
    assert_eq!(v["lora_alpha"], 32.0);
    assert_eq!(
        v["lora_targets"],
        serde_json::json!([
            "attn_k",
            "attn_output",
            "attn_q",
            "attn_v",
            "ffn_down",
            "ffn_gate",
            "ffn_up"
        ])
    );
}

fn run_ok(args: &[&str]) -> Vec<u8> {
    let o = tinyrt(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// A text of ~200 words of the tiny base's vocabulary, for perplexity with -c 16.
fn story() -> String {
    "Once upon a time, in a small village by the sea, there lived an old fisherman who \
     went out every morning before the sun rose. He knew the names of the winds and the \
     moods of the water, and the children of the village followed him to the harbour. "
        .repeat(4)
}

/// `perplexity --lora-scaled A 0.5 --lora B`: the value tinyrt's library computes with the
/// same adapters set on a session (llama-perplexity's method, `tools::perplexity`, on the
/// same tokens and chunks), and not the base's.
#[test]
fn perplexity_applies_the_adapters() {
    use std::sync::Arc;
    use tinyrt::kv_cache::KvType;
    use tinyrt::tools::perplexity::{perplexity, PerplexityOptions};
    use tinyrt::{LoadOptions, Model, Session, SessionOptions};

    let dir = workspace_root().join("../shared/oracles/lora");
    let base = dir.join("llama-lora-tiny-f32.gguf");
    let (a, b) = (
        dir.join("gguf/a-qv-r8-f32.gguf"),
        dir.join("gguf/b-all-r16-f32.gguf"),
    );
    let tmp = tinyrt_tests::TempDir::new("lora-ppl");
    let text = tmp.write("story.txt", story().as_bytes());
    let ppl = |extra: &[&str]| -> f64 {
        let mut args = vec![
            "perplexity",
            base.to_str().unwrap(),
            "-f",
            text.to_str().unwrap(),
            "-c",
            "16",
            "--kv-type",
            "f32",
            "--json",
        ];
        args.extend(extra);
        let v: Value = serde_json::from_slice(&run_ok(&args)).unwrap();
        v["ppl"].as_f64().unwrap()
    };
    let plain = ppl(&[]);
    let got = ppl(&[
        "--lora-scaled",
        a.to_str().unwrap(),
        "0.5",
        "--lora",
        b.to_str().unwrap(),
    ]);

    let m = Model::load(&base, LoadOptions::default()).unwrap();
    let tokens = m
        .tokenizer()
        .tokenize(story().as_bytes(), true, false)
        .unwrap();
    let mut s = Session::new(
        &m,
        SessionOptions {
            n_ctx: Some(16),
            kv_type: KvType::F32,
            n_batch: 16,
            ..SessionOptions::default()
        },
    )
    .unwrap();
    let set = vec![
        (Arc::clone(&m.load_adapter(&a).unwrap()), 0.5f32),
        (m.load_adapter(&b).unwrap(), 1.0),
    ];
    s.set_adapters(&set).unwrap();
    let tok = m.tokenizer();
    let opts = PerplexityOptions {
        n_ctx: 16,
        max_chunks: None,
        bos: if tok.add_bos() { tok.bos() } else { None },
        n_vocab: m.config().vocab_size,
    };
    let want = perplexity(
        &tokens,
        &opts,
        |chunk| {
            s.reset();
            s.feed_all(chunk)
        },
        |_, _, _| {},
    )
    .unwrap()
    .ppl;
    assert!(
        (got - want).abs() <= 1e-6 * want,
        "perplexity --lora {got}, library {want}"
    );
    assert!((got - plain).abs() > 1e-2 * plain, "{got} vs base {plain}");
}

/// `chat --lora`: the greedy reply is `generate`'s with the same adapter on the ChatML-templated
/// prompt, and differs from the base's reply.
#[test]
fn chat_applies_the_adapters() {
    let dir = workspace_root().join("../shared/oracles/lora");
    let base = dir.join("llama-lora-tiny-f32.gguf");
    let b = base.to_str().unwrap();
    let a = dir.join("gguf/b-all-r16-f32.gguf");
    let chat = |extra: &[&str]| -> String {
        let mut args = vec![
            "chat",
            b,
            "--chat-template",
            "chatml",
            "--temp",
            "0",
            "-n",
            "12",
        ];
        args.extend(extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_tinyrt"))
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Once upon a time\n")
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let with = chat(&["--lora", a.to_str().unwrap()]);
    let plain = chat(&[]);
    let prompt = "<|im_start|>user\nOnce upon a time<|im_end|>\n<|im_start|>assistant\n";
    let v: Value = serde_json::from_slice(&run_ok(&[
        "generate",
        b,
        "-p",
        prompt,
        "-n",
        "12",
        "--temp",
        "0",
        "--json",
        "--lora",
        a.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(with.trim_end_matches('\n'), v["gen_text"].as_str().unwrap());
    assert_ne!(with, plain);
}

/// `compare --lora`: the perplexity column with an adapter is `perplexity --lora`'s (both
/// with compare's f16 cache), not the base's.
#[test]
fn compare_applies_the_adapters() {
    let dir = workspace_root().join("../shared/oracles/lora");
    let base = dir.join("llama-lora-tiny-f32.gguf");
    let b = base.to_str().unwrap();
    let a = dir.join("gguf/a-qv-r8-f32.gguf");
    let tmp = tinyrt_tests::TempDir::new("lora-compare");
    let text = tmp.write("story.txt", story().as_bytes());
    let t = text.to_str().unwrap();
    let cmp = |extra: &[&str]| -> f64 {
        let mut args = vec![
            "compare", b, "-f", t, "-c", "16", "-n", "2", "-r", "1", "--json",
        ];
        args.extend(extra);
        let v: Value = serde_json::from_slice(&run_ok(&args)).unwrap();
        v["rows"][0]["ppl"].as_f64().unwrap()
    };
    let ppl = |extra: &[&str]| -> f64 {
        let mut args = vec![
            "perplexity",
            b,
            "-f",
            t,
            "-c",
            "16",
            "--kv-type",
            "f16",
            "--json",
        ];
        args.extend(extra);
        let v: Value = serde_json::from_slice(&run_ok(&args)).unwrap();
        v["ppl"].as_f64().unwrap()
    };
    let lora = ["--lora", a.to_str().unwrap()];
    let (with, plain) = (cmp(&lora), cmp(&[]));
    let want = ppl(&lora);
    assert!(
        (with - want).abs() <= 1e-6 * want,
        "compare {with}, perplexity {want}"
    );
    assert!(
        (with - plain).abs() > 1e-3 * plain,
        "{with} vs base {plain}"
    );
}

/// A bad adapter on chat, perplexity and compare: exit 2 and one error line (compare's last).
#[test]
fn bad_adapters_are_one_line_errors_on_every_command() {
    let dir = workspace_root().join("../shared/oracles/lora");
    let base = dir.join("llama-lora-tiny-f32.gguf");
    let b = base.to_str().unwrap();
    let other = dir.join("smollm2-qv-r8-f16.gguf");
    let o = other.to_str().unwrap();
    let tmp = tinyrt_tests::TempDir::new("lora-bad");
    let text = tmp.write("story.txt", story().as_bytes());
    let t = text.to_str().unwrap();
    for args in [
        vec!["chat", b, "--lora", o],
        vec!["perplexity", b, "-f", t, "-c", "16", "--lora", o],
        vec![
            "perplexity",
            b,
            "-f",
            t,
            "-c",
            "16",
            "--lora-scaled",
            o,
            "x",
        ],
    ] {
        tinyrt_tests::assert_bad_input(&tinyrt(&args), &format!("{args:?}"));
    }
    // compare says which model it measures first: the error is its one last line.
    let args = ["compare", b, "-f", t, "-c", "16", "--lora", o];
    let err = tinyrt_tests::assert_bad_input_last(&tinyrt(&args), "compare --lora");
    assert!(err.contains("→"), "{err}");
}
