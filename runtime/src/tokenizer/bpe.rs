//! llama.cpp's byte-level BPE (`llm_tokenizer_bpe_session`): pre-tokenize into words, then
//! within each word repeatedly merge the adjacent pair with the lowest merge rank
//! (leftmost on ties).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::unicode::utf8_len_from_lead;
use super::vocab::Vocab;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Reusable buffers for merging words.
#[derive(Default)]
pub(crate) struct BpeSession {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Reverse<(u32, usize, usize, usize)>>,
    key: Vec<u8>,
}

impl BpeSession {
    /// Tokenize one text fragment, appending to `out`.
    pub(crate) fn tokenize(&mut self, vocab: &Vocab, text: &[u8], out: &mut Vec<u32>) {
        let Some(pre) = &vocab.pre else { return };
        if vocab.escape_whitespaces {
            let escaped = escape_spaces(text);
            pre.split(&escaped, |word| self.word(vocab, word, out));
        } else {
            pre.split(text, |word| self.word(vocab, word, out));
        }
    }

    fn word(&mut self, vocab: &Vocab, word: &[u8], out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if vocab.ignore_merges || (vocab.newline_words && word.iter().all(|&b| b == b'\n')) {
            if let Some(id) = vocab.find(word) {
                out.push(id);
                return;
            }
        }
        self.symbols.clear();
        self.queue.clear();
        let mut offs = 0;
        while offs < word.len() {
            let len = utf8_len_from_lead(word[offs]).min(word.len() - offs);
            let index = self.symbols.len();
            self.symbols.push(Symbol {
                start: offs,
                len,
                prev: index.checked_sub(1),
                next: (offs + len < word.len()).then_some(index + 1),
            });
            offs += len;
        }
        for i in 1..self.symbols.len() {
            self.add_bigram(vocab, word, Some(i - 1), Some(i));
        }
        while let Some(Reverse((_rank, left, right, size))) = self.queue.pop() {
            let (l, r) = (self.symbols[left], self.symbols[right]);
            // Skip pairs whose symbols changed since they were queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != size {
                continue;
            }
            self.symbols[left].len += r.len;
            self.symbols[right].len = 0;
            self.symbols[left].next = r.next;
            if let Some(n) = r.next {
                self.symbols[n].prev = Some(left);
            }
            let (p, n) = (self.symbols[left].prev, self.symbols[left].next);
            self.add_bigram(vocab, word, p, Some(left));
            self.add_bigram(vocab, word, Some(left), n);
        }
        let byte_encode = vocab.pre.as_ref().is_none_or(|p| p.byte_encode);
        for s in &self.symbols {
            if s.len == 0 {
                continue;
            }
            let piece = &word[s.start..s.start + s.len];
            match vocab.find(piece) {
                Some(id) => out.push(id),
                // Not a token: each byte that is a token on its own (llama.cpp drops the rest);
                // without byte-level encoding, the `<0xNN>` byte tokens.
                None if byte_encode => out.extend(piece.iter().filter_map(|&b| vocab.find(&[b]))),
                None => out.extend(
                    piece
                        .iter()
                        .filter_map(|&b| vocab.find(format!("<0x{b:02X}>").as_bytes())),
                ),
            }
        }
    }

    fn add_bigram(
        &mut self,
        vocab: &Vocab,
        word: &[u8],
        left: Option<usize>,
        right: Option<usize>,
    ) {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (self.symbols[left], self.symbols[right]);
        self.key.clear();
        self.key.extend_from_slice(&word[l.start..l.start + l.len]);
        self.key.push(b' ');
        self.key.extend_from_slice(&word[r.start..r.start + r.len]);
        if let Some(rank) = vocab.merge_rank(&self.key) {
            self.queue.push(Reverse((rank, left, right, l.len + r.len)));
        }
    }
}

/// ' ' → U+2581 (the SentencePiece space).
pub(crate) fn escape_spaces(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    for &b in text {
        if b == b' ' {
            out.extend_from_slice("\u{2581}".as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}
