//! Hugging Face tokenizer folders against `../shared/oracles/hf/` (its README):
//!
//! - `tinyrt::tokenizer::hf::gguf_metadata` equals the `tokenizer.*` keys of llama.cpp's
//!   conversion (`NAME.convert.json`): same keys in the same order, same GGUF types, values
//!   element by element (floats as f32 bits, strings byte for byte);
//! - tinyrt's own GGUF tokenizer on that metadata gives `tokenize.jsonl`'s ids where the
//!   README says llama.cpp agrees with `tokenizers` (`llamacpp-vs-hf.json`); on the other
//!   texts llama.cpp's ids differ from `tokenizers`' and are not in the oracle, so they are
//!   skipped there;
//! - `HfEncoder` and the `Tokenizer` built with it give `tokenize.jsonl`'s and `chat.json`'s
//!   ids on every text;
//! - broken `tokenizer.json` files are specific errors.

use std::path::{Path, PathBuf};

use serde_json::Value as J;
use tinyrt::gguf::{Array, Metadata, Value};
use tinyrt::tokenizer::hf::{self, HfEncoder};
use tinyrt::tokenizer::{Tokenizer, TokenizerError};
use tinyrt_tests::TempDir;

use tinyrt_tests::hf_oracle::{oracle, FOLDERS};

fn folder(name: &str) -> PathBuf {
    oracle().join("models").join(name)
}

fn json(path: &Path) -> J {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The GGUF architecture of a folder's `config.json`.
fn arch(config: &J) -> &'static str {
    match config["architectures"][0].as_str().expect("architectures") {
        "LlamaForCausalLM" | "MistralForCausalLM" => "llama",
        "Qwen2ForCausalLM" => "qwen2",
        "Qwen3ForCausalLM" => "qwen3",
        "PhiForCausalLM" => "phi2",
        "StableLmForCausalLM" => "stablelm",
        "Gemma3ForCausalLM" => "gemma3",
        other => panic!("unexpected architecture {other}"),
    }
}

fn converted(name: &str) -> Vec<(String, Value)> {
    let config = json(&folder(name).join("config.json"));
    hf::gguf_metadata(&folder(name), arch(&config), &config)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ids(v: &J) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// `(text, ids)` of `NAME.tokenize.jsonl`.
fn texts(name: &str) -> Vec<(String, Vec<u32>)> {
    let path = oracle()
        .join("expected")
        .join(format!("{name}.tokenize.jsonl"));
    std::fs::read_to_string(&path)
        .expect("tokenize.jsonl")
        .lines()
        .map(|l| {
            let row: J = serde_json::from_str(l).expect("a JSON line");
            (
                row["text"].as_str().expect("text").to_owned(),
                ids(&row["ids"]),
            )
        })
        .collect()
}

/// `NAME.chat.json` (not for tiny-phi2, which has no template).
fn chat(name: &str) -> Option<(String, Vec<u32>)> {
    let path = oracle().join("expected").join(format!("{name}.chat.json"));
    path.is_file().then(|| {
        let c = json(&path);
        (c["text"].as_str().expect("text").to_owned(), ids(&c["ids"]))
    })
}

/// Compare one manifest entry `{type, value | len+value}` with a value.
fn check_value(name: &str, key: &str, want: &J, got: &Value) {
    let ty = want["type"].as_str().expect("type");
    let v = &want["value"];
    let ctx = format!("{name}: {key}");
    let f32_bits = |x: &J| (x.as_f64().expect("a float") as f32).to_bits();
    match (ty, got) {
        ("STRING", Value::String(s)) => assert_eq!(v.as_str(), Some(s.as_str()), "{ctx}"),
        ("UINT32", Value::U32(x)) => assert_eq!(v.as_u64(), Some(u64::from(*x)), "{ctx}"),
        ("BOOL", Value::Bool(b)) => assert_eq!(v.as_bool(), Some(*b), "{ctx}"),
        ("ARRAY[STRING]", Value::Array(Array::String(s))) => {
            let w = v.as_array().expect("array");
            assert_eq!(w.len(), s.len(), "{ctx}: length");
            for (i, (a, b)) in w.iter().zip(s).enumerate() {
                assert_eq!(a.as_str(), Some(b.as_str()), "{ctx}[{i}]");
            }
        }
        ("ARRAY[INT32]", Value::Array(Array::I32(s))) => {
            let w: Vec<i64> = v
                .as_array()
                .expect("array")
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            let s: Vec<i64> = s.iter().map(|&x| i64::from(x)).collect();
            assert_eq!(w, s, "{ctx}");
        }
        ("ARRAY[FLOAT32]", Value::Array(Array::F32(s))) => {
            let w: Vec<u32> = v.as_array().expect("array").iter().map(f32_bits).collect();
            let s: Vec<u32> = s.iter().map(|x| x.to_bits()).collect();
            assert_eq!(w, s, "{ctx}");
        }
        _ => panic!("{ctx}: manifest type {ty}, ours {}", got.type_name()),
    }
    if let Some(len) = want.get("len") {
        assert_eq!(
            len.as_u64(),
            v.as_array().map(|a| a.len() as u64),
            "{ctx}: manifest len"
        );
    }
}

#[test]
fn gguf_metadata_equals_llama_cpp_conversion() {
    for name in FOLDERS {
        let manifest = json(
            &oracle()
                .join("expected")
                .join(format!("{name}.convert.json")),
        );
        let want: Vec<(&String, &J)> = manifest["metadata"]
            .as_object()
            .expect("metadata")
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .collect();
        // The manifest is a JSON object: read its key order from the text itself.
        let text = std::fs::read_to_string(
            oracle()
                .join("expected")
                .join(format!("{name}.convert.json")),
        )
        .unwrap();
        let mut order: Vec<(usize, &String)> = want
            .iter()
            .map(|(k, _)| (text.find(&format!("\"{k}\": {{")).expect("key in text"), *k))
            .collect();
        order.sort();
        let got = converted(name);
        let got_keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        let want_keys: Vec<&str> = order.iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(got_keys, want_keys, "{name}: keys and order");
        for (key, value) in &got {
            let w = want.iter().find(|(k, _)| *k == key).expect("key").1;
            check_value(name, key, w, value);
        }
    }
}

/// Texts (40-character prefixes) on which llama.cpp's tokenizer differs from `tokenizers`.
fn llamacpp_mismatches(name: &str) -> (Vec<String>, bool) {
    let all = json(&oracle().join("expected/llamacpp-vs-hf.json"));
    let row = &all[name];
    let texts = row["llamacpp_tok_mismatch"]
        .as_array()
        .expect("mismatch list")
        .iter()
        .map(|t| t.as_str().expect("a prefix").to_owned())
        .collect();
    // null for tiny-phi2, which has no chat template.
    (
        texts,
        row["llamacpp_chat_ids_equal"].as_bool() == Some(true),
    )
}

fn gguf_tokenizer(name: &str) -> Tokenizer {
    let md = Metadata::from_entries(converted(name)).expect("unique keys");
    Tokenizer::from_gguf(&md).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn gguf_tokenizer_from_converted_metadata_gives_llama_cpp_ids() {
    let (mut compared, mut chats) = (0, 0);
    for name in FOLDERS {
        let tok = gguf_tokenizer(name);
        let (mismatch, chat_equal) = llamacpp_mismatches(name);
        for (text, want) in texts(name) {
            let got = tok.encode(text.as_bytes()).unwrap();
            // llama.cpp's ids on these texts are not Hugging Face's and not in the oracle:
            // only check that ours differ from Hugging Face's too, as llama.cpp's do.
            if mismatch.iter().any(|m| text.starts_with(m.as_str())) {
                assert_ne!(got, want, "{name}: {text:?}");
                continue;
            }
            assert_eq!(got, want, "{name}: {text:?}");
            compared += 1;
        }
        if let (Some((text, want)), true) = (chat(name), chat_equal) {
            assert_eq!(
                tok.tokenize(text.as_bytes(), false, true).unwrap(),
                want,
                "{name}: chat"
            );
            chats += 1;
        }
    }
    assert_eq!((compared, chats), (8 * 10 - 2 * 4, 6));
}

#[test]
fn hf_encoder_gives_tokenizers_ids_on_every_text() {
    for name in FOLDERS {
        let enc = HfEncoder::from_file(&folder(name).join("tokenizer.json"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let md = Metadata::from_entries(converted(name)).expect("unique keys");
        let enc2 = HfEncoder::from_file(&folder(name).join("tokenizer.json")).unwrap();
        let tok = Tokenizer::from_gguf_with_encoder(&md, enc2).unwrap();
        assert!(tok.has_hf_encoder());
        for (text, want) in texts(name) {
            assert_eq!(
                enc.encode(text.as_bytes(), true, true).unwrap(),
                want,
                "{name}: {text:?}"
            );
            assert_eq!(
                tok.encode(text.as_bytes()).unwrap(),
                want,
                "{name}: {text:?}"
            );
        }
        if let Some((text, want)) = chat(name) {
            assert_eq!(
                enc.encode(text.as_bytes(), false, true).unwrap(),
                want,
                "{name}: chat"
            );
            assert_eq!(
                tok.tokenize(text.as_bytes(), false, true).unwrap(),
                want,
                "{name}: chat"
            );
        }
    }
}

#[test]
fn hf_encoder_parse_special_off_takes_special_text_literally() {
    let enc = HfEncoder::from_file(&folder("tiny-qwen2").join("tokenizer.json")).unwrap();
    let text = b"<|im_start|>hi";
    let parsed = enc.encode(text, false, true).unwrap();
    assert_eq!(parsed[0], 1025);
    let literal = enc.encode(text, false, false).unwrap();
    assert!(
        !literal.contains(&1025) && literal.len() > parsed.len(),
        "{literal:?}"
    );
    // Arbitrary bytes do not panic.
    let junk: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    assert!(!enc.encode(&junk, true, true).unwrap().is_empty());
}

#[test]
fn generation_config_eos_ids_end_generation() {
    let dir = folder("tiny-llama3");
    let eos = hf::generation_eos_ids(&dir).unwrap();
    assert_eq!(eos, vec![1025, 1032, 1033]);
    let mut tok = gguf_tokenizer("tiny-llama3");
    tok.add_eog_ids(&eos).unwrap();
    for id in eos {
        assert!(tok.is_eog(id), "{id}");
    }
    assert!(!tok.is_eog(1024));
    assert!(tok.add_eog_ids(&[5000]).is_err());
    assert_eq!(
        hf::generation_eos_ids(&folder("tiny-mistral")).unwrap(),
        vec![2]
    );
}

/// A copy of `name`'s tokenizer files with `tokenizer.json` replaced by `bytes`.
fn broken_copy(name: &str, tag: &str, bytes: &[u8]) -> TempDir {
    let dir = TempDir::new(tag);
    for f in [
        "config.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        dir.write(f, &std::fs::read(folder(name).join(f)).unwrap());
    }
    dir.write("tokenizer.json", bytes);
    dir
}

#[test]
fn broken_tokenizer_json_is_a_specific_error() {
    let good = std::fs::read(folder("tiny-qwen2").join("tokenizer.json")).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();
    let wrong_type = text.replacen("\"type\": \"BPE\"", "\"type\": \"Mystery\"", 1);
    assert_ne!(wrong_type, text);
    let config = json(&folder("tiny-qwen2").join("config.json"));
    let cases: [(&str, &[u8], &str); 3] = [
        ("half", &good[..good.len() / 2], "not valid JSON"),
        ("notjson", b"\x00\x01 not json at all", "not valid JSON"),
        ("wrongtype", wrong_type.as_bytes(), "model type"),
    ];
    for (tag, bytes, what) in cases {
        let dir = broken_copy("tiny-qwen2", tag, bytes);
        let path = dir.path().join("tokenizer.json");
        for err in [
            HfEncoder::from_file(&path).unwrap_err(),
            hf::gguf_metadata(dir.path(), "qwen2", &config).unwrap_err(),
        ] {
            match &err {
                TokenizerError::File { path: p, message } => {
                    assert!(p.ends_with("tokenizer.json"), "{tag}: {err}");
                    assert!(message.contains(what), "{tag}: {err}");
                }
                other => panic!("{tag}: {other:?}"),
            }
            assert_eq!(err.to_string().lines().count(), 1, "{tag}: {err}");
        }
    }
}

/// The encoders of every oracle folder, loaded once.
fn encoders() -> &'static [(HfEncoder, Tokenizer)] {
    static ENCODERS: std::sync::OnceLock<Vec<(HfEncoder, Tokenizer)>> = std::sync::OnceLock::new();
    ENCODERS.get_or_init(|| {
        FOLDERS
            .iter()
            .map(|name| {
                let path = folder(name).join("tokenizer.json");
                let md = Metadata::from_entries(converted(name)).expect("unique keys");
                let tok =
                    Tokenizer::from_gguf_with_encoder(&md, HfEncoder::from_file(&path).unwrap())
                        .unwrap();
                (HfEncoder::from_file(&path).unwrap(), tok)
            })
            .collect()
    })
}

/// Pieces the random texts are made of: special-token texts of the folders, spaces, bytes
/// that are not UTF-8 on their own.
const PIECES: [&[u8]; 12] = [
    b"<|im_start|>",
    b"<|endoftext|>",
    b"<s>",
    b"</s>",
    b"<bos>",
    b"<start_of_turn>",
    b"   ",
    b"\n\n",
    b"\xE2\x96",
    b"\xFF",
    "é日".as_bytes(),
    b"word 123",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Any bytes encode without a panic, to ids inside the vocabulary, with and without
    /// special tokens added or parsed.
    #[test]
    fn hf_encoding_never_panics(
        parts in proptest::collection::vec((0usize..PIECES.len(), proptest::prelude::any::<u8>()), 0..64),
        which in 0usize..FOLDERS.len(),
        add_special in proptest::prelude::any::<bool>(),
        parse_special in proptest::prelude::any::<bool>(),
    ) {
        let mut text = Vec::new();
        for (piece, byte) in parts {
            text.extend_from_slice(PIECES[piece]);
            text.push(byte);
        }
        let (enc, tok) = &encoders()[which];
        let ids = enc.encode(&text, add_special, parse_special).unwrap();
        proptest::prop_assert!(ids.iter().all(|&id| (id as usize) < enc.vocab_size()));
        proptest::prop_assert_eq!(tok.tokenize(&text, add_special, parse_special).unwrap(), ids);
    }
}

/// A copy of `name`'s tokenizer files, each file changed by `edit` (None: left out).
fn edited_copy(name: &str, tag: &str, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) -> TempDir {
    let dir = TempDir::new(tag);
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "chat_template.jinja",
    ] {
        if let Ok(bytes) = std::fs::read(folder(name).join(f)) {
            if let Some(b) = edit(f, bytes) {
                dir.write(f, &b);
            }
        }
    }
    dir
}

#[test]
fn broken_folder_files_are_specific_errors() {
    let cut = |file: &'static str| {
        move |f: &str, b: Vec<u8>| {
            Some(if f == file {
                b[..b.len() / 2].to_vec()
            } else {
                b
            })
        }
    };
    let drop = |files: &'static [&'static str]| {
        move |f: &str, b: Vec<u8>| (!files.contains(&f)).then_some(b)
    };
    let cases: Vec<(&str, &str, TempDir, &str)> = vec![
        (
            "tiny-llama",
            "llama",
            edited_copy("tiny-llama", "spcut", cut("tokenizer.model")),
            "tokenizer.model",
        ),
        (
            "tiny-llama",
            "llama",
            edited_copy("tiny-llama", "tccut", cut("tokenizer_config.json")),
            "tokenizer_config.json",
        ),
        (
            "tiny-gemma3",
            "gemma3",
            edited_copy(
                "tiny-gemma3",
                "nofiles",
                drop(&["tokenizer.model", "tokenizer.json"]),
            ),
            "tokenizer.json",
        ),
        (
            "tiny-llama3",
            "llama",
            edited_copy("tiny-llama3", "notok", drop(&["tokenizer.json"])),
            "tokenizer.json",
        ),
    ];
    for (name, arch, dir, file) in cases {
        let config = json(&folder(name).join("config.json"));
        let err = hf::gguf_metadata(dir.path(), arch, &config).unwrap_err();
        match &err {
            TokenizerError::File { path, .. } => assert!(path.ends_with(file), "{name}: {err}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
    }
    // An architecture the converter's tokenizer code is not ported for.
    let config = json(&folder("tiny-qwen2").join("config.json"));
    assert!(matches!(
        hf::gguf_metadata(&folder("tiny-qwen2"), "mamba", &config),
        Err(TokenizerError::Unsupported(_))
    ));
}

#[test]
fn vocab_size_below_the_tokenizer_is_an_error() {
    let mut config = json(&folder("tiny-qwen2").join("config.json"));
    config["vocab_size"] = 1000.into();
    assert!(matches!(
        hf::gguf_metadata(&folder("tiny-qwen2"), "qwen2", &config),
        Err(TokenizerError::Invalid(_))
    ));
}

#[test]
fn folder_tokenizer_encodes_as_tokenizers_and_stops_on_generation_eos() {
    for name in FOLDERS {
        let config = json(&folder(name).join("config.json"));
        let tok = hf::folder_tokenizer(&folder(name), arch(&config), &config)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(tok.has_hf_encoder());
        for (text, want) in texts(name) {
            assert_eq!(
                tok.encode(text.as_bytes()).unwrap(),
                want,
                "{name}: {text:?}"
            );
        }
        let eos = hf::generation_eos_ids(&folder(name)).unwrap();
        assert!(!eos.is_empty(), "{name}");
        for id in eos {
            assert!(tok.is_eog(id), "{name}: {id}");
        }
    }
}
