//! Chat: conversations rendered with the model's chat template, stop strings, and the
//! [`Assistant`] API (multi-turn generation reusing the KV cache).
//!
//! - [`template`]: the sandboxed Jinja engine rendering a template for a conversation;
//! - [`builtin`]: built-in formats per model family;
//! - [`ChatFormat`]: which template a model uses (its own, a built-in, or an override), with a
//!   fallback when the model's own template fails;
//! - [`stop`]: stop strings matched across token boundaries.

pub mod assistant;
pub mod builtin;
pub mod stop;
pub mod template;

pub use assistant::{Assistant, AssistantError, AssistantOptions, Reply};
pub use builtin::BuiltinTemplate;
pub use stop::{StopMatcher, StopOutput};
pub use template::{ChatTemplate, Message, TemplateError};

use std::cell::RefCell;

use crate::gguf::Metadata;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// The metadata key of a model's chat template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// Where the template in use came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateOrigin {
    /// `tokenizer.chat_template` of the model file.
    File,
    /// A built-in format, and why.
    Builtin {
        name: BuiltinTemplate,
        reason: String,
    },
    /// A Jinja template given as the override (`--chat-template '{% for ... %}'`, as
    /// llama.cpp's `--chat-template` takes one); it has no fallback.
    Custom,
}

/// The chat template of a model, with a built-in fallback.
#[derive(Debug)]
pub struct ChatFormat {
    primary: ChatTemplate,
    origin: TemplateOrigin,
    fallback: Option<(BuiltinTemplate, ChatTemplate)>,
    /// Set when the primary template failed and the fallback was used; taken by
    /// [`ChatFormat::take_warning`].
    warning: RefCell<Option<String>>,
    failed: RefCell<bool>,
}

/// What a [`ChatFormat`] needs to know about the model.
pub struct ModelChatInfo<'a> {
    /// `general.architecture`.
    pub architecture: &'a str,
    /// `tokenizer.chat_template`, if any.
    pub file_template: Option<&'a str>,
    /// Texts of the BOS and EOS tokens ("" when the vocabulary has none).
    pub bos_token: &'a str,
    pub eos_token: &'a str,
    /// Whether the vocabulary has a token with this text.
    pub has_token: &'a dyn Fn(&str) -> bool,
}

impl ChatFormat {
    /// The format of a model: `override_name` (a built-in name) if given, else the file's
    /// template, else the built-in format of its family. A file template that does not compile
    /// is replaced by the built-in one, with a warning ([`ChatFormat::take_warning`]).
    pub fn new(
        info: &ModelChatInfo<'_>,
        override_name: Option<&str>,
    ) -> Result<ChatFormat, ChatError> {
        let (family, reason) = BuiltinTemplate::for_model(info.architecture, info.has_token);
        let compile =
            |b: BuiltinTemplate| ChatTemplate::new(b.source(), info.bos_token, info.eos_token);
        if let Some(name) = override_name {
            if BuiltinTemplate::from_name(name).is_none()
                && (name.contains("{{") || name.contains("{%"))
            {
                let t = ChatTemplate::new(name, info.bos_token, info.eos_token)?;
                return Ok(ChatFormat::from_parts(
                    t,
                    TemplateOrigin::Custom,
                    None,
                    None,
                ));
            }
            let b = BuiltinTemplate::from_name(name).ok_or_else(|| ChatError::UnknownTemplate {
                name: name.to_string(),
                known: BuiltinTemplate::names(),
            })?;
            return Ok(ChatFormat::from_parts(
                compile(b)?,
                TemplateOrigin::Builtin {
                    name: b,
                    reason: "chosen with --chat-template".into(),
                },
                None,
                None,
            ));
        }
        let builtin = || {
            Ok::<_, ChatError>(ChatFormat::from_parts(
                compile(family)?,
                TemplateOrigin::Builtin {
                    name: family,
                    reason: reason.clone(),
                },
                None,
                None,
            ))
        };
        match info.file_template {
            Some(src) if !src.trim().is_empty() => {
                match ChatTemplate::new(src, info.bos_token, info.eos_token) {
                    Ok(t) => Ok(ChatFormat::from_parts(
                        t,
                        TemplateOrigin::File,
                        Some((family, compile(family)?)),
                        None,
                    )),
                    Err(e) => {
                        let mut f = builtin()?;
                        f.warning = RefCell::new(Some(format!(
                            "{e}; using the built-in {family} format ({reason})"
                        )));
                        Ok(f)
                    }
                }
            }
            _ => builtin(),
        }
    }

    /// The format of a model from its metadata (architecture, template, BOS/EOS texts read
    /// from the vocabulary arrays).
    pub fn from_metadata(
        md: &Metadata,
        override_name: Option<&str>,
    ) -> Result<ChatFormat, ChatError> {
        let architecture = md
            .opt_str("general.architecture")
            .ok()
            .flatten()
            .unwrap_or("");
        let file_template = md.opt_str(CHAT_TEMPLATE_KEY).ok().flatten();
        let tokens = md.opt_str_array("tokenizer.ggml.tokens").ok().flatten();
        let token_text = |key: &str| -> String {
            let id = md.opt_u32(key).ok().flatten();
            match (id, tokens) {
                (Some(id), Some(toks)) => toks.get(id as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            }
        };
        let bos = token_text("tokenizer.ggml.bos_token_id");
        let eos = token_text("tokenizer.ggml.eos_token_id");
        let has_token = |t: &str| tokens.is_some_and(|toks| toks.iter().any(|s| s == t));
        ChatFormat::new(
            &ModelChatInfo {
                architecture,
                file_template,
                bos_token: &bos,
                eos_token: &eos,
                has_token: &has_token,
            },
            override_name,
        )
    }

    fn from_parts(
        primary: ChatTemplate,
        origin: TemplateOrigin,
        fallback: Option<(BuiltinTemplate, ChatTemplate)>,
        warning: Option<String>,
    ) -> ChatFormat {
        ChatFormat {
            primary,
            origin,
            fallback,
            warning: RefCell::new(warning),
            failed: RefCell::new(false),
        }
    }

    pub fn origin(&self) -> &TemplateOrigin {
        &self.origin
    }

    /// One line saying which template is in use, e.g. `the model's chat template` or
    /// `built-in chatml format (architecture llama, vocabulary has <|im_start|>)`.
    pub fn describe(&self) -> String {
        match &self.origin {
            TemplateOrigin::File if *self.failed.borrow() => match &self.fallback {
                Some((b, _)) => format!("built-in {b} format (the model's template failed)"),
                None => "the model's chat template".into(),
            },
            TemplateOrigin::File => "the model's chat template".into(),
            TemplateOrigin::Builtin { name, reason } => {
                format!("built-in {name} format ({reason})")
            }
            TemplateOrigin::Custom => "the template given with --chat-template".into(),
        }
    }

    /// The text of the BOS token the template was given.
    pub fn bos_token(&self) -> &str {
        self.primary.bos_token()
    }

    /// Fix the time `strftime_now` sees (for reproducible renders).
    pub fn set_now(&mut self, unix_seconds: i64) {
        self.primary.set_now(unix_seconds);
        if let Some((_, t)) = &mut self.fallback {
            t.set_now(unix_seconds);
        }
    }

    /// A warning about a template failure since the last call, if any.
    pub fn take_warning(&self) -> Option<String> {
        self.warning.borrow_mut().take()
    }

    /// Render `messages`. When the model's own template fails, the built-in format of its
    /// family renders instead (from then on) and a warning is left for
    /// [`ChatFormat::take_warning`]; an exception raised by a built-in template is an error.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// The template that renders now (the primary one until it failed).
    pub fn active(&self) -> &ChatTemplate {
        match &self.fallback {
            Some((_, t)) if *self.failed.borrow() => t,
            _ => &self.primary,
        }
    }

    /// [`ChatFormat::render`] with the OpenAI `tools` list for templates that take it
    /// ([`ChatTemplate::takes_tools`]); the built-in fallback formats ignore it.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        if !*self.failed.borrow() {
            match self
                .primary
                .render_with_tools(messages, tools, add_generation_prompt)
            {
                Ok(s) => return Ok(s),
                Err(e) => match &self.fallback {
                    Some((b, _)) => {
                        *self.failed.borrow_mut() = true;
                        *self.warning.borrow_mut() =
                            Some(format!("{e}; using the built-in {b} format from now on"));
                    }
                    None => return Err(e.into()),
                },
            }
        }
        match &self.fallback {
            Some((_, t)) => Ok(t.render(messages, add_generation_prompt)?),
            None => Ok(self.primary.render(messages, add_generation_prompt)?),
        }
    }
}

/// Errors of the chat layer.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("unknown chat template {name:?} (known: {known})")]
    UnknownTemplate { name: String, known: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Drops one leading BOS text from a rendered prompt when the tokenizer adds BOS itself, so
/// that BOS is never doubled (llama.cpp does the same).
pub fn strip_leading_bos<'a>(
    rendered: &'a str,
    bos_token: &str,
    tokenizer_adds_bos: bool,
) -> &'a str {
    if tokenizer_adds_bos && !bos_token.is_empty() {
        rendered.strip_prefix(bos_token).unwrap_or(rendered)
    } else {
        rendered
    }
}

/// The token ids of a conversation: rendered with `format`, tokenized with the model's BOS
/// rule and special tokens recognised, BOS never doubled (a template that writes the BOS text
/// itself loses it when the tokenizer adds BOS).
pub fn encode_conversation(
    format: &ChatFormat,
    tokenizer: &Tokenizer,
    messages: &[Message],
    add_generation_prompt: bool,
) -> Result<Vec<u32>, ChatError> {
    encode_conversation_with_tools(format, tokenizer, messages, None, add_generation_prompt)
}

/// [`encode_conversation`] with the OpenAI `tools` list passed to the template.
pub fn encode_conversation_with_tools(
    format: &ChatFormat,
    tokenizer: &Tokenizer,
    messages: &[Message],
    tools: Option<&serde_json::Value>,
    add_generation_prompt: bool,
) -> Result<Vec<u32>, ChatError> {
    let rendered = format.render_with_tools(messages, tools, add_generation_prompt)?;
    let text = strip_leading_bos(&rendered, format.bos_token(), tokenizer.add_bos());
    Ok(tokenizer.tokenize(text.as_bytes(), true, true)?)
}
