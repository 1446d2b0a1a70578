//! OpenAI tool calling: the `tools` and `tool_choice` fields, the prompt the model sees, the
//! grammar a call is held to, and the `tool_calls` read back out of the generated text.
//!
//! Two call formats:
//! - **Hermes** (`<tool_call>{"name": ..., "arguments": ...}</tool_call>`): for chat templates
//!   that take `tools` and write that tag (Qwen 2.5/3, Hermes, SmolLM3). The template renders
//!   the tools and the earlier calls and results itself.
//! - **Generic**: for every other template (SmolLM2, Gemma 3, Llama 2, ...). The tools are
//!   described in the system message, the answer is one JSON object, `{"tool_calls": [{"name",
//!   "arguments"}]}` or (with `tool_choice: auto`) `{"response": "..."}`, and earlier calls and
//!   results are written back into the conversation as such objects.
//!
//! Either way the output is constrained ([`tinyrt::constraint`]): the function name is one of
//! the declared ones and its arguments valid under that function's `parameters` schema.

use serde_json::{json, Value};
use tinyrt::chat::Message;
use tinyrt::constraint::ConstraintSpec;

use crate::api::{opt_bool, Obj};
use crate::error::ApiError;

/// Most tools a request may declare.
pub const MAX_TOOLS: usize = 128;

/// One declared function.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of the arguments (`{"type": "object"}` when none is given).
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides: text or calls.
    Auto,
    /// No call: the tools are not shown to the model.
    None,
    /// At least one call.
    Required,
    /// One call of this function.
    Named(String),
}

/// How calls are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallFormat {
    Hermes,
    Generic,
}

/// The tools of a request.
#[derive(Clone, Debug)]
pub struct ToolRequest {
    pub tools: Vec<Tool>,
    /// The `tools` list as given (what a template that takes tools renders).
    pub raw: Value,
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (default true): more than one call per answer.
    pub parallel: bool,
}

/// A call read back from the output.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

fn bad(key: &str, msg: impl Into<String>) -> ApiError {
    ApiError::bad_param(key, msg.into())
}

/// OpenAI's rule for function names.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The `tools`, `tool_choice` and `parallel_tool_calls` fields; `None` when there are no tools
/// or `tool_choice` is `none`.
pub fn parse(o: &Obj) -> Result<Option<ToolRequest>, ApiError> {
    let raw = match o.get("tools") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(Value::Array(a)) if a.len() > MAX_TOOLS => {
            return Err(bad("tools", format!("at most {MAX_TOOLS} tools")))
        }
        Some(v @ Value::Array(_)) => Some(v.clone()),
        Some(_) => return Err(bad("tools", "tools must be a list of tool objects")),
    };
    let choice = match o.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(
                    "tool_choice",
                    format!(
                        "tool_choice must be \"auto\", \"none\", \"required\" or a function, not {other:?}"
                    ),
                ))
            }
        },
        Some(Value::Object(c)) => {
            let name = c
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| c.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    bad(
                        "tool_choice",
                        "a named tool_choice is {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    )
                })?;
            ToolChoice::Named(name.to_string())
        }
        Some(_) => return Err(bad("tool_choice", "tool_choice must be a string or an object")),
    };
    let parallel = opt_bool(o, "parallel_tool_calls")?.unwrap_or(true);
    let Some(raw) = raw else {
        return match choice {
            ToolChoice::Required | ToolChoice::Named(_) => Err(bad(
                "tool_choice",
                "tool_choice asks for a call but the request declares no tools",
            )),
            _ => Ok(None),
        };
    };
    let mut tools = Vec::new();
    for t in raw.as_array().into_iter().flatten() {
        let shape = || {
            bad(
                "tools",
                "each tool must be {\"type\": \"function\", \"function\": {\"name\", \"description\", \"parameters\"}}",
            )
        };
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(shape());
        }
        let Some(Value::Object(f)) = t.get("function") else {
            return Err(shape());
        };
        let name = f.get("name").and_then(Value::as_str).ok_or_else(shape)?;
        if !valid_name(name) {
            return Err(bad(
                "tools",
                format!("tool name {name:?} must be 1 to 64 letters, digits, '_' or '-'"),
            ));
        }
        if tools.iter().any(|x: &Tool| x.name == name) {
            return Err(bad("tools", format!("tool {name:?} is declared twice")));
        }
        let description = match f.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(_) => return Err(bad("tools", "a tool's description must be a string")),
        };
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object"}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(bad(
                    "tools",
                    format!("the parameters of tool {name:?} must be a JSON schema object"),
                ))
            }
        };
        tools.push(Tool {
            name: name.to_string(),
            description,
            parameters,
        });
    }
    if let ToolChoice::Named(n) = &choice {
        if !tools.iter().any(|t| &t.name == n) {
            return Err(bad(
                "tool_choice",
                format!("tool_choice names {n:?}, which is not among the tools"),
            ));
        }
    }
    if choice == ToolChoice::None {
        return Ok(None);
    }
    Ok(Some(ToolRequest {
        tools,
        raw,
        choice,
        parallel,
    }))
}

/// The call format of a chat template.
pub fn format_of(template_source: &str) -> CallFormat {
    if template_source.contains("tools") && template_source.contains("<tool_call>") {
        CallFormat::Hermes
    } else {
        CallFormat::Generic
    }
}

impl ToolRequest {
    /// The tools a call may name.
    fn callable(&self) -> impl Iterator<Item = &Tool> {
        self.tools.iter().filter(move |t| match &self.choice {
            ToolChoice::Named(n) => &t.name == n,
            _ => true,
        })
    }

    /// The schema of one call: `{"name": <one of the tools>, "arguments": <its parameters>}`.
    fn call_schema(&self) -> Value {
        let each: Vec<Value> = self
            .callable()
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {
                        "name": {"const": t.name},
                        "arguments": t.parameters,
                    },
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                })
            })
            .collect();
        if each.len() == 1 {
            each.into_iter().next().unwrap_or(Value::Null)
        } else {
            json!({"anyOf": each})
        }
    }

    fn many(&self) -> bool {
        self.parallel && !matches!(self.choice, ToolChoice::Named(_))
    }

    /// What the output is held to.
    pub fn constraint(&self, format: CallFormat) -> ConstraintSpec {
        match format {
            CallFormat::Generic => {
                let mut calls = json!({
                    "type": "array",
                    "items": self.call_schema(),
                    "minItems": 1,
                });
                if !self.many() {
                    calls["maxItems"] = json!(1);
                }
                let call = json!({
                    "type": "object",
                    "properties": {"tool_calls": calls},
                    "required": ["tool_calls"],
                    "additionalProperties": false,
                });
                if self.choice == ToolChoice::Auto {
                    ConstraintSpec::JsonSchema(json!({"anyOf": [call, {
                        "type": "object",
                        "properties": {"response": {"type": "string"}},
                        "required": ["response"],
                        "additionalProperties": false,
                    }]}))
                } else {
                    ConstraintSpec::JsonSchema(call)
                }
            }
            CallFormat::Hermes => {
                let repeat = if self.many() { " (\"\\n\" call)*" } else { "" };
                let calls = format!("calls: call{repeat}");
                let start = if self.choice == ToolChoice::Auto {
                    // Text that does not open with a tag, or calls.
                    "start: calls | TEXT\nTEXT: /[^<](.|\\n)*/"
                } else {
                    "start: calls"
                };
                // JSON as the template writes it (Python's separators, no other whitespace).
                let mut body = self.call_schema();
                body["x-guidance"] = json!({
                    "whitespace_flexible": false,
                    "item_separator": ", ",
                    "key_separator": ": ",
                });
                ConstraintSpec::Lark(format!(
                    "{start}\n{calls}\ncall: \"<tool_call>\\n\" body \"\\n</tool_call>\"\nbody: %json {body}\n"
                ))
            }
        }
    }

    /// The generic format's instructions, put into the system message.
    fn instructions(&self) -> String {
        let mut s =
            String::from("You can call these functions (JSON schemas of their arguments):\n");
        for t in self.callable() {
            let line =
                json!({"name": t.name, "description": t.description, "parameters": t.parameters});
            s.push_str(&line.to_string());
            s.push('\n');
        }
        let call =
            "{\"tool_calls\": [{\"name\": <function name>, \"arguments\": <arguments object>}]}";
        if self.choice == ToolChoice::Auto {
            s.push_str(&format!(
                "\nTo call functions, answer with only the JSON object {call}. To answer the user directly, answer with only {{\"response\": <your answer>}}."
            ));
        } else {
            s.push_str(&format!("\nAnswer with only the JSON object {call}."));
        }
        s
    }

    /// The conversation as the template sees it. Hermes templates take the messages as they
    /// are (the template renders the calls and results); the generic format puts the
    /// instructions into the system message and writes calls and results as JSON text.
    pub fn messages(&self, format: CallFormat, mut messages: Vec<Message>) -> Vec<Message> {
        if format == CallFormat::Hermes {
            return messages;
        }
        let inst = self.instructions();
        match messages.first_mut() {
            Some(m) if m.role == "system" => {
                m.content = format!("{}\n\n{inst}", m.content);
            }
            _ => messages.insert(0, Message::system(inst)),
        }
        generic_history(messages)
    }
}

/// Whether a conversation holds tool calls or results (which a template without tools cannot
/// render as they are).
pub fn has_tool_turns(messages: &[Message]) -> bool {
    messages
        .iter()
        .any(|m| m.role == "tool" || m.tool_calls.is_some())
}

/// The conversation with earlier calls and results written as the generic format's JSON text,
/// for templates that take no tools (also when this request offers none).
pub fn generic_history(messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    let mut last_was_result = false;
    for m in messages {
        let (m, is_result) = generic_message(m);
        match out.last_mut() {
            // Results and the user turn after them share one turn (templates such as
            // Gemma's insist that user and assistant alternate).
            Some(prev)
                if prev.role == "user" && m.role == "user" && (is_result || last_was_result) =>
            {
                prev.content.push_str("\n\n");
                prev.content.push_str(&m.content);
            }
            _ => out.push(m),
        }
        last_was_result = is_result;
    }
    out
}

/// A message in the generic format: calls and results as JSON text (`true`: a tool result,
/// now a user message).
fn generic_message(m: Message) -> (Message, bool) {
    if m.role == "tool" {
        let mut r = json!({"content": m.content});
        if let Some(n) = &m.name {
            r["name"] = json!(n);
        }
        if let Some(id) = &m.tool_call_id {
            r["tool_call_id"] = json!(id);
        }
        return (Message::user(json!({"tool_response": r}).to_string()), true);
    }
    if let Some(Value::Array(calls)) = &m.tool_calls {
        let calls: Vec<Value> = calls
            .iter()
            .map(|c| {
                let f = c.get("function").unwrap_or(c);
                json!({"name": f.get("name"), "arguments": f.get("arguments")})
            })
            .collect();
        return (
            Message::assistant(json!({"tool_calls": calls}).to_string()),
            false,
        );
    }
    (
        Message {
            tool_calls: None,
            tool_call_id: None,
            name: None,
            ..m
        },
        false,
    )
}

/// The text and calls of a finished answer.
pub fn parse_output(format: CallFormat, text: &str) -> (Option<String>, Vec<ToolCall>) {
    let call = |v: &Value| -> Option<ToolCall> {
        Some(ToolCall {
            name: v.get("name")?.as_str()?.to_string(),
            arguments: v.get("arguments").cloned().unwrap_or(json!({})),
        })
    };
    match format {
        CallFormat::Generic => match serde_json::from_str::<Value>(text.trim()) {
            Ok(v) => {
                if let Some(Value::Array(calls)) = v.get("tool_calls") {
                    let calls: Option<Vec<ToolCall>> = calls.iter().map(call).collect();
                    if let Some(calls) = calls.filter(|c| !c.is_empty()) {
                        return (None, calls);
                    }
                }
                match v.get("response").and_then(Value::as_str) {
                    Some(r) => (Some(r.to_string()), Vec::new()),
                    None => (Some(text.to_string()), Vec::new()),
                }
            }
            Err(_) => (Some(text.to_string()), Vec::new()),
        },
        CallFormat::Hermes => {
            let mut calls = Vec::new();
            let mut content = String::new();
            let mut rest = text;
            while let Some(at) = rest.find("<tool_call>") {
                content.push_str(&rest[..at]);
                let after = &rest[at + "<tool_call>".len()..];
                let Some(end) = after.find("</tool_call>") else {
                    // An unclosed call is text.
                    content.push_str(&rest[at..]);
                    rest = "";
                    break;
                };
                match serde_json::from_str::<Value>(after[..end].trim())
                    .ok()
                    .as_ref()
                    .and_then(call)
                {
                    Some(c) => calls.push(c),
                    None => content
                        .push_str(&rest[at..at + "<tool_call>".len() + end + "</tool_call>".len()]),
                }
                rest = &after[end + "</tool_call>".len()..];
            }
            content.push_str(rest);
            let content = content.trim();
            (
                (!content.is_empty() || calls.is_empty()).then(|| content.to_string()),
                calls,
            )
        }
    }
}

/// OpenAI's `tool_calls` list of an answer (`arguments` as JSON text).
pub fn calls_json(calls: &[ToolCall], id_prefix: &str) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "id": format!("call_{id_prefix}_{i}"),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.to_string()},
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Obj {
        v.as_object().cloned().unwrap_or_default()
    }

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}])
    }

    #[test]
    fn parses_tools_and_choices() {
        let t = parse(&obj(json!({"tools": weather()}))).unwrap().unwrap();
        assert_eq!(t.tools.len(), 2);
        assert_eq!(t.choice, ToolChoice::Auto);
        assert!(t.parallel);
        let t = parse(&obj(json!({"tools": weather(), "tool_choice": {"type": "function", "function": {"name": "get_time"}}})))
            .unwrap()
            .unwrap();
        assert_eq!(t.choice, ToolChoice::Named("get_time".into()));
        assert!(
            parse(&obj(json!({"tools": weather(), "tool_choice": "none"})))
                .unwrap()
                .is_none()
        );
        assert!(parse(&obj(json!({}))).unwrap().is_none());
    }

    #[test]
    fn bad_tools_are_400s() {
        for body in [
            json!({"tools": "x"}),
            json!({"tools": [{"type": "function"}]}),
            json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
            json!({"tools": [{"type": "function", "function": {"name": "a", "parameters": 3}}]}),
            json!({"tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}]}),
            json!({"tools": weather(), "tool_choice": "sometimes"}),
            json!({"tools": weather(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            json!({"tool_choice": "required"}),
        ] {
            let e = parse(&obj(body.clone())).expect_err(&body.to_string());
            assert_eq!(e.status.as_u16(), 400, "{body}");
        }
    }

    #[test]
    fn formats_follow_the_template() {
        assert_eq!(
            format_of("{% if tools %}<tool_call>{% endif %}"),
            CallFormat::Hermes
        );
        assert_eq!(format_of("{{ messages }}"), CallFormat::Generic);
    }

    #[test]
    fn hermes_output_is_read_back() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
        let (content, calls) = parse_output(CallFormat::Hermes, text);
        assert_eq!(content, None);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, json!({"city": "Paris"}));
        let (content, calls) = parse_output(CallFormat::Hermes, "Just text.");
        assert_eq!((content.as_deref(), calls.len()), (Some("Just text."), 0));
        let (content, calls) = parse_output(CallFormat::Hermes, "<tool_call>\n{\"name\": ");
        assert_eq!(
            (content.as_deref(), calls.len()),
            (Some("<tool_call>\n{\"name\":"), 0)
        );
    }

    #[test]
    fn generic_output_is_read_back() {
        let (c, calls) = parse_output(
            CallFormat::Generic,
            "{\"tool_calls\": [{\"name\": \"get_time\", \"arguments\": {}}]}",
        );
        assert_eq!((c, calls[0].name.as_str()), (None, "get_time"));
        let (c, calls) = parse_output(CallFormat::Generic, "{\"response\": \"Hi\"}");
        assert_eq!((c.as_deref(), calls.len()), (Some("Hi"), 0));
    }

    #[test]
    fn generic_messages_alternate() {
        let t = parse(&obj(json!({"tools": weather()}))).unwrap().unwrap();
        let call = Message {
            tool_calls: Some(
                json!([{"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": {}}}]),
            ),
            ..Message::assistant("")
        };
        let result = Message {
            tool_call_id: Some("c1".into()),
            ..Message::new("tool", "12:00")
        };
        let m = t.messages(
            CallFormat::Generic,
            vec![
                Message::user("What time is it?"),
                call,
                result,
                Message::user("Thanks"),
            ],
        );
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert!(m[0].content.contains("get_weather"));
        assert!(m[2].content.contains("\"tool_calls\""));
        assert!(m[3].content.contains("tool_response") && m[3].content.ends_with("Thanks"));
    }
}
