//! BPE pre-tokenizers: split a text fragment into words before merging.
//!
//! Which splitting a vocabulary uses is named by `tokenizer.ggml.pre`; the list of patterns
//! per name follows llama.cpp (`llm_tokenizer_bpe` in llama-vocab.cpp). Patterns are
//! applied one after another, each splitting the pieces left by the previous one. The
//! GPT-2, Llama-3, Qwen2 and Qwen3.5 patterns are matched by hand-written scanners that
//! reproduce llama.cpp's own scanners (which differ from a true regex engine in corner
//! cases, e.g. trailing whitespace); other patterns run on [`super::regex::Pattern`].

use super::regex::{Pattern, PatternError};
use super::unicode::{decode_lenient, encode_utf8, flags, gpt2_byte_to_cp, CpFlags};

/// The GPT-2 pattern: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`.
const GPT2: &str = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
/// Llama 3: `(?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
const LLAMA3: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/// Qwen2: Llama 3 with single digits.
const QWEN2: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/// Qwen3.5: Qwen2 with combining marks joining letter runs.
const QWEN35: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const NEWLINES: &str = "[^\\n]+|[\\n]+";

/// One splitting step.
#[derive(Debug)]
enum Splitter {
    Gpt2,
    /// The Llama-3 family; `max_digits` is 3 for Llama 3 and 1 for Qwen2; `marks` joins
    /// combining marks to letter runs (Qwen3.5).
    Llama3 {
        max_digits: usize,
        marks: bool,
    },
    Newlines,
    Regex(Pattern),
}

impl Splitter {
    fn from_pattern(p: &str) -> Result<Splitter, PatternError> {
        Ok(match p {
            GPT2 => Splitter::Gpt2,
            LLAMA3 => Splitter::Llama3 {
                max_digits: 3,
                marks: false,
            },
            QWEN2 => Splitter::Llama3 {
                max_digits: 1,
                marks: false,
            },
            QWEN35 => Splitter::Llama3 {
                max_digits: 1,
                marks: true,
            },
            NEWLINES => Splitter::Newlines,
            _ => Splitter::Regex(Pattern::new(p)?),
        })
    }
}

/// The pre-tokenizer of a BPE vocabulary.
#[derive(Debug)]
pub(crate) struct PreTokenizer {
    splitters: Vec<Splitter>,
    /// Map each byte of a word to its GPT-2 code point (byte-level BPE).
    pub(crate) byte_encode: bool,
    byte_map: [u32; 256],
}

/// Patterns and flags of a pre-tokenizer name (llama.cpp's `tokenizer.ggml.pre` values).
pub(crate) struct PreSpec {
    pub(crate) patterns: &'static [&'static str],
    pub(crate) byte_encode: bool,
    /// A word that is itself a token is not merged (llama.cpp `ignore_merges`).
    pub(crate) ignore_merges: bool,
    /// BOS is added unless `tokenizer.ggml.add_bos_token` says otherwise.
    pub(crate) add_bos: bool,
    /// The vocabulary has no BOS token whatever the metadata says (ChatGLM).
    pub(crate) no_bos: bool,
    /// Spaces are replaced by U+2581 before splitting (SentencePiece-style BPE, Gemma 4).
    pub(crate) escape_whitespaces: bool,
    /// A word made of newlines only is one token when the vocabulary has it (Gemma 4).
    pub(crate) newline_words: bool,
    /// BOS is added even when `tokenizer.ggml.add_bos_token` is false (Gemma 4).
    pub(crate) force_bos: bool,
}

impl PreTokenizer {
    pub(crate) fn new(spec: &PreSpec) -> Result<PreTokenizer, PatternError> {
        let splitters = spec
            .patterns
            .iter()
            .map(|p| Splitter::from_pattern(p))
            .collect::<Result<_, _>>()?;
        Ok(PreTokenizer {
            splitters,
            byte_encode: spec.byte_encode,
            byte_map: gpt2_byte_to_cp(),
        })
    }

    /// Split `text` into words (byte-encoded when the vocabulary is byte-level), calling
    /// `word` for each.
    pub(crate) fn split(&self, text: &[u8], mut word: impl FnMut(&[u8])) {
        let mut cps = Vec::new();
        decode_lenient(text, &mut cps);
        let mut offsets = vec![cps.len()];
        for s in &self.splitters {
            let mut next = Vec::with_capacity(offsets.len() * 2);
            let mut start = 0;
            let units = match s {
                Splitter::Regex(p) => p.prepare(&cps),
                _ => Vec::new(),
            };
            for &len in &offsets {
                let (lo, hi) = (start, start + len);
                match s {
                    Splitter::Gpt2 => split_gpt2(&cps, lo, hi, &mut next),
                    Splitter::Llama3 { max_digits, marks } => {
                        split_llama3(&cps, lo, hi, *max_digits, *marks, &mut next)
                    }
                    Splitter::Newlines => split_newlines(&cps, lo, hi, &mut next),
                    Splitter::Regex(p) => p.split_chunk(&units, lo, hi, &mut next),
                }
                start = hi;
            }
            offsets = next;
        }
        let mut buf = Vec::new();
        let mut utf8 = Vec::with_capacity(4);
        let mut start = 0;
        for len in offsets {
            buf.clear();
            for &cp in &cps[start..start + len] {
                if self.byte_encode {
                    utf8.clear();
                    encode_utf8(cp, &mut utf8);
                    for &b in &utf8 {
                        encode_utf8(self.byte_map[b as usize], &mut buf);
                    }
                } else {
                    encode_utf8(cp, &mut buf);
                }
            }
            start += len;
            word(&buf);
        }
    }
}

/// Code points and flags of one fragment `cps[lo..hi]`; outside it a position has no code
/// point and no flag at all.
struct Fragment<'a> {
    cps: &'a [u32],
    lo: usize,
    hi: usize,
}

impl Fragment<'_> {
    #[inline]
    fn cp(&self, pos: usize) -> Option<u32> {
        (self.lo <= pos && pos < self.hi).then(|| self.cps[pos])
    }
    #[inline]
    fn flags(&self, pos: usize) -> CpFlags {
        match self.cp(pos) {
            Some(c) => flags(c),
            None => CpFlags::NONE,
        }
    }
}

/// Appends the word lengths of one fragment; remembers where the last word ended.
struct Words<'a> {
    out: &'a mut Vec<usize>,
    prev_end: usize,
}

impl Words<'_> {
    /// Ends a word at `end`; returns its length.
    fn add(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push(len);
        }
        self.prev_end = end;
        len
    }
}

/// Matches `'s|'t|'m|'d` / `'re|'ve|'ll` at `pos` (case-folded when `fold`); returns the length.
fn contraction(f: &Fragment, pos: usize, fold: bool) -> Option<usize> {
    if f.cp(pos)? != '\'' as u32 || pos + 1 >= f.hi {
        return None;
    }
    // Only ASCII letters lower-case to the contraction letters, so ASCII folding equals
    // llama.cpp's full `unicode_tolower` here.
    let low = |c: Option<u32>| match c {
        Some(c) if fold && (0x41..=0x5A).contains(&c) => Some(c + 0x20),
        c => c,
    };
    let c1 = low(f.cp(pos + 1))?;
    if [b's', b't', b'm', b'd'].iter().any(|&b| c1 == b as u32) {
        return Some(2);
    }
    if pos + 2 < f.hi {
        let c2 = low(f.cp(pos + 2))?;
        let pair = |a: u8, b: u8| c1 == a as u32 && c2 == b as u32;
        if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
            return Some(3);
        }
    }
    None
}

/// Whitespace run at `pos`: its length and the end of its last `\r`/`\n` (0 if none).
fn whitespace_run(f: &Fragment, pos: usize) -> (usize, usize) {
    let mut n = 0;
    let mut last_newline_end = 0;
    while f.flags(pos + n).is_whitespace() {
        if matches!(f.cp(pos + n), Some(0x0A | 0x0D)) {
            last_newline_end = pos + n + 1;
        }
        n += 1;
    }
    (n, last_newline_end)
}

/// llama.cpp's hand-written GPT-2 splitter.
fn split_gpt2(cps: &[u32], lo: usize, hi: usize, out: &mut Vec<usize>) {
    let f = Fragment { cps, lo, hi };
    let mut w = Words { out, prev_end: lo };
    let mut pos = lo;
    while pos < hi {
        let cp = f.cp(pos).unwrap_or(0);
        if let Some(n) = contraction(&f, pos, false) {
            pos += w.add(pos + n);
            continue;
        }
        let space = cp == ' ' as u32;
        let mut f2 = if space {
            f.flags(pos + 1)
        } else {
            f.flags(pos)
        };
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
        let classes: [fn(CpFlags) -> bool; 3] = [
            |g| g.is_letter(),
            |g| g.is_number(),
            |g| !(g.is_whitespace() || g.is_letter() || g.is_number()) && g.any(),
        ];
        if let Some(class) = classes.iter().find(|c| c(f2)) {
            pos += usize::from(space);
            while class(f2) {
                pos += 1;
                f2 = f.flags(pos);
            }
            w.add(pos);
            continue;
        }
        let (n, _) = whitespace_run(&f, pos);
        // `\s+(?!\S)`: leave the last whitespace for the next word when more text follows.
        if n > 1 && f.cp(pos + n).is_some() {
            pos += n - 1;
            w.add(pos);
            continue;
        }
        if n > 0 {
            pos += n;
            w.add(pos);
            continue;
        }
        pos += 1;
        w.add(pos);
    }
}

/// llama.cpp's hand-written Llama-3 / Qwen2 / Qwen3.5 splitter.
fn split_llama3(
    cps: &[u32],
    lo: usize,
    hi: usize,
    max_digits: usize,
    marks: bool,
    out: &mut Vec<usize>,
) {
    let f = Fragment { cps, lo, hi };
    let mut w = Words { out, prev_end: lo };
    let letter = |g: CpFlags| g.is_letter() || (marks && g.is_mark());
    let mut pos = lo;
    while pos < hi {
        let cp = f.cp(pos).unwrap_or(0);
        let fl = f.flags(pos);
        if let Some(n) = contraction(&f, pos, true) {
            pos += w.add(pos + n);
            continue;
        }
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if !(cp == 0x0D || cp == 0x0A || fl.is_number()) && (letter(fl) || letter(f.flags(pos + 1)))
        {
            pos += 1;
            while letter(f.flags(pos)) {
                pos += 1;
            }
            w.add(pos);
            continue;
        }
        // `\p{N}{1,max}`
        if fl.is_number() {
            let mut ini = pos;
            while f.flags(pos).is_number() {
                pos += 1;
                if pos - ini >= max_digits {
                    w.add(pos);
                    ini = pos;
                }
            }
            w.add(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (llama.cpp tests the first code point's own flags for
        // "inside the fragment", which lets a lone trailing space through)
        let mut f2 = if cp == ' ' as u32 {
            f.flags(pos + 1)
        } else {
            fl
        };
        let other = |g: CpFlags| !(g.is_whitespace() || letter(g) || g.is_number());
        if other(f2) && fl.any() {
            pos += usize::from(cp == ' ' as u32);
            while other(f2) && f2.any() {
                pos += 1;
                f2 = f.flags(pos);
            }
            while matches!(f.cp(pos), Some(0x0A | 0x0D)) {
                pos += 1;
            }
            w.add(pos);
            continue;
        }
        let (n, last_newline_end) = whitespace_run(&f, pos);
        // `\s*[\r\n]+`
        if last_newline_end > 0 {
            pos = last_newline_end;
            w.add(pos);
            continue;
        }
        // `\s+(?!\S)`
        if n > 1 && f.cp(pos + n).is_some() {
            pos += n - 1;
            w.add(pos);
            continue;
        }
        // `\s+`
        if n > 0 {
            pos += n;
            w.add(pos);
            continue;
        }
        pos += 1;
        w.add(pos);
    }
}

/// `[^\n]+|[\n]+`: alternating runs of newlines and other code points.
fn split_newlines(cps: &[u32], lo: usize, hi: usize, out: &mut Vec<usize>) {
    let mut pos = lo;
    while pos < hi {
        let nl = cps[pos] == 0x0A;
        let start = pos;
        while pos < hi && (cps[pos] == 0x0A) == nl {
            pos += 1;
        }
        out.push(pos - start);
    }
}

/// The patterns llama.cpp uses for a `tokenizer.ggml.pre` value; `None` for an unknown name.
pub(crate) fn spec_for(pre: &str) -> Option<PreSpec> {
    let mut spec = patterns_for(pre)?;
    spec.ignore_merges = matches!(
        pre,
        "minicpm5"
            | "llama3"
            | "llama-v3"
            | "llama-bpe"
            | "falcon3"
            | "falcon-h1"
            | "pixtral"
            | "midm-2.0"
            | "lfm2"
            | "jina-v5-nano"
            | "glm4"
            | "glm5"
            | "tekken"
            | "granite-embed-multi-97m"
    );
    spec.add_bos = matches!(
        pre,
        "llama3"
            | "llama-v3"
            | "llama-bpe"
            | "falcon3"
            | "falcon-h1"
            | "pixtral"
            | "midm-2.0"
            | "lfm2"
            | "jina-v5-nano"
            | "tekken"
            | "chameleon"
    );
    spec.no_bos = matches!(pre, "chatglm-bpe" | "glm4" | "glm5");
    let gemma4 = matches!(pre, "gemma4" | "granite-embed-multi-311m");
    spec.escape_whitespaces = gemma4 || pre == "sarvam-moe";
    spec.newline_words = gemma4;
    spec.force_bos = gemma4;
    Some(spec)
}

fn patterns_for(pre: &str) -> Option<PreSpec> {
    const SMOLLM: &[&str] = &["\\p{N}", GPT2];
    const DEFAULT: &[&str] = &[
        "[\\p{P}\\$\\+<=>\\^~\\|]+",
        GPT2,
        "\\p{N}+",
        "[0-9][0-9][0-9]",
    ];
    let spec = |patterns, byte_encode| {
        Some(PreSpec {
            patterns,
            byte_encode,
            ignore_merges: false,
            add_bos: false,
            no_bos: false,
            escape_whitespaces: false,
            newline_words: false,
            force_bos: false,
        })
    };
    let bytes = |patterns| spec(patterns, true);
    match pre {
        "default" => bytes(DEFAULT),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" | "dbrx" | "smaug-bpe" => bytes(&[LLAMA3]),
        "chatglm-bpe" | "glm4" | "glm5" => bytes(&[LLAMA3]),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan" | "solar-open"
        | "grok-2" => bytes(&[QWEN2]),
        "qwen35" => bytes(&[QWEN35]),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            bytes(SMOLLM)
        }
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0" | "mellum"
        | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion"
        | "granite-docling" | "exaone4" => bytes(&[GPT2]),
        "falcon" => bytes(&[
            "[\\p{P}\\$\\+<=>\\^~\\|`]+",
            GPT2,
            "[0-9][0-9][0-9]",
        ]),
        "deepseek-coder" => bytes(&[
            "[\r\n]",
            "\\s?\\p{L}+",
            "\\s?\\p{P}+",
            "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
            "\\p{N}",
        ]),
        "deepseek-llm" => bytes(&[
            "[\r\n]",
            "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
            "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
            "\\s+$",
            "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
            "\\p{N}+",
        ]),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => bytes(&[
            "\\p{N}{1,3}",
            "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
        ]),
        "poro-chat" | "bloom" | "gpt3-finnish" => bytes(&[" ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+"]),
        "viking" => bytes(&[" ?[^(\\s|.,!?\u{2026}\u{3002}\u{FF0C}\u{3001}\u{964}\u{6D4}\u{60C})]+", "\\p{N}"]),
        "jais-2" => bytes(&["(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}"]),
        "tekken" => bytes(&["[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"]),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => bytes(&["[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"]),
        "seed-coder" => bytes(&["(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"]),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => bytes(&["'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"]),
        "ufakzeka" => bytes(&["[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"]),
        "laguna" => bytes(&[NEWLINES, QWEN2]),
        "minicpm5" => bytes(&[
            "\\p{N}{1,3}",
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ]),
        "superbpe" => bytes(&["\\p{N}+", "(?=(\\d{3})+(?!\\d))"]),
        "chameleon" => bytes(&[
            "<sentinel:[0-9]+>",
            "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
            "([\\t\\n]|    |  )",
            "\\p{N}",
            "[\\p{P}!-/:-@\\[-`{-~]",
            GPT2,
        ]),
        "exaone-moe" => bytes(&["(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"]),
        "granite-embed-multi-97m" => bytes(&["[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"]),
        // SentencePiece-style BPE on raw UTF-8: only newline runs are split off.
        "gemma4" | "granite-embed-multi-311m" | "sarvam-moe" => spec(&[NEWLINES], false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        let spec = spec_for(pre).unwrap();
        let spec = PreSpec {
            byte_encode: false,
            ..spec
        };
        let p = PreTokenizer::new(&spec).unwrap();
        let mut out = Vec::new();
        p.split(text.as_bytes(), |w| {
            out.push(String::from_utf8(w.to_vec()).unwrap())
        });
        out
    }

    #[test]
    fn gpt2_splits_words_and_trailing_space() {
        assert_eq!(
            words("gpt-2", "Hello world's  end  "),
            vec!["Hello", " world", "'s", " ", " end", "  "]
        );
    }

    #[test]
    fn smollm_isolates_digits() {
        assert_eq!(words("smollm", "abc 123"), vec!["abc", " ", "1", "2", "3"]);
    }

    #[test]
    fn llama3_groups_digits_and_newlines() {
        assert_eq!(
            words("llama-bpe", "x 12345\n\n  y"),
            vec!["x", " ", "123", "45", "\n\n", " ", " y"]
        );
        assert_eq!(words("llama-bpe", "I'M ok"), vec!["I", "'M", " ok"]);
        assert_eq!(words("qwen2", "a 12"), vec!["a", " ", "1", "2"]);
    }

    #[test]
    fn every_named_pattern_compiles() {
        for pre in [
            "default",
            "falcon",
            "deepseek-coder",
            "deepseek-llm",
            "deepseek-v3",
            "poro-chat",
            "viking",
            "jais-2",
            "tekken",
            "gpt-4o",
            "seed-coder",
            "bailingmoe",
            "ufakzeka",
            "laguna",
            "minicpm5",
            "superbpe",
            "chameleon",
            "exaone-moe",
            "granite-embed-multi-97m",
            "gemma4",
        ] {
            let spec = spec_for(pre).unwrap();
            PreTokenizer::new(&spec).unwrap_or_else(|e| panic!("{pre}: {e:?}"));
        }
    }
}
