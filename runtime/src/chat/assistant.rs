//! [`Assistant`]: a multi-turn chat over one model, loaded once.
//!
//! Each turn renders the whole conversation with the chat template and tokenizes it, then
//! reuses the KV cache: the tokens already in the cache that agree with the new prompt (the
//! common prefix: usually everything up to the new user message) are kept, and only the rest
//! is fed. When the conversation no longer fits in the context, the oldest whole turns are
//! dropped (the system message stays) and a notice says so.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{encode_conversation, ChatError, ChatFormat, Message, StopMatcher};
use crate::model::{LoadOptions, Model, ModelError};
use crate::sampler::SamplerOptions;
use crate::session::{GenerateOptions, Session, SessionError, SessionOptions, StopReason};
use crate::tokenizer::TokenizerError;

/// Errors of an [`Assistant`].
#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(
        "the system message and the last user message take {needed} tokens with the reply; the context holds {n_ctx}"
    )]
    TooLong { needed: usize, n_ctx: usize },
    #[error("the conversation must alternate user and assistant messages after an optional system message")]
    BadHistory,
}

/// How an [`Assistant`] talks.
#[derive(Clone, Debug)]
pub struct AssistantOptions {
    /// The system message (none: the template's default, if it has one).
    pub system_prompt: Option<String>,
    /// A built-in chat format to use instead of the model's template (see
    /// [`super::BuiltinTemplate::from_name`]).
    pub chat_template: Option<String>,
    pub sampler: SamplerOptions,
    /// Most tokens per reply; negative = until an end-of-generation token or a full context.
    pub max_tokens: i64,
    /// Stop strings: the reply ends before the first one (which is not part of the reply).
    pub stop: Vec<String>,
    pub session: SessionOptions,
    /// Reuse the KV cache of the common prefix between turns (`false` re-feeds the whole
    /// conversation every turn; for measurements).
    pub reuse_prefix: bool,
}

impl Default for AssistantOptions {
    fn default() -> Self {
        AssistantOptions {
            system_prompt: None,
            chat_template: None,
            sampler: SamplerOptions::default(),
            max_tokens: 256,
            stop: Vec::new(),
            session: SessionOptions::default(),
            reuse_prefix: true,
        }
    }
}

/// One reply and how it was made.
#[derive(Clone, Debug)]
pub struct Reply {
    pub text: String,
    pub stop_reason: StopReason,
    /// Whether the caller interrupted it (the streaming callback returned `Break`).
    pub interrupted: bool,
    /// Prompt tokens of this turn (the whole rendered conversation).
    pub prompt_tokens: usize,
    /// Of these, the ones already in the KV cache (not processed again).
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    /// From the start of the turn to the first generated token.
    pub time_to_first_token: Duration,
    pub total_time: Duration,
    /// Things the user should know: dropped turns, template fallbacks.
    pub notices: Vec<String>,
    /// Under a constraint, whether the reply is a complete valid value (`None` without one;
    /// `Some(false)` when `max_tokens` cut it).
    pub constraint_satisfied: Option<bool>,
}

/// A chat with a model: history, system prompt, and a session whose KV cache is reused from
/// turn to turn.
pub struct Assistant {
    model: Model,
    session: Session,
    format: ChatFormat,
    history: Vec<Message>,
    opts: AssistantOptions,
}

impl Assistant {
    /// Load the model at `path` and start an empty conversation.
    pub fn load(
        path: impl AsRef<Path>,
        load: LoadOptions,
        opts: AssistantOptions,
    ) -> Result<Assistant, AssistantError> {
        Assistant::new(Model::load(path, load)?, opts)
    }

    /// Start an empty conversation with a loaded model.
    pub fn new(model: Model, opts: AssistantOptions) -> Result<Assistant, AssistantError> {
        let format =
            ChatFormat::from_metadata(model.file().metadata(), opts.chat_template.as_deref())?;
        let session = Session::new(&model, opts.session.clone())?;
        let mut a = Assistant {
            model,
            session,
            format,
            history: Vec::new(),
            opts,
        };
        a.reset();
        Ok(a)
    }

    /// Which chat template is in use, in words.
    pub fn template_description(&self) -> String {
        self.format.describe()
    }

    /// A warning about the model's chat template (it failed and a built-in one is used).
    pub fn take_template_warning(&self) -> Option<String> {
        self.format.take_warning()
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn options(&self) -> &AssistantOptions {
        &self.opts
    }

    pub fn options_mut(&mut self) -> &mut AssistantOptions {
        &mut self.opts
    }

    /// Context length of the session.
    pub fn n_ctx(&self) -> usize {
        self.session.n_ctx()
    }

    /// Tokens in the KV cache.
    pub fn n_cached(&self) -> usize {
        self.session.n_past()
    }

    /// The conversation so far (the system message first, if any).
    pub fn history(&self) -> &[Message] {
        &self.history
    }

    /// Replace the conversation (e.g. one loaded from a file). It must be an optional system
    /// message followed by alternating user and assistant messages, starting with a user
    /// message. The KV cache is kept: the next turn reuses whatever prefix still matches.
    pub fn set_history(&mut self, messages: Vec<Message>) -> Result<(), AssistantError> {
        let body = match messages.first() {
            Some(m) if m.role == "system" => &messages[1..],
            _ => &messages[..],
        };
        let alternating = body.iter().enumerate().all(|(i, m)| {
            m.role
                == if i.is_multiple_of(2) {
                    "user"
                } else {
                    "assistant"
                }
        });
        if !alternating {
            return Err(AssistantError::BadHistory);
        }
        self.history = messages;
        Ok(())
    }

    /// The LoRA adapters of the next turns with their scales (empty: the base alone), replacing
    /// the previous set, e.g. between turns; the conversation is kept and the KV cache, computed
    /// with the old set, starts over. Adapters come from [`Model::load_adapter`] of this model.
    pub fn set_adapters(
        &mut self,
        adapters: &[(std::sync::Arc<crate::adapters::LoraAdapter>, f32)],
    ) -> Result<(), AssistantError> {
        Ok(self.session.set_adapters(adapters)?)
    }

    /// Forget the conversation (the system prompt stays) and clear the KV cache.
    pub fn reset(&mut self) {
        self.history.clear();
        if let Some(s) = &self.opts.system_prompt {
            self.history.push(Message::system(s.clone()));
        }
        self.session.reset();
    }

    /// Change the system prompt (takes effect from the next turn).
    pub fn set_system_prompt(&mut self, system: Option<String>) {
        if self.history.first().is_some_and(|m| m.role == "system") {
            self.history.remove(0);
        }
        if let Some(s) = &system {
            self.history.insert(0, Message::system(s.clone()));
        }
        self.opts.system_prompt = system;
    }

    /// Answer `user_input`; at most `max_tokens` tokens (negative: until an end-of-generation
    /// token or a full context).
    pub fn respond(&mut self, user_input: &str, max_tokens: i64) -> Result<String, AssistantError> {
        let saved = self.opts.max_tokens;
        self.opts.max_tokens = max_tokens;
        let r = self.respond_streaming(user_input, |_| ControlFlow::Continue(()));
        self.opts.max_tokens = saved;
        Ok(r?.text)
    }

    /// Answer `user_input`, handing each printable piece of the reply to `on_text` as it is
    /// generated (UTF-8 safe, stop strings held back). `on_text` returning `Break` ends the
    /// reply early (e.g. on Ctrl-C); what was generated so far is kept in the history.
    pub fn respond_streaming(
        &mut self,
        user_input: &str,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Reply, AssistantError> {
        let start = Instant::now();
        self.history.push(Message::user(user_input));
        let result = self.turn(start, &mut on_text);
        if result.is_err() {
            // Leave the conversation as it was before this turn.
            self.history.pop();
        }
        result
    }

    fn turn(
        &mut self,
        start: Instant,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Reply, AssistantError> {
        let mut notices = Vec::new();
        let prompt = self.fit_prompt(&mut notices)?;
        if let Some(w) = self.format.take_warning() {
            notices.push(w);
        }

        // Keep the cached tokens that agree with the new prompt; at least one prompt token
        // must be fed to get the logits of the next one.
        if prompt.is_empty() {
            return Err(SessionError::EmptyPrompt.into());
        }
        let mut keep = if self.opts.reuse_prefix {
            common_prefix(self.session.tokens(), &prompt)
        } else {
            0
        };
        if keep == prompt.len() {
            keep -= 1;
        }
        self.session.truncate(keep);

        let gen_opts = GenerateOptions {
            max_tokens: self.opts.max_tokens,
            sampler: self.opts.sampler.clone(),
            top_logits: 0,
        };
        let model = self.model.clone();
        let tokenizer = model.tokenizer();
        let mut decoder = tokenizer.stream_decoder();
        let mut stops = StopMatcher::new(&self.opts.stop);
        let mut text = String::new();
        let mut interrupted = false;
        let mut generated = 0usize;
        let mut ttft = None;
        let mut gen = self.session.generate(&prompt[keep..], &gen_opts)?;
        let mut emit = |piece: &str, text: &mut String| -> ControlFlow<()> {
            if piece.is_empty() {
                return ControlFlow::Continue(());
            }
            text.push_str(piece);
            on_text(piece)
        };
        while let Some(step) = gen.next() {
            let step = step?;
            ttft.get_or_insert_with(|| start.elapsed());
            generated += 1;
            if step.is_eog {
                break;
            }
            let out = stops.push(&decoder.push(step.id));
            let flow = emit(&out.text, &mut text);
            if out.stopped {
                gen.stop();
                break;
            }
            if flow.is_break() {
                interrupted = true;
                gen.stop();
                break;
            }
        }
        let stop_reason = gen.stop_reason().unwrap_or(StopReason::Stop);
        let constraint_satisfied = gen.constraint_satisfied();
        drop(gen);
        if !stops.stopped() {
            let tail = decoder.finish();
            let mut rest = stops.push(&tail).text;
            if !stops.stopped() {
                rest.push_str(&stops.finish());
            }
            let _ = emit(&rest, &mut text);
        }
        self.history.push(Message::assistant(text.clone()));
        Ok(Reply {
            text,
            stop_reason,
            interrupted,
            prompt_tokens: prompt.len(),
            reused_tokens: keep,
            generated_tokens: generated,
            constraint_satisfied,
            time_to_first_token: ttft.unwrap_or_else(|| start.elapsed()),
            total_time: start.elapsed(),
            notices,
        })
    }

    /// Tokens of the conversation with an assistant header; drops the oldest whole turns until
    /// the prompt and the reply fit in the context.
    fn fit_prompt(&mut self, notices: &mut Vec<String>) -> Result<Vec<u32>, AssistantError> {
        let n_ctx = self.session.n_ctx();
        // Room for the reply: `max_tokens`, or a quarter of the context when unbounded.
        let reply_room = usize::try_from(self.opts.max_tokens)
            .unwrap_or(n_ctx / 4)
            .max(1);
        let mut dropped = 0usize;
        let before = self.history.clone();
        loop {
            let ids = match self.tokenize_conversation() {
                Ok(ids) => ids,
                Err(e) => {
                    self.history = before;
                    return Err(e);
                }
            };
            let needed = ids.len() + reply_room;
            if needed <= n_ctx {
                if dropped > 0 {
                    notices.push(format!(
                        "the context ({n_ctx} tokens) was full: dropped the oldest {dropped} turn{}",
                        if dropped == 1 { "" } else { "s" }
                    ));
                }
                return Ok(ids);
            }
            if !self.drop_oldest_turn() {
                // Nothing was said: keep the turns that were dropped while trying.
                self.history = before;
                return Err(AssistantError::TooLong { needed, n_ctx });
            }
            dropped += 1;
        }
    }

    /// Removes the first user message and the assistant reply after it (never the system
    /// message nor the last user message). Returns whether anything was removed.
    fn drop_oldest_turn(&mut self) -> bool {
        let first = usize::from(self.history.first().is_some_and(|m| m.role == "system"));
        // The last message is the pending user input: keep it.
        if self.history.len() < first + 2 {
            return false;
        }
        let end = (first + 2).min(self.history.len() - 1);
        self.history.drain(first..end);
        true
    }

    fn tokenize_conversation(&self) -> Result<Vec<u32>, AssistantError> {
        Ok(encode_conversation(
            &self.format,
            self.model.tokenizer(),
            &self.history,
            true,
        )?)
    }
}

/// Length of the longest common prefix.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
