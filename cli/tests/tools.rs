//! CLI contract of `synth`, `quantize`, `perplexity` and `bench`: they run end to end on a
//! synthesized model, and bad input exits with status 2 and one line on stderr.

use std::path::Path;
use std::process::{Command, Output};

use tinyrt_tests::{assert_bad_input, fixture, TempDir};

fn tinyrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .expect("run tinyrt")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn synth_quantize_perplexity_and_bench_run_end_to_end() {
    let dir = TempDir::new("cli-tools");
    let model = dir.path().join("tiny.gguf");
    let out = tinyrt(&[
        "synth",
        "tiny",
        "f16",
        s(&model),
        "--vocab",
        "400",
        "-t",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = dir.path().join("tiny-q4_k_m.gguf");
    let out = tinyrt(&["quantize", s(&model), s(&q), "q4_k_m", "-t", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Q4_K_M"));

    let text = dir.write(
        "text.txt",
        "The quick brown fox jumps over the lazy dog. "
            .repeat(40)
            .as_bytes(),
    );
    let out = tinyrt(&["perplexity", s(&q), "-f", s(&text), "-c", "64", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chunks = v["chunks"].as_u64().unwrap();
    assert!(chunks >= 2);
    assert_eq!(v["tokens_scored"].as_u64().unwrap(), chunks * 31);
    // Random weights: a perplexity of the order of the vocabulary size.
    let ppl = v["ppl"].as_f64().unwrap();
    assert!(ppl > 50.0 && ppl < 5000.0, "ppl {ppl}");
    assert!(v["ppl_stderr"].as_f64().unwrap() > 0.0);

    let out = tinyrt(&[
        "bench",
        s(&q),
        "-p",
        "16",
        "-n",
        "4",
        "-r",
        "2",
        "-t",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["threads"], 1);
    assert_eq!(v["model"], "tiny-q4_k_m.gguf");
    for test in ["pp", "tg"] {
        let t = &v[test];
        let (lo, med, hi) = (
            t["tps_min"].as_f64().unwrap(),
            t["tps_median"].as_f64().unwrap(),
            t["tps_max"].as_f64().unwrap(),
        );
        assert!(lo > 0.0 && lo <= med && med <= hi, "{test}: {t}");
    }
    assert_eq!(v["pp"]["tokens"], 16);
    assert_eq!(v["tg"]["tokens"], 4);
    assert!(v["rss_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn bad_input_exits_with_status_2() {
    let dir = TempDir::new("cli-tools-bad");
    let out_path = dir.path().join("x.gguf");
    let x = s(&out_path);
    let f32_fixture = fixture("stablelm-tiny-f32.gguf");
    let src = s(&f32_fixture);
    let not_gguf = dir.write("text.txt", b"hello");
    let text = s(&not_gguf);
    for (args, what) in [
        (vec!["synth", "gpt-9", "q4_0", x], "unknown shape"),
        (vec!["synth", "tiny", "q7_7", x], "unknown type"),
        (
            vec!["synth", "tiny", "q4_0", x, "--vocab", "3"],
            "tiny vocabulary",
        ),
        (
            vec!["synth", "tiny", "q4_0", x, "--tokenizer-from", text],
            "tokenizer from a text file",
        ),
        (
            vec!["quantize", "/nonexistent.gguf", x, "q4_0"],
            "missing input",
        ),
        (vec!["quantize", text, x, "q4_0"], "input not GGUF"),
        (vec!["quantize", src, x, "q3_xs"], "unknown target"),
        (
            vec!["quantize", src, x, "q4_0", "--keep-output", "q9"],
            "unknown output type",
        ),
        (vec!["quantize", src, src, "q4_0"], "output = input"),
        (
            vec!["perplexity", src, "-f", "/nonexistent.txt"],
            "missing text",
        ),
        (
            vec!["perplexity", src, "-f", text, "-c", "64"],
            "text too short",
        ),
        (
            vec!["perplexity", src, "-f", text, "-c", "2"],
            "context too small",
        ),
        (vec!["bench", src, "-r", "0"], "zero repetitions"),
        (
            vec!["bench", src, "-p", "0", "-n", "0"],
            "nothing to measure",
        ),
        (vec!["bench", text], "model not GGUF"),
    ] {
        assert_bad_input(&tinyrt(&args), what);
    }
}
