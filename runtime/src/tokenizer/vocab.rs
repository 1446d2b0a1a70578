//! The vocabulary: token texts, scores, attributes, merges, special ids and flags, built
//! from `tokenizer.ggml.*` metadata with llama.cpp's defaults and fix-ups
//! (`llama_vocab::impl::load` in llama-vocab.cpp).

use super::index::{OnDuplicate, StringIndex, StringTable};
use super::pretokenize::{spec_for, PreTokenizer};
use super::TokenizerError;

use super::attr;

/// The tokenization algorithm of a vocabulary (`tokenizer.ggml.model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece-style: score-driven merging, byte fallback (`llama`).
    Spm,
    /// Byte-level BPE with ranked merges (`gpt2`; `gemma4` on raw UTF-8).
    Bpe,
    /// BERT WordPiece: greedy longest match per word (`bert`).
    Wpm,
    /// Unigram with a precompiled normalization map (`t5`).
    Ugm,
}

/// Everything the tokenizer reads from `tokenizer.ggml.*` (and `general.name`,
/// `general.architecture`), independent of the GGUF reader.
#[derive(Clone, Debug, Default)]
pub struct VocabSource<'a> {
    /// `tokenizer.ggml.model`.
    pub model: &'a str,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<&'a str>,
    pub tokens: &'a [String],
    pub scores: Option<&'a [f32]>,
    /// Integer scores (llama.cpp accepts an INT32 array too); used when `scores` is None.
    pub scores_i32: Option<&'a [i32]>,
    pub token_types: Option<&'a [i32]>,
    pub merges: Option<&'a [String]>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.ggml.add_sep_token`.
    pub add_sep: Option<bool>,
    /// `tokenizer.ggml.normalizer.lowercase` (WordPiece).
    pub lowercase: Option<bool>,
    /// `tokenizer.ggml.normalizer.strip_accents` (WordPiece; defaults to `lowercase`).
    pub strip_accents: Option<bool>,
    /// `tokenizer.ggml.precompiled_charsmap` (Unigram).
    pub precompiled_charsmap: Option<&'a [u8]>,
    /// `tokenizer.ggml.remove_extra_whitespaces` (Unigram).
    pub remove_extra_whitespaces: Option<bool>,
    /// `general.name` (a few per-model attribute fix-ups key on it).
    pub general_name: Option<&'a str>,
    /// `general.architecture`.
    pub architecture: Option<&'a str>,
}

/// Special token ids (None where the vocabulary has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct Vocab {
    pub(crate) kind: VocabKind,
    pub(crate) texts: StringTable,
    pub(crate) index: StringIndex,
    pub(crate) scores: Vec<f32>,
    pub(crate) attrs: Vec<u32>,
    /// Merge lines `"left right"`, indexed with the first occurrence winning (its rank).
    pub(crate) merges: StringTable,
    pub(crate) merge_index: StringIndex,
    pub(crate) pre: Option<PreTokenizer>,
    pub(crate) ignore_merges: bool,
    /// Spaces become U+2581 before BPE and back when decoding (SentencePiece-style BPE).
    pub(crate) escape_whitespaces: bool,
    /// A word made of newlines only is one token when the vocabulary has it.
    pub(crate) newline_words: bool,
    pub(crate) special: SpecialTokens,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
    pub(crate) add_space_prefix: bool,
    pub(crate) add_sep: bool,
    pub(crate) lowercase: bool,
    pub(crate) strip_accents: bool,
    pub(crate) ugm: Option<super::ugm_data::UgmData>,
    /// Longest token text in bytes (bounds the WordPiece search).
    pub(crate) max_token_len: usize,
    /// Special/control/user-defined tokens, longest text first.
    pub(crate) special_cache: Vec<u32>,
    /// Positions in `special_cache` by the first two bytes of the text (one-byte texts
    /// under their byte alone), to find the special tokens a text contains in one pass.
    pub(crate) special_by_prefix: std::collections::HashMap<u16, Vec<u32>>,
    pub(crate) special_by_byte: Vec<Vec<u32>>,
    pub(crate) eog: Vec<u32>,
}

/// Texts that make a token an end-of-turn token when `eot_token_id` is absent.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Texts of end-of-generation tokens (llama.cpp's EOG list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

fn type_to_attr(t: i32) -> u32 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => attr::UNDEFINED,
    }
}

impl Vocab {
    pub(crate) fn build(src: &VocabSource<'_>) -> Result<Vocab, TokenizerError> {
        let n = src.tokens.len();
        if n == 0 {
            return Err(TokenizerError::Invalid(
                "the vocabulary has no tokens".into(),
            ));
        }
        if n > i32::MAX as usize {
            return Err(TokenizerError::Invalid(
                "the vocabulary is too large".into(),
            ));
        }
        let kind = match src.model {
            "llama" => VocabKind::Spm,
            "gpt2" | "gemma4" => VocabKind::Bpe,
            "bert" => VocabKind::Wpm,
            "t5" => VocabKind::Ugm,
            other => {
                return Err(TokenizerError::Unsupported(format!(
                    "tokenizer model '{other}'"
                )))
            }
        };
        let n_scores = src
            .scores
            .map(|s| s.len())
            .or(src.scores_i32.map(|s| s.len()));
        if let Some(len) = n_scores {
            if len != n {
                return Err(TokenizerError::Invalid(format!(
                    "{len} scores for {n} tokens"
                )));
            }
        }
        if let Some(t) = src.token_types {
            if t.len() != n {
                return Err(TokenizerError::Invalid(format!(
                    "{} token types for {n} tokens",
                    t.len()
                )));
            }
        }

        // Texts (an empty text becomes "[EMPTY_i]" as in llama.cpp; a duplicate text maps
        // to its last id).
        let total: usize = src.tokens.iter().map(|t| t.len()).sum();
        let mut texts = StringTable::with_capacity(n, total);
        for (i, t) in src.tokens.iter().enumerate() {
            if t.is_empty() {
                texts.push(format!("[EMPTY_{i}]").as_bytes());
            } else {
                texts.push(t.as_bytes());
            }
        }
        let index = StringIndex::build(&texts, OnDuplicate::KeepLast);
        let scores = match (src.scores, src.scores_i32) {
            (Some(s), _) => s.to_vec(),
            (None, Some(s)) => s.iter().map(|&v| v as f32).collect(),
            (None, None) => vec![0.0; n],
        };
        let mut attrs: Vec<u32> = match src.token_types {
            Some(t) => t.iter().map(|&t| type_to_attr(t)).collect(),
            None => vec![attr::NORMAL; n],
        };

        // Model defaults, then the pre-tokenizer's, then the metadata flags.
        let mut special = SpecialTokens::default();
        let (mut add_bos, mut add_eos, mut add_space_prefix, mut add_sep) =
            (false, false, false, false);
        let mut pre = None;
        let (mut ignore_merges, mut escape_whitespaces, mut newline_words, mut force_bos) =
            (false, false, false, false);
        let (mut merges, mut merge_index) = (StringTable::default(), StringIndex::default());
        match kind {
            VocabKind::Spm => {
                special.bos = Some(1);
                special.eos = Some(2);
                special.unk = Some(0);
                add_bos = true;
                add_space_prefix = true;
            }
            VocabKind::Ugm => {
                special.eos = Some(1);
                special.unk = Some(2);
                special.pad = Some(0);
                add_eos = true;
            }
            VocabKind::Wpm => {
                special.bos = Some(101);
                special.unk = Some(100);
                special.sep = Some(102);
                special.pad = Some(0);
                special.mask = Some(103);
                add_bos = true;
                add_sep = true;
            }
            VocabKind::Bpe => {
                // "gemma4" names both the model and its pre-tokenizer, and has no default ids.
                let gemma4 = src.model == "gemma4";
                if !gemma4 {
                    special.bos = Some(11);
                    special.eos = Some(11);
                }
                let lines = src
                    .merges
                    .ok_or(TokenizerError::MissingKey("tokenizer.ggml.merges"))?;
                let total: usize = lines.iter().map(|l| l.len()).sum();
                merges = StringTable::with_capacity(lines.len(), total);
                for (rank, line) in lines.iter().enumerate() {
                    // "left right": the separator is the first space after the first byte.
                    if line.len() < 2 || !line.as_bytes()[1..].contains(&b' ') {
                        return Err(TokenizerError::Invalid(format!(
                            "merge {rank} ({line:?}) is not 'left right'"
                        )));
                    }
                    merges.push(line.as_bytes());
                }
                merge_index = StringIndex::build(&merges, OnDuplicate::KeepFirst);
                let name = if gemma4 {
                    "gemma4"
                } else {
                    src.pre.unwrap_or("default")
                };
                let spec = spec_for(name).ok_or_else(|| {
                    TokenizerError::Unsupported(format!("pre-tokenizer '{name}'"))
                })?;
                pre = Some(PreTokenizer::new(&spec).map_err(|e| {
                    TokenizerError::Invalid(format!("pre-tokenizer '{name}': {}", e.0))
                })?);
                ignore_merges = spec.ignore_merges;
                escape_whitespaces = spec.escape_whitespaces;
                newline_words = spec.newline_words;
                force_bos = spec.force_bos;
                if spec.add_bos {
                    add_bos = true;
                }
                if spec.no_bos {
                    special.bos = None;
                }
            }
        }
        if let Some(v) = src.add_space_prefix {
            add_space_prefix = v;
        }

        // Defaults beyond the vocabulary are disabled; ids from the file must fit.
        let fits = |id: &mut Option<u32>| {
            if id.is_some_and(|v| v as usize >= n) {
                *id = None;
            }
        };
        for id in [
            &mut special.bos,
            &mut special.eos,
            &mut special.unk,
            &mut special.sep,
            &mut special.pad,
            &mut special.mask,
        ] {
            fits(id);
        }
        let from_file: [(&str, Option<u32>, &mut Option<u32>); 14] = [
            ("tokenizer.ggml.bos_token_id", src.bos, &mut special.bos),
            ("tokenizer.ggml.eos_token_id", src.eos, &mut special.eos),
            ("tokenizer.ggml.eot_token_id", src.eot, &mut special.eot),
            ("tokenizer.ggml.eom_token_id", src.eom, &mut special.eom),
            ("tokenizer.ggml.unknown_token_id", src.unk, &mut special.unk),
            (
                "tokenizer.ggml.seperator_token_id",
                src.sep,
                &mut special.sep,
            ),
            ("tokenizer.ggml.padding_token_id", src.pad, &mut special.pad),
            ("tokenizer.ggml.mask_token_id", src.mask, &mut special.mask),
            (
                "tokenizer.ggml.fim_pre_token_id",
                src.fim_pre,
                &mut special.fim_pre,
            ),
            (
                "tokenizer.ggml.fim_suf_token_id",
                src.fim_suf,
                &mut special.fim_suf,
            ),
            (
                "tokenizer.ggml.fim_mid_token_id",
                src.fim_mid,
                &mut special.fim_mid,
            ),
            (
                "tokenizer.ggml.fim_pad_token_id",
                src.fim_pad,
                &mut special.fim_pad,
            ),
            (
                "tokenizer.ggml.fim_rep_token_id",
                src.fim_rep,
                &mut special.fim_rep,
            ),
            (
                "tokenizer.ggml.fim_sep_token_id",
                src.fim_sep,
                &mut special.fim_sep,
            ),
        ];
        for (key, value, slot) in from_file {
            if let Some(v) = value {
                if v as usize >= n {
                    return Err(TokenizerError::SpecialOutOfRange {
                        key,
                        id: v,
                        n_vocab: n,
                    });
                }
                *slot = Some(v);
            }
        }
        if let Some(v) = src.add_bos {
            add_bos = v;
        }
        if let Some(v) = src.add_eos {
            add_eos = v;
        }
        add_bos |= force_bos;
        if let Some(v) = src.add_sep {
            add_sep = v;
        }
        let lowercase = src.lowercase.unwrap_or(true);
        let strip_accents = src.strip_accents.unwrap_or(lowercase);
        let max_token_len = (0..n).map(|i| texts.get(i).len()).max().unwrap_or(0);
        // Unigram data uses the types as the file gives them (before the fix-ups below).
        let ugm = match kind {
            VocabKind::Ugm => {
                let charsmap = match src.precompiled_charsmap {
                    Some(blob) if !blob.is_empty() => super::ugm_data::CharsMap::parse(blob)?,
                    _ => Default::default(),
                };
                Some(super::ugm_data::UgmData::new(
                    |i| texts.get(i).to_vec(),
                    &attrs,
                    &scores,
                    charsmap,
                    src.remove_extra_whitespaces.unwrap_or(false),
                ))
            }
            _ => None,
        };

        let mut vocab = Vocab {
            kind,
            texts,
            index,
            scores,
            attrs: Vec::new(),
            merges,
            merge_index,
            pre,
            ignore_merges,
            escape_whitespaces,
            newline_words,
            special,
            add_bos,
            add_eos,
            add_space_prefix,
            add_sep,
            lowercase,
            strip_accents,
            max_token_len,
            ugm,
            special_cache: Vec::new(),
            special_by_prefix: Default::default(),
            special_by_byte: Vec::new(),
            eog: Vec::new(),
        };
        vocab.detect_special_tokens(&mut attrs);
        vocab.attrs = attrs;
        vocab.build_special_cache();
        vocab.apply_model_attrs(src);
        Ok(vocab)
    }

    pub(crate) fn n_tokens(&self) -> usize {
        self.texts.len()
    }

    #[inline]
    pub(crate) fn text(&self, id: u32) -> &[u8] {
        self.texts.get(id as usize)
    }

    #[inline]
    pub(crate) fn find(&self, text: &[u8]) -> Option<u32> {
        self.index.find(&self.texts, text)
    }

    /// Rank of merging `left` and `right` (lower merges first).
    #[inline]
    pub(crate) fn merge_rank(&self, key: &[u8]) -> Option<u32> {
        self.merge_index.find(&self.merges, key)
    }

    /// Ids of the tokens whose text is one of `texts`, in id order.
    fn ids_with_text(&self, texts: &[&str]) -> Vec<u32> {
        let mut ids: Vec<u32> = texts
            .iter()
            .filter_map(|t| self.find(t.as_bytes()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// llama.cpp's text-based detection of EOT/EOM/FIM tokens, unused tokens and the
    /// end-of-generation set. A detected token that is not a control token becomes one.
    fn detect_special_tokens(&mut self, attrs: &mut [u32]) {
        let detect = |slot: &mut Option<u32>, texts: &[&str], vocab: &Vocab, attrs: &mut [u32]| {
            if slot.is_none() {
                // llama.cpp takes the first hit of an unordered map; take the lowest id.
                if let Some(&id) = vocab.ids_with_text(texts).first() {
                    *slot = Some(id);
                    attrs[id as usize] |= attr::CONTROL;
                }
            }
        };
        let mut s = self.special;
        detect(&mut s.eot, EOT_TEXTS, self, attrs);
        detect(&mut s.eom, EOM_TEXTS, self, attrs);
        detect(&mut s.fim_pre, FIM_PRE_TEXTS, self, attrs);
        detect(&mut s.fim_suf, FIM_SUF_TEXTS, self, attrs);
        detect(&mut s.fim_mid, FIM_MID_TEXTS, self, attrs);
        detect(&mut s.fim_pad, FIM_PAD_TEXTS, self, attrs);
        detect(&mut s.fim_rep, FIM_REP_TEXTS, self, attrs);
        detect(&mut s.fim_sep, FIM_SEP_TEXTS, self, attrs);
        self.special = s;

        // Control tokens named "unused" are unused.
        for (id, a) in attrs.iter_mut().enumerate() {
            if *a & attr::CONTROL != 0 && self.texts.get(id).windows(6).any(|w| w == b"unused") {
                *a |= attr::UNUSED;
            }
        }

        let mut eog: Vec<u32> = [s.fim_pad, s.fim_rep, s.fim_sep]
            .into_iter()
            .flatten()
            .collect();
        for id in self.ids_with_text(EOG_TEXTS) {
            eog.push(id);
            attrs[id as usize] |= attr::CONTROL;
        }
        // gpt-oss: these are always rendered.
        for id in self.ids_with_text(&["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"])
        {
            attrs[id as usize] = attr::USER_DEFINED;
        }
        eog.extend([s.eos, s.eot, s.eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        // o200k_harmony / solar-open: "<|end|>" does not end generation there.
        let has = |eog: &[u32], t: &str| eog.iter().any(|&id| self.text(id) == t.as_bytes());
        let has_call = has(&eog, "<|call|>") || has(&eog, "<|calls|>");
        let has_end = has(&eog, "<|end|>");
        if has_end && has_call && (has(&eog, "<|return|>") || has(&eog, "<|flush|>")) {
            if let Some(pos) = eog.iter().position(|&id| self.text(id) == b"<|end|>") {
                attrs[eog[pos] as usize] = attr::USER_DEFINED;
                eog.remove(pos);
            }
        }
        // Gemma 4 / PLaMo: "</s>" is a normal token there.
        if has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>") {
            if let Some(pos) = eog.iter().position(|&id| self.text(id) == b"</s>") {
                attrs[eog[pos] as usize] = attr::NORMAL;
                eog.remove(pos);
            }
        }
        self.eog = eog;
    }

    fn build_special_cache(&mut self) {
        let mask = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
        let mut cache: Vec<u32> = (0..self.n_tokens() as u32)
            .filter(|&id| self.attrs[id as usize] & mask != 0)
            .collect();
        // Longest first; equal lengths in id order.
        cache.sort_by(|&a, &b| self.text(b).len().cmp(&self.text(a).len()).then(a.cmp(&b)));
        let mut by_byte = vec![Vec::new(); 256];
        let mut by_prefix: std::collections::HashMap<u16, Vec<u32>> = Default::default();
        for (pos, &id) in cache.iter().enumerate() {
            match *self.text(id) {
                [b] => by_byte[b as usize].push(pos as u32),
                [b0, b1, ..] => by_prefix
                    .entry(u16::from_le_bytes([b0, b1]))
                    .or_default()
                    .push(pos as u32),
                [] => {}
            }
        }
        self.special_cache = cache;
        self.special_by_prefix = by_prefix;
        self.special_by_byte = by_byte;
    }

    /// Which entries of `special_cache` occur somewhere in `text`.
    pub(crate) fn specials_in(&self, text: &[u8]) -> Vec<bool> {
        let mut present = vec![false; self.special_cache.len()];
        for i in 0..text.len() {
            for &pos in &self.special_by_byte[text[i] as usize] {
                present[pos as usize] = true;
            }
            if i + 1 < text.len() {
                if let Some(cands) = self
                    .special_by_prefix
                    .get(&u16::from_le_bytes([text[i], text[i + 1]]))
                {
                    for &pos in cands {
                        if !present[pos as usize]
                            && text[i..].starts_with(self.text(self.special_cache[pos as usize]))
                        {
                            present[pos as usize] = true;
                        }
                    }
                }
            }
        }
        present
    }

    /// Per-model attribute fix-ups of llama.cpp (keyed on names, as there).
    fn apply_model_attrs(&mut self, src: &VocabSource<'_>) {
        let name = src.general_name.unwrap_or("").to_ascii_lowercase();
        let pre = src.pre.unwrap_or("");
        let arch = src.architecture.unwrap_or("");
        let contains_any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
        if contains_any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code", "mmbert"])
            || contains_any(arch, &["nomic-bert-moe", "jina-bert-v3"])
        {
            if let Some(id) = self.find(b"<mask>") {
                self.attrs[id as usize] |= attr::LSTRIP;
            }
        } else if contains_any(&name, &["phi-3", "phi3"]) {
            for &id in &self.special_cache {
                self.attrs[id as usize] |= attr::RSTRIP;
            }
            if let Some(id) = self.find(b"</s>") {
                self.attrs[id as usize] |= attr::RSTRIP;
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(id) = self.find(t.as_bytes()) {
                    self.attrs[id as usize] &= !attr::RSTRIP;
                }
            }
        } else if name.contains("modern-bert") {
            if let Some(id) = self.find(b"[MASK]") {
                self.attrs[id as usize] |= attr::LSTRIP;
            }
        }
    }
}
