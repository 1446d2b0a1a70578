//! Decoder embeddings (`--pooling last|mean`, as llama.cpp allows them): the final hidden
//! states after the output norm, pooled and L2-normalised, against llama-embedding on the
//! decoder fixtures (`tests/golden/embeddings/decoders.jsonl`, made by
//! `scripts/make-decoder-embed-golden.sh`), on every ISA. Both run the same quantized kernels
//! and an f16 cache; llama-embedding runs the four texts as one batch of four sequences, so its
//! attention takes ggml's tiled path (f32 sums) where tinyrt, one text at a time, takes the
//! per-key path (an f16 accumulator, as ggml for short batches): measured worst cosine
//! 0.99992, max |Δ| 2.5e-3 (llama-tiny-q8_0, last token), the same on every ISA.

use serde_json::Value;
use tinyrt::config::Pooling;
use tinyrt::embed::{EmbedError, EmbedOptions, Embedder};
use tinyrt::kernels::cpu::Isa;
use tinyrt::{LoadOptions, Model};
use tinyrt_tests::{fixture, workspace_root};

#[test]
fn decoder_embeddings_match_llama_embedding() {
    let path = workspace_root().join("tests/golden/embeddings/decoders.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 20, "the golden holds {} rows", rows.len());
    let mut compared = 0;
    for isa in Isa::available() {
        let mut models: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
        models.dedup();
        for name in models {
            let m = Model::load(
                fixture(name),
                LoadOptions {
                    isa: Some(isa),
                    ..LoadOptions::default()
                },
            )
            .unwrap();
            for pooling in ["last", "mean"] {
                let cases: Vec<&Value> = rows
                    .iter()
                    .filter(|r| r["model"] == name && r["pooling"] == pooling)
                    .collect();
                if cases.is_empty() {
                    continue;
                }
                let opts = EmbedOptions {
                    pooling: Pooling::parse(pooling).unwrap(),
                    ..EmbedOptions::default()
                };
                let mut e = Embedder::new(&m, &opts).unwrap();
                for c in cases {
                    let got = e.embed(c["text"].as_str().unwrap().as_bytes()).unwrap();
                    let want: Vec<f32> = c["embedding"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                        .collect();
                    assert_eq!(got.vector.len(), want.len());
                    let max = got
                        .vector
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    let cos: f64 = got
                        .vector
                        .iter()
                        .zip(&want)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum();
                    assert!(
                        max <= 5e-3 && cos >= 0.9998,
                        "{name} {pooling} [{}] {:?}: max |Δ| {max}, cosine {cos}",
                        isa.name(),
                        c["text"]
                    );
                    compared += 1;
                }
            }
        }
    }
    assert!(compared >= 20);
}

#[test]
fn a_decoder_without_a_pooling_has_no_embeddings() {
    let m = Model::load(fixture("llama-tiny-q8_0.gguf"), LoadOptions::default()).unwrap();
    assert!(matches!(
        Embedder::new(&m, &EmbedOptions::default()),
        Err(EmbedError::NotEncoder)
    ));
}
