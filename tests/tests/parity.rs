//! Generation parity with llama.cpp under the rule of `tests/golden/README.md`, for every ISA
//! this CPU supports; plus KV-cache and threading consistency checks.
//!
//! Real models are read from `<workspace>/models/`; when absent the test prints a notice and
//! passes, unless `TINYRT_REQUIRE_MODELS=1`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tinyrt::kernels::cpu::Isa;
use tinyrt::kv_cache::KvType;
use tinyrt::sampler::{argmax, top_logits};
use tinyrt::{LoadOptions, Model, SessionOptions};

fn workspace() -> PathBuf {
    tinyrt_tests::workspace_root()
}

/// Tolerances of the parity rule for one class of model.
#[derive(Clone, Copy, Debug)]
struct Tolerance {
    max: f32,
    mean: f32,
    diverge: f32,
}

const REAL: Tolerance = Tolerance {
    max: 1.5,
    mean: 0.4,
    diverge: 1.0,
};
const TINY_F32: Tolerance = Tolerance {
    max: 0.02,
    mean: 0.005,
    diverge: 0.02,
};
const TINY_QUANT: Tolerance = Tolerance {
    max: 0.15,
    mean: 0.04,
    diverge: 0.1,
};

/// What one golden file gave.
#[derive(Debug, Default)]
struct Report {
    steps: usize,
    compared: usize,
    max: f32,
    sum: f64,
    parted: usize,
}

/// The parity rule: walk each prompt's steps while both greedy paths agree; compare the logits
/// of ids in both top-8 lists; the paths may part only where llama.cpp's margin is below
/// `diverge`. Returns the statistics or a description of the first violation.
fn check_parity(
    model: &Model,
    golden: &Path,
    tol: Tolerance,
    threads_label: &str,
    max_prompts: usize,
) -> Result<Report, String> {
    let text = std::fs::read_to_string(golden).map_err(|e| format!("{golden:?}: {e}"))?;
    let mut session = model
        .session(SessionOptions {
            n_ctx: Some(1024),
            ..SessionOptions::default()
        })
        .map_err(|e| e.to_string())?;
    let mut rep = Report::default();
    for (line_no, line) in text.lines().enumerate().take(max_prompts) {
        let g: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let ids = |v: &Value| -> Vec<u32> {
            v.as_array()
                .expect("id array")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect()
        };
        let prompt_ids = ids(&g["prompt_ids"]);
        let gen_ids = ids(&g["gen_ids"]);
        let steps = g["steps"].as_array().expect("steps");
        let label = format!(
            "{} line {} ({}, {threads_label})",
            golden.file_name().unwrap().to_string_lossy(),
            line_no + 1,
            g["prompt_file"].as_str().unwrap_or("?")
        );
        {
            let prompt = g["prompt"].as_str().expect("prompt");
            let ours = model
                .tokenizer()
                .encode(prompt.as_bytes())
                .map_err(|e| e.to_string())?;
            if ours != prompt_ids {
                return Err(format!(
                    "{label}: prompt ids differ\n ours {ours:?}\n llama.cpp {prompt_ids:?}"
                ));
            }
        }
        session.reset();
        let mut logits = session
            .feed(&prompt_ids)
            .map_err(|e| e.to_string())?
            .to_vec();
        for (i, step) in steps.iter().enumerate() {
            rep.steps += 1;
            let gold: Vec<(u32, f32)> = step["top"]
                .as_array()
                .expect("top")
                .iter()
                .map(|p| {
                    (
                        p[0].as_u64().expect("id") as u32,
                        p[1].as_f64().expect("logit") as f32,
                    )
                })
                .collect();
            let ours = top_logits(&logits, gold.len());
            for &(id, gl) in &gold {
                if ours.iter().any(|&(o, _)| o == id) {
                    let d = (logits[id as usize] - gl).abs();
                    rep.compared += 1;
                    rep.sum += d as f64;
                    if d > rep.max {
                        rep.max = d;
                    }
                    if d > tol.max {
                        return Err(format!(
                            "{label} step {i}: logit of id {id} is {} here, {gl} in llama.cpp (|Δ| {d} > {})",
                            logits[id as usize], tol.max
                        ));
                    }
                }
            }
            let ours_id = argmax(&logits);
            let gold_id = gen_ids[i];
            if ours_id != gold_id {
                let margin = gold[0].1 - gold[1].1;
                if margin >= tol.diverge {
                    return Err(format!(
                        "{label} step {i}: greedy picks {ours_id}, llama.cpp {gold_id} with margin {margin} >= {}",
                        tol.diverge
                    ));
                }
                rep.parted += 1;
                break;
            }
            if i + 1 < steps.len() {
                logits = session
                    .feed(&[ours_id])
                    .map_err(|e| e.to_string())?
                    .to_vec();
            }
        }
    }
    let mean = (rep.sum / rep.compared.max(1) as f64) as f32;
    if mean > tol.mean {
        return Err(format!(
            "{}: mean |Δ| {mean} > {}",
            golden.display(),
            tol.mean
        ));
    }
    Ok(rep)
}

/// Check every prompt of `golden` on the fastest ISA; on the slower ISAs only the first
/// `slow_isa_prompts` (the real models are slow on the scalar kernels; CI has 2 cores).
fn check_model(model_path: &Path, golden: &str, tol: Tolerance) {
    check_model_limited(model_path, golden, tol, usize::MAX)
}

fn check_model_limited(model_path: &Path, golden: &str, tol: Tolerance, slow_isa_prompts: usize) {
    let golden = workspace().join("tests/golden").join(golden);
    let best = Isa::detect();
    for isa in Isa::available() {
        let max_prompts = if isa == best {
            usize::MAX
        } else {
            slow_isa_prompts
        };
        let model = Model::load(
            model_path,
            LoadOptions {
                isa: Some(isa),
                // One thread: the results do not depend on it (see the threads test) and a
                // busy host makes a 2-thread pool wait for descheduled workers.
                threads: Some(1),
                ..LoadOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", model_path.display()));
        match check_parity(&model, &golden, tol, isa.name(), max_prompts) {
            Ok(r) => eprintln!(
                "{} [{}]: {} steps, {} logits compared, max |Δ| {:.4}, mean {:.5}, parted {}",
                golden.file_name().unwrap().to_string_lossy(),
                isa.name(),
                r.steps,
                r.compared,
                r.max,
                r.sum / r.compared.max(1) as f64,
                r.parted
            ),
            Err(e) => panic!("[{}] {e}", isa.name()),
        }
    }
}

use tinyrt_tests::{fixture, model as real_model};

#[test]
fn llama_tiny_q8_0_matches_llama_cpp() {
    check_model(
        &fixture("llama-tiny-q8_0.gguf"),
        "llama-tiny-q8_0.jsonl",
        TINY_QUANT,
    );
}

#[test]
fn llama_tiny_q4_0_matches_llama_cpp() {
    check_model(
        &fixture("llama-tiny-q4_0.gguf"),
        "llama-tiny-q4_0.jsonl",
        TINY_QUANT,
    );
}

#[test]
fn smollm2_q4_1_matches_llama_cpp() {
    if let Some(p) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") {
        check_model_limited(&p, "smollm2-135m-instruct-q4_1.jsonl", REAL, 2);
    }
}

#[test]
fn phi2_tiny_f32_matches_llama_cpp() {
    check_model(
        &fixture("phi2-tiny-f32.gguf"),
        "phi2-tiny-f32.jsonl",
        TINY_F32,
    );
}

#[test]
fn phi2_tiny_q8_0_matches_llama_cpp() {
    check_model(
        &fixture("phi2-tiny-q8_0.gguf"),
        "phi2-tiny-q8_0.jsonl",
        TINY_QUANT,
    );
}

#[test]
fn phi2_tiny_q4_0_matches_llama_cpp() {
    check_model(
        &fixture("phi2-tiny-q4_0.gguf"),
        "phi2-tiny-q4_0.jsonl",
        TINY_QUANT,
    );
}

#[test]
fn stablelm_tiny_f32_matches_llama_cpp() {
    check_model(
        &fixture("stablelm-tiny-f32.gguf"),
        "stablelm-tiny-f32.jsonl",
        TINY_F32,
    );
}

#[test]
fn stablelm_tiny_q8_0_matches_llama_cpp() {
    check_model(
        &fixture("stablelm-tiny-q8_0.gguf"),
        "stablelm-tiny-q8_0.jsonl",
        TINY_QUANT,
    );
}

#[test]
fn stablelm_tiny_q4_0_matches_llama_cpp() {
    check_model(
        &fixture("stablelm-tiny-q4_0.gguf"),
        "stablelm-tiny-q4_0.jsonl",
        TINY_QUANT,
    );
}

#[test]
fn qwen2_tiny_q8_0_matches_llama_cpp() {
    check_model(
        &fixture("qwen2-tiny-q8_0.gguf"),
        "qwen2-tiny-q8_0.jsonl",
        TINY_QUANT,
    );
}

#[test]
fn qwen2_tiny_q4_0_matches_llama_cpp() {
    check_model(
        &fixture("qwen2-tiny-q4_0.gguf"),
        "qwen2-tiny-q4_0.jsonl",
        TINY_QUANT,
    );
}

#[test]
fn qwen3_tiny_q8_0_matches_llama_cpp() {
    check_model(
        &fixture("qwen3-tiny-q8_0.gguf"),
        "qwen3-tiny-q8_0.jsonl",
        TINY_QUANT,
    );
}

#[test]
fn qwen3_tiny_q4_0_matches_llama_cpp() {
    check_model(
        &fixture("qwen3-tiny-q4_0.gguf"),
        "qwen3-tiny-q4_0.jsonl",
        TINY_QUANT,
    );
}

#[test]
fn gemma3_270m_q4_k_m_matches_llama_cpp() {
    if let Some(p) = real_model("gemma-3-270m-q4_k_m.gguf") {
        check_model_limited(&p, "gemma-3-270m-q4_k_m.jsonl", REAL, 1);
    }
}

/// The tokens of the first golden prompt of the llama fixture, followed by its greedy path.
fn llama_tokens() -> Vec<u32> {
    let text = std::fs::read_to_string(workspace().join("tests/golden/llama-tiny-q8_0.jsonl"))
        .expect("golden file");
    let g: Value = serde_json::from_str(text.lines().next().expect("a line")).expect("json");
    ["prompt_ids", "gen_ids"]
        .iter()
        .flat_map(|k| g[k].as_array().expect("ids").clone())
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn prefill_in_one_batch_matches_token_by_token() {
    let model = Model::load(fixture("llama-tiny-q8_0.gguf"), LoadOptions::default()).unwrap();
    let tokens = llama_tokens();
    let vocab = model.config().vocab_size;
    let mut batch = model.session(SessionOptions::default()).unwrap();
    let all = batch.feed_all(&tokens).unwrap();
    let mut single = model.session(SessionOptions::default()).unwrap();
    let mut worst = 0.0f32;
    for (i, &t) in tokens.iter().enumerate() {
        let logits = single.feed(&[t]).unwrap();
        for (a, b) in logits.iter().zip(&all[i * vocab..(i + 1) * vocab]) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("prefill vs token-by-token: max |Δ| {worst}");
    assert!(
        worst < 2e-3,
        "batch and single-token logits differ by {worst}"
    );
    // Batches split by n_batch give the same logits too.
    let mut split = model
        .session(SessionOptions {
            n_batch: 5,
            ..SessionOptions::default()
        })
        .unwrap();
    let parts = split.feed_all(&tokens).unwrap();
    let worst = parts
        .iter()
        .zip(&all)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 2e-3, "n_batch 5 differs by {worst}");
}

/// Max |Δ| between the logits of `tokens` fed in one batch and fed one at a time.
fn batch_vs_single(model: &Model, tokens: &[u32], kv_type: KvType) -> f32 {
    let vocab = model.config().vocab_size;
    let opts = SessionOptions {
        kv_type,
        ..SessionOptions::default()
    };
    let mut batch = model.session(opts.clone()).unwrap();
    let all = batch.feed_all(tokens).unwrap();
    let mut single = model.session(opts).unwrap();
    let mut worst = 0.0f32;
    for (i, &t) in tokens.iter().enumerate() {
        let logits = single.feed(&[t]).unwrap();
        for (a, b) in logits.iter().zip(&all[i * vocab..(i + 1) * vocab]) {
            worst = worst.max((a - b).abs());
        }
    }
    worst
}

#[test]
fn a_long_prefill_matches_token_by_token() {
    // 100 tokens: the batch takes ggml's tiled attention path (>= 64 queries), single tokens
    // the per-key path. With an f32 cache both compute the same values; with an f16 cache the
    // per-key path rounds Q and the V accumulator to f16 after every key (as ggml does), so
    // the two differ by rounding, within the tolerance of the quantized goldens.
    let model = Model::load(fixture("llama-tiny-q8_0.gguf"), LoadOptions::default()).unwrap();
    let vocab = model.config().vocab_size as u32;
    let tokens: Vec<u32> = (0..100).map(|i| (i * 37 + 5) % vocab).collect();
    let f32_worst = batch_vs_single(&model, &tokens, KvType::F32);
    let f16_worst = batch_vs_single(&model, &tokens, KvType::F16);
    eprintln!("100-token prefill vs token-by-token: f32 cache {f32_worst}, f16 cache {f16_worst}");
    assert!(f32_worst < 1e-4, "f32 cache: logits differ by {f32_worst}");
    assert!(
        f16_worst < TINY_QUANT.max,
        "f16 cache: logits differ by {f16_worst}"
    );
}

fn greedy_ids(threads: usize) -> Vec<u32> {
    let model = Model::load(
        fixture("llama-tiny-q4_0.gguf"),
        LoadOptions {
            threads: Some(threads),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let mut s = model.session(SessionOptions::default()).unwrap();
    let prompt = &llama_tokens()[..8];
    let opts = tinyrt::GenerateOptions {
        max_tokens: 24,
        sampler: tinyrt::SamplerOptions::greedy(),
        top_logits: 0,
    };
    s.generate(prompt, &opts)
        .unwrap()
        .map(|step| step.unwrap().id)
        .collect()
}

#[test]
fn one_and_two_threads_give_the_same_greedy_tokens() {
    let one = greedy_ids(1);
    assert_eq!(one.len(), 24);
    assert_eq!(one, greedy_ids(2));
}
