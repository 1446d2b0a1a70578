//! Sequence classification against Hugging Face (`../shared/oracles/cls/reference.jsonl`, the
//! tiny random-weight classifiers that `scripts/fetch-models.sh` converts as llama.cpp does), on
//! every ISA: the DistilBERT file (the whole head: pre-classifier + ReLU + classifier) gives
//! Hugging Face's logits within 1e-4 for every single text and every pair (llama.cpp: 5.27,
//! tanh where Hugging Face has ReLU); the BERT file, whose pooler the converter dropped, is
//! refused with a message instead of wrong logits.

use serde_json::Value;
use tinyrt::embed::{Classifier, ClassifyError};
use tinyrt::kernels::cpu::Isa;
use tinyrt::{LoadOptions, Model};
use tinyrt_tests::{model, workspace_root};

fn reference(model_name: &str) -> Vec<Value> {
    let path = workspace_root().join("../shared/oracles/cls/reference.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .filter(|v| v["model"] == model_name)
        .collect()
}

#[test]
fn distilbert_logits_match_hugging_face_for_singles_and_pairs() {
    let Some(path) = model("distilbert-tiny-cls-f32.gguf") else {
        return;
    };
    let rows = reference("distilbert-tiny-cls");
    assert_eq!(rows.len(), 32, "22 singles and 10 pairs");
    for isa in Isa::available() {
        let m = Model::load(
            &path,
            LoadOptions {
                isa: Some(isa),
                ..LoadOptions::default()
            },
        )
        .unwrap();
        let mut c = Classifier::new(&m, None).unwrap();
        assert_eq!(c.labels(), ["negative", "neutral", "positive"]);
        let mut worst = 0.0f32;
        for r in &rows {
            let got = match r["kind"].as_str().unwrap() {
                "single" => c.classify(r["text"].as_str().unwrap().as_bytes(), None),
                _ => c.classify(
                    r["query"].as_str().unwrap().as_bytes(),
                    Some(r["document"].as_str().unwrap().as_bytes()),
                ),
            }
            .unwrap();
            assert_eq!(got.n_tokens, r["ids"].as_array().unwrap().len(), "{r}");
            let want: Vec<f32> = r["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let d = got
                .logits
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                d <= 1e-4,
                "[{}] {} {}: max |Δ| {d}",
                isa.name(),
                r["kind"],
                r["index"]
            );
            assert_eq!(got.label.as_deref(), r["label"].as_str(), "{r}");
            worst = worst.max(d);
        }
        eprintln!(
            "distilbert-tiny-cls [{}]: 32 inputs, max |Δ| {worst:.3e}",
            isa.name()
        );
    }
}

#[test]
fn a_bert_classifier_without_its_pooler_is_refused() {
    let Some(path) = model("bert-tiny-cls-f32.gguf") else {
        return;
    };
    let m = Model::load(&path, LoadOptions::default()).unwrap();
    match Classifier::new(&m, None) {
        Err(ClassifyError::IncompleteHead(why)) => assert!(why.contains("pooler"), "{why}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a BERT file without its pooler must be refused"),
    }
    // MiniLM has no head at all.
    if let Some(p) = model("all-MiniLM-L6-v2-q8_0.gguf") {
        let m = Model::load(&p, LoadOptions::default()).unwrap();
        assert!(matches!(
            Classifier::new(&m, None),
            Err(ClassifyError::NoHead)
        ));
    }
}
