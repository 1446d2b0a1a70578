//! Constrained sampling: JSON schemas, regular expressions, Lark and GBNF grammars, compiled by
//! [llguidance](https://github.com/guidance-ai/llguidance) into per-token masks over the
//! model's own vocabulary.
//!
//! [`Grammars`] is built once per tokenizer (the token trie: every id's exact bytes, control
//! tokens behind llguidance's 0xFF marker so that no grammar text produces them, the
//! end-of-generation ids as the stop tokens) and shared; [`Grammars::compile`] turns a
//! [`ConstraintSpec`] into a [`Constraint`], one per sequence: [`Constraint::compute_mask`]
//! (callable on another thread while the forward pass runs), [`Constraint::allowed`],
//! [`Constraint::commit`].

mod gbnf;

pub use gbnf::gbnf_to_lark;

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};

use crate::tokenizer::{attr, Tokenizer};

/// What a generation must match.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstraintSpec {
    /// A JSON value valid under this JSON schema.
    JsonSchema(serde_json::Value),
    /// Any JSON object (OpenAI's `{"type": "json_object"}`).
    JsonObject,
    /// Text matching this regular expression (Rust `regex` syntax), anchored at both ends.
    Regex(String),
    /// A grammar in llguidance's Lark dialect (start rule `start`).
    Lark(String),
    /// A grammar in llama.cpp's GBNF (start rule `root`).
    Gbnf(String),
}

impl ConstraintSpec {
    /// A JSON schema given as text.
    pub fn json_schema_str(text: &str) -> Result<ConstraintSpec, ConstraintError> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ConstraintError(format!("the JSON schema is not JSON: {e}")))?;
        Ok(ConstraintSpec::JsonSchema(v))
    }

    /// A short name for messages (`json schema`, `regex`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            ConstraintSpec::JsonSchema(_) => "JSON schema",
            ConstraintSpec::JsonObject => "JSON object",
            ConstraintSpec::Regex(_) => "regex",
            ConstraintSpec::Lark(_) => "Lark grammar",
            ConstraintSpec::Gbnf(_) => "GBNF grammar",
        }
    }
}

/// A bad schema or grammar, or a constraint that failed while generating: one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConstraintError(pub String);

impl ConstraintError {
    fn from_llg(what: &str, e: impl std::fmt::Display) -> ConstraintError {
        ConstraintError(one_line(&format!("{what}: {e}")))
    }
}

/// The first line of llguidance's message (its grammar errors add a highlighted excerpt),
/// whitespace runs collapsed, bounded in length.
fn one_line(s: &str) -> String {
    let first = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut out: String = first.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > 400 {
        let mut cut = 400;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// Per-tokenizer shared state: llguidance's parser factory over the model's token trie.
pub struct Grammars {
    factory: ParserFactory,
    eog: Arc<[u32]>,
    n_vocab: usize,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars")
            .field("n_vocab", &self.n_vocab)
            .field("eog", &self.eog)
            .finish()
    }
}

/// Whether a token is a control token of the vocabulary, never produced as text inside a
/// grammar: control, unknown and unused tokens, the end-of-generation tokens, and
/// user-defined tokens written like a tag (`<start_of_image>`, `<|tool|>`).
fn is_special(tok: &Tokenizer, id: u32) -> bool {
    let a = tok.token_attr(id).unwrap_or(attr::UNDEFINED);
    if a & (attr::CONTROL | attr::UNKNOWN | attr::UNUSED) != 0 || tok.is_eog(id) {
        return true;
    }
    if a & attr::USER_DEFINED != 0 {
        let t = tok.token_text(id).unwrap_or(b"");
        return t.len() > 2 && t.starts_with(b"<") && t.ends_with(b">");
    }
    false
}

impl Grammars {
    /// The shared state of `tok`'s vocabulary.
    pub fn new(tok: &Tokenizer) -> Result<Arc<Grammars>, ConstraintError> {
        let n = tok.n_vocab();
        let eog: Vec<u32> = tok.eog_ids().to_vec();
        let eos = match (eog.first(), tok.eos()) {
            (_, Some(e)) if (e as usize) < n => e,
            (Some(&e), _) => e,
            (None, _) => {
                return Err(ConstraintError(
                    "the model has no end-of-generation token: constrained output cannot end"
                        .into(),
                ))
            }
        };
        let mut words = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let bytes = if is_special(tok, id) {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(&tok.token_to_piece_special(id).unwrap_or_default());
                w
            } else {
                tok.token_to_piece(id).unwrap_or_default()
            };
            words.push(bytes);
        }
        let info = TokRxInfo {
            vocab_size: n as u32,
            tok_eos: eos,
            tok_bos: tok.bos(),
            tok_pad: None,
            tok_unk: None,
            tok_end_of_turn: None,
        };
        let mut stops = vec![eos];
        stops.extend(
            eog.iter()
                .copied()
                .filter(|&e| e != eos && (e as usize) < n),
        );
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&stops);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::from_llg("building the token masks", e))?;
        factory.quiet();
        Ok(Arc::new(Grammars {
            factory,
            eog: stops.into(),
            n_vocab: n,
        }))
    }

    /// The vocabulary size the masks cover.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// The tokens that end a constrained generation (the model's end-of-generation tokens).
    pub fn stop_tokens(&self) -> &[u32] {
        &self.eog
    }

    /// Compile a schema or grammar: a bad one is a one-line [`ConstraintError`].
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        let grammar = match spec {
            ConstraintSpec::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(with_json_style(schema.clone()))
            }
            ConstraintSpec::JsonObject => TopLevelGrammar::from_json_schema(with_json_style(
                serde_json::json!({"type": "object"}),
            )),
            ConstraintSpec::Regex(rx) => {
                // llguidance's regex front end takes Rust regex syntax; check it here for a
                // clear message.
                TopLevelGrammar::from_regex(rx)
            }
            ConstraintSpec::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
            ConstraintSpec::Gbnf(g) => TopLevelGrammar::from_lark(gbnf_to_lark(g)?),
        };
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| ConstraintError::from_llg(&format!("bad {}", spec.kind()), e))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ConstraintError::from_llg(
                &format!("bad {}", spec.kind()),
                e,
            ));
        }
        let mut c = Constraint {
            matcher,
            mask: None,
            eog: Arc::clone(&self.eog),
            accepting: false,
            error: None,
        };
        c.accepting = c.matcher.is_accepting().unwrap_or(false);
        Ok(c)
    }
}

/// A calendar date as JSON schema's `date` format means it (RFC 3339 `full-date`: years 0001
/// to 9999, February 29 in leap years only); llguidance's own `date` takes any year's
/// February 29 and year 0000.
const DATE_PATTERN: &str = concat!(
    r"^(?:(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-",
    r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    r"|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)-02-29)$"
);

/// Every `"format": "date"` subschema also gets [`DATE_PATTERN`] (beside its own pattern,
/// through `allOf`). Literal values (`const`, `enum`, `default`, `examples`) are left alone.
fn exact_dates(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("format").and_then(|f| f.as_str()) == Some("date") {
                let p = serde_json::json!(DATE_PATTERN);
                if !o.contains_key("pattern") {
                    o.insert("pattern".into(), p);
                } else {
                    let all = o
                        .entry("allOf")
                        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                    if let Some(a) = all.as_array_mut() {
                        a.push(serde_json::json!({"pattern": p}));
                    }
                }
            }
            for (k, x) in o.iter_mut() {
                if !matches!(k.as_str(), "const" | "enum" | "default" | "examples") {
                    exact_dates(x);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(exact_dates),
        _ => {}
    }
}

/// JSON the way models write it (`{"a": 1, "b": [2, 3]}`: Python's `json.dumps` separators,
/// no other whitespace) unless the schema sets llguidance's `x-guidance` options itself.
fn with_json_style(mut schema: serde_json::Value) -> serde_json::Value {
    exact_dates(&mut schema);
    if let Some(obj) = schema.as_object_mut() {
        if !obj.contains_key("x-guidance") {
            obj.insert(
                "x-guidance".into(),
                serde_json::json!({
                    "whitespace_flexible": false,
                    "item_separator": ", ",
                    "key_separator": ": ",
                }),
            );
        }
    }
    schema
}

/// One sequence's constraint: the parser state and the cached mask of the next token.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    mask: Option<SimpleVob>,
    eog: Arc<[u32]>,
    accepting: bool,
    error: Option<ConstraintError>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("accepting", &self.accepting)
            .field("done", &self.is_done())
            .field("mask_ready", &self.mask.is_some())
            .field("error", &self.error)
            .finish()
    }
}

impl Constraint {
    fn fail(&mut self, what: &str, e: impl std::fmt::Display) -> ConstraintError {
        let err = ConstraintError::from_llg(what, e);
        self.error = Some(err.clone());
        err
    }

    /// Compute (once per step) the mask of the tokens allowed next. Cheap when already
    /// computed; may run on another thread while the forward pass runs.
    pub fn compute_mask(&mut self) -> Result<(), ConstraintError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.mask.is_none() {
            let m = self
                .matcher
                .compute_mask_or_eos()
                .map_err(|e| self.fail("constraint", e))?;
            if m.is_zero() {
                return Err(self.fail("constraint", "no token can continue the output"));
            }
            self.mask = Some(m);
        }
        Ok(())
    }

    /// The mask of the next token (one bit per vocabulary id), if computed.
    pub fn mask(&self) -> Option<&SimpleVob> {
        self.mask.as_ref()
    }

    /// Whether `id` may come next (computes nothing: `false` before [`Constraint::compute_mask`]).
    pub fn allowed(&self, id: u32) -> bool {
        self.mask.as_ref().is_some_and(|m| m.is_allowed(id))
    }

    /// Call `f` with every allowed id, ascending (nothing before [`Constraint::compute_mask`]).
    pub fn for_each_allowed(&self, mut f: impl FnMut(u32)) {
        if let Some(m) = &self.mask {
            m.iter_set_entries(|i| f(i as u32));
        }
    }

    /// Advance past token `id` (which must be allowed).
    pub fn commit(&mut self, id: u32) -> Result<(), ConstraintError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if let Some(m) = &self.mask {
            if !m.is_allowed(id) {
                return Err(self.fail(
                    "constraint",
                    format!("token {id} is not allowed by the grammar here"),
                ));
            }
        }
        self.mask = None;
        self.matcher
            .consume_token(id)
            .map_err(|e| self.fail("constraint", e))?;
        if self.eog.contains(&id) {
            // The stop token ends the value: it was allowed, so the value was complete.
            self.accepting = true;
        } else {
            self.accepting = self.matcher.is_accepting().unwrap_or(false);
        }
        Ok(())
    }

    /// Whether the text so far is a complete valid value (the grammar could end here).
    pub fn is_accepting(&self) -> bool {
        self.accepting && self.error.is_none()
    }

    /// Whether the grammar allows nothing more (only the stop token, or it was produced).
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// The error that stopped this constraint, if any.
    pub fn error(&self) -> Option<&ConstraintError> {
        self.error.as_ref()
    }

    /// The stop tokens (the model's end-of-generation ids).
    pub fn stop_tokens(&self) -> &[u32] {
        &self.eog
    }
}

#[cfg(test)]
mod tests;
