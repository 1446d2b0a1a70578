//! LoRA on the CUDA backend against the CPU backend (the reference) on the tiny Llama base
//! of `../shared/oracles/lora/` (or `TINYRT_LORA_ORACLE`, where `scripts/gpu-check.sh`
//! puts a copy): logits of a batched prefill at every position and of single-token decode
//! steps (recorded, fused, replayed as a CUDA graph), for several adapter sets switched on one
//! session each (so a graph captured under one set must not be replayed under the next).
//! Scale 0 gives the bits of no adapter. Once on the f32 base (f32 products on both sides),
//! once with the base requantized to Q8_0 at load (the quantized decode path: Q8_1
//! activations, `matvec3`, the norm + quantize fusion), where the bound is the base's own
//! CUDA/CPU difference.
//!
//! Needs a GPU: skipped with a notice without one, unless `TINYRT_REQUIRE_GPU=1`.
#![cfg(feature = "cuda")]

use std::path::PathBuf;
use std::sync::Arc;

use tinyrt::adapters::LoraAdapter;
use tinyrt::kernels::quant::{GgmlType, QuantFormat};
use tinyrt::kv_cache::KvType;
use tinyrt::{Device, LoadOptions, Model, Session, SessionOptions};
use tinyrt_tests::workspace_root;

/// Adapters and their user scales, as `Session::set_adapters` takes them.
type Set = Vec<(Arc<LoraAdapter>, f32)>;
/// The logits of one run: the prompt's (every position), then one per decode step.
type Logits = Vec<Vec<f32>>;

fn oracle() -> PathBuf {
    std::env::var_os("TINYRT_LORA_ORACLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/oracles/lora"))
}

fn required() -> bool {
    std::env::var("TINYRT_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

fn load(device: Device, requant: Option<QuantFormat>) -> Result<Model, String> {
    Model::load(
        oracle().join("llama-lora-tiny-f32.gguf"),
        LoadOptions {
            device,
            requant,
            ..LoadOptions::default()
        },
    )
    .map_err(|e| e.to_string())
}

fn session(m: &Model) -> Session {
    Session::new(
        m,
        SessionOptions {
            kv_type: KvType::F32,
            ..SessionOptions::default()
        },
    )
    .unwrap()
}

/// The ids of the oracle's first prompt (`hf.jsonl`, row 0: "Once upon a time, in a small
/// village by the sea, there lived an old fisherman who", Hugging Face's tokenizer) and the
/// first 8 of the base's greedy continuation: inputs only (the CPU backend is the reference).
const PROMPT: [u32; 27] = [
    63, 1118, 1980, 253, 655, 28, 281, 253, 1165, 386, 388, 473, 411, 260, 427, 81, 28, 665, 303,
    1382, 354, 1573, 275, 271, 349, 1483, 617,
];
const GEN: [u32; 8] = [170, 1302, 1950, 338, 1613, 1083, 1261, 518];

/// The logits of the prompt (every position, one batched pass) and then of each generated
/// id fed alone (decode steps), in one vector per pass.
fn run(s: &mut Session, set: &[(Arc<LoraAdapter>, f32)], prompt: &[u32], gen: &[u32]) -> Logits {
    s.set_adapters(set).unwrap();
    let mut out = vec![s.feed_all(prompt).unwrap()];
    for &id in gen {
        out.push(s.feed(&[id]).unwrap().to_vec());
    }
    out
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(u, v)| (u - v).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn cuda_lora_logits_match_the_cpu_backend() {
    compare(None);
}

#[test]
fn cuda_lora_logits_match_the_cpu_backend_on_a_q8_0_base() {
    compare(Some(QuantFormat::Ggml(GgmlType::Q8_0)));
}

/// Runs every set on both backends (the base requantized to `requant`) and checks the bound.
fn compare(requant: Option<QuantFormat>) {
    if !oracle().join("llama-lora-tiny-f32.gguf").exists() {
        assert!(
            !required(),
            "TINYRT_REQUIRE_GPU=1 but no LoRA oracle at {}",
            oracle().display()
        );
        eprintln!("SKIPPED: no LoRA oracle at {}", oracle().display());
        return;
    }
    let gpu = match load(Device::Cuda, requant) {
        Ok(m) => m,
        Err(e) => {
            assert!(!required(), "TINYRT_REQUIRE_GPU=1 but no CUDA model: {e}");
            eprintln!("SKIPPED (no GPU): {e}");
            return;
        }
    };
    let cpu = load(Device::Cpu, requant).unwrap();
    let adapter = |m: &Model, f: &str| m.load_adapter(oracle().join("gguf").join(f)).unwrap();
    let (a_cpu, b_cpu) = (
        adapter(&cpu, "a-qv-r8-f32.gguf"),
        adapter(&cpu, "b-all-r16-f16.gguf"),
    );
    let (a_gpu, b_gpu) = (
        adapter(&gpu, "a-qv-r8-f32.gguf"),
        adapter(&gpu, "b-all-r16-f16.gguf"),
    );
    let (prompt, gen) = (&PROMPT[..], &GEN[..]);
    // (name, set on the CPU, the same on CUDA): switched in this order on one session each,
    // the q/v adapter coming back after the all-linear one.
    let sets: Vec<(&str, Set, Set)> = vec![
        ("none", vec![], vec![]),
        (
            "a-qv-r8 f32",
            vec![(a_cpu.clone(), 1.0)],
            vec![(a_gpu.clone(), 1.0)],
        ),
        (
            "b-all-r16 f16",
            vec![(b_cpu.clone(), 1.0)],
            vec![(b_gpu.clone(), 1.0)],
        ),
        (
            "a 0.5 + b",
            vec![(a_cpu.clone(), 0.5), (b_cpu.clone(), 1.0)],
            vec![(a_gpu.clone(), 0.5), (b_gpu.clone(), 1.0)],
        ),
        (
            "a-qv-r8 again",
            vec![(a_cpu.clone(), 1.0)],
            vec![(a_gpu.clone(), 1.0)],
        ),
        ("a at scale 0", vec![(a_cpu, 0.0)], vec![(a_gpu, 0.0)]),
    ];
    let (mut sc, mut sg) = (session(&cpu), session(&gpu));
    let mut base: Option<(Logits, Logits)> = None;
    for (name, set_cpu, set_gpu) in &sets {
        let want = run(&mut sc, set_cpu, prompt, gen);
        let got = run(&mut sg, set_gpu, prompt, gen);
        let scale = want.iter().flatten().fold(1.0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(&got, &want);
        // f32: both sides compute in f32 (in other orders). Q8_0: the two backends quantize
        // activations differently (Q8_1 / Q8_0), so the base differs by itself; with an
        // adapter the difference may be up to 3 times the base's (at least 1% of the logits).
        let tol = match (&requant, &base) {
            (Some(_), Some((bc, bg))) => (3.0 * max_abs_diff(bg, bc)).max(1e-2 * scale),
            (Some(_), None) => 5e-2 * scale,
            (None, _) => 2e-4 * scale,
        };
        eprintln!(
            "{name} ({requant:?}): max |CUDA - CPU| {d:.3e} (max |logit| {scale:.2}, \
             bound {tol:.2e})"
        );
        assert!(d <= tol, "{name}: max |CUDA - CPU| {d} > {tol}");
        match &base {
            None => base = Some((want, got)),
            Some((base_cpu, base_gpu)) => {
                let effect = max_abs_diff(&want, base_cpu);
                if set_cpu.iter().all(|(_, s)| *s == 0.0) {
                    // Scale 0: the base's bits, on the GPU as on the CPU.
                    assert_eq!(&got, base_gpu, "{name}: CUDA logits differ from no adapter");
                    assert_eq!(effect, 0.0, "{name}: CPU logits differ from no adapter");
                } else {
                    // The adapter moves the logits far more than the bound: the comparison
                    // would see a missing or wrong LoRA term.
                    eprintln!("{name}: the adapter moves the CPU logits by up to {effect:.3e}");
                    assert!(
                        effect > 10.0 * tol,
                        "{name}: adapter effect {effect} too small to test"
                    );
                }
            }
        }
    }
}
