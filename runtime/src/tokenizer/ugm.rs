//! llama.cpp's Unigram tokenizer (`llm_tokenizer_ugm`, T5-style SentencePiece): normalize
//! with the vocabulary's precompiled character map, then pick the segmentation with the
//! highest total score (Viterbi over byte offsets); runs of unknown code points become one
//! `<unk>`.

use std::collections::HashSet;

use super::vocab::{attr, Vocab};
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
    fn longest_match(&self, input: &[u8]) -> Result<Option<(usize, &[u8])>, TokenizerError> {
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

/// Decodes one code point at `i` with llama.cpp's rules; its length, or None if malformed.
fn utf8_char_len(b: &[u8], i: usize) -> Option<usize> {
    let n = b.len();
    let cont = |k: usize| k < n && b[k] & 0xC0 == 0x80;
    let b0 = b[i];
    if b0 & 0x80 == 0 {
        Some(1)
    } else if b0 & 0x40 == 0 {
        None
    } else if b0 & 0x20 == 0 {
        cont(i + 1).then_some(2)
    } else if b0 & 0x10 == 0 {
        (cont(i + 1) && cont(i + 2)).then_some(3)
    } else if b0 & 0x08 == 0 {
        (cont(i + 1) && cont(i + 2) && cont(i + 3)).then_some(4)
    } else {
        None
    }
}

fn normalize(vocab: &Vocab, ugm: &UgmData, input: &[u8]) -> Result<Vec<u8>, TokenizerError> {
    let space: &[u8] = "\u{2581}".as_bytes();
    let prepend = vocab.add_space_prefix;
    let merge = ugm.remove_extra_whitespaces;
    let mut out = Vec::with_capacity(input.len() * 3);
    let (mut space_prepended, mut in_word) = (false, false);
    let mut i = 0;
    while i < input.len() {
        // A user-defined token text is kept as it is (longest walk of their prefixes).
        let mut user = 0;
        while i + user < input.len() && ugm.user_prefixes.contains(&input[i..i + user + 1]) {
            user += 1;
        }
        let (piece, consumed): (&[u8], usize) = if user > 0 {
            (&input[i..i + user], user)
        } else if let Some((len, repl)) = ugm.charsmap.longest_match(&input[i..])? {
            (repl, len)
        } else {
            match utf8_char_len(input, i) {
                Some(len) => (&input[i..i + len], len),
                None => ("\u{FFFD}".as_bytes(), 1),
            }
        };
        for &c in piece {
            if c != b' ' {
                if !in_word {
                    in_word = true;
                    if (prepend && !space_prepended) || merge {
                        out.extend_from_slice(space);
                        space_prepended = true;
                    }
                }
                out.push(c);
            } else {
                in_word = false;
                if !merge {
                    out.extend_from_slice(space);
                }
            }
        }
        i += consumed;
    }
    Ok(out)
}

#[derive(Clone, Copy)]
struct Best {
    token: Option<u32>,
    from: usize,
    score: f64,
}

pub(crate) fn tokenize(
    vocab: &Vocab,
    ugm: &UgmData,
    text: &[u8],
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    let norm = normalize(vocab, ugm, text)?;
    let n = norm.len();
    if n == 0 {
        return Ok(());
    }
    let unk = vocab.special.unk;
    let mut best = vec![
        Best {
            token: unk,
            from: 0,
            score: -f64::MAX
        };
        n + 1
    ];
    best[0].score = 0.0;
    let mut at = 0;
    while at < n {
        let char_len = super::unicode::utf8_len_from_lead(norm[at]).min(n - at);
        let current = best[at];
        let mut single_char_token = false;
        for end in at + 1..=n.min(at + vocab.max_token_len) {
            let Some(id) = vocab.find(&norm[at..end]) else {
                continue;
            };
            if !ugm.matchable[id as usize] {
                continue;
            }
            if end - at == char_len {
                single_char_token = true;
            }
            let score = if ugm.user_defined[id as usize] {
                0.0
            } else {
                vocab.scores[id as usize] as f64
            };
            let challenger = current.score + score;
            if challenger > best[end].score {
                best[end] = Best {
                    token: Some(id),
                    from: at,
                    score: challenger,
                };
            }
        }
        if !single_char_token {
            let challenger = current.score + ugm.unknown_score;
            let end = at + char_len;
            if challenger > best[end].score {
                best[end] = Best {
                    token: unk,
                    from: at,
                    score: challenger,
                };
            }
        }
        at += char_len;
    }
    // Walk back from the end; consecutive unknowns collapse into one.
    let start = out.len();
    let mut pos = n;
    let mut prev_unknown = false;
    loop {
        let b = best[pos];
        let unknown = b.token == unk;
        if !(prev_unknown && unknown) {
            out.extend(b.token);
        }
        if b.from == 0 {
            break;
        }
        prev_unknown = unknown;
        pos = b.from;
    }
    out[start..].reverse();
    Ok(())
}
