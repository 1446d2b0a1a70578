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
        let worst = max_error(&m, &rows, isa.name());
        eprintln!(
            "distilbert-tiny-cls [{}]: 32 inputs, max |Δ| {worst:.3e}",
            isa.name()
        );
    }
}

/// The classifier's logits on every oracle row of a model, each within 1e-4 of Hugging
/// Face's and with its label; the largest |Δ|.
fn max_error(m: &Model, rows: &[Value], what: &str) -> f32 {
    let mut c = Classifier::new(m, None).unwrap();
    assert_eq!(c.labels(), ["negative", "neutral", "positive"]);
    let mut worst = 0.0f32;
    for r in rows {
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
            what,
            r["kind"],
            r["index"]
        );
        assert_eq!(got.label.as_deref(), r["label"].as_str(), "{r}");
        worst = worst.max(d);
    }
    worst
}

/// The Hugging Face folders themselves (f16 safetensors): the DistilBERT head, and BERT with
/// the pooler the folder keeps (llama.cpp's conversion drops it), give Hugging Face's logits
/// within 1e-4 on every single text and pair.
#[test]
fn classifier_folders_match_hugging_face() {
    for name in ["bert-tiny-cls", "distilbert-tiny-cls"] {
        let dir = workspace_root().join("../shared/oracles/cls").join(name);
        let m = Model::load(&dir, LoadOptions::default()).unwrap();
        let rows = reference(name);
        assert_eq!(rows.len(), 32, "22 singles and 10 pairs");
        let worst = max_error(&m, &rows, name);
        eprintln!("{name} folder: 32 inputs, max |Δ| {worst:.3e}");
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

/// A pair over the maximum length is cut as Hugging Face's `truncation=True` cuts it
/// (longest first, special tokens kept): oracle pair 0 is `[CLS]` + 7 query tokens + `[SEP]` +
/// 18 document tokens + `[SEP]`; into 12 tokens the 9 text tokens split 4 + 5 (both texts are
/// over half, the longer keeps the odd one), which is the untruncated pair of the texts of those
/// tokens: "how do i reset" and "to reset your password ,".
#[test]
fn pairs_over_the_maximum_length_are_cut_longest_first() {
    let Some(path) = model("distilbert-tiny-cls-f32.gguf") else {
        return;
    };
    let rows = reference("distilbert-tiny-cls");
    let pair0 = rows
        .iter()
        .find(|r| r["kind"] == "pair" && r["index"] == 0)
        .unwrap();
    let ids: Vec<u64> = pair0["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!((ids.len(), ids[8]), (28, 102), "7 query tokens, then [SEP]");
    let m = Model::load(&path, LoadOptions::default()).unwrap();
    let query = pair0["query"].as_str().unwrap().as_bytes();
    let doc = pair0["document"].as_str().unwrap().as_bytes();
    let mut short = Classifier::new(&m, Some(12)).unwrap();
    let cut = short.classify(query, Some(doc)).unwrap();
    assert_eq!((cut.n_tokens, cut.truncated), (12, true));
    let mut full = Classifier::new(&m, None).unwrap();
    let want = full
        .classify(b"How do I reset", Some(b"To reset your password,"))
        .unwrap();
    assert_eq!((want.n_tokens, want.truncated), (12, false));
    assert_eq!(cut.logits, want.logits);
    // A pair that fits is untouched; one whose special tokens do not fit is an error.
    let fits = short.classify(b"a", Some(b"b")).unwrap();
    assert_eq!((fits.n_tokens, fits.truncated), (5, false));
    let mut tiny = Classifier::new(&m, Some(2)).unwrap();
    assert!(matches!(
        tiny.classify(b"a", Some(b"b")),
        Err(ClassifyError::PairTooLong { tokens: 3, max: 2 })
    ));
    assert_eq!(tiny.classify(b"a", None).unwrap().n_tokens, 2);
}

/// Singles and pairs packed into one pass give each input's logits alone, bit for bit, and
/// `Model::classify` gives the singles' (the Hugging Face comparison is above).
#[test]
fn packed_classification_equals_one_by_one() {
    let Some(path) = model("distilbert-tiny-cls-f32.gguf") else {
        return;
    };
    let rows = reference("distilbert-tiny-cls");
    let m = Model::load(&path, LoadOptions::default()).unwrap();
    let mut c = Classifier::new(&m, None).unwrap();
    let inputs: Vec<(&[u8], Option<&[u8]>)> = rows
        .iter()
        .map(|r| match r["kind"].as_str().unwrap() {
            "single" => (r["text"].as_str().unwrap().as_bytes(), None),
            _ => (
                r["query"].as_str().unwrap().as_bytes(),
                Some(r["document"].as_str().unwrap().as_bytes()),
            ),
        })
        .collect();
    let packed = c.classify_batch(&inputs).unwrap();
    assert_eq!(packed.len(), inputs.len());
    for (&(text, pair), got) in inputs.iter().zip(&packed) {
        let alone = c.classify(text, pair).unwrap();
        assert_eq!(alone, *got);
    }
    let singles: Vec<&str> = rows
        .iter()
        .filter(|r| r["kind"] == "single")
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    let lib = m.classify(&singles).unwrap();
    let from_packed: Vec<_> = inputs
        .iter()
        .zip(&packed)
        .filter(|((_, pair), _)| pair.is_none())
        .map(|(_, g)| g.clone())
        .collect();
    assert_eq!(lib, from_packed);
}
