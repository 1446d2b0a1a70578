//! WordPiece parity with Hugging Face's `BertTokenizer` for all-MiniLM-L6-v2.
//!
//! `tests/golden/tokenize.minilm-hf.jsonl` holds the `text` and `ids_full` (Hugging Face's ids,
//! `[CLS] … [SEP]`, no truncation) of the 25 sentences of
//! `../shared/oracles/minilm/reference.jsonl`: Korean (jamo under NFD), control whitespace,
//! a 120-letter word ([UNK]), special tokens written in the text, CJK, emoji, accents.
//! The GGUFs are the ones `scripts/fetch-models.sh` builds with the oracle's `make-gguf.py`.

use tinyrt::gguf::GgufFile;
use tinyrt::tokenizer::Tokenizer;

fn golden() -> Vec<(usize, String, Vec<u32>)> {
    let path = tinyrt_tests::workspace_root().join("tests/golden/tokenize.minilm-hf.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("golden line is JSON");
            let ids = v["ids_full"]
                .as_array()
                .expect("ids_full")
                .iter()
                .map(|x| u32::try_from(x.as_u64().expect("id")).expect("id fits u32"))
                .collect();
            (
                v["index"].as_u64().expect("index") as usize,
                v["text"].as_str().expect("text").to_string(),
                ids,
            )
        })
        .collect()
}

fn check(file_name: &str) {
    let Some(path) = tinyrt_tests::model(file_name) else {
        return;
    };
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tok = Tokenizer::from_gguf(file.metadata()).expect("tokenizer");
    let cases = golden();
    assert_eq!(cases.len(), 25);
    for (index, text, want) in cases {
        let got = tok.encode(text.as_bytes()).expect("encode");
        assert_eq!(got, want, "{file_name}: sentence {index} {text:?}");
    }
}

#[test]
fn minilm_f32_matches_hugging_face() {
    check("all-MiniLM-L6-v2-f32.gguf");
}

#[test]
fn minilm_f16_matches_hugging_face() {
    check("all-MiniLM-L6-v2-f16.gguf");
}

#[test]
fn minilm_q8_0_matches_hugging_face() {
    check("all-MiniLM-L6-v2-q8_0.gguf");
}
