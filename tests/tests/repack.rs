//! The weights repacked at load for AVX-512 (`Kernels::repack`) give the logits of the GGUF
//! layout bit for bit: prefill (the panel packing) and decode (the one-token product), for
//! every repackable type (the fixtures' Q4_0, Q8_0 and Q6_K, and Q4_1, Q5_0 and IQ4_NL
//! through `--requant`). Skipped on a CPU without AVX-512, where nothing is repacked.

use tinyrt::kernels::cpu::Isa;
use tinyrt::kernels::quant::{GgmlType, QuantFormat};
use tinyrt::{LoadOptions, Model, Session, SessionOptions};
use tinyrt_tests::fixture;

/// The logits of a prompt fed in one batch, then of a few tokens fed one at a time.
fn logits(model: &Model) -> Vec<f32> {
    let mut s = Session::new(model, SessionOptions::default()).unwrap();
    let mut all = s.feed_all(&[1, 15, 300, 7, 42, 99, 3]).unwrap();
    for t in [5, 17, 250, 8] {
        all.extend(s.feed(&[t]).unwrap());
    }
    all
}

fn load(name: &str, requant: Option<GgmlType>, no_repack: bool) -> Model {
    let opts = LoadOptions {
        isa: Some(Isa::Avx512),
        threads: Some(2),
        requant: requant.map(QuantFormat::Ggml),
        no_repack,
        ..LoadOptions::default()
    };
    Model::load(fixture(name), opts).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn repacked_weights_give_the_logits_of_the_gguf_layout() {
    if !Isa::Avx512.is_supported() {
        eprintln!("no AVX-512: nothing is repacked, nothing to compare");
        return;
    }
    let cases = [
        ("llama-tiny-q4_0.gguf", None),
        ("llama-tiny-q8_0.gguf", None),
        ("qwen2-tiny-q4_0.gguf", None),
        ("llama-tiny-q8_0.gguf", Some(GgmlType::Q4_1)),
        ("llama-tiny-q8_0.gguf", Some(GgmlType::Q5_0)),
        ("llama-tiny-q8_0.gguf", Some(GgmlType::IQ4_NL)),
    ];
    for (name, requant) in cases {
        let repacked = load(name, requant, false);
        let stored = load(name, requant, true);
        let (n, bytes) = repacked.repacked();
        assert!(n > 0 && bytes > 0, "{name} {requant:?}: nothing repacked");
        assert_eq!(stored.repacked(), (0, 0), "{name}: repacked with no_repack");
        let (a, b) = (logits(&repacked), logits(&stored));
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(
                x.to_bits(),
                y.to_bits(),
                "{name} {requant:?} logit {i}: {x} vs {y}"
            );
        }
        eprintln!("{name} {requant:?}: {n} matrices repacked ({bytes} bytes), same logits");
    }
}
