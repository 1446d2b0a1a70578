//! `tinyrt rerank`: scores of the DistilBERT cross-encoder pairs against Hugging Face's logits
//! (`../shared/oracles/cls/reference.jsonl`: the score of a 3-label head is the softmax
//! probability of the last label, computed here in f64 from Hugging Face's logits), best first,
//! in the rerank JSON shape and the text form; and the bad-input errors (exit 2).

use std::process::{Command, Output};

use serde_json::Value;
use tinyrt_tests::{assert_bad_input, model, workspace_root, TempDir};

fn tinyrt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tinyrt"))
        .args(args)
        .output()
        .expect("run tinyrt")
}

/// The oracle's DistilBERT pairs of `query`: (document, score from Hugging Face's logits,
/// token count).
fn pairs(query: &str) -> Vec<(String, f64, usize)> {
    let path = workspace_root().join("../shared/oracles/cls/reference.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .filter(|r| r["model"] == "distilbert-tiny-cls" && r["kind"] == "pair")
        .filter(|r| r["query"] == query)
        .map(|r| {
            let logits: Vec<f64> = r["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            let last = (logits[logits.len() - 1] - max).exp() / sum;
            let n = r["ids"].as_array().unwrap().len();
            (r["document"].as_str().unwrap().to_string(), last, n)
        })
        .collect()
}

#[test]
fn rerank_scores_match_hugging_face_and_sort_best_first() {
    let Some(m) = model("distilbert-tiny-cls-f32.gguf") else {
        return;
    };
    let m = m.to_str().unwrap();
    let dir = TempDir::new("rerank");
    for query in [
        "How do I reset my password?",
        "What is the capital of France?",
    ] {
        // The file order reversed, so that sorting has something to do.
        let mut docs = pairs(query);
        docs.reverse();
        assert_eq!(docs.len(), 2, "{query}");
        let lines: String = docs.iter().map(|(d, _, _)| format!("{d}\n")).collect();
        let file = dir.write("docs.txt", lines.as_bytes());
        let f = file.to_str().unwrap();
        let mut want: Vec<usize> = (0..docs.len()).collect();
        want.sort_by(|&a, &b| docs[b].1.total_cmp(&docs[a].1));
        assert!(
            (docs[0].1 - docs[1].1).abs() > 1e-3,
            "the reference scores decide the order"
        );

        let o = tinyrt(&["rerank", m, "-q", query, "-f", f, "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        assert_eq!(j["model"], "distilbert-tiny-cls-f32.gguf");
        assert_eq!(j["query"], query);
        let tokens: usize = docs.iter().map(|d| d.2).sum();
        assert_eq!(j["usage"]["prompt_tokens"], tokens);
        let results = j["results"].as_array().unwrap();
        assert_eq!(results.len(), docs.len());
        for (r, &i) in results.iter().zip(&want) {
            assert_eq!(r["index"], i, "{query}: best first");
            assert_eq!(r["document"], docs[i].0.as_str());
            let s = r["relevance_score"].as_f64().unwrap();
            assert!(
                (s - docs[i].1).abs() <= 1e-5,
                "{query} doc {i}: score {s}, Hugging Face {}",
                docs[i].1
            );
        }

        // The text form: rank, score, index, document; --top cuts the list.
        let o = tinyrt(&["rerank", m, "-q", query, "-f", f, "--top", "1"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8(o.stdout).unwrap();
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines.len(), 1, "{out}");
        let best = want[0];
        assert_eq!(lines[0][0], "1");
        let s: f64 = lines[0][1].parse().unwrap();
        assert!((s - docs[best].1).abs() <= 1e-5, "{out}");
        assert_eq!(lines[0][2], best.to_string());
        assert_eq!(lines[0][3], docs[best].0);
    }
}

/// A pair longer than --max-length is cut (a warning), not refused; the scores still come.
#[test]
fn long_pairs_are_truncated_with_a_warning() {
    let Some(m) = model("distilbert-tiny-cls-f32.gguf") else {
        return;
    };
    let dir = TempDir::new("rerank-trunc");
    let docs = pairs("How do I reset my password?");
    let lines: String = docs.iter().map(|(d, _, _)| format!("{d}\n")).collect();
    let file = dir.write("docs.txt", lines.as_bytes());
    let o = tinyrt(&[
        "rerank",
        m.to_str().unwrap(),
        "-q",
        "How do I reset my password?",
        "-f",
        file.to_str().unwrap(),
        "--max-length",
        "12",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    // Both pairs (28 and 18 tokens) are over 12.
    assert_eq!(err.matches("truncated to 12 tokens").count(), 2, "{err}");
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["usage"]["prompt_tokens"], 24);
    assert_eq!(j["results"].as_array().unwrap().len(), 2);
}

#[test]
fn rerank_refuses_bad_input_with_exit_2() {
    let dir = TempDir::new("rerank-bad");
    let docs = dir.write("docs.txt", b"one\ntwo\n");
    let d = docs.to_str().unwrap();
    let missing = dir.path().join("missing.txt");
    let empty = dir.write("empty.txt", b"");
    let decoder = tinyrt_tests::fixture("llama-tiny-q8_0.gguf");
    let e = assert_bad_input(
        &tinyrt(&["rerank", decoder.to_str().unwrap(), "-q", "q", "-f", d]),
        "decoder",
    );
    assert!(e.contains("not an encoder"), "{e}");
    let Some(m) = model("distilbert-tiny-cls-f32.gguf") else {
        return;
    };
    let m = m.to_str().unwrap();
    let e = assert_bad_input(&tinyrt(&["rerank", m, "-q", " ", "-f", d]), "empty query");
    assert!(e.contains("query"), "{e}");
    let e = assert_bad_input(
        &tinyrt(&["rerank", m, "-q", "q", "-f", missing.to_str().unwrap()]),
        "missing file",
    );
    assert!(e.contains("missing.txt"), "{e}");
    let e = assert_bad_input(
        &tinyrt(&["rerank", m, "-q", "q", "-f", empty.to_str().unwrap()]),
        "no documents",
    );
    assert!(e.contains("no documents"), "{e}");
    assert_bad_input(
        &tinyrt(&["rerank", m, "-q", "q", "-f", d, "--top", "0"]),
        "--top 0",
    );
    assert_bad_input(&tinyrt(&["rerank", m, "-f", d]), "no query");
    // Not even [CLS] q [SEP] d [SEP]'s special tokens fit in 2.
    let e = assert_bad_input(
        &tinyrt(&["rerank", m, "-q", "q", "-f", d, "--max-length", "2"]),
        "max length 2",
    );
    assert!(e.contains("at least 3 tokens"), "{e}");
    if let Some(bert) = model("bert-tiny-cls-f32.gguf") {
        let e = assert_bad_input(
            &tinyrt(&["rerank", bert.to_str().unwrap(), "-q", "q", "-f", d]),
            "no pooler",
        );
        assert!(e.contains("pooler"), "{e}");
    }
    if let Some(minilm) = model("all-MiniLM-L6-v2-q8_0.gguf") {
        let e = assert_bad_input(
            &tinyrt(&["rerank", minilm.to_str().unwrap(), "-q", "q", "-f", d]),
            "no head",
        );
        assert!(e.contains("no classification head"), "{e}");
    }
}
