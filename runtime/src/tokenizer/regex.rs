//! A small backtracking regular-expression engine with ECMAScript (`std::regex`) semantics,
//! for the pre-tokenizer patterns llama.cpp runs through `std::regex`/`std::wregex`.
//!
//! llama.cpp matches a pattern that uses `\p{..}` against a *collapsed* text (one unit per
//! code point: ASCII kept, other code points replaced by one byte standing for their
//! category, non-ASCII whitespace by 0x0B) and rewrites each `\p{X}` into a bracket of
//! that byte plus the ASCII members of X. Patterns without `\p{..}` run on the code points
//! (non-ASCII whitespace again replaced by 0x0B). [`Pattern::new`] records which mode a
//! pattern needs and [`Pattern::prepare`] builds the matching unit array, so the matches are
//! those of llama.cpp.
//!
//! Supported syntax: alternation, concatenation, groups `( )`, `(?: )`, look-ahead `(?= )`,
//! `(?! )`, quantifiers `* + ? {n} {n,} {n,m}` (greedy and lazy), bracket classes with ranges
//! and negation, `.`, `^`, `$`, `\b`, `\B`, `\s \S \d \D \w \W`, `\p{L|N|P|M|S|Lu|Ll|Lt|Lm|Lo}`,
//! `\xHH`, `\uHHHH`, control escapes and identity escapes. The matcher is a backtracking VM
//! with a visited set (each program state is explored at most once per position), so it
//! always terminates in time linear in pattern size × text length per search.

use super::unicode::{flags, CpFlags};

/// A malformed or unsupported pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError(pub(crate) String);

/// Category stand-ins of the collapsed text (llama.cpp `unicode_regex_split`).
const COLLAPSED_NUMBER: u32 = 0xD1;
const COLLAPSED_LETTER: u32 = 0xD2;
const COLLAPSED_PUNCTUATION: u32 = 0xD3;
const COLLAPSED_MARK: u32 = 0xD4;
const COLLAPSED_SYMBOL: u32 = 0xD5;
const COLLAPSED_OTHER: u32 = 0xD0;
const VERTICAL_TAB: u32 = 0x0B;

#[derive(Clone, Debug)]
struct ClassSet {
    negated: bool,
    ranges: Vec<(u32, u32)>,
}

impl ClassSet {
    fn matches(&self, c: u32) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= c && c <= b) != self.negated
    }
}

#[derive(Clone, Debug)]
enum Node {
    Empty,
    Class(ClassSet),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
        greedy: bool,
    },
    Look {
        negate: bool,
        node: Box<Node>,
    },
    Start,
    End,
    WordBoundary {
        negate: bool,
    },
}

#[derive(Clone, Debug)]
enum Inst {
    Class(usize),
    Split(usize, usize),
    Jmp(usize),
    Look { negate: bool, prog: usize },
    Start,
    End,
    WordBoundary { negate: bool },
    Match,
}

#[derive(Debug, Default)]
struct Program {
    insts: Vec<Inst>,
}

/// A compiled pattern.
#[derive(Debug)]
pub(crate) struct Pattern {
    classes: Vec<ClassSet>,
    /// `progs[0]` is the main program; the others are look-ahead bodies.
    progs: Vec<Program>,
    collapsed: bool,
}

/// Guard against patterns whose counted repetitions would blow up the program.
const MAX_PROGRAM: usize = 100_000;

impl Pattern {
    pub(crate) fn new(pattern: &str) -> Result<Pattern, PatternError> {
        let collapsed = uses_categories(pattern);
        if collapsed && !pattern.is_ascii() {
            return Err(PatternError(
                "pattern mixes unicode categories and non-ASCII characters".into(),
            ));
        }
        let chars: Vec<u32> = pattern.chars().map(|c| c as u32).collect();
        let mut parser = Parser {
            chars: &chars,
            pos: 0,
        };
        let node = parser.parse_alt()?;
        if parser.pos != chars.len() {
            return Err(PatternError(format!(
                "unbalanced ')' in pattern {pattern:?}"
            )));
        }
        let mut pat = Pattern {
            classes: Vec::new(),
            progs: vec![Program::default()],
            collapsed,
        };
        pat.compile_into(0, &node)?;
        pat.progs[0].insts.push(Inst::Match);
        Ok(pat)
    }

    /// The units the pattern is matched against, one per code point.
    pub(crate) fn prepare(&self, cps: &[u32]) -> Vec<u32> {
        cps.iter()
            .map(|&c| {
                if c < 0x80 {
                    return c;
                }
                let f = flags(c);
                if f.is_whitespace() {
                    return VERTICAL_TAB;
                }
                if !self.collapsed {
                    return c;
                }
                match f.category() {
                    CpFlags::NUMBER => COLLAPSED_NUMBER,
                    CpFlags::LETTER => COLLAPSED_LETTER,
                    CpFlags::PUNCTUATION => COLLAPSED_PUNCTUATION,
                    CpFlags::MARK => COLLAPSED_MARK,
                    CpFlags::SYMBOL => COLLAPSED_SYMBOL,
                    _ => COLLAPSED_OTHER,
                }
            })
            .collect()
    }

    fn compile_into(&mut self, prog: usize, node: &Node) -> Result<(), PatternError> {
        if self.progs[prog].insts.len() > MAX_PROGRAM {
            return Err(PatternError("pattern too large".into()));
        }
        match node {
            Node::Empty => {}
            Node::Class(set) => {
                self.classes.push(set.clone());
                let id = self.classes.len() - 1;
                self.progs[prog].insts.push(Inst::Class(id));
            }
            Node::Concat(nodes) => {
                for n in nodes {
                    self.compile_into(prog, n)?;
                }
            }
            Node::Alt(alts) => {
                // Split(a, next) chains; every branch jumps to the common end.
                let mut jumps = Vec::new();
                for (i, alt) in alts.iter().enumerate() {
                    if i + 1 < alts.len() {
                        let split = self.progs[prog].insts.len();
                        self.progs[prog].insts.push(Inst::Split(split + 1, 0));
                        self.compile_into(prog, alt)?;
                        jumps.push(self.progs[prog].insts.len());
                        self.progs[prog].insts.push(Inst::Jmp(0));
                        let next = self.progs[prog].insts.len();
                        self.progs[prog].insts[split] = Inst::Split(split + 1, next);
                    } else {
                        self.compile_into(prog, alt)?;
                    }
                }
                let end = self.progs[prog].insts.len();
                for j in jumps {
                    self.progs[prog].insts[j] = Inst::Jmp(end);
                }
            }
            Node::Repeat {
                node,
                min,
                max,
                greedy,
            } => {
                for _ in 0..*min {
                    self.compile_into(prog, node)?;
                }
                match max {
                    None => {
                        // L: Split(body, exit); body; Jmp L
                        let split = self.progs[prog].insts.len();
                        self.progs[prog].insts.push(Inst::Split(0, 0));
                        self.compile_into(prog, node)?;
                        self.progs[prog].insts.push(Inst::Jmp(split));
                        let exit = self.progs[prog].insts.len();
                        self.progs[prog].insts[split] = if *greedy {
                            Inst::Split(split + 1, exit)
                        } else {
                            Inst::Split(exit, split + 1)
                        };
                    }
                    Some(max) => {
                        // Nested optionals: (x(x(x)?)?)?
                        let mut splits = Vec::new();
                        for _ in *min..*max {
                            splits.push(self.progs[prog].insts.len());
                            self.progs[prog].insts.push(Inst::Split(0, 0));
                            self.compile_into(prog, node)?;
                        }
                        let exit = self.progs[prog].insts.len();
                        for s in splits {
                            self.progs[prog].insts[s] = if *greedy {
                                Inst::Split(s + 1, exit)
                            } else {
                                Inst::Split(exit, s + 1)
                            };
                        }
                    }
                }
            }
            Node::Look { negate, node } => {
                self.progs.push(Program::default());
                let sub = self.progs.len() - 1;
                self.compile_into(sub, node)?;
                self.progs[sub].insts.push(Inst::Match);
                self.progs[prog].insts.push(Inst::Look {
                    negate: *negate,
                    prog: sub,
                });
            }
            Node::Start => self.progs[prog].insts.push(Inst::Start),
            Node::End => self.progs[prog].insts.push(Inst::End),
            Node::WordBoundary { negate } => self.progs[prog]
                .insts
                .push(Inst::WordBoundary { negate: *negate }),
        }
        Ok(())
    }

    /// Split `units[lo..hi]` like llama.cpp's `unicode_regex_split_stl`: every match and every
    /// gap between matches becomes a piece; the lengths are appended to `out` (empty pieces
    /// are dropped, they produce no tokens).
    pub(crate) fn split_chunk(&self, units: &[u32], lo: usize, hi: usize, out: &mut Vec<usize>) {
        let mut m = Matcher::new(self, units, lo, hi);
        let mut prev_end = lo;
        let mut search_from = lo;
        let mut not_null_at: Option<usize> = None;
        loop {
            let found = match not_null_at.take() {
                Some(p) => m.match_at(0, p, true).map(|e| (p, e)).or_else(|| {
                    if p < hi {
                        m.search(p + 1)
                    } else {
                        None
                    }
                }),
                None => m.search(search_from),
            };
            let Some((s, e)) = found else { break };
            if s > prev_end {
                out.push(s - prev_end);
            }
            if e > s {
                out.push(e - s);
            }
            prev_end = e;
            if e == s {
                not_null_at = Some(e);
            } else {
                search_from = e;
            }
            if e >= hi && e > s {
                break;
            }
        }
        if prev_end < hi {
            out.push(hi - prev_end);
        }
    }
}

fn uses_categories(pattern: &str) -> bool {
    [
        "\\p{N}", "\\p{L}", "\\p{P}", "\\p{M}", "\\p{S}", "\\p{Lu}", "\\p{Ll}", "\\p{Lt}",
        "\\p{Lm}", "\\p{Lo}",
    ]
    .iter()
    .any(|c| pattern.contains(c))
}

struct Parser<'a> {
    chars: &'a [u32],
    pos: usize,
}

fn err<T>(msg: &str) -> Result<T, PatternError> {
    Err(PatternError(msg.to_string()))
}

impl Parser<'_> {
    fn peek(&self) -> Option<u32> {
        self.chars.get(self.pos).copied()
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c as u32) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn parse_alt(&mut self) -> Result<Node, PatternError> {
        let mut alts = vec![self.parse_concat()?];
        while self.eat('|') {
            alts.push(self.parse_concat()?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alt(alts)
        })
    }

    fn parse_concat(&mut self) -> Result<Node, PatternError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' as u32 || c == ')' as u32 {
                break;
            }
            let atom = self.parse_atom()?;
            let atom = self.parse_quantifier(atom)?;
            items.push(atom);
        }
        Ok(Node::Concat(items))
    }

    fn parse_quantifier(&mut self, atom: Node) -> Result<Node, PatternError> {
        let (min, max) = match self.peek() {
            Some(c) if c == '*' as u32 => {
                self.pos += 1;
                (0, None)
            }
            Some(c) if c == '+' as u32 => {
                self.pos += 1;
                (1, None)
            }
            Some(c) if c == '?' as u32 => {
                self.pos += 1;
                (0, Some(1))
            }
            Some(c) if c == '{' as u32 => {
                let save = self.pos;
                self.pos += 1;
                match self.parse_braces()? {
                    Some(q) => q,
                    None => {
                        self.pos = save;
                        return Ok(atom);
                    }
                }
            }
            _ => return Ok(atom),
        };
        if matches!(
            atom,
            Node::Start | Node::End | Node::WordBoundary { .. } | Node::Look { .. }
        ) {
            return err("quantifier after an assertion");
        }
        if let Some(max) = max {
            if max < min {
                return err("bad repetition range");
            }
        }
        if min > 1000 || max.is_some_and(|m| m > 1000) {
            return err("repetition count too large");
        }
        let greedy = !self.eat('?');
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
            greedy,
        })
    }

    /// After `{`: `n}`, `n,}` or `n,m}`.
    fn parse_braces(&mut self) -> Result<Option<(u32, Option<u32>)>, PatternError> {
        let Some(min) = self.parse_number() else {
            return err("bad repetition");
        };
        if self.eat('}') {
            return Ok(Some((min, Some(min))));
        }
        if !self.eat(',') {
            return err("bad repetition");
        }
        if self.eat('}') {
            return Ok(Some((min, None)));
        }
        let Some(max) = self.parse_number() else {
            return err("bad repetition");
        };
        if !self.eat('}') {
            return err("bad repetition");
        }
        Ok(Some((min, Some(max))))
    }

    fn parse_number(&mut self) -> Option<u32> {
        let start = self.pos;
        let mut v: u32 = 0;
        while let Some(d) = self.peek().and_then(|c| char::from_u32(c)?.to_digit(10)) {
            v = v.saturating_mul(10).saturating_add(d);
            self.pos += 1;
        }
        (self.pos > start).then_some(v)
    }

    fn parse_atom(&mut self) -> Result<Node, PatternError> {
        let Some(c) = self.peek() else {
            return err("unexpected end of pattern");
        };
        self.pos += 1;
        match char::from_u32(c).unwrap_or('\0') {
            '(' => {
                let look = if self.eat('?') {
                    if self.eat(':') {
                        None
                    } else if self.eat('=') {
                        Some(false)
                    } else if self.eat('!') {
                        Some(true)
                    } else {
                        return err("unsupported group syntax");
                    }
                } else {
                    None
                };
                let inner = self.parse_alt()?;
                if !self.eat(')') {
                    return err("missing ')'");
                }
                Ok(match look {
                    Some(negate) => Node::Look {
                        negate,
                        node: Box::new(inner),
                    },
                    None => inner,
                })
            }
            '[' => self.parse_bracket(),
            '.' => Ok(Node::Class(ClassSet {
                negated: true,
                ranges: vec![(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)],
            })),
            '^' => Ok(Node::Start),
            '$' => Ok(Node::End),
            '\\' => self.parse_escape_atom(),
            '*' | '+' | '?' => err("nothing to repeat"),
            _ => Ok(Node::Class(ClassSet {
                negated: false,
                ranges: vec![(c, c)],
            })),
        }
    }

    fn parse_escape_atom(&mut self) -> Result<Node, PatternError> {
        match self.peek().and_then(char::from_u32) {
            Some('b') => {
                self.pos += 1;
                Ok(Node::WordBoundary { negate: false })
            }
            Some('B') => {
                self.pos += 1;
                Ok(Node::WordBoundary { negate: true })
            }
            _ => {
                let mut set = ClassSet {
                    negated: false,
                    ranges: Vec::new(),
                };
                match self.parse_class_escape(&mut set.ranges)? {
                    Escape::Char(c) => set.ranges.push((c, c)),
                    Escape::Set { negated } => set.negated = negated,
                }
                Ok(Node::Class(set))
            }
        }
    }

    /// Parses the escape after `\`. Class escapes add their ranges to `ranges`.
    fn parse_class_escape(&mut self, ranges: &mut Vec<(u32, u32)>) -> Result<Escape, PatternError> {
        let Some(c) = self.peek() else {
            return err("trailing backslash");
        };
        self.pos += 1;
        let ch = char::from_u32(c).unwrap_or('\0');
        let digit = [(0x30, 0x39)];
        let word = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)];
        let space = [(0x09, 0x0D), (0x20, 0x20)];
        Ok(match ch {
            'd' | 'D' | 'w' | 'W' | 's' | 'S' => {
                let r: &[(u32, u32)] = match ch.to_ascii_lowercase() {
                    'd' => &digit,
                    'w' => &word,
                    _ => &space,
                };
                if ch.is_ascii_uppercase() {
                    // Negated escape: complement of r over all units.
                    ranges.extend(complement(r));
                } else {
                    ranges.extend_from_slice(r);
                }
                Escape::Set { negated: false }
            }
            'p' => {
                if !self.eat('{') {
                    return err("bad \\p escape");
                }
                let start = self.pos;
                while self.peek().is_some_and(|c| c != '}' as u32) {
                    self.pos += 1;
                }
                let name: String = self.chars[start..self.pos]
                    .iter()
                    .filter_map(|&c| char::from_u32(c))
                    .collect();
                if !self.eat('}') {
                    return err("bad \\p escape");
                }
                let (unit, ascii): (u32, &[(u32, u32)]) = match name.as_str() {
                    "N" => (COLLAPSED_NUMBER, &[(0x30, 0x39)]),
                    "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => {
                        (COLLAPSED_LETTER, &[(0x41, 0x5A), (0x61, 0x7A)])
                    }
                    "P" => (
                        COLLAPSED_PUNCTUATION,
                        &[
                            (0x21, 0x23),
                            (0x25, 0x2A),
                            (0x2C, 0x2F),
                            (0x3A, 0x3B),
                            (0x3F, 0x40),
                            (0x5B, 0x5D),
                            (0x5F, 0x5F),
                            (0x7B, 0x7B),
                            (0x7D, 0x7D),
                        ],
                    ),
                    "M" => (COLLAPSED_MARK, &[]),
                    "S" => (
                        COLLAPSED_SYMBOL,
                        &[
                            (0x24, 0x24),
                            (0x2B, 0x2B),
                            (0x3C, 0x3E),
                            (0x5E, 0x5E),
                            (0x60, 0x60),
                            (0x7C, 0x7C),
                            (0x7E, 0x7E),
                        ],
                    ),
                    _ => return err("unsupported unicode property"),
                };
                ranges.push((unit, unit));
                ranges.extend_from_slice(ascii);
                Escape::Set { negated: false }
            }
            'n' => Escape::Char(0x0A),
            'r' => Escape::Char(0x0D),
            't' => Escape::Char(0x09),
            'f' => Escape::Char(0x0C),
            'v' => Escape::Char(0x0B),
            '0' => Escape::Char(0),
            'x' => Escape::Char(self.parse_hex(2)?),
            'u' => Escape::Char(self.parse_hex(4)?),
            'c' => {
                let Some(l) = self.peek() else {
                    return err("bad \\c escape");
                };
                self.pos += 1;
                Escape::Char(l % 32)
            }
            c if c.is_ascii_alphanumeric() => return err("unsupported escape"),
            _ => Escape::Char(c),
        })
    }

    fn parse_hex(&mut self, n: usize) -> Result<u32, PatternError> {
        let mut v = 0;
        for _ in 0..n {
            let Some(d) = self
                .peek()
                .and_then(char::from_u32)
                .and_then(|c| c.to_digit(16))
            else {
                return err("bad hex escape");
            };
            v = v * 16 + d;
            self.pos += 1;
        }
        Ok(v)
    }

    fn parse_bracket(&mut self) -> Result<Node, PatternError> {
        let negated = self.eat('^');
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return err("missing ']'");
            };
            if c == ']' as u32 && !first {
                self.pos += 1;
                break;
            }
            first = false;
            let lo = self.parse_class_atom(&mut ranges)?;
            let Some(lo) = lo else { continue };
            // A range `a-b` unless '-' is last.
            if self.peek() == Some('-' as u32)
                && self
                    .chars
                    .get(self.pos + 1)
                    .is_some_and(|&c| c != ']' as u32)
            {
                self.pos += 1;
                let hi = self.parse_class_atom(&mut ranges)?;
                let Some(hi) = hi else {
                    return err("bad class range");
                };
                if hi < lo {
                    return err("bad class range");
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Node::Class(ClassSet { negated, ranges }))
    }

    /// One member of a bracket: a single unit (returned) or a class escape (added to `ranges`).
    fn parse_class_atom(
        &mut self,
        ranges: &mut Vec<(u32, u32)>,
    ) -> Result<Option<u32>, PatternError> {
        let Some(c) = self.peek() else {
            return err("missing ']'");
        };
        self.pos += 1;
        if c != '\\' as u32 {
            return Ok(Some(c));
        }
        if self.eat('b') {
            return Ok(Some(0x08));
        }
        match self.parse_class_escape(ranges)? {
            Escape::Char(c) => Ok(Some(c)),
            Escape::Set { .. } => Ok(None),
        }
    }
}

enum Escape {
    Char(u32),
    Set { negated: bool },
}

fn complement(r: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut next = 0u32;
    for &(a, b) in r {
        if a > next {
            out.push((next, a - 1));
        }
        next = b + 1;
    }
    out.push((next, u32::MAX));
    out
}

fn is_word_unit(c: u32) -> bool {
    c == '_' as u32 || (c < 0x80 && (c as u8).is_ascii_alphanumeric())
}

/// Matching state over one chunk `units[lo..hi]`.
struct Matcher<'a> {
    pat: &'a Pattern,
    units: &'a [u32],
    lo: usize,
    hi: usize,
    /// Per program: visited bits (pc × position) and the bits set since the last clear.
    visited: Vec<Vec<u64>>,
    touched: Vec<Vec<usize>>,
    /// Per look-ahead program and position: 0 unknown, 1 matches, 2 does not.
    look_cache: Vec<Vec<u8>>,
    stack: Vec<(usize, usize)>,
}

impl<'a> Matcher<'a> {
    fn new(pat: &'a Pattern, units: &'a [u32], lo: usize, hi: usize) -> Self {
        let width = hi - lo + 1;
        let visited = pat
            .progs
            .iter()
            .map(|p| vec![0u64; (p.insts.len() * width).div_ceil(64)])
            .collect();
        let touched = pat.progs.iter().map(|_| Vec::new()).collect();
        let look_cache = pat.progs.iter().map(|_| Vec::new()).collect();
        Matcher {
            pat,
            units,
            lo,
            hi,
            visited,
            touched,
            look_cache,
            stack: Vec::new(),
        }
    }

    /// Leftmost match starting at or after `from`: `(start, end)`.
    fn search(&mut self, from: usize) -> Option<(usize, usize)> {
        (from..=self.hi).find_map(|s| self.match_at(0, s, false).map(|e| (s, e)))
    }

    fn clear_visited(&mut self, prog: usize) {
        let touched = std::mem::take(&mut self.touched[prog]);
        for &w in &touched {
            self.visited[prog][w] = 0;
        }
        self.touched[prog] = touched;
        self.touched[prog].clear();
    }

    /// Runs program `prog` anchored at `start`; returns the end of the first match in
    /// priority order. With `not_null`, an empty match is rejected.
    fn match_at(&mut self, prog: usize, start: usize, not_null: bool) -> Option<usize> {
        let width = self.hi - self.lo + 1;
        let base = self.stack.len();
        self.stack.push((0, start));
        let mut result = None;
        'threads: while self.stack.len() > base {
            let Some((mut pc, mut pos)) = self.stack.pop() else {
                break;
            };
            loop {
                let bit = pc * width + (pos - self.lo);
                let (w, b) = (bit / 64, bit % 64);
                if self.visited[prog][w] & (1 << b) != 0 {
                    continue 'threads;
                }
                if self.visited[prog][w] == 0 {
                    self.touched[prog].push(w);
                }
                self.visited[prog][w] |= 1 << b;
                match &self.pat.progs[prog].insts[pc] {
                    Inst::Match => {
                        if not_null && pos == start {
                            continue 'threads;
                        }
                        result = Some(pos);
                        break 'threads;
                    }
                    Inst::Class(id) => {
                        if pos < self.hi && self.pat.classes[*id].matches(self.units[pos]) {
                            pc += 1;
                            pos += 1;
                        } else {
                            continue 'threads;
                        }
                    }
                    Inst::Split(a, b) => {
                        self.stack.push((*b, pos));
                        pc = *a;
                    }
                    Inst::Jmp(a) => pc = *a,
                    Inst::Start => {
                        if pos == self.lo {
                            pc += 1;
                        } else {
                            continue 'threads;
                        }
                    }
                    Inst::End => {
                        if pos == self.hi {
                            pc += 1;
                        } else {
                            continue 'threads;
                        }
                    }
                    Inst::WordBoundary { negate } => {
                        let before = pos > self.lo && is_word_unit(self.units[pos - 1]);
                        let after = pos < self.hi && is_word_unit(self.units[pos]);
                        if (before != after) != *negate {
                            pc += 1;
                        } else {
                            continue 'threads;
                        }
                    }
                    Inst::Look { negate, prog: sub } => {
                        let (negate, sub) = (*negate, *sub);
                        if self.look_cache[sub].is_empty() {
                            self.look_cache[sub] = vec![0u8; width];
                        }
                        let cached = self.look_cache[sub][pos - self.lo];
                        let ok = if cached == 0 {
                            let ok = self.match_at(sub, pos, false).is_some();
                            if ok {
                                // States on the successful path must not count as failures.
                                self.clear_visited(sub);
                            }
                            self.look_cache[sub][pos - self.lo] = if ok { 1 } else { 2 };
                            ok
                        } else {
                            cached == 1
                        };
                        if ok != negate {
                            pc += 1;
                        } else {
                            continue 'threads;
                        }
                    }
                }
            }
        }
        self.stack.truncate(base);
        if result.is_some() && prog == 0 {
            self.clear_visited(0);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pattern: &str, text: &str) -> Vec<String> {
        let pat = Pattern::new(pattern).unwrap();
        let cps: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let units = pat.prepare(&cps);
        let mut lens = Vec::new();
        pat.split_chunk(&units, 0, units.len(), &mut lens);
        let mut out = Vec::new();
        let mut at = 0;
        for l in lens {
            out.push(text.chars().skip(at).take(l).collect());
            at += l;
        }
        out
    }

    #[test]
    fn isolates_numbers() {
        assert_eq!(split("\\p{N}", "ab12c"), vec!["ab", "1", "2", "c"]);
        assert_eq!(split("\\p{N}+", "ab12c٣"), vec!["ab", "12", "c", "٣"]);
        assert_eq!(
            split("[0-9][0-9][0-9]", "12345678"),
            vec!["123", "456", "78"]
        );
    }

    #[test]
    fn alternation_is_leftmost_first() {
        assert_eq!(
            split("'s|'t| ?\\p{L}+|\\s+(?!\\S)", "it's  a"),
            vec!["it", "'s", " ", " a"]
        );
        assert_eq!(split("\\s+$", "a  "), vec!["a", "  "]);
    }

    #[test]
    fn lookahead_and_lazy() {
        assert_eq!(split("(?=(\\d{3})+(?!\\d))", "1234567").concat(), "1234567");
        assert_eq!(split("a+?", "aaa"), vec!["a", "a", "a"]);
        assert_eq!(
            split("\\d{1,3}(?=(?:\\d{3})*\\b)", "1234567"),
            vec!["1", "234", "567"]
        );
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(Pattern::new("(a").is_err());
        assert!(Pattern::new("a)").is_err());
        assert!(Pattern::new("[a").is_err());
        assert!(Pattern::new("*").is_err());
        assert!(Pattern::new("\\p{Han}+").is_err());
        assert!(Pattern::new("\\p{L}é").is_err());
    }
}
