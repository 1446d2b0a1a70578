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
