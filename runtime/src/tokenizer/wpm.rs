//! llama.cpp's WordPiece tokenizer (`llm_tokenizer_wpm_session`) for BERT vocabularies:
//! split into words on whitespace and around punctuation and CJK ideographs (optionally
//! lower-cased and accent-stripped), then match each word, prefixed with U+2581, greedily
//! with the longest tokens; a word that cannot be matched completely becomes `[UNK]`.

use super::unicode::{decode_lenient, encode_utf8, flags, nfd_first, to_lower, CpFlags};
use super::vocab::Vocab;

pub(crate) fn tokenize(vocab: &Vocab, text: &[u8], out: &mut Vec<u32>) {
    let mut word = Vec::new();
    for w in preprocess(vocab, text) {
        if w.is_empty() {
            continue;
        }
        word.clear();
        word.extend_from_slice("\u{2581}".as_bytes());
        word.extend_from_slice(&w);
        let n = word.len();
        let start = out.len();
        let mut i = 0;
        while i < n {
            let longest = (i + 1..=n.min(i + vocab.max_token_len + 1))
                .rev()
                .find_map(|j| vocab.find(&word[i..j]).map(|id| (j, id)));
            match longest {
                Some((j, id)) => {
                    out.push(id);
                    i = j;
                }
                None => {
                    out.truncate(start);
                    break;
                }
            }
        }
        if out.len() == start {
            out.extend(vocab.special.unk);
        }
    }
}

fn is_chinese_char(cp: u32) -> bool {
    // Ranges of the HF BertPreTokenizer (0x2B920 rather than 0x2B820, as there).
    matches!(cp,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

fn preprocess(vocab: &Vocab, text: &[u8]) -> Vec<Vec<u8>> {
    let mut cps = Vec::new();
    decode_lenient(text, &mut cps);
    let mut words: Vec<Vec<u8>> = vec![Vec::new()];
    for mut cp in cps {
        if vocab.strip_accents {
            cp = nfd_first(cp);
        }
        let f = flags(cp);
        if f.is_whitespace() {
            if words.last().is_some_and(|w| !w.is_empty()) {
                words.push(Vec::new());
            }
            continue;
        }
        if cp == 0 || cp == 0xFFFD || f.category() == CpFlags::CONTROL {
            continue;
        }
        if vocab.strip_accents && f.is_mark() {
            continue;
        }
        let mut s = Vec::with_capacity(4);
        encode_utf8(if vocab.lowercase { to_lower(cp) } else { cp }, &mut s);
        let isolated = f.category() == CpFlags::PUNCTUATION
            || (cp < 0x7F && f.category() == CpFlags::SYMBOL)
            || is_chinese_char(cp);
        let Some(last) = words.last_mut() else {
            continue;
        };
        if isolated {
            if !last.is_empty() {
                words.push(Vec::new());
            }
            if let Some(last) = words.last_mut() {
                *last = s;
            }
            words.push(Vec::new());
        } else {
            last.extend_from_slice(&s);
        }
    }
    if words.last().is_some_and(|w| w.is_empty()) {
        words.pop();
    }
    words
}
