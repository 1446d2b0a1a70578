//! llama.cpp's GBNF grammars translated into llguidance's Lark dialect.
//!
//! GBNF (llama.cpp `grammars/README.md`, parsed by `src/llama-grammar.cpp`) is a character-level
//! grammar: `name ::= alternatives`, string literals with `\x \u \U \t \r \n \\ \" \[ \]`
//! escapes, character classes `[a-z]` / `[^...]`, `.` (any character), groups, `* + ?` and
//! `{m}`, `{m,}`, `{m,n}`, `{,n}` repetitions, `#` comments; a rule ends at a newline outside
//! parentheses; `root` is the start. Lark in llguidance lexes its literals greedily, which is
//! not GBNF's meaning (`"a" "bc" | "ab" "d"`), so every character becomes its own lexeme: the
//! translation is exact, at some cost in mask speed (JSON schemas do not take this path).

use super::ConstraintError;

fn err(msg: impl Into<String>) -> ConstraintError {
    ConstraintError(format!("bad GBNF grammar: {}", msg.into()))
}

/// The Lark text of a GBNF grammar (start rule `root`).
pub fn gbnf_to_lark(src: &str) -> Result<String, ConstraintError> {
    let mut p = Parser {
        s: src.chars().collect(),
        i: 0,
        line: 1,
        refs: Vec::new(),
    };
    let mut rules: Vec<(String, String)> = Vec::new();
    loop {
        p.space(true);
        if p.eof() {
            break;
        }
        let name = p.name()?;
        p.space(false);
        if !p.eat_str("::=") {
            return Err(p.error(&format!("expected ::= after {name}")));
        }
        p.space(true);
        let body = p.alternates(false)?;
        p.space(false);
        if !p.eof() {
            match p.peek() {
                Some('\r') | Some('\n') => {}
                _ => return Err(p.error("expected the end of the rule")),
            }
        }
        if rules.iter().any(|(n, _)| *n == name) {
            return Err(err(format!("rule {name} is defined twice")));
        }
        rules.push((name, body));
    }
    if !rules.iter().any(|(n, _)| n == "root") {
        return Err(err("no root rule"));
    }
    for (name, line) in &p.refs {
        if !rules.iter().any(|(n, _)| n == name) {
            return Err(err(format!(
                "line {line}: rule {name} is used but not defined"
            )));
        }
    }
    let mut out = String::from("start: r_root\n");
    for (name, body) in &rules {
        out.push_str(&mangle(name));
        out.push_str(": ");
        out.push_str(body);
        out.push('\n');
    }
    Ok(out)
}

const REF: &str = "r_";

/// A GBNF name as a Lark rule name (lowercase): `_` doubled, capitals as `_` + lowercase.
fn mangle(name: &str) -> String {
    let mut s = String::from(REF);
    for c in name.chars() {
        match c {
            'A'..='Z' => {
                s.push('_');
                s.push(c.to_ascii_lowercase());
            }
            '_' => s.push_str("__"),
            _ => s.push(c),
        }
    }
    s
}

struct Parser {
    s: Vec<char>,
    i: usize,
    line: usize,
    /// Every rule reference with its line.
    refs: Vec<(String, usize)>,
}

impl Parser {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        if c == '\n' {
            self.line += 1;
        }
        self.i += 1;
        Some(c)
    }

    fn error(&self, msg: &str) -> ConstraintError {
        err(format!("line {}: {msg}", self.line))
    }

    fn eat_str(&mut self, t: &str) -> bool {
        let n = t.chars().count();
        if self.s.len() >= self.i + n && self.s[self.i..self.i + n].iter().copied().eq(t.chars()) {
            self.i += n;
            true
        } else {
            false
        }
    }

    /// Spaces, tabs and `#` comments; newlines too when `newlines`.
    fn space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => {
                    self.bump();
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n' && c != '\r') {
                        self.bump();
                    }
                }
                '\r' | '\n' if newlines => {
                    self.bump();
                }
                _ => break,
            }
        }
    }

    fn is_word(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '-' || c == '_'
    }

    fn name(&mut self) -> Result<String, ConstraintError> {
        let start = self.i;
        while self.peek().is_some_and(Self::is_word) {
            self.bump();
        }
        if self.i == start {
            return Err(self.error(&format!(
                "expected a rule name, found {:?}",
                self.peek().unwrap_or(' ')
            )));
        }
        Ok(self.s[start..self.i].iter().collect())
    }

    fn alternates(&mut self, nested: bool) -> Result<String, ConstraintError> {
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some('|') {
            self.bump();
            self.space(true);
            alts.push(self.sequence(nested)?);
        }
        Ok(alts.join(" | "))
    }

    fn sequence(&mut self, nested: bool) -> Result<String, ConstraintError> {
        let mut items: Vec<String> = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                '"' => {
                    self.bump();
                    let mut chars = Vec::new();
                    loop {
                        match self.peek() {
                            None => return Err(self.error("unterminated string")),
                            Some('"') => {
                                self.bump();
                                break;
                            }
                            Some(_) => chars.push(self.char_lit()?),
                        }
                    }
                    items.push(match chars.len() {
                        0 => "\"\"".into(),
                        1 => lark_string(chars[0]),
                        _ => format!(
                            "({})",
                            chars
                                .iter()
                                .map(|&c| lark_string(c))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    });
                }
                '[' => {
                    self.bump();
                    let negated = self.peek() == Some('^');
                    if negated {
                        self.bump();
                    }
                    let mut rx = String::from("/[");
                    if negated {
                        rx.push('^');
                    }
                    let mut any = false;
                    loop {
                        match self.peek() {
                            None => return Err(self.error("unterminated character class")),
                            Some(']') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {
                                let lo = self.char_lit()?;
                                rx.push_str(&rx_char(lo));
                                if self.peek() == Some('-') && self.s.get(self.i + 1) != Some(&']')
                                {
                                    self.bump();
                                    if self.eof() {
                                        return Err(self.error("unterminated character class"));
                                    }
                                    let hi = self.char_lit()?;
                                    if hi < lo {
                                        return Err(self.error("a character range runs backwards"));
                                    }
                                    rx.push('-');
                                    rx.push_str(&rx_char(hi));
                                }
                                any = true;
                            }
                        }
                    }
                    if !any {
                        return Err(self.error("empty character class"));
                    }
                    rx.push_str("]/");
                    items.push(rx);
                }
                '.' => {
                    self.bump();
                    items.push(r"/[\x{0}-\x{10FFFF}]/".into());
                }
                '(' => {
                    self.bump();
                    self.space(true);
                    let inner = self.alternates(true)?;
                    self.space(true);
                    if self.peek() != Some(')') {
                        return Err(self.error("expected )"));
                    }
                    self.bump();
                    items.push(format!("({inner})"));
                }
                '*' | '+' | '?' => {
                    let Some(last) = items.last_mut() else {
                        return Err(self.error(&format!("{c} follows nothing")));
                    };
                    self.bump();
                    *last = format!("{}{c}", group(last));
                }
                '{' => {
                    let Some(last) = items.last().cloned() else {
                        return Err(self.error("{ follows nothing"));
                    };
                    self.bump();
                    self.space(false);
                    let lo = self.number()?;
                    self.space(false);
                    let hi = if self.peek() == Some(',') {
                        self.bump();
                        self.space(false);
                        if self.peek() == Some('}') {
                            None
                        } else {
                            Some(
                                self.number()?
                                    .ok_or_else(|| self.error("expected a number"))?,
                            )
                        }
                    } else {
                        Some(lo.ok_or_else(|| self.error("expected a number"))?)
                    };
                    self.space(false);
                    if self.peek() != Some('}') {
                        return Err(self.error("expected }"));
                    }
                    self.bump();
                    let lo = lo.unwrap_or(0);
                    if hi.is_some_and(|h| h < lo) {
                        return Err(self.error("a repetition's maximum is below its minimum"));
                    }
                    let n = items.len() - 1;
                    items[n] = match hi {
                        Some(0) => "\"\"".into(),
                        Some(h) if h == lo => format!("{}{{{lo}}}", group(&last)),
                        Some(h) => format!("{}{{{lo},{h}}}", group(&last)),
                        None => format!("{}{{{lo},}}", group(&last)),
                    };
                }
                '<' | '!' => {
                    return Err(self.error("token references (<...>, !) are not supported"));
                }
                c if Self::is_word(c) => {
                    let n = self.name()?;
                    items.push(mangle(&n));
                    self.refs.push((n, self.line));
                }
                _ => break,
            }
            self.space(nested);
        }
        Ok(if items.is_empty() {
            "\"\"".into()
        } else {
            items.join(" ")
        })
    }

    fn number(&mut self) -> Result<Option<u32>, ConstraintError> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        if self.i == start {
            return Ok(None);
        }
        let t: String = self.s[start..self.i].iter().collect();
        match t.parse::<u32>() {
            Ok(n) if n <= 100_000 => Ok(Some(n)),
            _ => Err(self.error(&format!("repetition count {t} is too large"))),
        }
    }

    /// One character of a literal or class, escapes decoded.
    fn char_lit(&mut self) -> Result<char, ConstraintError> {
        let c = self.bump().ok_or_else(|| self.error("unexpected end"))?;
        if c != '\\' {
            return Ok(c);
        }
        let e = self
            .bump()
            .ok_or_else(|| self.error("unexpected end after \\"))?;
        let hex = |p: &mut Parser, n: usize| -> Result<char, ConstraintError> {
            let mut v = 0u32;
            for _ in 0..n {
                let d = p
                    .peek()
                    .and_then(|c| c.to_digit(16))
                    .ok_or_else(|| p.error("bad hex escape"))?;
                p.bump();
                v = v * 16 + d;
            }
            char::from_u32(v).ok_or_else(|| p.error("escape is not a Unicode character"))
        };
        match e {
            'x' => hex(self, 2),
            'u' => hex(self, 4),
            'U' => hex(self, 8),
            't' => Ok('\t'),
            'r' => Ok('\r'),
            'n' => Ok('\n'),
            '\\' | '"' | '[' | ']' | '-' | '^' | '/' => Ok(e),
            _ => Err(self.error(&format!("unknown escape \\{e}"))),
        }
    }
}

/// An item in parentheses unless it is one atom already.
fn group(item: &str) -> String {
    let atom = (item.starts_with('(') && matching_close(item) == Some(item.len() - 1))
        || (item.starts_with('/') && item.ends_with('/') && !item.contains(' '))
        || item
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        || (item.starts_with('"') && item.ends_with('"') && is_one_string(item));
    if atom {
        item.to_string()
    } else {
        format!("({item})")
    }
}

fn matching_close(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut in_str = false;
    let mut in_rx = false;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' if in_str || in_rx => esc = true,
            '"' if !in_rx => in_str = !in_str,
            '/' if !in_str => in_rx = !in_rx,
            '(' if !in_str && !in_rx => depth += 1,
            ')' if !in_str && !in_rx => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn is_one_string(s: &str) -> bool {
    let mut esc = false;
    for (i, c) in s.char_indices().skip(1) {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' => esc = true,
            '"' => return i == s.len() - 1,
            _ => {}
        }
    }
    false
}

/// A Lark (JSON-syntax) string of one character.
fn lark_string(c: char) -> String {
    match c {
        '"' => "\"\\\"\"".into(),
        '\\' => "\"\\\\\"".into(),
        c if (c as u32) < 0x20 || c == '\u{7f}' => format!("\"\\u{:04x}\"", c as u32),
        c => format!("\"{c}\""),
    }
}

/// A character inside a regex class.
fn rx_char(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\x{{{:x}}}", c as u32)
    }
}
