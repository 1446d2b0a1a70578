//! The multi-sequence batch (`tinyrt::batch`): batch invariance (a sequence's greedy ids and
//! logits are bit-identical alone, among fifteen others, cut into other chunks, after a reused
//! prefix) on every fixture architecture and the real models; per-sequence LoRA adapters in
//! one forward pass against Hugging Face + PEFT's teacher-forced logits; and the logits against
//! a `Session`'s (llama.cpp's numerics) and llama.cpp's goldens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tinyrt::adapters::LoraAdapter;
use tinyrt::batch::{Batch, BatchOptions, Chunk};
use tinyrt::kv_cache::KvType;
use tinyrt::sampler::argmax;
use tinyrt::{LoadOptions, Model, Session, SessionOptions};
use tinyrt_tests::{fixtures, workspace_root};

/// One request: a prompt and how many greedy tokens it generates.
#[derive(Clone)]
struct Req {
    prompt: Vec<u32>,
    n_gen: usize,
}

/// What a request produced: its greedy ids and the logits each was chosen from.
#[derive(Debug, PartialEq)]
struct Out {
    ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn batch(m: &Model, n_seq: usize, n_batch: usize, kv: KvType) -> Batch {
    batch_ctx(m, n_seq, 256, n_batch, kv)
}

fn batch_ctx(m: &Model, n_seq: usize, n_ctx: usize, n_batch: usize, kv: KvType) -> Batch {
    Batch::new(
        m,
        BatchOptions {
            n_seq,
            n_ctx,
            kv_type: kv,
            n_batch,
        },
    )
    .unwrap()
}

/// Runs `reqs` through `b` as a continuous-batching server would: every step, each running
/// sequence's next token first, then prompt chunks (at most `chunk` tokens each) of the
/// waiting ones while the token budget lasts; a request starts when a slot is free (slot
/// `seq` of request `i` is `slots[i]` modulo the slot count). Returns each request's output.
fn serve(b: &mut Batch, reqs: &[Req], chunk: usize) -> Vec<Out> {
    struct Run {
        req: usize,
        seq: usize,
        fed: usize,
        next: Option<u32>,
        out: Out,
    }
    let budget = b.max_tokens();
    let mut queue: Vec<usize> = (0..reqs.len()).collect();
    let mut free: Vec<usize> = (0..b.n_seq()).rev().collect();
    let mut running: Vec<Run> = Vec::new();
    let mut done: Vec<Option<Out>> = (0..reqs.len()).map(|_| None).collect();
    while !queue.is_empty() || !running.is_empty() {
        while let (Some(_), Some(&seq)) = (queue.first(), free.last()) {
            free.pop();
            let req = queue.remove(0);
            b.truncate(seq, 0);
            running.push(Run {
                req,
                seq,
                fed: 0,
                next: None,
                out: Out {
                    ids: Vec::new(),
                    logits: Vec::new(),
                },
            });
        }
        let mut left = budget;
        let mut plan: Vec<(usize, Vec<u32>, bool)> = Vec::new();
        for (i, r) in running.iter().enumerate() {
            if let Some(t) = r.next {
                plan.push((i, vec![t], true));
                left -= 1;
            }
        }
        for (i, r) in running.iter().enumerate() {
            let p = &reqs[r.req].prompt;
            if r.next.is_none() && r.fed < p.len() && left > 0 {
                let n = chunk.min(p.len() - r.fed).min(left);
                plan.push((i, p[r.fed..r.fed + n].to_vec(), r.fed + n == p.len()));
                left -= n;
            }
        }
        let chunks: Vec<Chunk> = plan
            .iter()
            .map(|(i, t, l)| Chunk {
                seq: running[*i].seq,
                tokens: t,
                logits: *l,
            })
            .collect();
        let logits = b.step(&chunks).unwrap();
        let mut li = logits.into_iter();
        for (i, t, l) in &plan {
            let r = &mut running[*i];
            if r.next.is_none() {
                r.fed += t.len();
            }
            if *l {
                let lg = li.next().unwrap();
                let id = argmax(&lg);
                r.out.ids.push(id);
                r.out.logits.push(lg);
                r.next = Some(id);
            }
        }
        running.retain_mut(|r| {
            if r.out.ids.len() < reqs[r.req].n_gen {
                return true;
            }
            free.push(r.seq);
            done[r.req] = Some(std::mem::replace(
                &mut r.out,
                Out {
                    ids: Vec::new(),
                    logits: Vec::new(),
                },
            ));
            false
        });
    }
    done.into_iter().map(Option::unwrap).collect()
}

/// Deterministic pseudo-random prompts of different lengths.
fn requests(vocab: usize, n: usize, seed: u64) -> Vec<Req> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let len = 3 + (next() % 70) as usize;
            Req {
                prompt: (0..len).map(|_| (next() % vocab as u64) as u32).collect(),
                n_gen: 4 + i % 9,
            }
        })
        .collect()
}

/// Each request alone (one slot, its prompt in one step) vs all of them in 16 slots with
/// small chunks and budgets, and alone again token by token: the same bits.
fn check_invariance(path: &Path, n_req: usize) {
    let m = Model::load(path, LoadOptions::default()).unwrap();
    let reqs = requests(m.config().vocab_size, n_req, 7);
    let mut alone = batch(&m, 1, 256, KvType::F16);
    let want: Vec<Out> = reqs
        .iter()
        .map(|r| serve(&mut alone, std::slice::from_ref(r), 256).remove(0))
        .collect();
    for (n_seq, n_batch, chunk) in [(16, 64, 13), (16, 512, 512), (5, 40, 7)] {
        let mut crowd = batch(&m, n_seq, n_batch, KvType::F16);
        let got = serve(&mut crowd, &reqs, chunk);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g == w,
                "{}: request {i} differs among others ({n_seq} slots, budget {n_batch}, \
                 chunks of {chunk}): ids {:?} vs alone {:?}",
                path.display(),
                g.ids,
                w.ids
            );
        }
    }
    // Token by token (budget 1 per step per request, one request at a time).
    let mut tiny = batch(&m, 1, 1, KvType::F16);
    for (i, r) in reqs.iter().take(3).enumerate() {
        let got = serve(&mut tiny, std::slice::from_ref(r), 1).remove(0);
        assert!(
            got == want[i],
            "{}: request {i} token by token",
            path.display()
        );
    }
}

#[test]
fn batches_are_invariant_on_every_fixture() {
    let mut n = 0;
    for f in fixtures() {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("ggml-vocab") {
            continue;
        }
        check_invariance(&f, 16);
        n += 1;
    }
    assert!(n >= 10, "{n} fixtures");
}

#[test]
fn batches_are_invariant_on_the_real_models() {
    for name in tinyrt_tests::REAL_MODELS {
        if let Some(p) = tinyrt_tests::model(name) {
            check_invariance(&p, 16);
        }
    }
}

#[test]
fn a_reused_prefix_gives_the_same_bits() {
    // Slot 0 computes A = P + X; then the slot keeps P (truncate) and is fed Y: the logits are
    // those of P + Y fed from scratch in slot 1.
    let m = Model::load(
        tinyrt_tests::fixture("llama-tiny-q8_0.gguf"),
        LoadOptions::default(),
    )
    .unwrap();
    let r = requests(m.config().vocab_size, 3, 99);
    let (p, x, y) = (&r[0].prompt, &r[1].prompt, &r[2].prompt);
    let mut b = batch(&m, 2, 256, KvType::F16);
    let px: Vec<u32> = p.iter().chain(x).copied().collect();
    let py: Vec<u32> = p.iter().chain(y).copied().collect();
    let feed = |b: &mut Batch, seq: usize, t: &[u32]| {
        b.step(&[Chunk {
            seq,
            tokens: t,
            logits: true,
        }])
        .unwrap()
        .remove(0)
    };
    feed(&mut b, 0, &px);
    b.truncate(0, p.len());
    assert_eq!(b.tokens(0), &p[..]);
    let reused = feed(&mut b, 0, y);
    let fresh = feed(&mut b, 1, &py);
    assert_eq!(reused, fresh);
}

#[test]
fn batch_logits_match_a_session_and_llama_cpp() {
    // The invariant attention is llama.cpp's prefill numerics for every token; a Session
    // decodes with its per-key numerics (f16 rounding). Against llama.cpp's goldens within the
    // parity tolerances (`parity.rs`: 8-bit activations turn last-bit differences into whole
    // quantization steps, hence 0.15 for the quantized fixtures, 0.02 for f32 weights).
    for (name, tol) in [
        ("llama-tiny-q8_0", 0.15f32),
        ("qwen3-tiny-q8_0", 0.15),
        ("phi2-tiny-f32", 0.02),
        ("stablelm-tiny-f32", 0.02),
    ] {
        let path = tinyrt_tests::fixture(&format!("{name}.gguf"));
        let golden = workspace_root().join(format!("tests/golden/{name}.jsonl"));
        let m = Model::load(&path, LoadOptions::default()).unwrap();
        let mut b = batch_ctx(&m, 1, 2048, 512, KvType::F16);
        let mut s = Session::new(&m, SessionOptions::default()).unwrap();
        let (mut worst_golden, mut worst_session) = (0.0f32, 0.0f32);
        let text = std::fs::read_to_string(&golden).unwrap();
        for line in text.lines() {
            let g: Value = serde_json::from_str(line).unwrap();
            let prompt = ids(&g["prompt_ids"]);
            let gen = ids(&g["gen_ids"]);
            b.truncate(0, 0);
            s.reset();
            let cut = b.max_tokens();
            let mut lb = Vec::new();
            for (k, part) in prompt.chunks(cut).enumerate() {
                let last = (k + 1) * cut >= prompt.len();
                let chunk = Chunk {
                    seq: 0,
                    tokens: part,
                    logits: last,
                };
                if let Some(l) = b.step(&[chunk]).unwrap().pop() {
                    lb = l;
                }
            }
            let mut ls = s.feed(&prompt).unwrap().to_vec();
            for (k, step) in g["steps"].as_array().unwrap().iter().enumerate() {
                for (id, logit) in top(&step["top"]) {
                    worst_golden = worst_golden.max((lb[id] - logit).abs());
                }
                let d = lb
                    .iter()
                    .zip(&ls)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                worst_session = worst_session.max(d);
                let Some(&next) = gen.get(k) else { break };
                lb = b
                    .step(&[Chunk {
                        seq: 0,
                        tokens: &[next],
                        logits: true,
                    }])
                    .unwrap()
                    .remove(0);
                ls = s.feed(&[next]).unwrap().to_vec();
            }
        }
        eprintln!("{name}: batch vs llama.cpp {worst_golden:.2e}, vs session {worst_session:.2e}");
        assert!(worst_golden < tol, "{name}: {worst_golden} from llama.cpp");
        assert!(
            worst_session < 2.0 * tol,
            "{name}: {worst_session} from a session"
        );
    }
}

fn oracle() -> PathBuf {
    workspace_root().join("../shared/oracles/lora")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn top(v: &Value) -> Vec<(usize, f32)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_u64().unwrap() as usize,
                p[1].as_f64().unwrap() as f32,
            )
        })
        .collect()
}

#[test]
fn each_sequence_gets_its_own_adapters_in_one_forward_pass() {
    // Every (prompt, adapter set) of Hugging Face + PEFT's reference in its own slot, all fed
    // together one position per step: each slot's logits within 1e-4 of HF's teacher-forced
    // ones (f32 base, f32 adapters, f32 cache), and bit-identical to the same slot alone.
    let m = Model::load(
        oracle().join("llama-lora-tiny-f32.gguf"),
        LoadOptions::default(),
    )
    .unwrap();
    let text = std::fs::read_to_string(oracle().join("hf.jsonl")).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut cache: Vec<(String, Arc<LoraAdapter>)> = Vec::new();
    let mut sets = Vec::new();
    let mut seqs = Vec::new();
    for r in &rows {
        let set: Vec<(Arc<LoraAdapter>, f32)> = r["adapters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let name = format!("{}-f32.gguf", a[0].as_str().unwrap());
                let ad = match cache.iter().find(|(n, _)| *n == name) {
                    Some((_, a)) => Arc::clone(a),
                    None => {
                        let a = m.load_adapter(oracle().join("gguf").join(&name)).unwrap();
                        cache.push((name, Arc::clone(&a)));
                        a
                    }
                };
                (ad, a[1].as_f64().unwrap() as f32)
            })
            .collect();
        sets.push(set);
        let mut seq = ids(&r["prompt_ids"]);
        seq.extend(ids(&r["gen_ids"]));
        seqs.push(seq);
    }
    let n = rows.len();
    assert!(n >= 20, "{n} reference runs");
    let vocab = m.config().vocab_size;
    let run = |slots: &[usize]| -> Vec<Vec<Vec<f32>>> {
        let mut b = batch(&m, n, 512, KvType::F32);
        for &i in slots {
            b.set_adapters(i, &sets[i]).unwrap();
        }
        let mut out: Vec<Vec<Vec<f32>>> = vec![Vec::new(); n];
        let longest = slots.iter().map(|&i| seqs[i].len()).max().unwrap();
        for pos in 0..longest {
            let chunks: Vec<Chunk> = slots
                .iter()
                .filter(|&&i| pos < seqs[i].len())
                .map(|&i| Chunk {
                    seq: i,
                    tokens: &seqs[i][pos..pos + 1],
                    logits: true,
                })
                .collect();
            let logits = b.step(&chunks).unwrap();
            for (c, l) in chunks.iter().zip(logits) {
                assert_eq!(l.len(), vocab);
                out[c.seq].push(l);
            }
        }
        out
    };
    let all: Vec<usize> = (0..n).collect();
    let together = run(&all);
    let mut worst = 0.0f32;
    for (i, r) in rows.iter().enumerate() {
        for (p, pos) in r["positions"].as_array().unwrap().iter().enumerate() {
            for (id, logit) in top(&pos["top"]) {
                let d = (together[i][p][id] - logit).abs();
                worst = worst.max(d);
                assert!(
                    d <= 1e-4,
                    "{} {}: position {p}: |Δ| {d}",
                    r["prompt_file"],
                    r["adapters"]
                );
            }
        }
    }
    eprintln!("{n} adapter sets in one batch: max |Δ| {worst:.2e} from HF + PEFT");
    for i in [0, n / 2, n - 1] {
        let alone = run(&[i]);
        assert!(alone[i] == together[i], "slot {i} alone vs together");
    }
}

#[test]
fn a_batch_invariant_session_gives_the_batchs_bits() {
    // `SessionOptions::batch_invariant` (`generate --batch-invariant`) is the batch's
    // numerics in a plain session: the same logits, bit for bit, however the prompt is fed.
    for name in ["llama-tiny-q8_0", "qwen2-tiny-q4_0", "phi2-tiny-f32"] {
        let m = Model::load(
            tinyrt_tests::fixture(&format!("{name}.gguf")),
            LoadOptions::default(),
        )
        .unwrap();
        let req = requests(m.config().vocab_size, 1, 5).remove(0);
        let want = serve(
            &mut batch(&m, 1, 256, KvType::F16),
            std::slice::from_ref(&req),
            256,
        )
        .remove(0);
        for n_batch in [512, 7, 1] {
            let mut s = Session::new(
                &m,
                SessionOptions {
                    n_batch,
                    batch_invariant: true,
                    ..SessionOptions::default()
                },
            )
            .unwrap();
            let mut logits = s.feed(&req.prompt).unwrap().to_vec();
            let mut got = Out {
                ids: Vec::new(),
                logits: Vec::new(),
            };
            for _ in 0..req.n_gen {
                let id = argmax(&logits);
                got.ids.push(id);
                got.logits.push(logits);
                logits = s.feed(&[id]).unwrap().to_vec();
            }
            assert!(got == want, "{name}: n_batch {n_batch}");
        }
    }
}
