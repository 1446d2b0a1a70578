//! Unit tests on small hand-made vocabularies (parity with llama.cpp on real vocabularies
//! is tested in `tests/tests/tokenizer.rs`).

use super::*;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// An SPM vocabulary: <unk>, <s>, </s>, 256 byte tokens, then `pieces` (scored by order).
fn spm_vocab(pieces: &[&str]) -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens = strings(&["<unk>", "<s>", "</s>"]);
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    tokens.extend(strings(pieces));
    types.extend(std::iter::repeat_n(1, pieces.len()));
    let scores = (0..tokens.len())
        .map(|i| if i < 259 { 0.0 } else { -(i as f32) })
        .collect();
    (tokens, scores, types)
}

fn spm(pieces: &[&str]) -> Tokenizer {
    let (tokens, scores, types) = spm_vocab(pieces);
    Tokenizer::from_source(&VocabSource {
        model: "llama",
        tokens: &tokens,
        scores: Some(&scores),
        token_types: Some(&types),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn spm_merges_by_score_and_falls_back_to_bytes() {
    let tok = spm(&["▁", "▁h", "▁he", "ll", "llo", "▁hello", "o"]);
    let id = |t: &str| tok.token_id(t).unwrap();
    assert_eq!(tok.encode(b"hello").unwrap(), vec![1, id("▁hello")]);
    // 'x' is not a piece: byte fallback.
    assert_eq!(
        tok.tokenize(b"hex", false, true).unwrap(),
        vec![id("▁he"), 3 + b'x' as u32]
    );
    // Special tokens in the text are recognised, and a space prefix follows them.
    assert_eq!(
        tok.tokenize(b"</s>hello", false, true).unwrap(),
        vec![2, id("▁hello")]
    );
    assert_eq!(
        tok.decode(&tok.encode(b"hello hex").unwrap()).unwrap(),
        " hello hex"
    );
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let tok = spm(&[]);
    let emoji = "😀中".as_bytes();
    let ids = tok.tokenize(emoji, false, false).unwrap();
    // "▁" is not a piece: the dummy prefix space is a 3-byte fallback too.
    assert_eq!(ids.len(), 3 + emoji.len());
    let mut dec = tok.stream_decoder();
    let mut out = Vec::new();
    for &id in &ids {
        out.push(dec.push(id));
    }
    // Byte tokens are not unescaped: the prefix renders as U+2581 itself.
    assert_eq!(out[..3].concat(), "▁");
    assert_eq!(out[3..6], ["", "", ""]);
    assert_eq!(out[6], "😀");
    assert_eq!(out[7..9], ["", ""]);
    assert_eq!(out[9], "中");
    assert_eq!(dec.finish(), "");
}

#[test]
fn stream_decoder_replaces_impossible_bytes() {
    let tok = spm(&[]);
    let byte = |b: u8| 3 + b as u32;
    let mut dec = tok.stream_decoder();
    assert_eq!(dec.push(byte(0xE4)), "");
    // 'a' cannot continue a 3-byte sequence: the lead byte becomes U+FFFD.
    assert_eq!(dec.push(byte(b'a')), "\u{FFFD}a");
    assert_eq!(dec.push(byte(0xF0)), "");
    assert_eq!(dec.push(byte(0x9F)), "");
    assert_eq!(dec.finish(), "\u{FFFD}");
    // Control tokens render as nothing.
    assert_eq!(dec.push(1), "");
}

/// A byte-level BPE vocabulary: the 256 byte symbols, then merged pieces.
fn bpe(pieces: &[&str], merges: &[&str], pre: &str) -> Tokenizer {
    let map = unicode::gpt2_byte_to_cp();
    let mut tokens: Vec<String> = map
        .iter()
        .map(|&cp| char::from_u32(cp).unwrap().to_string())
        .collect();
    tokens.extend(strings(pieces));
    tokens.push("<|endoftext|>".into());
    let merges = strings(merges);
    Tokenizer::from_source(&VocabSource {
        model: "gpt2",
        pre: Some(pre),
        tokens: &tokens,
        merges: Some(&merges),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn bpe_merges_by_rank_and_decodes_bytes() {
    let tok = bpe(
        &["he", "ll", "hell", "Ġw", "ðŁĺ"],
        &["h e", "l l", "he ll", "Ġ w", "ð Ł", "ðŁ ĺ"],
        "gpt-2",
    );
    let id = |t: &str| tok.token_id(t).unwrap();
    let ids = tok.encode("hello w😀".as_bytes()).unwrap();
    assert_eq!(ids[..4], [id("hell"), id("o"), id("Ġw"), id("ðŁĺ")]);
    assert_eq!(tok.decode(&ids).unwrap(), "hello w😀");
    // <|endoftext|> is detected as an end-of-generation control token.
    let eot = id("<|endoftext|>");
    assert!(tok.is_eog(eot));
    assert_eq!(
        tok.tokenize(b"a<|endoftext|>", false, true).unwrap(),
        vec![id("a"), eot]
    );
    assert_eq!(tok.token_to_piece(eot).unwrap(), b"");
    let mut dec = tok.stream_decoder();
    // Stop before the last byte of the emoji: it is held back, then flushed as U+FFFD.
    let pieces: Vec<String> = ids[..4].iter().map(|&i| dec.push(i)).collect();
    assert_eq!(pieces.concat(), "hello w");
    assert_eq!(dec.finish(), "\u{FFFD}");
}

#[test]
fn bad_vocabularies_are_errors() {
    let (tokens, scores, types) = spm_vocab(&["a"]);
    let base = VocabSource {
        model: "llama",
        tokens: &tokens,
        scores: Some(&scores),
        ..Default::default()
    };
    let ok = |s: VocabSource| Tokenizer::from_source(&s).is_ok();
    assert!(ok(base.clone()));
    assert!(!ok(VocabSource {
        token_types: Some(&types[1..]),
        ..base.clone()
    }));
    assert!(!ok(VocabSource {
        scores: Some(&scores[1..]),
        ..base.clone()
    }));
    assert!(!ok(VocabSource {
        eos: Some(tokens.len() as u32),
        ..base.clone()
    }));
    assert!(!ok(VocabSource {
        model: "unknown",
        ..base.clone()
    }));
    assert!(!ok(VocabSource {
        tokens: &[],
        ..base.clone()
    }));
    let merges = strings(&["ab"]);
    assert!(!ok(VocabSource {
        model: "gpt2",
        merges: Some(&merges),
        ..base.clone()
    }));
    assert!(!ok(VocabSource {
        model: "gpt2",
        merges: None,
        ..base.clone()
    }));
    assert!(!ok(VocabSource {
        model: "gpt2",
        pre: Some("no-such-pre"),
        merges: Some(&[]),
        ..base.clone()
    }));

    let tok = Tokenizer::from_source(&base).unwrap();
    let n = tok.n_vocab() as u32;
    assert!(tok.token_to_piece(n).is_err());
    assert!(tok.decode(&[0, n]).is_err());
    assert_eq!(tok.stream_decoder().push(n), "");
}

#[test]
fn wordpiece_lowercases_strips_accents_and_splits_punctuation() {
    let tokens = strings(&[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "▁hello", "▁wor", "ld", "▁,", "▁apfel", "▁!",
    ]);
    let types = [3, 2, 3, 3, 1, 1, 1, 1, 1, 1];
    let tok = Tokenizer::from_source(&VocabSource {
        model: "bert",
        tokens: &tokens,
        token_types: Some(&types),
        bos: Some(2),
        unk: Some(1),
        sep: Some(3),
        ..Default::default()
    })
    .unwrap();
    // "Äpfel" → "apfel"; "xyz" has no pieces → [UNK]; "," and "!" are words of their own.
    assert_eq!(
        tok.encode("Hello, World! Äpfel xyz".as_bytes()).unwrap(),
        vec![2, 4, 7, 5, 6, 9, 8, 1, 3]
    );
    assert_eq!(tok.decode(&[4, 5, 6]).unwrap(), " hello world");
}

#[test]
fn unigram_picks_the_best_segmentation_and_merges_unknowns() {
    let tokens = strings(&["<pad>", "</s>", "<unk>", "▁", "▁ab", "▁a", "b", "c"]);
    let types = [3, 3, 2, 1, 1, 1, 1, 1];
    let scores = [0.0, 0.0, 0.0, -1.0, -1.5, -1.0, -1.0, -3.0];
    let tok = Tokenizer::from_source(&VocabSource {
        model: "t5",
        tokens: &tokens,
        token_types: Some(&types),
        scores: Some(&scores),
        add_space_prefix: Some(true),
        ..Default::default()
    })
    .unwrap();
    // "▁ab▁c": ▁ab + ▁ + c (-5.5) beats ▁a + b + ▁ + c (-6); EOS is added by default.
    assert_eq!(tok.encode(b"ab c").unwrap(), vec![4, 3, 7, 1]);
    // Two unknown code points in a row give one <unk>.
    assert_eq!(
        tok.tokenize("ab xy".as_bytes(), false, false).unwrap(),
        vec![4, 3, 2]
    );
    assert!(super::ugm_data::CharsMap::parse(&[1, 0]).is_err());
    assert!(super::ugm_data::CharsMap::parse(&[8, 0, 0, 0, 1, 2, 3, 4]).is_err());
}
