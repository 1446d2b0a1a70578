//! Compact string storage with an open-addressing hash index.
//!
//! A 262k-entry vocabulary (Gemma 3) must load in milliseconds: all texts live in one byte
//! buffer, and the index is a flat table of entry numbers, so building it costs no
//! allocation per entry.

/// Strings stored back to back, addressed by entry number.
#[derive(Debug, Default)]
pub(crate) struct StringTable {
    bytes: Vec<u8>,
    /// `ends[i]` is the end of entry `i` in `bytes`; entry `i` starts at `ends[i - 1]` (or 0).
    ends: Vec<usize>,
}

impl StringTable {
    pub(crate) fn with_capacity(entries: usize, bytes: usize) -> Self {
        StringTable {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(entries),
        }
    }

    pub(crate) fn push(&mut self, s: &[u8]) {
        self.bytes.extend_from_slice(s);
        self.ends.push(self.bytes.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// FNV-1a style hash, 8 bytes at a time (fast and good enough for token texts).
#[inline]
fn hash(s: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (s.len() as u64);
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x0000_0100_0000_01B3)
            .rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    // Final avalanche (from splitmix64) so that the low bits used for the slot are mixed.
    h ^= h >> 31;
    h = h.wrapping_mul(0x7fb5_d329_728e_a185);
    h ^= h >> 27;
    h
}

const EMPTY: u32 = u32::MAX;

/// Maps a byte string to a `u32` value, with the strings kept in a [`StringTable`].
#[derive(Debug, Default)]
pub(crate) struct StringIndex {
    slots: Vec<u32>,
    mask: usize,
}

/// What to do when a key is inserted twice.
#[derive(Clone, Copy)]
pub(crate) enum OnDuplicate {
    KeepFirst,
    KeepLast,
}

impl StringIndex {
    /// Index the entries of `table`, mapping each entry's text to its entry number.
    pub(crate) fn build(table: &StringTable, dup: OnDuplicate) -> Self {
        let cap = (table.len() * 2).next_power_of_two().max(16);
        let mut idx = StringIndex {
            slots: vec![EMPTY; cap],
            mask: cap - 1,
        };
        for i in 0..table.len() {
            let key = table.get(i);
            let mut slot = hash(key) as usize & idx.mask;
            loop {
                let cur = idx.slots[slot];
                if cur == EMPTY {
                    idx.slots[slot] = i as u32;
                    break;
                }
                if table.get(cur as usize) == key {
                    if let OnDuplicate::KeepLast = dup {
                        idx.slots[slot] = i as u32;
                    }
                    break;
                }
                slot = (slot + 1) & idx.mask;
            }
        }
        idx
    }

    #[inline]
    pub(crate) fn find(&self, table: &StringTable, key: &[u8]) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mut slot = hash(key) as usize & self.mask;
        loop {
            let cur = self.slots[slot];
            if cur == EMPTY {
                return None;
            }
            if table.get(cur as usize) == key {
                return Some(cur);
            }
            slot = (slot + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_entry_and_resolves_duplicates() {
        let mut t = StringTable::default();
        for s in ["a", "bb", "", "a", "héllo"] {
            t.push(s.as_bytes());
        }
        let last = StringIndex::build(&t, OnDuplicate::KeepLast);
        let first = StringIndex::build(&t, OnDuplicate::KeepFirst);
        assert_eq!(last.find(&t, b"a"), Some(3));
        assert_eq!(first.find(&t, b"a"), Some(0));
        assert_eq!(last.find(&t, b"bb"), Some(1));
        assert_eq!(last.find(&t, "héllo".as_bytes()), Some(4));
        assert_eq!(last.find(&t, b""), Some(2));
        assert_eq!(last.find(&t, b"zz"), None);
    }
}
