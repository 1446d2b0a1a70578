//! Code point classification and UTF-8 helpers with llama.cpp's exact conventions.
//!
//! The flag table is generated (`runtime/scripts/gen_unicode_tables.py`) from the same
//! Unicode version llama.cpp's `unicode-data.cpp` was built from, so `\p{L}`, `\p{N}`, ...
//! classify every code point as llama.cpp does.

use super::unicode_data::{FLAG_RANGES, LOWERCASE, NFD_FIRST};

/// Category and property bits of one code point (bit values as in llama.cpp's `unicode.h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpFlags(pub(crate) u16);

impl CpFlags {
    pub(crate) const UNDEFINED: u16 = 0x0001;
    pub(crate) const NUMBER: u16 = 0x0002;
    pub(crate) const LETTER: u16 = 0x0004;
    pub(crate) const MARK: u16 = 0x0010;
    pub(crate) const PUNCTUATION: u16 = 0x0020;
    pub(crate) const SYMBOL: u16 = 0x0040;
    pub(crate) const CONTROL: u16 = 0x0080;
    pub(crate) const CATEGORIES: u16 = 0x00FF;
    pub(crate) const WHITESPACE: u16 = 0x0100;

    /// Flags of a position outside the text being split: no bit set at all (llama.cpp's
    /// splitters use this to stop runs at the end of a fragment).
    pub(crate) const NONE: CpFlags = CpFlags(0);

    #[inline]
    pub(crate) fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    #[inline]
    pub(crate) fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    #[inline]
    pub(crate) fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
    #[inline]
    pub(crate) fn is_mark(self) -> bool {
        self.0 & Self::MARK != 0
    }
    /// Any bit set: the position is inside the text.
    #[inline]
    pub(crate) fn any(self) -> bool {
        self.0 != 0
    }
    #[inline]
    pub(crate) fn category(self) -> u16 {
        self.0 & Self::CATEGORIES
    }
}

/// Flags of one code point; values beyond U+10FFFF are UNDEFINED.
pub(crate) fn flags(cp: u32) -> CpFlags {
    if cp >= 0x11_0000 {
        return CpFlags(CpFlags::UNDEFINED);
    }
    // Index of the last range starting at or before `cp` (the table starts at 0).
    let idx = FLAG_RANGES.partition_point(|&(start, _)| start <= cp) - 1;
    CpFlags(FLAG_RANGES[idx].1)
}

/// Simple lowercase mapping (llama.cpp `unicode_tolower`).
pub(crate) fn to_lower(cp: u32) -> u32 {
    match LOWERCASE.binary_search_by_key(&cp, |&(c, _)| c) {
        Ok(i) => LOWERCASE[i].1,
        Err(_) => cp,
    }
}

/// The first code point of the NFD form (llama.cpp `unicode_cpts_normalize_nfd`).
pub(crate) fn nfd_first(cp: u32) -> u32 {
    let i = NFD_FIRST.partition_point(|&(first, _, _)| first <= cp);
    match i.checked_sub(1).map(|i| NFD_FIRST[i]) {
        Some((first, last, nfd)) if first <= cp && cp <= last => nfd,
        _ => cp,
    }
}

/// Unicode's arithmetic decomposition of a precomposed Hangul syllable into its leading
/// consonant, vowel and (when there is one) trailing consonant jamo; `None` for any other
/// code point.
pub(crate) fn hangul_jamo(cp: u32) -> Option<([u32; 3], usize)> {
    const S_BASE: u32 = 0xAC00;
    const L_BASE: u32 = 0x1100;
    const V_BASE: u32 = 0x1161;
    const T_BASE: u32 = 0x11A7;
    const V_COUNT: u32 = 21;
    const T_COUNT: u32 = 28;
    const S_COUNT: u32 = 19 * V_COUNT * T_COUNT;
    let s = cp.checked_sub(S_BASE).filter(|&s| s < S_COUNT)?;
    let l = L_BASE + s / (V_COUNT * T_COUNT);
    let v = V_BASE + (s % (V_COUNT * T_COUNT)) / T_COUNT;
    let t = s % T_COUNT;
    Some(if t == 0 {
        ([l, v, 0], 2)
    } else {
        ([l, v, T_BASE + t], 3)
    })
}

/// Byte length of a UTF-8 sequence judged by its first byte alone (llama.cpp's
/// `unicode_len_utf8`: continuation bytes count as 1, 0xF8..=0xFF as 4).
#[inline]
pub(crate) fn utf8_len_from_lead(b: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(b >> 4) as usize]
}

/// Decode bytes into code points the way llama.cpp's `unicode_cpts_from_utf8` does:
/// a malformed sequence becomes U+FFFD and decoding resumes at the next byte.
/// Overlong forms and surrogates are accepted as they are (no validation beyond
/// the lead/continuation bit patterns).
pub(crate) fn decode_lenient(bytes: &[u8], out: &mut Vec<u32>) {
    out.clear();
    out.reserve(bytes.len());
    let mut i = 0;
    let n = bytes.len();
    let cont = |b: u8| b & 0xC0 == 0x80;
    while i < n {
        let b0 = bytes[i];
        if b0 & 0x80 == 0 {
            out.push(b0 as u32);
            i += 1;
        } else if b0 & 0x40 == 0 {
            out.push(0xFFFD);
            i += 1;
        } else if b0 & 0x20 == 0 {
            if i + 1 < n && cont(bytes[i + 1]) {
                out.push(((b0 as u32 & 0x1F) << 6) | (bytes[i + 1] as u32 & 0x3F));
                i += 2;
            } else {
                out.push(0xFFFD);
                i += 1;
            }
        } else if b0 & 0x10 == 0 {
            if i + 2 < n && cont(bytes[i + 1]) && cont(bytes[i + 2]) {
                out.push(
                    ((b0 as u32 & 0x0F) << 12)
                        | ((bytes[i + 1] as u32 & 0x3F) << 6)
                        | (bytes[i + 2] as u32 & 0x3F),
                );
                i += 3;
            } else {
                out.push(0xFFFD);
                i += 1;
            }
        } else if b0 & 0x08 == 0 {
            if i + 3 < n && cont(bytes[i + 1]) && cont(bytes[i + 2]) && cont(bytes[i + 3]) {
                out.push(
                    ((b0 as u32 & 0x07) << 18)
                        | ((bytes[i + 1] as u32 & 0x3F) << 12)
                        | ((bytes[i + 2] as u32 & 0x3F) << 6)
                        | (bytes[i + 3] as u32 & 0x3F),
                );
                i += 4;
            } else {
                out.push(0xFFFD);
                i += 1;
            }
        } else {
            out.push(0xFFFD);
            i += 1;
        }
    }
}

/// Encode one code point as UTF-8 like llama.cpp's `unicode_cpt_to_utf8`: surrogates are
/// encoded like any other value, and the values up to 0x1FFFFF that [`decode_lenient`] can
/// produce from 4-byte forms are encoded back to the same 4 bytes.
pub(crate) fn encode_utf8(cp: u32, out: &mut Vec<u8>) {
    if cp <= 0x7F {
        out.push(cp as u8);
    } else if cp <= 0x7FF {
        out.push(0xC0 | ((cp >> 6) & 0x1F) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    } else if cp <= 0xFFFF {
        out.push(0xE0 | ((cp >> 12) & 0x0F) as u8);
        out.push(0x80 | ((cp >> 6) & 0x3F) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    } else {
        out.push(0xF0 | ((cp >> 18) & 0x07) as u8);
        out.push(0x80 | ((cp >> 12) & 0x3F) as u8);
        out.push(0x80 | ((cp >> 6) & 0x3F) as u8);
        out.push(0x80 | (cp & 0x3F) as u8);
    }
}

/// GPT-2's reversible byte → code point map (bytes that are printable Latin-1 map to
/// themselves; the rest are shifted to U+0100 and up, in byte order).
pub(crate) fn gpt2_byte_to_cp() -> [u32; 256] {
    let mut map = [0u32; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        if printable {
            map[b as usize] = b;
        } else {
            map[b as usize] = next;
            next += 1;
        }
    }
    map
}

/// Inverse of [`gpt2_byte_to_cp`] for code points below 0x144 (the largest value used).
pub(crate) fn gpt2_cp_to_byte(cp: u32) -> Option<u8> {
    static INVERSE: std::sync::OnceLock<[i16; 0x144]> = std::sync::OnceLock::new();
    let inv = INVERSE.get_or_init(|| {
        let mut inv = [-1i16; 0x144];
        for (b, &cp) in gpt2_byte_to_cp().iter().enumerate() {
            inv[cp as usize] = b as i16;
        }
        inv
    });
    let v = *inv.get(cp as usize)?;
    u8::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_of_known_code_points() {
        assert!(flags('a' as u32).is_letter());
        assert!(flags('7' as u32).is_number());
        assert!(flags(' ' as u32).is_whitespace());
        assert!(flags(0x3000).is_whitespace());
        assert!(flags(0x0301).is_mark());
        assert_eq!(flags('!' as u32).category(), CpFlags::PUNCTUATION);
        assert_eq!(flags('$' as u32).category(), CpFlags::SYMBOL);
        assert!(flags(0x4E2D).is_letter()); // 中
        assert_eq!(flags(0x10FFFF).category(), CpFlags::UNDEFINED);
        assert_eq!(flags(0x110000).category(), CpFlags::UNDEFINED);
    }

    #[test]
    fn case_and_nfd_tables() {
        assert_eq!(to_lower('A' as u32), 'a' as u32);
        assert_eq!(to_lower(0x0130), 'i' as u32);
        assert_eq!(to_lower('a' as u32), 'a' as u32);
        assert_eq!(nfd_first(0x00E9), 'e' as u32); // é
        assert_eq!(nfd_first('e' as u32), 'e' as u32);
        assert_eq!(nfd_first(0xAC00), 0x1100); // 가 → ᄀ
    }

    #[test]
    fn hangul_syllables_decompose_arithmetically() {
        assert_eq!(hangul_jamo(0xAC00), Some(([0x1100, 0x1161, 0], 2))); // 가
        assert_eq!(hangul_jamo(0xC548), Some(([0x110B, 0x1161, 0x11AB], 3))); // 안
        assert_eq!(hangul_jamo(0xD7A3), Some(([0x1112, 0x1175, 0x11C2], 3))); // 힣
        assert_eq!(hangul_jamo(0xD7A4), None);
        assert_eq!(hangul_jamo(0xABFF), None);
    }

    #[test]
    fn lenient_decoding_replaces_bad_bytes() {
        let mut cps = Vec::new();
        decode_lenient(b"a\xC3\xA9\xFF\xE2\x82", &mut cps);
        assert_eq!(cps, vec![0x61, 0xE9, 0xFFFD, 0xFFFD, 0xFFFD]);
    }

    #[test]
    fn gpt2_byte_map_is_a_bijection() {
        let map = gpt2_byte_to_cp();
        assert_eq!(map[b' ' as usize], 0x120); // 'Ġ'
        assert_eq!(map[b'\n' as usize], 0x10A); // 'Ċ'
        for b in 0..=255u8 {
            assert_eq!(gpt2_cp_to_byte(map[b as usize]), Some(b));
        }
        assert_eq!(gpt2_cp_to_byte(0x4E2D), None);
    }
}
