//! The Unigram tokenizer's per-vocabulary data (built by the vocabulary loader, read by
//! `ugm.rs`): SentencePiece's precompiled character map and the token classes the lattice uses.

use std::collections::HashSet;

use super::attr;
use super::TokenizerError;

/// The precompiled normalization map of SentencePiece: a XOR-compressed compact double
/// array (XCDA) over input bytes whose leaves point to NUL-terminated replacements.
#[derive(Debug, Default)]
pub(crate) struct CharsMap {
    nodes: Vec<u32>,
    replacements: Vec<u8>,
}

impl CharsMap {
    /// `blob`: u32 LE size of the XCDA, the XCDA entries, then the replacement strings.
    pub(crate) fn parse(blob: &[u8]) -> Result<CharsMap, TokenizerError> {
        let bad = |m: &str| TokenizerError::Invalid(format!("precompiled_charsmap: {m}"));
        let head: [u8; 4] = blob
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| bad("too small"))?;
        let size = u32::from_le_bytes(head) as usize;
        if size.checked_add(4).is_none_or(|end| end >= blob.len()) || !size.is_multiple_of(4) {
            return Err(bad("XCDA size beyond the data"));
        }
        let nodes = blob[4..4 + size]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(CharsMap {
            nodes,
            replacements: blob[4 + size..].to_vec(),
        })
    }

    fn node(&self, i: usize) -> Result<u32, TokenizerError> {
        self.nodes.get(i).copied().ok_or_else(|| {
            TokenizerError::Invalid("precompiled_charsmap: index out of bounds".into())
        })
    }
    fn base(&self, i: usize) -> Result<usize, TokenizerError> {
        let n = self.node(i)?;
        Ok(((n >> 10) << ((n & (1 << 9)) >> 6)) as usize)
    }

    /// Longest input prefix with a replacement: `(consumed bytes, replacement)`.
    pub(crate) fn longest_match(
        &self,
        input: &[u8],
    ) -> Result<Option<(usize, &[u8])>, TokenizerError> {
        if self.nodes.is_empty() {
            return Ok(None);
        }
        let mut best = None;
        let mut index = self.base(0)?;
        for (k, &c) in input.iter().enumerate() {
            if c == 0 {
                break;
            }
            index ^= c as usize;
            let node = self.node(index)?;
            if node & ((1 << 31) | 0xFF) != c as u32 {
                break;
            }
            let leaf = (node >> 8) & 1 == 1;
            index ^= self.base(index)?;
            if leaf {
                best = Some((k + 1, (self.node(index)? & ((1 << 31) - 1)) as usize));
            }
        }
        let Some((len, offset)) = best else {
            return Ok(None);
        };
        let rest = self.replacements.get(offset..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).ok_or_else(|| {
            TokenizerError::Invalid("precompiled_charsmap: unterminated replacement".into())
        })?;
        Ok(Some((len, &rest[..end])))
    }
}

/// Per-vocabulary Unigram data.
#[derive(Debug, Default)]
pub(crate) struct UgmData {
    pub(crate) charsmap: CharsMap,
    /// Tokens the lattice may use (normal, user-defined, unused; by their file types).
    pub(crate) matchable: Vec<bool>,
    pub(crate) user_defined: Vec<bool>,
    /// Every prefix of every user-defined token text (llama.cpp's trie walk).
    pub(crate) user_prefixes: HashSet<Vec<u8>>,
    pub(crate) unknown_score: f64,
    pub(crate) remove_extra_whitespaces: bool,
}

impl UgmData {
    pub(crate) fn new(
        vocab_texts: impl Fn(usize) -> Vec<u8>,
        type_attrs: &[u32],
        scores: &[f32],
        charsmap: CharsMap,
        remove_extra_whitespaces: bool,
    ) -> UgmData {
        let mut min_score = f32::MAX;
        let mut matchable = vec![false; type_attrs.len()];
        let mut user_defined = vec![false; type_attrs.len()];
        let mut user_prefixes = HashSet::new();
        for (id, &a) in type_attrs.iter().enumerate() {
            if a & attr::NORMAL != 0 {
                min_score = min_score.min(scores[id]);
            }
            matchable[id] = a & (attr::NORMAL | attr::USER_DEFINED | attr::UNUSED) != 0;
            if a & attr::USER_DEFINED != 0 {
                user_defined[id] = true;
                let text = vocab_texts(id);
                for l in 1..=text.len() {
                    user_prefixes.insert(text[..l].to_vec());
                }
            }
        }
        UgmData {
            charsmap,
            matchable,
            user_defined,
            user_prefixes,
            unknown_score: min_score as f64 - 10.0,
            remove_extra_whitespaces,
        }
    }
}
