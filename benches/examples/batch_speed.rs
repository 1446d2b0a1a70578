//! Aggregate decode speed of the multi-sequence batch against one `Session`:
//! `cargo run --release -p tinyrt-benches --example batch_speed -- MODEL [STEPS]`.
//! For 1, 2, 4, 8 and 16 sequences: each slot gets a 32-token prompt, then STEPS decode steps
//! of every sequence together; prints tokens per second for all sequences together.

use std::time::Instant;

use tinyrt::batch::{Batch, BatchOptions, Chunk};
use tinyrt::kv_cache::KvType;
use tinyrt::sampler::argmax;
use tinyrt::{LoadOptions, Model, Session, SessionOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: batch_speed MODEL [STEPS]");
        std::process::exit(2);
    };
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let m = Model::load(path, LoadOptions::default()).expect("model");
    let vocab = m.config().vocab_size as u32;
    let prompt = |i: usize| -> Vec<u32> {
        (0..32u32)
            .map(|t| (t * 131 + i as u32 * 17 + 7) % vocab)
            .collect()
    };
    // One session, llama.cpp's numerics.
    let mut s = Session::new(&m, SessionOptions::default()).expect("session");
    let mut next = argmax(s.feed(&prompt(0)).expect("feed"));
    let t = Instant::now();
    for _ in 0..steps {
        next = argmax(s.feed(&[next]).expect("feed"));
    }
    let secs = t.elapsed().as_secs_f64();
    println!("session      1 seq : {:7.1} tok/s", steps as f64 / secs);
    for n in [1usize, 2, 4, 8, 16] {
        let mut b = Batch::new(
            &m,
            BatchOptions {
                n_seq: n,
                n_ctx: 32 + steps + 1,
                kv_type: KvType::F16,
                n_batch: 512,
            },
        )
        .expect("batch");
        let prompts: Vec<Vec<u32>> = (0..n).map(prompt).collect();
        let chunks: Vec<Chunk> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| Chunk {
                seq: i,
                tokens: p,
                logits: true,
            })
            .collect();
        let mut next: Vec<u32> = b
            .step(&chunks)
            .expect("prefill")
            .iter()
            .map(|l| argmax(l))
            .collect();
        let t = Instant::now();
        for _ in 0..steps {
            let toks: Vec<[u32; 1]> = next.iter().map(|&id| [id]).collect();
            let chunks: Vec<Chunk> = toks
                .iter()
                .enumerate()
                .map(|(i, t)| Chunk {
                    seq: i,
                    tokens: t,
                    logits: true,
                })
                .collect();
            next = b
                .step(&chunks)
                .expect("decode")
                .iter()
                .map(|l| argmax(l))
                .collect();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "batch     {n:2} seqs : {:7.1} tok/s",
            (steps * n) as f64 / secs
        );
    }
}
