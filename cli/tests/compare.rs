//! CLI contract of `tinyrt compare`: one Markdown row (or JSON object) per model × requant,
//! numbers that agree with `tinyrt perplexity` and the file system, and bad input exits with
//! status 2 and one line on stderr.

use std::path::Path;
use std::process::{Command, Output};

use tinyrt_tests::{fixture, TempDir};

fn tinyrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .expect("run tinyrt")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text_file(dir: &TempDir) -> std::path::PathBuf {
    dir.write(
        "text.txt",
        "The quick brown fox jumps over the lazy dog. "
            .repeat(40)
            .as_bytes(),
    )
}

#[test]
fn markdown_has_one_row_per_model_and_requant() {
    let dir = TempDir::new("cli-compare-md");
    let text = text_file(&dir);
    let (q4, q8) = (
        fixture("llama-tiny-q4_0.gguf"),
        fixture("llama-tiny-q8_0.gguf"),
    );
    let stdout = ok(&tinyrt(&[
        "compare",
        s(&q4),
        s(&q8),
        "--requant",
        "none,nf4",
        "-f",
        s(&text),
        "-c",
        "64",
        "--chunks",
        "2",
        "-n",
        "4",
        "-r",
        "1",
        "-t",
        "1",
    ]));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2 + 4, "{stdout}");
    let header: Vec<&str> = lines[0].split('|').map(str::trim).collect();
    assert_eq!(
        header,
        [
            "",
            "model",
            "type",
            "params",
            "file size",
            "RSS load / peak",
            "load s",
            "prefill t/s",
            "decode ms/tok",
            "PPL",
            ""
        ]
    );
    assert!(lines[1].starts_with("| --- |"));
    let expected = [
        ("llama-tiny-q4_0.gguf", "Q4_0"),
        ("llama-tiny-q4_0.gguf", "Q4_0 → NF4"),
        ("llama-tiny-q8_0.gguf", "Q8_0"),
        ("llama-tiny-q8_0.gguf", "Q8_0 → NF4"),
    ];
    for (line, (model, ty)) in lines[2..].iter().zip(expected) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells.len(), header.len(), "{line}");
        assert_eq!(cells[1], model, "{line}");
        assert_eq!(cells[2], ty, "{line}");
        assert!(cells[9].ends_with("(2 chunks)"), "{line}");
    }
}

#[test]
fn json_rows_agree_with_perplexity_and_the_files() {
    let dir = TempDir::new("cli-compare-json");
    let text = text_file(&dir);
    let q8 = fixture("llama-tiny-q8_0.gguf");
    let common = ["-f", s(&text), "-c", "64", "--chunks", "2", "-t", "1"];
    let mut args = vec![
        "compare",
        s(&q8),
        "--requant",
        "none,nf4",
        "-n",
        "4",
        "-r",
        "2",
        "--json",
    ];
    args.extend(common);
    let v: serde_json::Value = serde_json::from_str(&ok(&tinyrt(&args))).unwrap();
    assert_eq!(v["ctx_size"], 64);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let file_bytes = std::fs::metadata(&q8).unwrap().len();
    for (row, requant) in rows.iter().zip([None, Some("nf4")]) {
        assert_eq!(row["model"], "llama-tiny-q8_0.gguf");
        assert_eq!(row["type"], "Q8_0");
        assert_eq!(row["file_bytes"].as_u64(), Some(file_bytes));
        assert_eq!(row["threads"], 1);
        assert!(row["params"].as_u64().unwrap() > 1_000_000);
        assert!(row["load_s"].as_f64().unwrap() >= 0.0);
        assert!(row["prefill_tps"].as_f64().unwrap() > 0.0);
        assert_eq!(row["prefill_runs"].as_array().unwrap().len(), 2);
        assert_eq!(row["decode_tokens"], 4);
        let tps = row["decode_tps"].as_f64().unwrap();
        let ms = row["decode_ms_per_token"].as_f64().unwrap();
        assert!(
            (ms * tps / 1000.0 - 1.0).abs() < 1e-9,
            "{ms} ms at {tps} t/s"
        );
        if cfg!(target_os = "linux") {
            let (load, peak) = (
                row["rss_after_load_bytes"].as_u64().unwrap(),
                row["peak_rss_bytes"].as_u64().unwrap(),
            );
            assert!(load > 0 && peak >= load, "RSS {load} peak {peak}");
        }
        // The perplexity column is `tinyrt perplexity`'s number on the same settings.
        let mut pargs = vec!["perplexity", s(&q8), "--json"];
        pargs.extend(common);
        if let Some(r) = requant {
            pargs.extend(["--requant", r]);
        }
        let p: serde_json::Value = serde_json::from_str(&ok(&tinyrt(&pargs))).unwrap();
        assert_eq!(row["ppl"], p["ppl"]);
        assert_eq!(row["ppl_stderr"], p["ppl_stderr"]);
        assert_eq!(row["ppl_chunks"], 2);
        assert_eq!(row["ppl_tokens_scored"], p["tokens_scored"]);
    }
    assert!(rows[0]["requant"].is_null() && rows[0]["matmul_bytes"].is_null());
    assert_eq!(rows[1]["requant"], "NF4");
    // NF4 (4.5 bits a weight) holds the matrices in less than the Q8_0 file's bytes.
    assert!(rows[1]["matmul_bytes"].as_u64().unwrap() < file_bytes);
}

#[test]
fn bad_input_exits_with_status_2() {
    let dir = TempDir::new("cli-compare-bad");
    let text = text_file(&dir);
    let q4 = fixture("llama-tiny-q4_0.gguf");
    let missing = dir.path().join("missing.gguf");
    let not_gguf = dir.write("not.gguf", b"definitely not a GGUF file");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("no model", vec!["compare"]),
        (
            "unknown requant",
            vec!["compare", s(&q4), "--requant", "q3"],
        ),
        (
            "empty requant entry",
            vec!["compare", s(&q4), "--requant", "nf4,"],
        ),
        ("zero threads", vec!["compare", s(&q4), "-t", "0"]),
        ("zero reps", vec!["compare", s(&q4), "-r", "0"]),
        ("zero decode tokens", vec!["compare", s(&q4), "-n", "0"]),
        ("zero chunks", vec!["compare", s(&q4), "--chunks", "0"]),
        ("tiny context", vec!["compare", s(&q4), "-c", "2"]),
        ("bad number", vec!["compare", s(&q4), "-n", "many"]),
        ("missing model", vec!["compare", s(&q4), s(&missing)]),
        ("not a GGUF", vec!["compare", s(&not_gguf)]),
        ("missing text", vec!["compare", s(&q4), "-f", s(&missing)]),
        ("empty prompt", vec!["compare", s(&q4), "-p", ""]),
        (
            "text too short for -c",
            vec!["compare", s(&q4), "-f", s(&text), "-c", "4096"],
        ),
    ];
    for (what, args) in cases {
        let out = tinyrt(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("compare [") && !l.starts_with("perplexity:"))
            .collect();
        assert_eq!(lines.len(), 1, "{what}: {stderr}");
        assert!(lines[0].starts_with("error: "), "{what}: {stderr}");
        assert!(out.stdout.is_empty(), "{what}: stdout not empty");
    }
}
