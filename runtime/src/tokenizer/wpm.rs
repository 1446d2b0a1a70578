//! WordPiece for BERT vocabularies, as Hugging Face's `BertTokenizer` does it:
//! clean the text (drop NUL, U+FFFD and control / format characters, `\t` `\n` `\r` being
//! whitespace), split into words on whitespace and around punctuation and CJK ideographs,
//! optionally strip accents (NFD, Hangul syllables into jamo, then drop nonspacing marks) and
//! lower-case, then match each word, prefixed with U+2581 (llama.cpp's phantom-space form of
//! the vocabulary), greedily with the longest tokens; a word that cannot be matched completely,
//! or that is over 100 characters long, becomes `[UNK]`.

use super::bert_data::{NFD_KEPT, SPACING_MARKS};
use super::unicode::{
    decode_lenient, encode_utf8, flags, hangul_jamo, nfd_first, to_lower, CpFlags,
};
use super::vocab::Vocab;

/// `max_input_chars_per_word` of Hugging Face's WordPiece: no GGUF key carries it and every
/// BERT tokenizer uses the default.
const MAX_WORD_CHARS: usize = 100;

pub(crate) fn tokenize(vocab: &Vocab, text: &[u8], out: &mut Vec<u32>) {
    let mut word = Vec::new();
    for w in preprocess(vocab, text) {
        if w.is_empty() {
            continue;
        }
        if std::str::from_utf8(&w).map_or(w.len(), |w| w.chars().count()) > MAX_WORD_CHARS {
            out.extend(vocab.special.unk);
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

/// HF's `clean_text`: NUL, U+FFFD and the Cc / Cf / Co / Cs characters other than the three
/// that count as whitespace are deleted (before whitespace is looked at, so vertical tab,
/// form feed and U+0085 vanish rather than separate words).
fn is_deleted(cp: u32) -> bool {
    cp == 0
        || cp == 0xFFFD
        || (!matches!(cp, 0x09 | 0x0A | 0x0D) && flags(cp).category() == CpFlags::CONTROL)
}

/// Rust's `char::is_whitespace` (the White_Space property), which HF's BERT splitters use.
fn is_whitespace(cp: u32) -> bool {
    char::from_u32(cp).is_some_and(char::is_whitespace)
}

fn is_nonspacing_mark(cp: u32) -> bool {
    if !flags(cp).is_mark() {
        return false;
    }
    let i = SPACING_MARKS.partition_point(|&(first, _)| first <= cp);
    !i.checked_sub(1)
        .is_some_and(|i| SPACING_MARKS[i].0 <= cp && cp <= SPACING_MARKS[i].1)
}

/// The code points of `cp`'s NFD that are not nonspacing marks, appended to `out`.
fn strip_accents(cp: u32, out: &mut Vec<u32>) {
    if let Some((jamo, n)) = hangul_jamo(cp) {
        out.extend_from_slice(&jamo[..n]);
    } else if let Ok(i) = NFD_KEPT.binary_search_by_key(&cp, |&(c, _)| c) {
        out.extend_from_slice(NFD_KEPT[i].1);
    } else {
        let first = nfd_first(cp);
        if !is_nonspacing_mark(first) {
            out.push(first);
        }
    }
}

fn preprocess(vocab: &Vocab, text: &[u8]) -> Vec<Vec<u8>> {
    let mut cps = Vec::new();
    decode_lenient(text, &mut cps);
    let mut words: Vec<Vec<u8>> = vec![Vec::new()];
    let mut normalized = Vec::with_capacity(4);
    for cp in cps {
        if is_deleted(cp) {
            continue;
        }
        if is_whitespace(cp) {
            if words.last().is_some_and(|w| !w.is_empty()) {
                words.push(Vec::new());
            }
            continue;
        }
        normalized.clear();
        if vocab.strip_accents && !is_chinese_char(cp) {
            strip_accents(cp, &mut normalized);
        } else {
            normalized.push(cp);
        }
        for &cp in &normalized {
            let f = flags(cp);
            let isolated = f.category() == CpFlags::PUNCTUATION
                || (cp < 0x7F && f.category() == CpFlags::SYMBOL)
                || is_chinese_char(cp);
            let mut s = Vec::with_capacity(4);
            encode_utf8(if vocab.lowercase { to_lower(cp) } else { cp }, &mut s);
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
    }
    if words.last().is_some_and(|w| w.is_empty()) {
        words.pop();
    }
    words
}
