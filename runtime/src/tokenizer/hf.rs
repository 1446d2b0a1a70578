//! Hugging Face tokenizer folders (`tokenizer.json`, `tokenizer_config.json`,
//! `tokenizer.model`, `chat_template.jinja`, `generation_config.json`, `config.json`).
//!
//! - [`gguf_metadata`]: the `tokenizer.*` keys llama.cpp's `convert_hf_to_gguf.py` writes for
//!   a folder, in its order and with its GGUF types, so that tinyrt's own GGUF
//!   [`Tokenizer`](super::Tokenizer) built from them tokenizes as llama.cpp does.
//! - [`HfEncoder`]: the folder's `tokenizer.json` run by Hugging Face's `tokenizers` crate,
//!   giving `tokenizers.Tokenizer.from_file(...).encode(text).ids` exactly; plugged into a
//!   [`Tokenizer`](super::Tokenizer) with
//!   [`Tokenizer::from_gguf_with_encoder`](super::Tokenizer::from_gguf_with_encoder).
//! - [`generation_eos_ids`]: the ids that end generation per `generation_config.json`.
//! - [`folder_tokenizer`]: all three together, the tokenizer of a model loaded from a folder.
//!
//! Facts of llama.cpp 11434's converter (`_set_vocab_sentencepiece`, `get_vocab_base`,
//! `_set_vocab_gpt2`, per-architecture `set_vocab`, `gguf-py`'s `SpecialVocab`) are
//! followed; the architectures covered are `llama`, `qwen2`, `qwen3`, `phi2`, `stablelm`
//! and `gemma3`. What is not ported is an `Unsupported` error: Llama folders with a
//! SentencePiece-style `tokenizer.json` but no `tokenizer.model` (`LlamaHfVocab`), Qwen-style
//! tiktoken StableLM folders, `added_tokens.json`-only vocabularies of byte-level BPE.

mod sp_model;
mod special;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value as J;

use super::TokenizerError;
use crate::gguf::{Array, Value};
use special::{Sources, SpecialVocab};

/// GGUF token types (`gguf.TokenType`).
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// The largest folder file read (a real `tokenizer.json` is a few tens of MB).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// Ordered GGUF key/value pairs with the converter's writer semantics: setting a present key
/// replaces its value in place.
#[derive(Debug, Default)]
pub(crate) struct Kv(Vec<(String, Value)>);

impl Kv {
    pub(crate) fn set(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|e| e.0 == key) {
            Some(e) => e.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }
}

/// A folder error: the file and what is wrong with it.
fn file_err(path: &Path, message: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The bytes of a file, or None when it does not exist.
fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, TokenizerError> {
    if !path.is_file() {
        return Ok(None);
    }
    let len = std::fs::metadata(path)
        .map_err(|e| file_err(path, e))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(file_err(path, format!("{len} bytes is too large")));
    }
    std::fs::read(path).map(Some).map_err(|e| file_err(path, e))
}

/// A JSON file, or None when it does not exist.
fn read_json(path: &Path) -> Result<Option<J>, TokenizerError> {
    match read_opt(path)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| file_err(path, format!("not valid JSON: {e}"))),
    }
}

fn read_text(path: &Path) -> Result<Option<String>, TokenizerError> {
    match read_opt(path)? {
        None => Ok(None),
        Some(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| file_err(path, "not UTF-8")),
    }
}

/// The tokenizer files of a folder, parsed.
struct Folder {
    dir: PathBuf,
    tokenizer_json: Option<J>,
    tokenizer_config: Option<J>,
    chat_template_jinja: Option<String>,
    chat_template_json: Option<J>,
    additional_templates: Vec<(String, String)>,
}

impl Folder {
    fn read(dir: &Path) -> Result<Folder, TokenizerError> {
        let tokenizer_json = read_json(&dir.join("tokenizer.json"))?;
        if let Some(t) = &tokenizer_json {
            check_model_type(&dir.join("tokenizer.json"), t)?;
        }
        let chat_template_jinja = read_text(&dir.join("chat_template.jinja"))?;
        let mut additional_templates = Vec::new();
        if chat_template_jinja.is_some() {
            let extra = dir.join("additional_chat_templates");
            if let Ok(entries) = std::fs::read_dir(&extra) {
                let mut paths: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "jinja"))
                    .collect();
                paths.sort();
                for p in paths {
                    let name = p.file_stem().map(|s| s.to_string_lossy().into_owned());
                    if let (Some(name), Some(text)) = (name, read_text(&p)?) {
                        additional_templates.push((name, text));
                    }
                }
            }
        }
        Ok(Folder {
            dir: dir.to_path_buf(),
            tokenizer_config: read_json(&dir.join("tokenizer_config.json"))?,
            chat_template_json: read_json(&dir.join("chat_template.json"))?,
            tokenizer_json,
            chat_template_jinja,
            additional_templates,
        })
    }

    fn sources<'a>(&'a self, config: &'a J) -> Sources<'a> {
        Sources {
            tokenizer_json: self.tokenizer_json.as_ref(),
            tokenizer_config: self.tokenizer_config.as_ref(),
            config,
            chat_template_jinja: self.chat_template_jinja.clone(),
            chat_template_json: self.chat_template_json.clone(),
            additional_templates: self.additional_templates.clone(),
        }
    }

    fn has_sp_model(&self) -> bool {
        self.dir.join("tokenizer.model").is_file()
    }

    /// A top-level value of `tokenizer_config.json`.
    fn tc_value(&self, key: &str) -> Option<&J> {
        self.tokenizer_config.as_ref()?.get(key)
    }
}

/// `tokenizer.json`'s `model.type` must be one `tokenizers` runs.
fn check_model_type(path: &Path, t: &J) -> Result<(), TokenizerError> {
    let ty = t
        .get("model")
        .and_then(|m| m.get("type"))
        .ok_or_else(|| file_err(path, "no model.type"))?;
    match ty.as_str() {
        Some("BPE" | "Unigram" | "WordPiece" | "WordLevel") => Ok(()),
        _ => Err(file_err(
            path,
            format!("model type {ty} is not one of BPE, Unigram, WordPiece, WordLevel"),
        )),
    }
}

/// The `tokenizer.*` metadata llama.cpp's converter writes for the folder `dir`: keys in the
/// converter's order (keys it writes before `tokenizer.ggml.model`, such as phi-2's
/// `add_bos_token` or Llama's `add_space_prefix`, come first), its GGUF types and values.
///
/// `arch` is the GGUF architecture (`llama`, `qwen2`, `qwen3`, `phi2`, `stablelm`,
/// `gemma3`) and `config` the parsed `config.json` (its `vocab_size` and `*_token_id`).
/// For byte-level BPE `tokenizer.ggml.pre` is the family's name from `tokenizer.json`'s
/// pre-tokenizer and the architecture ([`bpe_pre_name`]).
pub fn gguf_metadata(
    dir: &Path,
    arch: &str,
    config: &J,
) -> Result<Vec<(String, Value)>, TokenizerError> {
    let folder = Folder::read(dir)?;
    let mut kv = Kv::default();
    match arch {
        "llama" => {
            if let Some(v) = folder.tc_value("add_prefix_space").and_then(J::as_bool) {
                kv.set("tokenizer.ggml.add_space_prefix", Value::Bool(v));
            }
            if folder.has_sp_model() {
                sentencepiece(&folder, config, &mut kv)?;
            } else if llama_hf_applies(&folder)? {
                return Err(TokenizerError::Unsupported(
                    "a Llama folder whose SentencePiece vocabulary is only in tokenizer.json \
                     (no tokenizer.model)"
                        .into(),
                ));
            } else {
                byte_level_bpe(&folder, arch, config, &mut kv)?;
            }
            if config.get("vocab_size").and_then(J::as_u64) == Some(49152) {
                kv.set("tokenizer.ggml.add_bos_token", Value::Bool(false));
            }
        }
        "qwen2" | "qwen3" => {
            if folder.has_sp_model() {
                sentencepiece(&folder, config, &mut kv)?;
            } else {
                byte_level_bpe(&folder, arch, config, &mut kv)?;
            }
        }
        "phi2" => {
            kv.set("tokenizer.ggml.add_bos_token", Value::Bool(false));
            byte_level_bpe(&folder, arch, config, &mut kv)?;
        }
        "stablelm" => {
            if folder.tokenizer_json.is_none() {
                return Err(TokenizerError::Unsupported(
                    "a StableLM folder without tokenizer.json".into(),
                ));
            }
            byte_level_bpe(&folder, arch, config, &mut kv)?;
        }
        "gemma3" => {
            if folder.has_sp_model() {
                sentencepiece(&folder, config, &mut kv)?;
                kv.set("tokenizer.ggml.add_space_prefix", Value::Bool(false));
            } else {
                byte_level_bpe(&folder, arch, config, &mut kv)?;
            }
        }
        "bert" => wordpiece(&folder, config, &mut kv)?,
        other => {
            return Err(TokenizerError::Unsupported(format!(
                "tokenizer conversion for architecture '{other}'"
            )))
        }
    }
    Ok(kv.0)
}

/// Whether the converter's `LlamaHfVocab` takes the folder: a BPE `tokenizer.json` with byte
/// fallback and a `Sequence` decoder that is not Llama-3's (`ignore_merges`, no fallback).
fn llama_hf_applies(folder: &Folder) -> Result<bool, TokenizerError> {
    let Some(t) = &folder.tokenizer_json else {
        return Err(file_err(
            &folder.dir.join("tokenizer.json"),
            "missing (and no tokenizer.model)",
        ));
    };
    let model = &t["model"];
    let bpe = model["type"] == "BPE";
    let flag = |k: &str, default: bool| model.get(k).and_then(J::as_bool).unwrap_or(default);
    if bpe && flag("ignore_merges", false) && !flag("byte_fallback", true) {
        return Ok(false);
    }
    Ok(bpe && flag("byte_fallback", false) && t["decoder"]["type"] == "Sequence")
}

/// `vocab_size` of `config.json` (or of its `text_config`).
fn config_vocab_size(config: &J) -> Option<usize> {
    let v = config
        .get("vocab_size")
        .or_else(|| config.get("text_config")?.get("vocab_size"))?;
    usize::try_from(v.as_u64()?).ok()
}

/// The converter's `does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// `_set_vocab_sentencepiece`: pieces of `tokenizer.model`, ids past it up to `vocab_size`
/// as `[PAD{id}]`, `added_tokens.json` and `tokenizer_config.json`'s `added_tokens_decoder`
/// over them.
fn sentencepiece(folder: &Folder, config: &J, kv: &mut Kv) -> Result<(), TokenizerError> {
    let path = folder.dir.join("tokenizer.model");
    let bytes = read_opt(&path)?.ok_or_else(|| file_err(&path, "missing"))?;
    let pieces = sp_model::parse(&bytes).map_err(|e| file_err(&path, e))?;
    let n = config
        .get("vocab_size_per_layer_input")
        .and_then(J::as_u64)
        .and_then(|v| usize::try_from(v).ok())
        .or_else(|| config_vocab_size(config))
        .unwrap_or(pieces.len());
    if n > i32::MAX as usize {
        return Err(TokenizerError::Invalid(format!(
            "vocab_size {n} is too large"
        )));
    }
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; n];
    let mut types = vec![UNUSED; n];
    for (id, p) in pieces.iter().enumerate().take(n) {
        tokens[id] = p.text.clone();
        scores[id] = p.score;
        types[id] = match p.kind {
            2 => UNKNOWN,
            3 => CONTROL,
            5 => UNUSED,
            6 => BYTE,
            _ => NORMAL,
        };
    }
    let added_path = folder.dir.join("added_tokens.json");
    if let Some(added) = read_json(&added_path)? {
        let map = added
            .as_object()
            .ok_or_else(|| file_err(&added_path, "not an object"))?;
        for (text, id) in map {
            let id = id
                .as_u64()
                .ok_or_else(|| file_err(&added_path, format!("{text:?} has no integer id")))?;
            if let Some(i) = usize::try_from(id).ok().filter(|&i| i < n) {
                tokens[i] = text.clone();
                scores[i] = -1000.0;
                types[i] = USER_DEFINED;
            }
        }
    }
    if let Some(decoder) = folder
        .tc_value("added_tokens_decoder")
        .and_then(J::as_object)
    {
        for (id, data) in decoder {
            let bad = || {
                TokenizerError::Invalid(format!(
                    "tokenizer_config.json: added_tokens_decoder entry {id:?} is malformed"
                ))
            };
            let id: usize = id.parse().map_err(|_| bad())?;
            let content = data.get("content").and_then(J::as_str).ok_or_else(bad)?;
            if id >= n {
                continue;
            }
            let special = data.get("special").and_then(J::as_bool).unwrap_or(false);
            if special || looks_special(content) {
                types[id] = CONTROL;
                tokens[id] = content.to_owned();
            } else {
                types[id] = USER_DEFINED;
                tokens[id] = content.replace('\u{2581}', " ");
            }
            scores[id] = -1000.0;
        }
    }
    kv.set("tokenizer.ggml.model", Value::String("llama".into()));
    kv.set("tokenizer.ggml.pre", Value::String("default".into()));
    kv.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    kv.set("tokenizer.ggml.scores", Value::Array(Array::F32(scores)));
    kv.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    let sv = SpecialVocab::load(&folder.sources(config), false, Some(n))?;
    sv.add_to_gguf(kv);
    Ok(())
}

/// `_set_vocab_gpt2` (`get_vocab_base`): `model.vocab` with the added tokens over it, ids
/// past it up to `vocab_size` as `[PAD{id}]`; added tokens are control tokens when special
/// (or special-looking), user-defined otherwise; merges from `tokenizer.json`.
fn byte_level_bpe(
    folder: &Folder,
    arch: &str,
    config: &J,
    kv: &mut Kv,
) -> Result<(), TokenizerError> {
    let t = folder_json(folder)?;
    let pre = bpe_pre_name(t, arch)?;
    let (tokens, types) = vocab_base(folder, config, true)?;
    kv.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    kv.set("tokenizer.ggml.pre", Value::String(pre.into()));
    kv.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    kv.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    let sv = SpecialVocab::load(&folder.sources(config), true, None)?;
    sv.add_to_gguf(kv);
    Ok(())
}

/// The folder's parsed `tokenizer.json` (an error naming it when missing).
fn folder_json(folder: &Folder) -> Result<&J, TokenizerError> {
    folder
        .tokenizer_json
        .as_ref()
        .ok_or_else(|| file_err(&folder.dir.join("tokenizer.json"), "missing"))
}

/// The converter's `get_vocab_base` over `tokenizer.json`: one token per id up to
/// `config.json`'s `vocab_size` (`[PAD{i}]`, unused, where the tokenizer has none), added
/// tokens control when special (or looking special) and user-defined otherwise (`▁` written
/// as a space when `spaces`, as the converter always does), the rest normal.
fn vocab_base(
    folder: &Folder,
    config: &J,
    spaces: bool,
) -> Result<(Vec<String>, Vec<i32>), TokenizerError> {
    let t = folder_json(folder)?;
    let path = folder.dir.join("tokenizer.json");
    let bad = |what: &str| file_err(&path, what);
    let vocab = t["model"]["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab is not an object"))?;
    let mut by_id: std::collections::BTreeMap<u64, String> = Default::default();
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad("a model.vocab id is not an integer"))?;
        by_id.insert(id, text.clone());
    }
    let empty = Vec::new();
    let added = t["added_tokens"].as_array().unwrap_or(&empty);
    // id -> (content, special); texts of the added vocabulary.
    let mut added_by_id: std::collections::BTreeMap<u64, (&str, bool)> = Default::default();
    let mut added_texts = std::collections::HashSet::new();
    for a in added {
        let id = a["id"]
            .as_u64()
            .ok_or_else(|| bad("an added token has no integer id"))?;
        let content = a["content"]
            .as_str()
            .ok_or_else(|| bad("an added token has no content"))?;
        let special = a["special"].as_bool().unwrap_or(false);
        added_by_id.insert(id, (content, special));
        added_texts.insert(content);
        by_id.insert(id, content.to_owned());
    }
    let n_base = by_id.len();
    let n = config_vocab_size(config).unwrap_or(n_base);
    if let Some((&max, _)) = by_id.last_key_value() {
        if max >= n as u64 {
            return Err(TokenizerError::Invalid(format!(
                "tokenizer.json has token id {max}, past config.json's vocab_size {n}"
            )));
        }
    }
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for i in 0..n {
        let Some(text) = by_id.get(&(i as u64)) else {
            tokens.push(format!("[PAD{i}]"));
            types.push(UNUSED);
            continue;
        };
        if added_texts.contains(text.as_str()) {
            let special = added_by_id.get(&(i as u64)).is_some_and(|a| a.1);
            if special || looks_special(text) {
                types.push(CONTROL);
                tokens.push(text.clone());
            } else {
                types.push(USER_DEFINED);
                tokens.push(if spaces {
                    text.replace('\u{2581}', " ")
                } else {
                    text.clone()
                });
            }
        } else {
            types.push(NORMAL);
            tokens.push(text.clone());
        }
    }
    Ok((tokens, types))
}

/// BERT's WordPiece vocabulary as the converter's `BertModel.set_vocab` writes it: the token
/// type count (`type_vocab_size`, 1 when absent: DistilBERT), llama.cpp's "phantom space"
/// form (a control token as it is, `##w` as `w`, any other `w` as `▁w`), model `bert`, and the
/// special tokens. `tokenizer.ggml.pre` is `jina-v2-en`, the name llama.cpp's hash lookup gives
/// the BERT uncased vocabulary (its WordPiece tokenizer does not read the name).
fn wordpiece(folder: &Folder, config: &J, kv: &mut Kv) -> Result<(), TokenizerError> {
    let t = folder_json(folder)?;
    if t["model"]["type"] != "WordPiece" {
        return Err(file_err(
            &folder.dir.join("tokenizer.json"),
            "a BERT model's tokenizer.json must be WordPiece",
        ));
    }
    let type_count = config
        .get("type_vocab_size")
        .and_then(J::as_u64)
        .unwrap_or(1);
    kv.set(
        "tokenizer.ggml.token_type_count",
        Value::U32(u32::try_from(type_count).map_err(|_| {
            TokenizerError::Invalid(format!("type_vocab_size {type_count} is out of range"))
        })?),
    );
    let (tokens, types) = vocab_base(folder, config, true)?;
    let n = tokens.len();
    let tokens = tokens
        .into_iter()
        .zip(&types)
        .map(|(tok, &ty)| {
            if ty == CONTROL {
                tok
            } else if let Some(rest) = tok.strip_prefix("##") {
                rest.to_owned()
            } else {
                format!("\u{2581}{tok}")
            }
        })
        .collect();
    kv.set("tokenizer.ggml.model", Value::String("bert".into()));
    kv.set("tokenizer.ggml.pre", Value::String("jina-v2-en".into()));
    kv.set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)));
    kv.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    let sv = SpecialVocab::load(&folder.sources(config), false, Some(n))?;
    sv.add_to_gguf(kv);
    Ok(())
}

/// Llama-3's split regex (three-digit numbers).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's and StableLM-2's (Arcade100k) split regex (single digits).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What a pre-tokenizer is made of (walking `Sequence`s).
#[derive(Debug, Default)]
struct PreParts<'j> {
    /// `Split` regexes.
    regexes: Vec<&'j str>,
    /// A `ByteLevel` step with `use_regex` (GPT-2's split).
    byte_level_regex: bool,
    /// A `Digits` step with `individual_digits`.
    single_digits: bool,
    /// Steps of any other kind (or settings), by type name.
    other: Vec<String>,
}

impl<'j> PreParts<'j> {
    fn walk(&mut self, p: &'j J) {
        match p["type"].as_str() {
            Some("Sequence") => {
                for q in p["pretokenizers"].as_array().into_iter().flatten() {
                    self.walk(q);
                }
            }
            Some("Split") => match p["pattern"]["Regex"].as_str() {
                Some(r) => self.regexes.push(r),
                None => self.other.push("Split(String)".into()),
            },
            Some("ByteLevel") if p["use_regex"].as_bool().unwrap_or(true) => {
                self.byte_level_regex = true;
            }
            Some("ByteLevel") => {}
            Some("Digits") if p["individual_digits"].as_bool() == Some(true) => {
                self.single_digits = true;
            }
            other => self.other.push(other.unwrap_or("none").to_owned()),
        }
    }
}

/// `tokenizer.ggml.pre` for a byte-level BPE `tokenizer.json`: llama.cpp names it by hashing
/// the ids of a fixed text, which only full vocabularies of known models match; this names
/// the family from the pre-tokenizer instead (the name llama.cpp gives the family's full
/// tokenizer): Llama-3's regex → `llama-bpe`; the single-digit Qwen2 regex → `qwen2`, or
/// `stablelm2` on `stablelm`; GPT-2's byte-level regex alone → `phi-2` on `phi2`, else
/// `gpt-2`; GPT-2's with single digits split first (SmolLM, StarCoder) → `smollm`. Any
/// other pre-tokenizer is `Unsupported`.
pub fn bpe_pre_name(tokenizer_json: &J, arch: &str) -> Result<&'static str, TokenizerError> {
    let mut parts = PreParts::default();
    parts.walk(&tokenizer_json["pre_tokenizer"]);
    let name = match (
        &parts.regexes[..],
        parts.byte_level_regex,
        parts.single_digits,
    ) {
        _ if !parts.other.is_empty() => None,
        ([r], false, false) if *r == LLAMA3_REGEX => Some("llama-bpe"),
        ([r], false, false) if *r == QWEN2_REGEX => Some(if arch == "stablelm" {
            "stablelm2"
        } else {
            "qwen2"
        }),
        ([], true, false) => Some(if arch == "phi2" { "phi-2" } else { "gpt-2" }),
        ([], true, true) => Some("smollm"),
        _ => None,
    };
    name.ok_or_else(|| {
        TokenizerError::Unsupported(format!(
            "byte-level BPE pre-tokenizer of tokenizer.json on {arch}: {parts:?}"
        ))
    })
}

/// The ids that end generation: `generation_config.json`'s `eos_token_id` (an id or a list
/// of ids), or `config.json`'s when the folder has no generation config. Empty when neither
/// names one.
pub fn generation_eos_ids(dir: &Path) -> Result<Vec<u32>, TokenizerError> {
    let mut path = dir.join("generation_config.json");
    let mut json = read_json(&path)?;
    if json.is_none() {
        path = dir.join("config.json");
        json = read_json(&path)?;
    }
    let Some(json) = json else {
        return Ok(Vec::new());
    };
    let bad = || file_err(&path, "eos_token_id is not an id or a list of ids");
    let one = |v: &J| {
        v.as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(bad)
    };
    match json.get("eos_token_id") {
        None | Some(J::Null) => Ok(Vec::new()),
        Some(J::Array(list)) => list.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

/// The tokenizer of a folder, as a model loaded from it uses: the vocabulary, special tokens
/// and decoding of [`gguf_metadata`] (with `general.architecture` = `arch`), text encoded by
/// the folder's `tokenizer.json` ([`HfEncoder`]), and [`generation_eos_ids`] ending
/// generation besides the GGUF end-of-generation set. A folder with a `tokenizer.model` but
/// no `tokenizer.json` encodes with tinyrt's own (llama.cpp's) SentencePiece tokenizer.
pub fn folder_tokenizer(
    dir: &Path,
    arch: &str,
    config: &J,
) -> Result<super::Tokenizer, TokenizerError> {
    let mut entries = gguf_metadata(dir, arch, config)?;
    entries.insert(
        0,
        (
            "general.architecture".to_owned(),
            Value::String(arch.to_owned()),
        ),
    );
    let md = crate::gguf::Metadata::from_entries(entries)?;
    let json = dir.join("tokenizer.json");
    let mut tok = if json.is_file() {
        super::Tokenizer::from_gguf_with_encoder(&md, HfEncoder::from_file(&json)?)?
    } else {
        super::Tokenizer::from_gguf(&md)?
    };
    tok.add_eog_ids(&generation_eos_ids(dir)?)?;
    Ok(tok)
}

/// A Hugging Face `tokenizer.json` run by the `tokenizers` crate: the ids
/// `tokenizers.Tokenizer.from_file(path).encode(text, add_special_tokens).ids` gives.
pub struct HfEncoder {
    /// Special added tokens in the text are recognised.
    parse: tokenizers::Tokenizer,
    /// Special added tokens in the text are plain text (made on first use).
    literal: OnceLock<tokenizers::Tokenizer>,
    n_vocab: usize,
}

impl std::fmt::Debug for HfEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfEncoder")
            .field("n_vocab", &self.n_vocab)
            .finish_non_exhaustive()
    }
}

impl HfEncoder {
    /// Load `tokenizer.json`. A file that is not JSON, has no supported `model.type` or that
    /// `tokenizers` rejects is a [`TokenizerError::File`].
    pub fn from_file(path: &Path) -> Result<HfEncoder, TokenizerError> {
        let bytes = read_opt(path)?.ok_or_else(|| file_err(path, "missing"))?;
        HfEncoder::from_bytes(&bytes).map_err(|e| match e {
            TokenizerError::File { message, .. } => file_err(path, message),
            e => e,
        })
    }

    /// Load a `tokenizer.json` from its bytes (errors name the file `tokenizer.json`).
    pub fn from_bytes(json: &[u8]) -> Result<HfEncoder, TokenizerError> {
        let name = Path::new("tokenizer.json");
        let value: J = serde_json::from_slice(json)
            .map_err(|e| file_err(name, format!("not valid JSON: {e}")))?;
        check_model_type(name, &value)?;
        let mut parse = guard(|| tokenizers::Tokenizer::from_bytes(json))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| file_err(name, e))?;
        // A `tokenizer.json` saved with padding or truncation settings (BERT classifiers'
        // `Fixed(128)`) would pad every text with [PAD] or cut it: the runtime sizes and
        // truncates sequences itself, so both are off (Python's `encode` of such a file pads).
        parse.with_padding(None);
        parse
            .with_truncation(None)
            .map_err(|e| file_err(name, e.to_string()))?;
        let n_vocab = parse.get_vocab_size(true);
        Ok(HfEncoder {
            parse,
            literal: OnceLock::new(),
            n_vocab,
        })
    }

    /// Size of the vocabulary with the added tokens.
    pub fn vocab_size(&self) -> usize {
        self.n_vocab
    }

    /// The ids of `text`: the post-processor's special tokens when `add_special` (Python's
    /// `add_special_tokens=True`); special added tokens written in the text recognised when
    /// `parse_special`, else taken as text (`encode_special_tokens`; non-special added
    /// tokens are always recognised, as llama.cpp's user-defined tokens are). Bytes that are
    /// not UTF-8 become U+FFFD first.
    pub fn encode(
        &self,
        text: &[u8],
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let text = String::from_utf8_lossy(text);
        let tok = if parse_special {
            &self.parse
        } else {
            self.literal.get_or_init(|| {
                let mut t = self.parse.clone();
                t.set_encode_special_tokens(true);
                t
            })
        };
        let enc = guard(|| tok.encode_fast(&*text, add_special))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| TokenizerError::Invalid(format!("tokenizers: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }
}

/// Runs `f`, turning a panic inside the `tokenizers` crate into an error.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| "the tokenizers library panicked".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_tokenizer_json_is_a_file_error() {
        let good = br#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"a":0,"[UNK]":1},"unk_token":"[UNK]"}}"#;
        let enc = HfEncoder::from_bytes(good).unwrap();
        assert_eq!(enc.encode(b"a", true, true).unwrap(), vec![0]);
        let half = &good[..good.len() / 2];
        let wrong = String::from_utf8_lossy(good).replace("WordLevel", "Bogus");
        for bad in [half, b"not json".as_slice(), wrong.as_bytes(), b"{}"] {
            match HfEncoder::from_bytes(bad) {
                Err(TokenizerError::File { path, .. }) => assert_eq!(path, "tokenizer.json"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn pre_tokenizer_families() {
        let split = |r: &str| {
            serde_json::json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated"},
                {"type": "ByteLevel", "use_regex": false}]}})
        };
        assert_eq!(
            bpe_pre_name(&split(LLAMA3_REGEX), "llama").unwrap(),
            "llama-bpe"
        );
        assert_eq!(bpe_pre_name(&split(QWEN2_REGEX), "qwen3").unwrap(), "qwen2");
        assert_eq!(
            bpe_pre_name(&split(QWEN2_REGEX), "stablelm").unwrap(),
            "stablelm2"
        );
        let gpt2 = serde_json::json!({"pre_tokenizer": {"type": "ByteLevel", "use_regex": true}});
        assert_eq!(bpe_pre_name(&gpt2, "phi2").unwrap(), "phi-2");
        assert_eq!(bpe_pre_name(&gpt2, "llama").unwrap(), "gpt-2");
        let smollm = serde_json::json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "use_regex": true}]}});
        assert_eq!(bpe_pre_name(&smollm, "llama").unwrap(), "smollm");
        let metaspace = serde_json::json!({"pre_tokenizer": {"type": "Metaspace"}});
        for unknown in [split(r"\w+"), metaspace, serde_json::json!({})] {
            assert!(matches!(
                bpe_pre_name(&unknown, "llama"),
                Err(TokenizerError::Unsupported(_))
            ));
        }
    }
}
