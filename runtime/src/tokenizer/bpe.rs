//! llama.cpp's byte-level BPE (`llm_tokenizer_bpe_session`): pre-tokenize into words, then
//! within each word repeatedly merge the adjacent pair with the lowest merge rank
//! (leftmost on ties).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::unicode::utf8_len_from_lead;
use super::vocab::Vocab;

/// No symbol (the ends of a word's list).
const NONE: u32 = u32::MAX;

/// One symbol of a word being merged: 16 bytes, so a word costs about 16 bytes per byte here
/// and 8 per queued pair (`docs/LIMITS.md`: tokenization memory is linear in the input).
#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// Reusable buffers for merging words.
#[derive(Default)]
pub(crate) struct BpeSession {
    symbols: Vec<Symbol>,
    /// Candidate merges as `rank << 32 | left` (min-heap through `Reverse`): popped in
    /// llama.cpp's order (lowest rank, then leftmost). A popped pair is checked against the
    /// symbols as they are now (see `word`), so no right index or size is stored.
    queue: BinaryHeap<Reverse<u64>>,
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
        // Offsets are u32: a longer word (past 4 GiB, far past any input cap) is merged in
        // pieces of u32::MAX - 1 bytes, cut at a UTF-8 boundary.
        if word.len() >= NONE as usize {
            let mut cut = NONE as usize - 1;
            while cut > 0 && (word[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            self.word(vocab, &word[..cut], out);
            self.word(vocab, &word[cut..], out);
            return;
        }
        self.symbols.clear();
        self.queue.clear();
        let mut offs = 0;
        while offs < word.len() {
            let len = utf8_len_from_lead(word[offs]).min(word.len() - offs);
            let index = self.symbols.len() as u32;
            self.symbols.push(Symbol {
                start: offs as u32,
                len: len as u32,
                prev: if index == 0 { NONE } else { index - 1 },
                next: if offs + len < word.len() {
                    index + 1
                } else {
                    NONE
                },
            });
            offs += len;
        }
        self.symbols.shrink_to_fit();
        let mut initial = Vec::with_capacity(self.symbols.len().saturating_sub(1));
        for i in 1..self.symbols.len() as u32 {
            if let Some(rank) = self.pair_rank(vocab, word, i - 1) {
                initial.push(Reverse(u64::from(rank) << 32 | u64::from(i - 1)));
            }
        }
        self.queue = BinaryHeap::from(initial);
        while let Some(Reverse(entry)) = self.queue.pop() {
            let (rank, left) = ((entry >> 32) as u32, entry as u32);
            // A pair queued before one of its symbols changed no longer has its rank: the
            // pair (left, left.next) now spells another merge line, or left is gone.
            if self.symbols[left as usize].len == 0
                || self.pair_rank(vocab, word, left) != Some(rank)
            {
                continue;
            }
            let right = self.symbols[left as usize].next;
            let r = self.symbols[right as usize];
            self.symbols[left as usize].len += r.len;
            self.symbols[right as usize].len = 0;
            self.symbols[left as usize].next = r.next;
            if r.next != NONE {
                self.symbols[r.next as usize].prev = left;
            }
            let prev = self.symbols[left as usize].prev;
            if prev != NONE {
                self.push_pair(vocab, word, prev);
            }
            self.push_pair(vocab, word, left);
        }
        let byte_encode = vocab.pre.as_ref().is_none_or(|p| p.byte_encode);
        for s in &self.symbols {
            if s.len == 0 {
                continue;
            }
            let piece = &word[s.start as usize..(s.start + s.len) as usize];
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
        // A huge word's buffers are not kept for the next one.
        if self.symbols.capacity() > 1 << 16 {
            self.symbols = Vec::new();
            self.queue = BinaryHeap::new();
        }
    }

    /// The merge rank of the pair (`left`, its next symbol), if it is a merge line.
    fn pair_rank(&mut self, vocab: &Vocab, word: &[u8], left: u32) -> Option<u32> {
        let l = self.symbols[left as usize];
        if l.next == NONE {
            return None;
        }
        let r = self.symbols[l.next as usize];
        self.key.clear();
        self.key
            .extend_from_slice(&word[l.start as usize..(l.start + l.len) as usize]);
        self.key.push(b' ');
        self.key
            .extend_from_slice(&word[r.start as usize..(r.start + r.len) as usize]);
        vocab.merge_rank(&self.key)
    }

    fn push_pair(&mut self, vocab: &Vocab, word: &[u8], left: u32) {
        if let Some(rank) = self.pair_rank(vocab, word, left) {
            self.queue
                .push(Reverse(u64::from(rank) << 32 | u64::from(left)));
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
