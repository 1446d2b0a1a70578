//! Hugging Face folders run as they are, against Hugging Face's own outputs
//! (`../shared/oracles/hf/`, its README's rules):
//! - `tinyrt generate DIR --file PROMPT -n N --temp 0 --json --top-logits 8`: the prompt ids and
//!   the greedy path equal Hugging Face's, and every logit of both top-8 lists within 1e-3 of
//!   Hugging Face's (f32 compute on the bf16 weights: f32 KV cache and PyTorch's GELU for a
//!   folder);
//! - `tinyrt tokenize DIR --file TEXT --json`: `tokenizers`' ids, exactly, on every text;
//! - the chat rendering's text tokenizes to Hugging Face's ids.

use std::path::Path;
use std::process::Command;

use serde_json::Value as Json;
use tinyrt_tests::{hf_oracle, TempDir};

/// The README's bound on |Δlogit| against Hugging Face.
const LOGIT_TOL: f64 = 1e-3;

fn tinyrt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .unwrap()
}

fn jsonl(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(v: &Json) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// `(id, logit)` pairs of a `top` list.
fn top(v: &Json) -> Vec<(u64, f64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

#[test]
fn greedy_paths_and_logits_equal_hugging_face() {
    let tmp = TempDir::new("cli-hf-generate");
    let mut worst = 0.0f64;
    let mut runs = 0;
    for name in hf_oracle::FOLDERS {
        let dir = hf_oracle::folder(name);
        let expected = hf_oracle::oracle().join(format!("expected/{name}.generate.jsonl"));
        for (k, want) in jsonl(&expected).iter().enumerate() {
            let prompt = tmp.path().join(format!("{name}-{k}.txt"));
            std::fs::write(&prompt, want["prompt"].as_str().unwrap()).unwrap();
            let gen = ids(&want["gen_ids"]);
            let n = gen.len().to_string();
            let o = tinyrt(&[
                "generate",
                dir.to_str().unwrap(),
                "--file",
                prompt.to_str().unwrap(),
                "-n",
                &n,
                "--temp",
                "0",
                "--json",
                "--top-logits",
                "8",
            ]);
            assert!(o.status.success(), "{name}: {o:?}");
            let got: Json = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(
                ids(&got["prompt_ids"]),
                ids(&want["prompt_ids"]),
                "{name} {k}"
            );
            assert_eq!(ids(&got["gen_ids"]), gen, "{name} {k}: greedy path");
            let (gs, ws) = (
                got["steps"].as_array().unwrap(),
                want["steps"].as_array().unwrap(),
            );
            assert_eq!(gs.len(), ws.len(), "{name} {k}: steps");
            for (i, (g, w)) in gs.iter().zip(ws).enumerate() {
                let (g, w) = (top(&g["top"]), top(&w["top"]));
                // Every id of either list, in the other's list or not: an id of one top-8 list
                // missing from the other would be a difference beyond the tolerance (the
                // margins of the oracle keep the lists the same).
                for (id, lw) in &w {
                    let lg = g
                        .iter()
                        .find(|(j, _)| j == id)
                        .unwrap_or_else(|| panic!("{name} {k} step {i}: id {id} not in {g:?}"))
                        .1;
                    worst = worst.max((lg - lw).abs());
                }
                for (id, _) in &g {
                    assert!(
                        w.iter().any(|(j, _)| j == id),
                        "{name} {k} step {i}: id {id} not in Hugging Face's top 8 {w:?}"
                    );
                }
            }
            runs += 1;
        }
    }
    eprintln!("{runs} prompts: max |Δlogit| against Hugging Face {worst:.2e}");
    assert_eq!(runs, 24);
    assert!(worst <= LOGIT_TOL, "max |Δlogit| {worst} > {LOGIT_TOL}");
}

#[test]
fn folder_tokenizers_give_tokenizers_ids() {
    let tmp = TempDir::new("cli-hf-tokenize");
    let mut n = 0;
    for name in hf_oracle::FOLDERS {
        let dir = hf_oracle::folder(name);
        let expected = hf_oracle::oracle().join(format!("expected/{name}.tokenize.jsonl"));
        for (k, want) in jsonl(&expected).iter().enumerate() {
            let text = tmp.path().join(format!("{name}-{k}.txt"));
            std::fs::write(&text, want["text"].as_str().unwrap()).unwrap();
            let o = tinyrt(&[
                "tokenize",
                dir.to_str().unwrap(),
                "--file",
                text.to_str().unwrap(),
                "--json",
            ]);
            assert!(o.status.success(), "{name}: {o:?}");
            let got: Json = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(
                ids(&got["ids"]),
                ids(&want["ids"]),
                "{name}: {:?}",
                want["text"]
            );
            n += 1;
        }
    }
    assert_eq!(n, 80);
}

#[test]
fn chat_renderings_tokenize_as_hugging_face() {
    // The library's view: the folder's template renders the conversation to Hugging Face's
    // text, and that text (BOS in it, no specials added) gives Hugging Face's ids.
    for name in hf_oracle::FOLDERS {
        let path = hf_oracle::oracle().join(format!("expected/{name}.chat.json"));
        if !path.exists() {
            continue; // phi-2 has no chat template
        }
        let want: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let model =
            tinyrt::Model::load(hf_oracle::folder(name), tinyrt::LoadOptions::default()).unwrap();
        let format = tinyrt::chat::ChatFormat::from_metadata(model.file().metadata(), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let messages: Vec<tinyrt::chat::Message> = want["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                tinyrt::chat::Message::new(
                    m["role"].as_str().unwrap(),
                    m["content"].as_str().unwrap(),
                )
            })
            .collect();
        let text = format.render(&messages, true).unwrap();
        assert_eq!(
            text,
            want["text"].as_str().unwrap(),
            "{name}: rendered text"
        );
        let got = model
            .tokenizer()
            .tokenize(text.as_bytes(), false, true)
            .unwrap();
        let got: Vec<u64> = got.iter().map(|&i| i as u64).collect();
        assert_eq!(got, ids(&want["ids"]), "{name}: chat ids");
    }
}

#[test]
fn malformed_folders_exit_2_with_one_line() {
    // Every broken copy of the oracle's list, for `generate` (as for `convert`,
    // `cli/tests/convert.rs`): exit code 2, one line on stderr, nothing on stdout.
    for (what, folder, break_it) in hf_oracle::breaks() {
        let (_tmp, dir) = hf_oracle::copy(folder, "cli-hf-bad");
        break_it(&dir);
        let o = tinyrt(&["generate", dir.to_str().unwrap(), "-p", "Hi", "-n", "2"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.starts_with("error: "), "{what}: {err}");
        assert!(o.stdout.is_empty(), "{what}");
    }
}

#[test]
fn info_and_quantize_take_a_folder() {
    let tmp = TempDir::new("cli-hf-info");
    let dir = hf_oracle::folder("tiny-qwen2");
    let o = tinyrt(&["info", dir.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{o:?}");
    let info: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["architecture"], "qwen2");
    assert_eq!(info["vocab_size"], 1088);
    // quantize reads the folder as the GGUF the converter writes, then quantizes it.
    let out = tmp.path().join("q8.gguf");
    let o = tinyrt(&[
        "quantize",
        dir.to_str().unwrap(),
        out.to_str().unwrap(),
        "q8_0",
    ]);
    assert!(o.status.success(), "{o:?}");
    let f = tinyrt::gguf::GgufFile::open(&out).unwrap();
    assert!(f
        .tensor_infos()
        .iter()
        .any(|t| t.ty == tinyrt::gguf::GgmlType::Q8_0));
    // The quantized file runs, and its GGUF tokenizer gives the folder tokenizer's ids.
    let run = |m: &str| {
        let o = tinyrt(&[
            "generate",
            m,
            "-p",
            "The capital of France is",
            "-n",
            "4",
            "--temp",
            "0",
            "--json",
        ]);
        assert!(o.status.success(), "{o:?}");
        let v: Json = serde_json::from_slice(&o.stdout).unwrap();
        ids(&v["prompt_ids"])
    };
    assert_eq!(run(out.to_str().unwrap()), run(dir.to_str().unwrap()));
}
