//! `tinyrt generate`: JSON output against llama.cpp's goldens, streaming, sampling
//! reproducibility and the error contract (one line, exit 2).

use std::io::Read;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;
use tinyrt_tests::{
    assert_bad_input, fixture, unknown_arch_gguf, workspace_root, TempDir, UNKNOWN_ARCH,
};

fn tinyrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .expect("run tinyrt")
}

fn llama() -> String {
    fixture("llama-tiny-q8_0.gguf").display().to_string()
}

fn first_golden() -> Json {
    let text = std::fs::read_to_string(workspace_root().join("tests/golden/llama-tiny-q8_0.jsonl"))
        .expect("golden");
    serde_json::from_str(text.lines().next().expect("line")).expect("json")
}

#[test]
fn json_output_follows_the_golden_schema_and_path() {
    let g = first_golden();
    let prompt = g["prompt"].as_str().unwrap();
    let o = tinyrt(&[
        "generate",
        &llama(),
        "-p",
        prompt,
        "-n",
        "4",
        "--temp",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: Json = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(j["prompt_ids"], g["prompt_ids"]);
    let gen = j["gen_ids"].as_array().unwrap();
    assert_eq!(gen.len(), 4);
    // The first greedy token has a margin far above the tolerance in this golden.
    assert_eq!(gen[0], g["gen_ids"][0]);
    let steps = j["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[0]["top"].as_array().unwrap().len(), 8);
    assert_eq!(j["stop_reason"], "length");
    assert!(j["gen_text"].is_string());
    let o = tinyrt(&[
        "generate",
        &llama(),
        "-p",
        prompt,
        "-n",
        "2",
        "--temp",
        "0",
        "--json",
        "--top-logits",
        "3",
    ]);
    let j: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["steps"][0]["top"].as_array().unwrap().len(), 3);
}

#[test]
fn text_streams_to_stdout_and_stats_to_stderr() {
    let o = tinyrt(&[
        "generate",
        &llama(),
        "-p",
        "Hello",
        "-n",
        "8",
        "--temp",
        "0",
    ]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tok/s"), "{err}");
    let json = tinyrt(&[
        "generate",
        &llama(),
        "-p",
        "Hello",
        "-n",
        "8",
        "--temp",
        "0",
        "--json",
    ]);
    let j: Json = serde_json::from_slice(&json.stdout).unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.trim_end_matches('\n'), j["gen_text"].as_str().unwrap());
}

#[test]
fn a_seed_reproduces_sampled_text() {
    let run = |seed: &str| {
        let o = tinyrt(&[
            "generate",
            &llama(),
            "-p",
            "Once",
            "-n",
            "12",
            "--seed",
            seed,
            "--json",
        ]);
        assert!(o.status.success());
        let j: Json = serde_json::from_slice(&o.stdout).unwrap();
        j["gen_ids"].clone()
    };
    assert_eq!(run("5"), run("5"));
}

#[test]
fn zero_tokens_processes_the_prompt_only() {
    let o = tinyrt(&["generate", &llama(), "-p", "Hi", "-n", "0", "--json"]);
    assert!(o.status.success());
    let j: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["gen_ids"].as_array().unwrap().len(), 0);
    assert!(!j["prompt_ids"].as_array().unwrap().is_empty());
}

#[test]
fn file_prompt_keeps_its_bytes() {
    let dir = TempDir::new("gen-file");
    let path = dir.path().join("p.txt");
    std::fs::write(&path, "Hello\n").unwrap();
    let a = tinyrt(&[
        "generate",
        &llama(),
        "--file",
        path.to_str().unwrap(),
        "-n",
        "0",
        "--json",
    ]);
    let b = tinyrt(&["generate", &llama(), "-p", "Hello\n", "-n", "0", "--json"]);
    let ja: Json = serde_json::from_slice(&a.stdout).unwrap();
    let jb: Json = serde_json::from_slice(&b.stdout).unwrap();
    assert_eq!(ja["prompt_ids"], jb["prompt_ids"]);
}

#[test]
fn closed_stdout_ends_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args([
            "generate",
            &llama(),
            "-p",
            "Hello",
            "-n",
            "64",
            "--temp",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 4];
    let _ = out.read(&mut buf);
    drop(out);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
    assert!(o.status.code() == Some(0), "{:?} {err}", o.status);
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let m = llama();
    let e = assert_bad_input(
        &tinyrt(&["generate", &m, "-p", "Hello", "-c", "4", "-n", "8"]),
        "context",
    );
    assert!(e.contains("context"), "{e}");
    assert_bad_input(&tinyrt(&["generate", "", "-p", "x"]), "empty model path");
    assert_bad_input(
        &tinyrt(&["generate", &m, "-p", "x", "--bogus"]),
        "unknown option",
    );
    assert_bad_input(&tinyrt(&["generate", &m]), "no prompt");
    assert_bad_input(&tinyrt(&["generate", &m, "-p", "x", "-n", "-2"]), "bad -n");
    assert_bad_input(
        &tinyrt(&["generate", &m, "-p", "x", "--kv-type", "q4"]),
        "kv type",
    );
    // Without the `cuda` feature, or without an NVIDIA driver, `--device cuda` is bad input.
    if !std::path::Path::new("/dev/nvidiactl").exists() {
        let e = assert_bad_input(
            &tinyrt(&["generate", &m, "-p", "x", "--device", "cuda"]),
            "cuda",
        );
        assert!(
            e.contains("--device cuda: no CUDA driver")
                || e.contains("--device cuda: this build of tinyrt has no CUDA support"),
            "{e}"
        );
    }
    let dir = TempDir::new("gen-arch");
    let path = dir.path().join("frob.gguf");
    std::fs::write(&path, unknown_arch_gguf()).unwrap();
    let e = assert_bad_input(
        &tinyrt(&["generate", path.to_str().unwrap(), "-p", "x"]),
        "unknown architecture",
    );
    assert!(e.contains(UNKNOWN_ARCH), "{e}");
}

/// `--isa` picks the CPU kernels like `TINYRT_ISA` (the flag wins over the variable), and every
/// ISA computes the same bits; an unknown name or an ISA the CPU lacks is bad input.
#[test]
fn isa_flag_selects_the_kernels_and_wins_over_the_environment() {
    let run = |isa: Option<&str>, env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tinyrt"));
        c.args([
            "generate",
            &llama(),
            "-p",
            "Once upon",
            "-n",
            "3",
            "--temp",
            "0",
            "--json",
        ]);
        if let Some(isa) = isa {
            c.args(["--isa", isa]);
        }
        match env {
            Some(v) => c.env("TINYRT_ISA", v),
            None => c.env_remove("TINYRT_ISA"),
        };
        c.output().expect("run tinyrt")
    };
    let base = run(None, None);
    assert!(
        base.status.success(),
        "{}",
        String::from_utf8_lossy(&base.stderr)
    );
    for isa in tinyrt::kernels::cpu::Isa::available() {
        let o = run(Some(isa.name()), None);
        assert!(
            o.status.success(),
            "{}: {}",
            isa.name(),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            o.stdout,
            base.stdout,
            "--isa {} computes other bits",
            isa.name()
        );
        // A bad TINYRT_ISA is refused even beside a good flag (the variable is checked once,
        // at the edge, for every command); a good one is overridden by the flag.
        let o = run(Some(isa.name()), Some("scalar"));
        assert_eq!(o.stdout, base.stdout);
    }
    assert_bad_input(&run(Some("sve"), None), "--isa \"sve\": unknown ISA");
    #[cfg(target_arch = "x86_64")]
    assert_bad_input(
        &run(Some("neon"), None),
        "does not support the neon kernels",
    );
    assert_bad_input(&run(Some("avx512"), Some("bogus")), "TINYRT_ISA");
    if !tinyrt::kernels::cpu::Isa::Avx512.is_supported() {
        assert_bad_input(&run(Some("avx512"), None), "does not support");
    }
}
