//! Request bodies of the OpenAI API, checked field by field (a wrong type or value is a 400
//! naming the field), and the JSON pieces of the answers.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tinyrt::adapters::LoraAdapter;
use tinyrt::chat::Message;
use tinyrt::constraint::ConstraintSpec;
use tinyrt::tokenizer::Tokenizer;
use tinyrt::SamplerOptions;

use crate::error::ApiError;
use crate::scheduler::{AdapterSet, TokenLogprob};

/// Most `top_logprobs` a request may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most stop strings a request may give.
pub const MAX_STOPS: usize = 16;

pub type Obj = Map<String, Value>;

/// The body as a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Obj, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
    }
}

fn present<'a>(o: &'a Obj, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

pub fn opt_bool(o: &Obj, key: &str) -> Result<Option<bool>, ApiError> {
    match present(o, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_param(key, format!("{key} must be a boolean"))),
    }
}

pub fn opt_f32(o: &Obj, key: &str) -> Result<Option<f32>, ApiError> {
    match present(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|x| x as f32)
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| ApiError::bad_param(key, format!("{key} must be a number"))),
    }
}

pub fn opt_i64(o: &Obj, key: &str) -> Result<Option<i64>, ApiError> {
    match present(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_param(key, format!("{key} must be an integer"))),
    }
}

pub fn opt_str<'a>(o: &'a Obj, key: &str) -> Result<Option<&'a str>, ApiError> {
    match present(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_param(key, format!("{key} must be a string"))),
    }
}

/// A list of token ids (each below `vocab`).
pub fn token_list(v: &Value, key: &str, vocab: usize) -> Result<Vec<u32>, ApiError> {
    let bad = || {
        ApiError::bad_param(
            key,
            format!("{key} must be a list of token ids below {vocab}"),
        )
    };
    let Value::Array(a) = v else {
        return Err(bad());
    };
    a.iter()
        .map(|x| {
            x.as_u64()
                .filter(|&id| id < vocab as u64)
                .map(|id| id as u32)
                .ok_or_else(bad)
        })
        .collect()
}

/// The sampling and stopping options shared by chat and completions.
pub struct GenParams {
    pub max_tokens: Option<usize>,
    pub sampler: SamplerOptions,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub adapters: AdapterSet,
    /// tinyrt and llama-server's extra: the generated token ids in the answer.
    pub return_tokens: bool,
    /// llama-server's extra: never end at an end-of-generation token.
    pub ignore_eos: bool,
}

/// Checks `model` against the names this server answers to.
pub fn check_model(o: &Obj, names: &[&str]) -> Result<(), ApiError> {
    match opt_str(o, "model")? {
        Some(m) if !names.contains(&m) => Err(ApiError {
            code: Some("model_not_found"),
            ..ApiError::bad_param(
                "model",
                format!("unknown model {m:?} (this server has {names:?})"),
            )
        }),
        _ => Ok(()),
    }
}

/// The generation options of a chat or completion body; `max_keys` are the names of the
/// token limit (`max_tokens`, and `max_completion_tokens` for chat).
pub fn gen_params(
    o: &Obj,
    max_keys: &[&str],
    adapters: &HashMap<String, Arc<LoraAdapter>>,
) -> Result<GenParams, ApiError> {
    let mut max_tokens = None;
    for &key in max_keys {
        if let Some(n) = opt_i64(o, key)? {
            if n <= 0 {
                return Err(ApiError::bad_param(
                    key,
                    format!("{key} must be at least 1, not {n}"),
                ));
            }
            max_tokens = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
    }
    if let Some(n) = opt_i64(o, "n")? {
        if n != 1 {
            return Err(ApiError::bad_param(
                "n",
                "only n = 1 is supported (one choice per request)",
            ));
        }
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if opt_f32(o, key)?.is_some_and(|v| v != 0.0) {
            return Err(ApiError::bad_param(key, format!("{key} is not supported")));
        }
    }
    let mut sampler = SamplerOptions::default();
    if let Some(t) = opt_f32(o, "temperature")? {
        if t < 0.0 {
            return Err(ApiError::bad_param(
                "temperature",
                "temperature must be 0 (greedy) or more",
            ));
        }
        sampler.temperature = t;
    }
    for (key, slot) in [("top_p", &mut sampler.top_p), ("min_p", &mut sampler.min_p)] {
        if let Some(v) = opt_f32(o, key)? {
            if !(0.0..=1.0).contains(&v) {
                return Err(ApiError::bad_param(
                    key,
                    format!("{key} must be between 0 and 1"),
                ));
            }
            *slot = v;
        }
    }
    if let Some(k) = opt_i64(o, "top_k")? {
        sampler.top_k = i32::try_from(k)
            .ok()
            .filter(|&k| k >= 0)
            .ok_or_else(|| ApiError::bad_param("top_k", "top_k must be 0 (off) or more"))?;
    }
    if let Some(v) = present(o, "seed") {
        // Any integer: a negative one is taken as its two's complement.
        let s = v
            .as_u64()
            .or_else(|| v.as_i64().map(|s| s as u64))
            .ok_or_else(|| ApiError::bad_param("seed", "seed must be an integer"))?;
        sampler.seed = Some(s);
    }
    let stop = match present(o, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= MAX_STOPS => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::bad_param("stop", "stop must be a string or a list of strings")
            })?,
        Some(Value::Array(_)) => {
            return Err(ApiError::bad_param(
                "stop",
                format!("at most {MAX_STOPS} stop strings"),
            ))
        }
        Some(_) => {
            return Err(ApiError::bad_param(
                "stop",
                "stop must be a string or a list of strings",
            ))
        }
    };
    let stream = opt_bool(o, "stream")?.unwrap_or(false);
    let include_usage = match present(o, "stream_options") {
        None => false,
        Some(Value::Object(so)) => opt_bool(so, "include_usage")
            .map_err(|_| {
                ApiError::bad_param(
                    "stream_options",
                    "stream_options.include_usage must be a boolean",
                )
            })?
            .unwrap_or(false),
        Some(_) => {
            return Err(ApiError::bad_param(
                "stream_options",
                "stream_options must be an object",
            ))
        }
    };
    Ok(GenParams {
        max_tokens,
        sampler,
        stop,
        stream,
        include_usage,
        adapters: lora_set(o, adapters)?,
        return_tokens: opt_bool(o, "return_tokens")?.unwrap_or(false),
        ignore_eos: opt_bool(o, "ignore_eos")?.unwrap_or(false),
    })
}

/// The `lora` field: a name, or a list of `{"name", "scale"}` (scale 1 by default).
fn lora_set(o: &Obj, adapters: &HashMap<String, Arc<LoraAdapter>>) -> Result<AdapterSet, ApiError> {
    let shape = || {
        ApiError::bad_param(
            "lora",
            "lora must be an adapter name or a list of {\"name\", \"scale\"}",
        )
    };
    let mut picked: Vec<(String, f32)> = Vec::new();
    match present(o, "lora") {
        None => {}
        Some(Value::String(name)) => picked.push((name.clone(), 1.0)),
        Some(Value::Array(a)) => {
            for item in a {
                let Value::Object(item) = item else {
                    return Err(shape());
                };
                let name = opt_str(item, "name")
                    .map_err(|_| shape())?
                    .ok_or_else(shape)?;
                let scale = opt_f32(item, "scale").map_err(|_| shape())?.unwrap_or(1.0);
                picked.push((name.to_string(), scale));
            }
        }
        Some(_) => return Err(shape()),
    }
    let mut set = AdapterSet::default();
    for (name, scale) in picked {
        let Some(a) = adapters.get(&name) else {
            let mut known: Vec<&str> = adapters.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(ApiError::bad_param(
                "lora",
                format!("unknown adapter {name:?} (loaded: {known:?})"),
            ));
        };
        if scale == 0.0 {
            continue;
        }
        set.key.push((name, scale.to_bits()));
        set.set.push((Arc::clone(a), scale));
    }
    Ok(set)
}

/// Chat messages: `role` and `content` (a string, or a list of `{"type": "text", "text"}`
/// parts).
pub fn messages(o: &Obj) -> Result<Vec<Message>, ApiError> {
    let bad = |m: &str| ApiError::bad_param("messages", m.to_string());
    let Some(Value::Array(list)) = present(o, "messages") else {
        return Err(bad("messages must be a non-empty list of messages"));
    };
    if list.is_empty() {
        return Err(bad("messages must be a non-empty list of messages"));
    }
    list.iter()
        .map(|m| {
            let Value::Object(m) = m else {
                return Err(bad("each message must be an object"));
            };
            let role = opt_str(m, "role")
                .map_err(|_| bad("a message's role must be a string"))?
                .ok_or_else(|| bad("each message needs a role"))?;
            let content = match present(m, "content") {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match p.get("type").and_then(Value::as_str) {
                            Some("text") => match p.get("text").and_then(Value::as_str) {
                                Some(t) => text.push_str(t),
                                None => return Err(bad("a text part needs a text string")),
                            },
                            _ => return Err(bad("only text content parts are supported")),
                        }
                    }
                    text
                }
                Some(_) => return Err(bad("a message's content must be a string or a list")),
            };
            let mut msg = Message::new(role, content);
            if let Some(calls) = present(m, "tool_calls") {
                msg.tool_calls = Some(template_calls(calls).ok_or_else(|| {
                    bad("tool_calls must be a list of {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}")
                })?);
            }
            for (key, slot) in [("tool_call_id", &mut msg.tool_call_id), ("name", &mut msg.name)] {
                match present(m, key) {
                    None => {}
                    Some(Value::String(s)) => *slot = Some(s.clone()),
                    Some(_) => return Err(bad(&format!("a message's {key} must be a string"))),
                }
            }
            Ok(msg)
        })
        .collect()
}

/// An assistant message's `tool_calls` as chat templates read them: OpenAI's list with each
/// call's `arguments` (JSON text) parsed into an object, as `transformers` passes them.
fn template_calls(v: &Value) -> Option<Value> {
    let list = v.as_array()?;
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let f = c.get("function")?.as_object()?;
        let name = f.get("name")?.as_str()?;
        let arguments = match f.get("arguments") {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => return None,
        };
        let mut call =
            json!({"type": "function", "function": {"name": name, "arguments": arguments}});
        if let Some(id) = c.get("id").and_then(Value::as_str) {
            call["id"] = json!(id);
        }
        out.push(call);
    }
    Some(Value::Array(out))
}

/// The output constraint of a request: OpenAI's `response_format` (`json_object`, or
/// `json_schema` with its `schema`), or llama-server's `json_schema` (a schema) and `grammar`
/// (GBNF) fields, with the field's name. At most one.
pub fn output_constraint(o: &Obj) -> Result<Option<(&'static str, ConstraintSpec)>, ApiError> {
    let mut found: Vec<(&'static str, ConstraintSpec)> = Vec::new();
    if let Some(rf) = present(o, "response_format") {
        let shape = || {
            ApiError::bad_param(
                "response_format",
                "response_format must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or {\"type\": \"json_schema\", \"json_schema\": {\"name\", \"schema\"}}",
            )
        };
        let Value::Object(rf) = rf else {
            return Err(shape());
        };
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => match present(rf, "schema") {
                // llama-server's extension: a schema beside json_object.
                Some(s @ Value::Object(_)) => {
                    found.push(("response_format", ConstraintSpec::JsonSchema(s.clone())))
                }
                Some(_) => return Err(shape()),
                None => found.push(("response_format", ConstraintSpec::JsonObject)),
            },
            Some("json_schema") => {
                let schema = rf
                    .get("json_schema")
                    .and_then(|j| j.get("schema"))
                    .filter(|s| s.is_object() || s.is_boolean())
                    .ok_or_else(|| {
                        ApiError::bad_param(
                            "response_format",
                            "response_format.json_schema.schema must be a JSON schema object",
                        )
                    })?;
                found.push((
                    "response_format",
                    ConstraintSpec::JsonSchema(schema.clone()),
                ));
            }
            _ => return Err(shape()),
        }
    }
    match present(o, "json_schema") {
        None => {}
        Some(s @ (Value::Object(_) | Value::Bool(_))) => {
            found.push(("json_schema", ConstraintSpec::JsonSchema(s.clone())))
        }
        Some(_) => {
            return Err(ApiError::bad_param(
                "json_schema",
                "json_schema must be a JSON schema object",
            ))
        }
    }
    if let Some(g) = opt_str(o, "grammar")? {
        if !g.trim().is_empty() {
            found.push(("grammar", ConstraintSpec::Gbnf(g.to_string())));
        }
    }
    if found.len() > 1 {
        return Err(ApiError::bad_param(
            found[1].0,
            format!(
                "give one of response_format, json_schema and grammar, not {} and {}",
                found[0].0, found[1].0
            ),
        ));
    }
    Ok(found.pop())
}

/// How many top log-probabilities a request wants: `None` for no log-probabilities.
pub fn chat_logprobs(o: &Obj) -> Result<Option<usize>, ApiError> {
    let on = opt_bool(o, "logprobs")?.unwrap_or(false);
    let top = opt_i64(o, "top_logprobs")?;
    let top = match top {
        Some(k) if !(0..=MAX_TOP_LOGPROBS as i64).contains(&k) => {
            return Err(ApiError::bad_param(
                "top_logprobs",
                format!("top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"),
            ))
        }
        Some(_) if !on => {
            return Err(ApiError::bad_param(
                "top_logprobs",
                "top_logprobs needs logprobs: true",
            ))
        }
        Some(k) => k as usize,
        None => 0,
    };
    Ok(on.then_some(top))
}

/// Completions' `logprobs`: an integer count of top log-probabilities.
pub fn completion_logprobs(o: &Obj) -> Result<Option<usize>, ApiError> {
    match opt_i64(o, "logprobs")? {
        None => Ok(None),
        Some(k) if (0..=MAX_TOP_LOGPROBS as i64).contains(&k) => Ok(Some(k as usize)),
        Some(_) => Err(ApiError::bad_param(
            "logprobs",
            format!("logprobs must be between 0 and {MAX_TOP_LOGPROBS}"),
        )),
    }
}

fn piece(tok: &Tokenizer, id: u32) -> Vec<u8> {
    tok.token_to_piece(id).unwrap_or_default()
}

/// One token's entry of a chat answer's `logprobs.content`.
pub fn chat_logprob_entry(tok: &Tokenizer, id: u32, lp: &TokenLogprob) -> Value {
    let one = |id: u32, logprob: f32| {
        let bytes = piece(tok, id);
        json!({
            "token": String::from_utf8_lossy(&bytes),
            "logprob": logprob,
            "bytes": bytes,
        })
    };
    let mut e = one(id, lp.logprob);
    e["top_logprobs"] = Value::Array(lp.top.iter().map(|&(i, l)| one(i, l)).collect());
    e
}

/// A completion answer's `logprobs` object for tokens with their text offsets.
pub fn completion_logprobs_obj(
    tok: &Tokenizer,
    tokens: &[(u32, TokenLogprob)],
    text_offset0: usize,
) -> Value {
    let mut offset = text_offset0;
    let mut texts = Vec::new();
    let mut offsets = Vec::new();
    for (id, _) in tokens {
        let t = String::from_utf8_lossy(&piece(tok, *id)).into_owned();
        offsets.push(offset);
        offset += t.len();
        texts.push(t);
    }
    json!({
        "tokens": texts,
        "token_logprobs": tokens.iter().map(|(_, lp)| lp.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|(_, lp)| {
            let mut m = Map::new();
            for &(i, l) in &lp.top {
                m.insert(String::from_utf8_lossy(&piece(tok, i)).into_owned(), json!(l));
            }
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// The `usage` object.
pub fn usage(prompt: usize, cached: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}
