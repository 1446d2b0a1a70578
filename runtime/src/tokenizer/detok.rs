//! Token → bytes, and a streaming UTF-8-safe detokenizer.

use super::attr;
use super::unicode::{decode_lenient, encode_utf8, gpt2_cp_to_byte};
use super::vocab::{Vocab, VocabKind};
use super::Tokenizer;

/// The bytes of one token as llama.cpp's `token_to_piece` renders them. With
/// `special == false` control and unknown tokens render as nothing.
pub(crate) fn piece(vocab: &Vocab, id: u32, special: bool, out: &mut Vec<u8>) {
    let a = vocab.attrs[id as usize];
    if !special && a & (attr::UNKNOWN | attr::CONTROL) != 0 {
        return;
    }
    let text = vocab.text(id);
    if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        out.extend_from_slice(text);
    } else if a & attr::NORMAL != 0 {
        match vocab.kind {
            VocabKind::Spm | VocabKind::Wpm | VocabKind::Ugm => unescape_whitespace(text, out),
            VocabKind::Bpe if vocab.escape_whitespaces => unescape_whitespace(text, out),
            VocabKind::Bpe => decode_byte_level(text, out),
        }
    } else if a & attr::BYTE != 0 {
        // "<0xNN>"
        if let Some(b) = text
            .get(3..5)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
        }
    }
}

/// U+2581 (the SentencePiece space) → ' '.
fn unescape_whitespace(text: &[u8], out: &mut Vec<u8>) {
    const SPACE: &[u8] = "\u{2581}".as_bytes();
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(SPACE) {
            out.push(b' ');
            i += SPACE.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
}

/// GPT-2 byte-level text → bytes; a code point outside the byte map is written as
/// llama.cpp does (`[UNK_BYTE_0x..<text>]`).
fn decode_byte_level(text: &[u8], out: &mut Vec<u8>) {
    let mut cps = Vec::new();
    decode_lenient(text, &mut cps);
    for cp in cps {
        match gpt2_cp_to_byte(cp) {
            Some(b) => out.push(b),
            None => {
                let mut utf8 = Vec::new();
                encode_utf8(cp, &mut utf8);
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in utf8 {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text);
                out.push(b']');
            }
        }
    }
}

/// Incremental detokenizer: feed ids, get text that never splits a UTF-8 character.
///
/// Bytes of an incomplete sequence at the end are held back until the next token; bytes
/// that can never form a character become U+FFFD (as `String::from_utf8_lossy` would).
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub(crate) fn new(tok: &'a Tokenizer) -> Self {
        StreamDecoder {
            tok,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text completed by it (possibly empty). Ids outside the
    /// vocabulary render as nothing.
    pub fn push(&mut self, id: u32) -> String {
        if (id as usize) < self.tok.n_vocab() {
            piece(&self.tok.vocab, id, false, &mut self.pending);
        }
        self.take_complete()
    }

    /// Adds raw bytes (e.g. a piece rendered elsewhere).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        self.take_complete()
    }

    /// Ends the stream: whatever is held back is emitted (incomplete bytes as U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Invalid bytes that no continuation can fix.
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &rest[valid + n..];
                        }
                        // An incomplete sequence at the end: keep it for later.
                        None => {
                            rest = &rest[valid..];
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let start = self.pending.len() - keep;
        self.pending.drain(..start);
        out
    }
}
