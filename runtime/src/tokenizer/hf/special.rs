//! Special-token ids, add-BOS/EOS/SEP flags, merges, chat template and normalizer flags of a
//! folder, as the `gguf-py` converter's `SpecialVocab` finds them (facts of llama.cpp 11434's
//! `gguf-py/gguf/vocab.py`): `tokenizer.json` (merges, normalizer, post-processor, added
//! tokens), then `tokenizer_config.json` (`add_*_token`, `*_token`, chat template, with
//! `chat_template.jinja` / `chat_template.json` as the fallback), then `config.json`
//! (`*_token_id`). The first value found for a special token wins.

use serde_json::{Map, Value as J};

use super::{Kv, TokenizerError};
use crate::gguf::{Array, Value};

/// The chat template(s) of a folder.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum ChatTemplate {
    #[default]
    None,
    One(String),
    /// `{name, template}` pairs (`additional_chat_templates/` or a list in the config).
    Named(Vec<(String, String)>),
}

/// What the converter's `SpecialVocab` collects, in its insertion order.
#[derive(Debug, Default)]
pub(crate) struct SpecialVocab {
    pub(crate) merges: Vec<String>,
    load_merges: bool,
    n_vocab: Option<usize>,
    types: Vec<&'static str>,
    pub(crate) ids: Vec<(&'static str, u32)>,
    pub(crate) add: Vec<(&'static str, bool)>,
    pub(crate) chat_template: ChatTemplate,
    lowercase: Option<bool>,
    strip_accents: Option<bool>,
}

/// The folder files `SpecialVocab` reads.
pub(crate) struct Sources<'a> {
    pub(crate) tokenizer_json: Option<&'a J>,
    pub(crate) tokenizer_config: Option<&'a J>,
    pub(crate) config: &'a J,
    pub(crate) chat_template_jinja: Option<String>,
    pub(crate) chat_template_json: Option<J>,
    pub(crate) additional_templates: Vec<(String, String)>,
}

/// Python truthiness of an optional JSON value.
fn truthy(v: Option<&J>) -> bool {
    match v {
        None | Some(J::Null) => false,
        Some(J::Bool(b)) => *b,
        Some(J::String(s)) => !s.is_empty(),
        Some(J::Array(a)) => !a.is_empty(),
        Some(J::Object(o)) => !o.is_empty(),
        Some(J::Number(n)) => n.as_f64() != Some(0.0),
    }
}

/// `v == s` for a JSON value and a string (a dict or null never equals a string).
fn is_str(v: Option<&J>, s: &str) -> bool {
    v.and_then(J::as_str) == Some(s)
}

/// `item.get(kind, {}).get('id')` of a post-processor template item.
fn item_id<'j>(item: Option<&'j J>, kind: &str) -> Option<&'j str> {
    item?.get(kind)?.get("id")?.as_str()
}

fn set_flag(add: &mut Vec<(&'static str, bool)>, typ: &'static str, v: bool) {
    match add.iter_mut().find(|e| e.0 == typ) {
        Some(e) => e.1 = v,
        None => add.push((typ, v)),
    }
}

fn default_flag(add: &mut Vec<(&'static str, bool)>, typ: &'static str, v: bool) {
    if !add.iter().any(|e| e.0 == typ) {
        add.push((typ, v));
    }
}

impl SpecialVocab {
    /// `SpecialVocab(path, load_merges, n_vocab=n_vocab)` on the folder's files.
    pub(crate) fn load(
        src: &Sources<'_>,
        load_merges: bool,
        n_vocab: Option<usize>,
    ) -> Result<SpecialVocab, TokenizerError> {
        let mut sv = SpecialVocab {
            load_merges,
            n_vocab,
            types: vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"],
            ..Default::default()
        };
        sv.load_from_tokenizer_json(src)?;
        sv.load_from_config_json(src.config)?;
        Ok(sv)
    }

    fn set_special_token(
        &mut self,
        typ: &'static str,
        id: Option<&J>,
    ) -> Result<(), TokenizerError> {
        let Some(J::Number(n)) = id else {
            return Ok(());
        };
        if n.is_f64() {
            return Ok(());
        }
        let Some(id) = n.as_u64() else {
            return Err(TokenizerError::Invalid(format!(
                "invalid value for special token type {typ}: {n}"
            )));
        };
        if self.n_vocab.is_some_and(|nv| id >= nv as u64) {
            return Ok(());
        }
        let id = u32::try_from(id).map_err(|_| {
            TokenizerError::Invalid(format!("special token {typ} id {id} is too large"))
        })?;
        if !self.ids.iter().any(|e| e.0 == typ) {
            self.ids.push((typ, id));
        }
        Ok(())
    }

    fn parse_normalizer(&mut self, n: &J) {
        match n.get("type").and_then(J::as_str) {
            Some("Lowercase") => self.lowercase = Some(true),
            Some("StripAccents") => self.strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase") {
                    self.lowercase = v.as_bool();
                }
                if let Some(v) = n.get("strip_accents") {
                    self.strip_accents = v.as_bool();
                }
            }
            Some("Sequence") => {
                for m in n
                    .get("normalizers")
                    .and_then(J::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.parse_normalizer(m);
                }
            }
            _ => {}
        }
    }

    fn load_merges(&mut self, tok: &J) -> Result<(), TokenizerError> {
        let Some(merges) = tok
            .get("model")
            .and_then(|m| m.get("merges"))
            .and_then(J::as_array)
        else {
            return Ok(());
        };
        let bad = || TokenizerError::Invalid("tokenizer.json: unknown merges format".into());
        match merges.first() {
            None => {}
            Some(J::String(_)) => {
                self.merges = merges
                    .iter()
                    .map(|m| m.as_str().map(str::to_owned).ok_or_else(bad))
                    .collect::<Result<_, _>>()?;
            }
            Some(J::Array(p)) if p.len() == 2 && p[0].is_string() => {
                // Pairs: spaces inside a part are written as U+0120, the byte-level space.
                let part = |s: &str| s.replace(' ', "\u{120}");
                self.merges = merges
                    .iter()
                    .map(|m| match m.as_array().map(Vec::as_slice) {
                        Some([J::String(a), J::String(b)]) => {
                            Ok(format!("{} {}", part(a), part(b)))
                        }
                        _ => Err(bad()),
                    })
                    .collect::<Result<_, _>>()?;
            }
            Some(_) => return Err(bad()),
        }
        Ok(())
    }

    fn load_from_tokenizer_json(&mut self, src: &Sources<'_>) -> Result<(), TokenizerError> {
        let empty = Vec::new();
        let mut added_tokens = &empty;
        if let Some(tok) = src.tokenizer_json {
            if self.load_merges {
                self.load_merges(tok)?;
            }
            if let Some(n) = tok.get("normalizer").filter(|n| truthy(Some(n))) {
                self.parse_normalizer(n);
            }
            if let Some(a) = tok.get("added_tokens").and_then(J::as_array) {
                added_tokens = a;
            }
        }
        let mut tc: Option<Map<String, J>> = src.tokenizer_config.and_then(J::as_object).cloned();
        if let Some(tok) = src.tokenizer_json.filter(|t| truthy(Some(t))) {
            self.read_post_processor(tok, &mut tc);
        }
        let Some(tc) = tc.filter(|m| !m.is_empty()) else {
            return Ok(());
        };
        self.chat_template = chat_template(&tc, src);
        for typ in self.types.clone() {
            if let Some(J::Bool(v)) = tc.get(&format!("add_{typ}_token")) {
                default_flag(&mut self.add, typ, *v);
            }
            let content = match tc.get(&format!("{typ}_token")) {
                Some(J::String(s)) => s.as_str(),
                Some(J::Object(o)) => match o.get("content") {
                    Some(J::String(s)) => s.as_str(),
                    _ => continue,
                },
                _ => continue,
            };
            let id = added_tokens
                .iter()
                .find(|a| is_str(a.get("content"), content))
                .and_then(|a| a.get("id"));
            self.set_special_token(typ, id)?;
        }
        Ok(())
    }

    /// The post-processor's rules for BOS/EOS/SEP (the converter's crude parse of simple
    /// templates, followed as it is).
    fn read_post_processor(&mut self, tok: &J, tc: &mut Option<Map<String, J>>) {
        let get =
            |tc: &Option<Map<String, J>>, k: &str| tc.as_ref().and_then(|m| m.get(k)).cloned();
        let mut bos = get(tc, "bos_token");
        let mut cls = get(tc, "cls_token");
        let mut eos = get(tc, "eos_token");
        let mut sep = get(tc, "sep_token");
        let tc_truthy = |tc: &Option<Map<String, J>>| tc.as_ref().is_some_and(|m| !m.is_empty());
        let set = |tc: &mut Option<Map<String, J>>, k: &str, v: Option<J>| {
            if let Some(m) = tc.as_mut() {
                m.insert(k.into(), v.unwrap_or(J::Null));
            }
        };
        if !truthy(bos.as_ref()) && truthy(cls.as_ref()) && tc_truthy(tc) {
            bos = cls.clone();
            set(tc, "bos_token", bos.clone());
        }
        if !truthy(eos.as_ref()) && truthy(sep.as_ref()) && tc_truthy(tc) {
            eos = sep.clone();
            set(tc, "eos_token", eos.clone());
        }
        let Some(pp) = tok.get("post_processor").filter(|p| truthy(Some(p))) else {
            return;
        };
        let list: Vec<&J> = match pp.get("processors").and_then(J::as_array) {
            Some(v) => v.iter().collect(),
            None => vec![pp],
        };
        for p in list {
            match p.get("type").and_then(J::as_str) {
                Some("ByteLevel") => {
                    default_flag(&mut self.add, "bos", false);
                    default_flag(&mut self.add, "eos", false);
                }
                Some("RobertaProcessing") => {
                    set_flag(&mut self.add, "bos", true);
                    set_flag(&mut self.add, "eos", true);
                    set_flag(&mut self.add, "sep", true);
                    if !truthy(cls.as_ref()) && tc_truthy(tc) {
                        cls = p.get("cls").and_then(|c| c.get(0)).cloned().or(bos.clone());
                        set(tc, "cls_token", cls.clone());
                    }
                    if !truthy(sep.as_ref()) && tc_truthy(tc) {
                        sep = p.get("sep").and_then(|c| c.get(0)).cloned().or(eos.clone());
                        set(tc, "sep_token", sep.clone());
                    }
                }
                Some("TemplateProcessing") => {
                    let mut names = Names {
                        bos: &mut bos,
                        cls: &mut cls,
                        eos: &mut eos,
                        sep: &sep,
                    };
                    self.read_template(p, tc, &mut names);
                }
                _ => {}
            }
        }
    }

    fn read_template(&mut self, p: &J, tc: &mut Option<Map<String, J>>, n: &mut Names<'_>) {
        let empty = Vec::new();
        let single = p.get("single").and_then(J::as_array).unwrap_or(&empty);
        let pair = p.get("pair").and_then(J::as_array).unwrap_or(&empty);
        let has_tc = tc.as_ref().is_some_and(|m| !m.is_empty());
        let put = |tc: &mut Option<Map<String, J>>, k: &str, v: J| {
            if let Some(m) = tc.as_mut() {
                m.insert(k.into(), v);
            }
        };
        let mut first: Option<&str> = None;
        let mut last: Option<&str> = None;
        if single.len() > 1 {
            first = item_id(single.first(), "SpecialToken").filter(|s| !s.is_empty());
            if let Some(f) = first {
                let known = |n: &Names<'_>| is_str(n.bos.as_ref(), f) || is_str(n.cls.as_ref(), f);
                if !has_tc {
                    *n.bos = Some(J::String(f.into()));
                } else if !known(n) {
                    if !truthy(n.bos.as_ref()) {
                        *n.bos = Some(J::String(f.into()));
                        put(tc, "bos_token", J::String(f.into()));
                    }
                    if !truthy(n.cls.as_ref()) {
                        *n.cls = Some(J::String(f.into()));
                        put(tc, "cls_token", J::String(f.into()));
                    }
                }
                let v = known(n);
                set_flag(&mut self.add, "bos", v);
            }
            last = item_id(single.last(), "SpecialToken").filter(|s| !s.is_empty());
            if let Some(l) = last {
                if !has_tc {
                    *n.eos = Some(J::String(l.into()));
                } else if !is_str(n.eos.as_ref(), l) {
                    let old = n.eos.clone().unwrap_or(J::Null);
                    if !self.types.contains(&"eot") {
                        self.types.push("eot");
                        put(tc, "eot_token", old);
                    } else if !self.types.contains(&"eom") {
                        self.types.push("eom");
                        put(tc, "eom_token", old);
                    }
                    *n.eos = Some(J::String(l.into()));
                    put(tc, "eos_token", J::String(l.into()));
                }
                let v = is_str(n.eos.as_ref(), l);
                set_flag(&mut self.add, "eos", v);
            }
        }
        if pair.is_empty() {
            return;
        }
        let start = usize::from(first.is_some() && item_id(pair.first(), "SpecialToken") == first);
        let stop = pair.len()
            - usize::from(last.is_some() && item_id(pair.last(), "SpecialToken") == last);
        let inner = pair.get(start..stop.max(start)).unwrap_or(&[]);
        if inner.is_empty() {
            return;
        }
        let a = item_id(inner.first(), "Sequence");
        let b = item_id(inner.last(), "Sequence");
        if a != Some("A") || b != Some("B") || inner.len() < 3 {
            return;
        }
        let middle = &inner[1..inner.len() - 1];
        let is_sep_or_eos = |e: &str| is_str(n.sep.as_ref(), e) || is_str(n.eos.as_ref(), e);
        let mut add_sep = false;
        if let Some(e) = item_id(middle.first(), "SpecialToken").filter(|s| !s.is_empty()) {
            if is_sep_or_eos(e) && last.is_none() {
                add_sep = true;
            }
        }
        if middle.len() == 2 {
            if let Some(e) = item_id(middle.get(1), "SpecialToken").filter(|s| !s.is_empty()) {
                if is_sep_or_eos(e) {
                    add_sep = true;
                }
            }
        }
        set_flag(&mut self.add, "sep", add_sep);
        if add_sep && !truthy(n.sep.as_ref()) && has_tc {
            put(tc, "sep_token", n.eos.clone().unwrap_or(J::Null));
        }
    }

    fn load_from_config_json(&mut self, config: &J) -> Result<(), TokenizerError> {
        for typ in self.types.clone() {
            let key = format!("{typ}_token_id");
            let id = match config.get(&key) {
                Some(J::Null) | None => config.get("text_config").and_then(|t| t.get(&key)),
                v => v,
            };
            self.set_special_token(typ, id)?;
        }
        Ok(())
    }

    /// `SpecialVocab.add_to_gguf`: merges, ids, flags, chat template, normalizer flags.
    pub(crate) fn add_to_gguf(&self, kv: &mut Kv) {
        if !self.merges.is_empty() {
            kv.set(
                "tokenizer.ggml.merges",
                Value::Array(Array::String(self.merges.clone())),
            );
        }
        for &(typ, id) in &self.ids {
            let key = match typ {
                "bos" => "bos_token_id",
                "eos" => "eos_token_id",
                "unk" => "unknown_token_id",
                "sep" => "seperator_token_id",
                "pad" => "padding_token_id",
                "mask" => "mask_token_id",
                "eot" => "eot_token_id",
                "eom" => "eom_token_id",
                _ => continue,
            };
            kv.set(&format!("tokenizer.ggml.{key}"), Value::U32(id));
        }
        for &(typ, v) in &self.add {
            if matches!(typ, "bos" | "eos" | "sep") {
                kv.set(&format!("tokenizer.ggml.add_{typ}_token"), Value::Bool(v));
            }
        }
        match &self.chat_template {
            ChatTemplate::None => {}
            ChatTemplate::One(t) => kv.set("tokenizer.chat_template", Value::String(t.clone())),
            ChatTemplate::Named(list) => add_named_templates(kv, list),
        }
        if let Some(v) = self.lowercase {
            kv.set("tokenizer.ggml.normalizer.lowercase", Value::Bool(v));
        }
        if let Some(v) = self.strip_accents {
            kv.set("tokenizer.ggml.normalizer.strip_accents", Value::Bool(v));
        }
    }
}

/// The special-token texts the template parse reads and updates.
struct Names<'a> {
    bos: &'a mut Option<J>,
    cls: &'a mut Option<J>,
    eos: &'a mut Option<J>,
    sep: &'a Option<J>,
}

/// `tokenizer_config.get('chat_template', <chat_template.jinja or .json>)`.
fn chat_template(tc: &Map<String, J>, src: &Sources<'_>) -> ChatTemplate {
    let alt = if let Some(t) = &src.chat_template_jinja {
        if src.additional_templates.is_empty() {
            ChatTemplate::One(t.clone())
        } else {
            let mut v = vec![("default".to_owned(), t.clone())];
            v.extend(src.additional_templates.iter().cloned());
            ChatTemplate::Named(v)
        }
    } else if let Some(j) = &src.chat_template_json {
        from_json(j.get("chat_template"))
    } else {
        ChatTemplate::None
    };
    match tc.get("chat_template") {
        None => alt,
        Some(v) => from_json(Some(v)),
    }
}

fn from_json(v: Option<&J>) -> ChatTemplate {
    match v {
        Some(J::String(s)) => ChatTemplate::One(s.clone()),
        Some(J::Array(list)) => ChatTemplate::Named(
            list.iter()
                .filter_map(|c| {
                    let name = c.get("name").and_then(J::as_str).unwrap_or("");
                    Some((name.to_owned(), c.get("template")?.as_str()?.to_owned()))
                })
                .collect(),
        ),
        _ => ChatTemplate::None,
    }
}

/// `add_chat_template` with a list: `tokenizer.chat_template.NAME` for each named one, the
/// names in `tokenizer.chat_templates` (sorted: the converter writes a Python set), the
/// default one as `tokenizer.chat_template`.
fn add_named_templates(kv: &mut Kv, list: &[(String, String)]) {
    let mut default = None;
    let mut names: Vec<String> = Vec::new();
    for (name, template) in list {
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if name.is_empty() {
            continue;
        }
        if name == "default" {
            default = Some(template.clone());
        } else {
            if !names.contains(&name) {
                names.push(name.clone());
            }
            kv.set(
                &format!("tokenizer.chat_template.{name}"),
                Value::String(template.clone()),
            );
        }
    }
    if !names.is_empty() {
        names.sort();
        kv.set(
            "tokenizer.chat_templates",
            Value::Array(Array::String(names)),
        );
    }
    if let Some(t) = default {
        kv.set("tokenizer.chat_template", Value::String(t));
    }
}
