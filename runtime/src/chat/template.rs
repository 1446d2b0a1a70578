//! Rendering chat templates: the Jinja template a GGUF file carries in
//! `tokenizer.chat_template` (written for Hugging Face `transformers`), or one of the built-in
//! formats of [`super::builtin`].
//!
//! The template comes from the model file and is untrusted (llama-cpp-python's CVE-2024-34359
//! was code execution through a chat template), so it runs in a sandboxed `minijinja`
//! environment: no loader (no `include`/`import` of files), a fuel limit on executed
//! instructions and minijinja's recursion limit.
//!
//! The environment mirrors what `transformers` sets up (`_compile_jinja_template`):
//! `trim_blocks` and `lstrip_blocks`, the `loopcontrols` extension, a `tojson` filter that is
//! Python's `json.dumps(ensure_ascii=False)`, the globals `raise_exception` and
//! `strftime_now`, and Python string/dict methods (`.strip()`, `.startswith()`, `.items()`,
//! ... from `minijinja-contrib`'s pycompat). Variables: `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`.

use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error as JinjaError, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::kernels::alloc::Budget;

/// Instructions a template may execute per render: far above what real chat templates use
/// for long conversations (a few thousand per message), small enough to stop a runaway loop
/// in a fraction of a second.
const FUEL: u64 = 5_000_000;

/// The limits of one render (`docs/LIMITS.md`). Fuel alone does not bound a template: one
/// instruction can double a string, so a render also has
/// - an output cap: [`RENDER_BASE_BYTES`] plus [`RENDER_PER_INPUT_BYTE`] per byte of the
///   messages (a real template adds a few dozen bytes of markup per message);
/// - an allocation budget of [`ALLOC_FACTOR`] times the output cap, counted by
///   [`crate::kernels::alloc::BudgetAlloc`] where the program installs it (the CLI does): a
///   render that passes it is stopped inside the allocator;
/// - a deadline of [`RENDER_DEADLINE`] (the render runs on its own thread).
///
/// A template that passes any limit fails its render with one error; such a template is not
/// rendered again (it is poisoned: a stopped render thread is never reclaimed, so retrying it
/// would leak one thread and its budget per try).
pub const RENDER_BASE_BYTES: usize = 1 << 20;
/// See [`RENDER_BASE_BYTES`].
pub const RENDER_PER_INPUT_BYTE: usize = 4;
/// See [`RENDER_BASE_BYTES`].
pub const ALLOC_FACTOR: u64 = 16;
/// See [`RENDER_BASE_BYTES`].
pub const RENDER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// One message of a conversation.
///
/// Templates that take tools also read an assistant message's `tool_calls` (OpenAI's shape,
/// `[{"id", "type": "function", "function": {"name", "arguments"}}]`, the arguments an object
/// as `transformers` passes them) and a tool message's `tool_call_id` and `name`; these are
/// left out of the template's view when absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
            ..Message::default()
        }
    }
    pub fn system(content: impl Into<String>) -> Message {
        Message::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Message {
        Message::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new("assistant", content)
    }
}

/// Errors compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the chat template does not compile: {0}")]
    Syntax(String),
    #[error("the chat template failed: {0}")]
    Render(String),
    #[error("the chat template raised an exception: {0}")]
    Raised(String),
    #[error("the chat template failed: {0}")]
    Limit(String),
}

/// A compiled chat template with the special-token texts it is rendered with.
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    /// Set when a render passed a limit: later renders fail at once with this message.
    poisoned: Arc<std::sync::Mutex<Option<String>>>,
    source: String,
    bos_token: String,
    eos_token: String,
    /// Seconds since the Unix epoch that `strftime_now` formats; `None` = the clock.
    now: Option<i64>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compile `source`; `bos_token`/`eos_token` are the texts of the model's BOS and EOS
    /// tokens (empty when it has none).
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, TemplateError> {
        // Compiling folds constant expressions (`'a' * 99999999`), so it runs under the same
        // limits as a render, with the budget of an empty conversation.
        let owned = source.to_string();
        let budget = Budget::new(
            ((RENDER_BASE_BYTES + source.len() * RENDER_PER_INPUT_BYTE) as u64) * ALLOC_FACTOR,
        );
        let env = bounded(budget, move || {
            let mut env = sandboxed_environment();
            env.add_template_owned(TEMPLATE_NAME, owned)
                .map_err(|e| TemplateError::Syntax(describe(&e)))
                .map(|()| env)
        })
        .map_err(|e| TemplateError::Syntax(format!("{e} to compile")))??;
        Ok(ChatTemplate {
            env: Arc::new(env),
            poisoned: Arc::default(),
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            now: None,
        })
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// Fix the time `strftime_now` sees (seconds since the Unix epoch, UTC), for reproducible
    /// output.
    pub fn set_now(&mut self, unix_seconds: i64) {
        self.now = Some(unix_seconds);
    }

    /// Render the conversation; `add_generation_prompt` appends the header of an assistant
    /// turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// Whether the template reads a `tools` variable (Hugging Face's tool-use templates do).
    pub fn takes_tools(&self) -> bool {
        self.source.contains("tools")
    }

    /// [`ChatTemplate::render`] with the `tools` variable (a list of OpenAI tool objects,
    /// `{"type": "function", "function": {...}}`) for templates that take it.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        if let Some(msg) = self
            .poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(TemplateError::Limit(msg));
        }
        let input: usize = messages
            .iter()
            .map(|m| {
                m.role.len()
                    + m.content.len()
                    + m.tool_calls.as_ref().map_or(0, |t| t.to_string().len())
                    + m.tool_call_id.as_ref().map_or(0, String::len)
                    + m.name.as_ref().map_or(0, String::len)
            })
            .sum::<usize>()
            + tools.map_or(0, |t| t.to_string().len())
            + self.bos_token.len()
            + self.eos_token.len();
        let max_output =
            RENDER_BASE_BYTES.saturating_add(input.saturating_mul(RENDER_PER_INPUT_BYTE));
        let budget = Budget::new((max_output as u64).saturating_mul(ALLOC_FACTOR));
        let job = RenderJob {
            env: Arc::clone(&self.env),
            messages: messages.to_vec(),
            tools: tools.cloned(),
            add_generation_prompt,
            bos_token: self.bos_token.clone(),
            eos_token: self.eos_token.clone(),
            now: self.now.unwrap_or_else(unix_now),
            max_output,
        };
        match bounded(budget, move || job.run()) {
            Ok(result) => result,
            Err(failure) => {
                let failure = format!("{failure} (the limit for {input} bytes of messages)");
                *self.poisoned.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure.clone());
                Err(TemplateError::Limit(failure))
            }
        }
    }
}

/// Runs `work` on its own thread with its allocations counted against `budget`, waiting at
/// most [`RENDER_DEADLINE`]. `Err` says which limit was passed; the thread is then left
/// stopped in the allocator (or, past the deadline, stopped at its next allocation).
fn bounded<T: Send + 'static>(
    budget: Arc<Budget>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread_budget = Arc::clone(&budget);
    std::thread::Builder::new()
        .name("tinyrt-template".into())
        .spawn(move || {
            let guard = Budget::enter(&thread_budget);
            let result = work();
            drop(guard);
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot start the template thread: {e}"))?;
    let start = std::time::Instant::now();
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(2)) {
            Ok(result) => return Ok(result),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the template thread ended without a result".into());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if budget.stopped() {
            return Err(format!(
                "the chat template needs more than {} MiB of memory",
                budget.limit() >> 20
            ));
        }
        if start.elapsed() > RENDER_DEADLINE {
            budget.cancel();
            return Err(format!(
                "the chat template took longer than {} s",
                RENDER_DEADLINE.as_secs()
            ));
        }
    }
}

/// What a render thread needs, owned (the thread may outlive the call; see [`ChatTemplate::render`]).
struct RenderJob {
    env: Arc<Environment<'static>>,
    messages: Vec<Message>,
    tools: Option<serde_json::Value>,
    add_generation_prompt: bool,
    bos_token: String,
    eos_token: String,
    now: i64,
    max_output: usize,
}

impl RenderJob {
    fn run(self) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        let now = self.now;
        let strftime_now = Value::from_function(move |format: &str| strftime(format, now));
        let ctx = minijinja::context! {
            messages => Value::from_serialize(&self.messages),
            tools => self.tools.as_ref().map(Value::from_serialize),
            add_generation_prompt => self.add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            strftime_now => strftime_now,
        };
        let mut out = CappedOutput {
            bytes: Vec::new(),
            limit: self.max_output,
            full: false,
        };
        let result = template.render_captured_to(ctx, &mut out).map(|_| ());
        if out.full {
            return Err(TemplateError::Limit(format!(
                "the chat template's output is larger than {} bytes (the limit for these messages)",
                self.max_output
            )));
        }
        if let Err(e) = result {
            return Err(if let Some(msg) = raised_message(&e) {
                TemplateError::Raised(msg)
            } else {
                TemplateError::Render(describe(&e))
            });
        }
        String::from_utf8(out.bytes)
            .map_err(|_| TemplateError::Render("the output is not UTF-8".into()))
    }
}

/// The render's output, refusing bytes past `limit`.
struct CappedOutput {
    bytes: Vec<u8>,
    limit: usize,
    full: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.full = true;
            return Err(std::io::Error::other("the output limit is reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error with its cause chain on one line.
fn describe(e: &JinjaError) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Marker prefix of errors made by `raise_exception`.
const RAISED: &str = "raise_exception: ";

fn raised_message(e: &JinjaError) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(j) = err.downcast_ref::<JinjaError>() {
            if let Some(d) = j.detail() {
                if let Some(m) = d.strip_prefix(RAISED) {
                    return Some(m.to_string());
                }
            }
        }
        cur = err.source();
    }
    None
}

/// The sandbox: minijinja with no loader, a fuel limit and no HTML escaping, configured like
/// `transformers`' chat-template environment.
fn sandboxed_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(100);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", tojson);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<Value, JinjaError> {
            Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("{RAISED}{msg}"),
            ))
        },
    );
    env
}

// ---------------------------------------------------------------------------------------
// tojson: Python's json.dumps

/// `tojson(indent=None, separators=None, sort_keys=False, ensure_ascii=False)` as
/// `transformers` defines it: `json.dumps` without Jinja2's HTML escaping.
fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, JinjaError> {
    let mut indent: Option<String> = None;
    let ind = kwargs
        .get::<Option<Value>>("indent")?
        .or_else(|| args.first().cloned());
    if let Some(v) = ind {
        if let Some(s) = v.as_str() {
            indent = Some(s.to_string());
        } else if let Ok(n) = i64::try_from(v.clone()) {
            indent = Some(" ".repeat(n.clamp(0, 64) as usize));
        } else if !v.is_none() && !v.is_undefined() {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                "tojson: indent must be an integer or a string",
            ));
        }
    }
    let sort_keys: bool = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let ensure_ascii: bool = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let (item_sep, key_sep) = match kwargs.get::<Option<Vec<String>>>("separators")? {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair",
            ))
        }
        // Python: (', ', ': '), or (',', ': ') when indenting.
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    kwargs.assert_all_used()?;
    let opts = JsonStyle {
        indent,
        item_sep,
        key_sep,
        sort_keys,
        ensure_ascii,
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0, 0)?;
    Ok(Value::from(out))
}

struct JsonStyle {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn write_json(
    out: &mut String,
    v: &Value,
    o: &JsonStyle,
    level: usize,
    depth: usize,
) -> Result<(), JinjaError> {
    if depth > 64 {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(ind) = &o.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    };
    // With an indent, Python puts the item separator without its trailing space at line ends.
    let item_sep = if o.indent.is_some() {
        o.item_sep.trim_end()
    } else {
        o.item_sep.as_str()
    };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(v.clone()) {
                out.push_str(&i.to_string());
            } else if let Ok(f) = f64::try_from(v.clone()) {
                out.push_str(&python_float(f));
            } else {
                out.push_str(&v.to_string());
            }
        }
        ValueKind::String => write_json_str(out, v.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                write_json(out, item, o, level + 1, depth + 1)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if o.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                match k.as_str() {
                    Some(s) => write_json_str(out, s, o.ensure_ascii),
                    None => write_json_str(out, &k.to_string(), o.ensure_ascii),
                }
                out.push_str(&o.key_sep);
                let item = v.get_item(k)?;
                write_json(out, &item, o, level + 1, depth + 1)?;
            }
            newline(out, level);
            out.push('}');
        }
        _ => write_json_str(out, &v.to_string(), o.ensure_ascii),
    }
    Ok(())
}

/// A float as Python's `repr` writes it (shortest round-trip digits; `1.0`, `1e+20`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let exp = if f == 0.0 {
        0
    } else {
        f.abs().log10().floor() as i32
    };
    if (-4..16).contains(&exp) {
        let s = format!("{f:?}");
        if s.contains('.') || s.contains('e') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        // Rust writes `1e20` / `1.5e-7`; Python `1e+20` / `1.5e-07`.
        let s = format!("{f:e}");
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match e.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', e),
        };
        format!("{mant}e{sign}{digits:0>2}")
    }
}

fn write_json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------
// strftime_now

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31): Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Python's `datetime.strftime` (C locale, UTC) for the common directives; others are kept
/// as written.
pub(crate) fn strftime(format: &str, unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let wd = (days + 3).rem_euclid(7) as usize;
    let month = MONTHS[(m - 1) as usize];
    let weekday = WEEKDAYS[wd];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('-') => match chars.next() {
                // glibc's no-padding flag (`%-d`), which Python passes through.
                Some('d') => out.push_str(&d.to_string()),
                Some('m') => out.push_str(&m.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o);
                }
                None => out.push_str("%-"),
            },
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        // 2024-07-26 00:00:00 UTC = 1721952000 (a Friday).
        assert_eq!(
            strftime("%d %b %Y %A %H:%M:%S", 1_721_952_000),
            "26 Jul 2024 Friday 00:00:00"
        );
        // 2000-02-29 12:34:56 UTC = 951827696 (a Tuesday).
        assert_eq!(
            strftime("%Y-%m-%d %a %y %B", 951_827_696),
            "2000-02-29 Tue 00 February"
        );
        assert_eq!(strftime("%H:%M:%S %-d %%", 951_827_696), "12:34:56 29 %");
    }

    #[test]
    fn python_floats() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.5), "0.5");
        assert_eq!(python_float(1e20), "1e+20");
        assert_eq!(python_float(1.5e-7), "1.5e-07");
    }

    #[test]
    fn runaway_template_runs_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert!(matches!(t.render(&[], true), Err(TemplateError::Render(_))));
        // With output, the output cap stops it first.
        let t = ChatTemplate::new(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert!(matches!(t.render(&[], true), Err(TemplateError::Limit(_))));
    }

    #[test]
    fn no_file_access() {
        let t = ChatTemplate::new("{% include '/etc/passwd' %}", "", "").unwrap();
        assert!(t.render(&[], true).is_err());
        let t = ChatTemplate::new("{% import 'x.jinja' as x %}", "", "").unwrap();
        assert!(t.render(&[], true).is_err());
    }

    #[test]
    fn raise_exception_is_reported() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").unwrap();
        match t.render(&[], true) {
            Err(TemplateError::Raised(m)) => assert_eq!(m, "no system role"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_error_is_an_error() {
        assert!(matches!(
            ChatTemplate::new("{% for %}", "", ""),
            Err(TemplateError::Syntax(_))
        ));
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn bounded_work_past_the_deadline_is_an_error_in_time() {
        let start = std::time::Instant::now();
        let r = bounded(Budget::new(u64::MAX), || {
            std::thread::sleep(RENDER_DEADLINE + std::time::Duration::from_secs(3));
        });
        assert!(r.unwrap_err().contains("longer than"));
        assert!(start.elapsed() < RENDER_DEADLINE + std::time::Duration::from_secs(2));
        assert_eq!(bounded(Budget::new(u64::MAX), || 7), Ok(7));
    }

    #[test]
    fn a_render_past_its_output_cap_fails_and_the_template_still_works() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m.content * 3 }}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let small = [Message::user("abc")];
        assert_eq!(t.render(&small, false).unwrap(), "abcabcabc");
        // 3 × the input is under the cap of 4 × the input + 1 MiB; 40 × is not.
        let t40 = ChatTemplate::new("{{ messages[0].content * 40 }}", "", "").unwrap();
        let big = [Message::user("x".repeat(1 << 20))];
        assert!(matches!(
            t40.render(&big, false),
            Err(TemplateError::Limit(_))
        ));
        assert_eq!(t.render(&big, false).unwrap().len(), 3 << 20);
    }
}
