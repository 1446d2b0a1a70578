//! llama.cpp's Unigram tokenizer (`llm_tokenizer_ugm`, T5-style SentencePiece): normalize
//! with the vocabulary's precompiled character map, then pick the segmentation with the
//! highest total score (Viterbi over byte offsets); runs of unknown code points become one
//! `<unk>`.

use super::ugm_data::UgmData;
use super::vocab::Vocab;
use super::TokenizerError;

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
