//! `tinyrt tokenize` reproduces llama.cpp's ids (`tests/golden/tokenize.*.jsonl`).

use std::process::{Command, Output};

use tinyrt::gguf::{Array, GgufWriter, Value};
use tinyrt_tests::{fixture, model, workspace_root, TempDir, SMOLLM2};

fn tinyrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .expect("run tinyrt")
}

fn golden(name: &str) -> Vec<(String, Vec<u64>)> {
    let path = workspace_root().join("tests/golden").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            let ids = v["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id"))
                .collect();
            (v["text"].as_str().expect("text").to_string(), ids)
        })
        .collect()
}

fn json_ids(o: &Output) -> Vec<u64> {
    assert!(
        o.status.success(),
        "status {:?}, stderr {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    v["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id"))
        .collect()
}

/// A few golden lines through `-p` (texts a command line can carry) and through `--file`.
fn check(model: &str, golden_name: &str) {
    let lines = golden(golden_name);
    let dir = TempDir::new("tokenize");
    let mut via_prompt = 0;
    for (i, (text, ids)) in lines.iter().enumerate().step_by(9) {
        if !text.contains('\0') && via_prompt < 5 {
            assert_eq!(
                &json_ids(&tinyrt(&["tokenize", model, "-p", text, "--json"])),
                ids,
                "-p line {}",
                i + 1
            );
            via_prompt += 1;
        }
        let path = dir.write(&format!("line{i}.txt"), text.as_bytes());
        let path = path.to_str().expect("utf-8 temp path");
        assert_eq!(
            &json_ids(&tinyrt(&["tokenize", model, "--file", path, "--json"])),
            ids,
            "--file line {}",
            i + 1
        );
    }
    assert!(via_prompt > 0);
}

#[test]
fn tokenize_json_matches_golden_on_vocab_files() {
    for (vocab, golden_name) in [
        ("ggml-vocab-qwen2.gguf", "tokenize.vocab-qwen2.jsonl"),
        (
            "ggml-vocab-llama-spm.gguf",
            "tokenize.vocab-llama-spm.jsonl",
        ),
    ] {
        let path = fixture(vocab);
        check(path.to_str().expect("utf-8 path"), golden_name);
    }
}

#[test]
fn tokenize_json_matches_golden_on_smollm2() {
    let Some(path) = model(SMOLLM2) else { return };
    check(
        path.to_str().expect("utf-8 path"),
        "tokenize.smollm2-135m-instruct-q4_1.jsonl",
    );
}

#[test]
fn tokenize_plain_prints_one_line_of_ids() {
    let path = fixture("ggml-vocab-llama-spm.gguf");
    let model = path.to_str().expect("utf-8 path");
    let json = json_ids(&tinyrt(&["tokenize", model, "-p", "Hello world", "--json"]));
    let o = tinyrt(&["tokenize", model, "-p", "Hello world"]);
    assert!(o.status.success());
    let plain: Vec<u64> = String::from_utf8(o.stdout)
        .expect("utf-8")
        .split_whitespace()
        .map(|t| t.parse().expect("id"))
        .collect();
    assert_eq!(plain, json);
    assert_eq!(plain[0], 1, "llama-spm adds BOS");
}

#[test]
fn tokenize_bad_input_exits_2() {
    let path = fixture("ggml-vocab-qwen2.gguf");
    let model = path.to_str().expect("utf-8 path");
    let missing = workspace_root().join("no-such-model.gguf");
    // Valid GGUF files with missing or inconsistent tokenizer metadata.
    let dir = TempDir::new("tokenize-bad");
    let vocab = |edit: &dyn Fn(&mut GgufWriter)| {
        let mut w = GgufWriter::new();
        w.set("tokenizer.ggml.model", Value::String("llama".into()))
            .set(
                "tokenizer.ggml.tokens",
                Value::Array(Array::String(vec!["<unk>".into(), "a".into()])),
            )
            .set(
                "tokenizer.ggml.token_type",
                Value::Array(Array::I32(vec![2, 1])),
            );
        edit(&mut w);
        w.to_bytes().expect("valid file")
    };
    let ok = dir.write("ok.gguf", &vocab(&|_| {}));
    let bad = [
        dir.write(
            "no-model.gguf",
            &vocab(&|w| {
                w.set("tokenizer.ggml.model", Value::U32(1));
            }),
        ),
        dir.write(
            "types.gguf",
            &vocab(&|w| {
                w.set(
                    "tokenizer.ggml.token_type",
                    Value::Array(Array::I32(vec![1])),
                );
            }),
        ),
        dir.write(
            "bos.gguf",
            &vocab(&|w| {
                w.set("tokenizer.ggml.bos_token_id", Value::U32(7));
            }),
        ),
    ];
    assert!(
        tinyrt(&["tokenize", ok.to_str().expect("utf-8"), "-p", "a"])
            .status
            .success()
    );
    for args in [
        vec!["tokenize", model],
        vec!["tokenize", model, "-p", "x", "--file", "y"],
        vec!["tokenize", model, "--file", "/no/such/file.txt"],
        vec!["tokenize", missing.to_str().expect("utf-8"), "-p", "x"],
        vec!["tokenize", bad[0].to_str().expect("utf-8"), "-p", "x"],
        vec!["tokenize", bad[1].to_str().expect("utf-8"), "-p", "x"],
        vec!["tokenize", bad[2].to_str().expect("utf-8"), "-p", "x"],
    ] {
        let o = tinyrt(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}
