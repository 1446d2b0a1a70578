//! Sessions: one KV cache and its buffers over a shared [`Model`], fed with tokens in batches;
//! and generation, an iterator of sampled tokens.

use crate::arch::{Logits, Scratch};
use crate::backend::{Backend, PoolKind};
use crate::kv_cache::{KvCacheSpec, KvType};
use crate::model::Model;
use crate::sampler::{top_logits, Sampler, SamplerOptions};

/// Errors while running a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{needed} tokens do not fit in the context of {n_ctx} (raise -c or lower -n)")]
    ContextFull { needed: usize, n_ctx: usize },
    #[error("the context size must be at least 1")]
    ZeroContext,
    #[error("a context of {n_ctx} tokens is too large: its KV cache size overflows")]
    ContextOverflow { n_ctx: usize },
    #[error("a context of {n_ctx} tokens needs a {} MiB KV cache, more than the {} MiB of memory available (lower -c)", bytes >> 20, available >> 20)]
    ContextTooLarge {
        n_ctx: usize,
        bytes: u64,
        available: u64,
    },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error("the prompt is empty (no tokens)")]
    EmptyPrompt,
    #[error("backend: {0}")]
    Backend(String),
    #[error("{0}")]
    Adapter(String),
    #[error("this model is an encoder: it has no next-token logits (use tinyrt embed)")]
    Encoder,
    #[error("this model is not an encoder (no pooled embeddings)")]
    NotEncoder,
    #[error("token type {ty} is outside the model's {n} token types")]
    BadTokenType { ty: u32, n: usize },
    /// A bad schema or grammar (before any work), or a constraint that failed while
    /// generating.
    #[error("{0}")]
    Constraint(#[from] crate::constraint::ConstraintError),
}

/// The backend's LoRA terms of `adapters` (with their user scales) on `model`, for LoRA set
/// `set`.
pub(crate) fn lora_terms(
    model: &Model,
    adapters: &[(std::sync::Arc<crate::adapters::LoraAdapter>, f32)],
    set: u32,
) -> Result<Vec<crate::backend::LoraTerm>, SessionError> {
    let table = model.inner.cpu_weights.table();
    let mut terms = Vec::new();
    for (adapter, user_scale) in adapters {
        if !user_scale.is_finite() {
            return Err(SessionError::Adapter(format!(
                "{}: scale {user_scale} is not a number",
                adapter.path.display()
            )));
        }
        for (i, p) in adapter.pairs.iter().enumerate() {
            let Some(weight) = table.id_of(&p.target) else {
                return Err(SessionError::Adapter(format!(
                    "{}: {} is not a matrix this model multiplies",
                    adapter.path.display(),
                    p.target
                )));
            };
            terms.push(crate::backend::LoraTerm {
                weight,
                adapter: std::sync::Arc::clone(adapter),
                pair: i,
                scale: adapter.scale(p, *user_scale),
                set,
            });
        }
    }
    Ok(terms)
}

/// Per-session settings.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Context length (KV cache positions); `None` = the model's, capped at 4096.
    pub n_ctx: Option<usize>,
    pub kv_type: KvType,
    /// Largest number of prompt tokens per forward pass.
    pub n_batch: usize,
    /// The batch-invariant numerics of [`crate::batch`] (every token through ggml's tiled
    /// attention path): a token's bits do not depend on how the prompt was cut into passes,
    /// and equal those of `tinyrt serve`. Off: llama.cpp's per-pass choice (its decode path
    /// for small passes).
    pub batch_invariant: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: None,
            kv_type: KvType::F16,
            n_batch: 512,
            batch_invariant: false,
        }
    }
}

/// A conversation state: the tokens seen so far and their keys/values.
pub struct Session {
    model: Model,
    backend: Box<dyn Backend>,
    batch_invariant: bool,
    scratch: Scratch,
    n_ctx: usize,
    tokens: Vec<u32>,
    logits: Vec<f32>,
}

/// One sequence of an encoder's packed batch ([`Session::encode_packed`]).
#[derive(Clone, Copy, Debug)]
pub struct EncoderInput<'a> {
    pub tokens: &'a [u32],
    /// One token type per token (empty, or shorter: type 0 for the rest).
    pub types: &'a [u32],
}

impl Session {
    /// A new session over `model` (which it keeps a handle to: the weights are shared) with its
    /// own KV cache.
    pub fn new(model: &Model, opts: SessionOptions) -> Result<Session, SessionError> {
        let model = model.clone();
        let cfg = model.config().clone();
        let n_ctx = opts.n_ctx.unwrap_or(cfg.n_ctx_train.min(4096));
        if n_ctx == 0 {
            return Err(SessionError::ZeroContext);
        }
        let spec = KvCacheSpec {
            n_layer: cfg.n_layer,
            n_ctx,
            k_width: cfg.k_width(),
            v_width: cfg.v_width(),
            ty: opts.kv_type,
        };
        // Positions are i32 in the kernels (RoPE, masks); sizes are checked before anything
        // is allocated, and the whole cache must fit the memory left (it is allocated as
        // positions are written, but a session may fill its context).
        let bytes = match spec.checked_bytes() {
            Some(b) if n_ctx <= i32::MAX as usize => b as u64,
            _ => return Err(SessionError::ContextOverflow { n_ctx }),
        };
        if !model.uses_cuda() && !model.is_encoder() {
            if let Some(available) = crate::kv_cache::memory_limit() {
                if bytes > available {
                    return Err(SessionError::ContextTooLarge {
                        n_ctx,
                        bytes,
                        available,
                    });
                }
            }
        }
        let mut backend = model
            .new_backend()
            .map_err(|e| SessionError::Backend(e.to_string()))?;
        let scratch = Scratch::new(backend.as_mut(), &cfg, opts.n_batch.clamp(1, n_ctx));
        // An encoder's attention reads the batch itself (`Backend::attention_packed`).
        if !model.is_encoder() {
            backend.alloc_kv_cache(&spec);
        }
        if let Some(e) = backend.take_error() {
            return Err(SessionError::Backend(e));
        }
        if opts.batch_invariant && model.uses_cuda() {
            return Err(SessionError::Backend(
                "batch-invariant numerics are not on CUDA yet".into(),
            ));
        }
        Ok(Session {
            model,
            backend,
            batch_invariant: opts.batch_invariant,
            scratch,
            n_ctx,
            tokens: Vec::new(),
            logits: Vec::new(),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The backend's name (`cpu-avx512`, ...).
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// Context length (positions the KV cache holds).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Number of tokens already in the cache.
    pub fn n_past(&self) -> usize {
        self.tokens.len()
    }

    /// The tokens already in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Logits after the last token fed (empty before any).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Keep only the first `n` tokens of the cache (later positions are overwritten by the
    /// next feed); the logits are stale until then. Used to reuse a shared prompt prefix.
    pub fn truncate(&mut self, n: usize) {
        if n < self.tokens.len() {
            self.tokens.truncate(n);
            self.logits.clear();
        }
    }

    /// Forget every token (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.logits.clear();
    }

    /// The LoRA adapters of every later forward pass, with their user scales (empty: the base
    /// alone), replacing the previous set; the base weights are untouched and shared. The
    /// cache was computed with the old set, so the session starts over. Adapters come from
    /// [`Model::load_adapter`] of this model.
    pub fn set_adapters(
        &mut self,
        adapters: &[(std::sync::Arc<crate::adapters::LoraAdapter>, f32)],
    ) -> Result<(), SessionError> {
        let terms = lora_terms(&self.model, adapters, 0)?;
        self.reset();
        self.backend.set_lora(&terms);
        if let Some(e) = self.backend.take_error() {
            self.backend.set_lora(&[]);
            return Err(SessionError::Backend(e));
        }
        Ok(())
    }

    fn check(&self, tokens: &[u32]) -> Result<(), SessionError> {
        if self.model.inner.arch.is_encoder() {
            return Err(SessionError::Encoder);
        }
        self.check_tokens(tokens)
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<(), SessionError> {
        let needed = self.tokens.len() + tokens.len();
        if needed > self.n_ctx {
            return Err(SessionError::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        let vocab = self.model.config().vocab_size;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(SessionError::BadToken { id, vocab });
        }
        Ok(())
    }

    fn run(
        &mut self,
        tokens: &[u32],
        which: Logits,
        out: &mut Vec<f32>,
    ) -> Result<(), SessionError> {
        let arch = &self.model.inner.arch;
        let pos0 = self.tokens.len();
        if self.batch_invariant {
            let seg = crate::backend::Segment {
                seq: 0,
                pos0: pos0 as u32,
                len: tokens.len() as u32,
                lora_set: 0,
            };
            self.backend
                .set_batch(&[seg])
                .map_err(SessionError::Backend)?;
        }
        arch.forward(
            self.backend.as_mut(),
            &self.scratch,
            tokens,
            pos0,
            which,
            out,
        );
        if self.batch_invariant {
            self.backend.set_batch(&[]).map_err(SessionError::Backend)?;
        }
        if let Some(e) = self.backend.take_error() {
            return Err(SessionError::Backend(e));
        }
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// Feed tokens (in batches of at most `n_batch`); returns the logits of the last one.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<&[f32], SessionError> {
        self.check(tokens)?;
        let mut logits = std::mem::take(&mut self.logits);
        for chunk in tokens.chunks(self.scratch.max_batch) {
            self.run(chunk, Logits::Last, &mut logits)?;
        }
        self.logits = logits;
        Ok(&self.logits)
    }

    /// Feed one token and return the id of its largest logit (ties: lowest id), computed by
    /// the backend where the logits are (on a GPU only the id comes back). Greedy decoding;
    /// [`Session::logits`] is empty afterwards.
    pub fn feed_argmax(&mut self, token: u32) -> Result<u32, SessionError> {
        self.check(&[token])?;
        let mut none = std::mem::take(&mut self.logits);
        self.run(&[token], Logits::KeepLast, &mut none)?;
        self.logits = none;
        let vocab = self.model.config().vocab_size;
        let id = self.backend.argmax(self.scratch.logits, 0, vocab);
        if let Some(e) = self.backend.take_error() {
            return Err(SessionError::Backend(e));
        }
        Ok(id)
    }

    /// A decoder's final hidden states (after the output norm) of `tokens` fed from the start
    /// (`tokens.len() × n_embd`): what llama.cpp pools for a decoder's embeddings. The session
    /// is reset first and after.
    pub fn hidden_states(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SessionError> {
        self.reset();
        if tokens.is_empty() {
            return Err(SessionError::EmptyPrompt);
        }
        self.check(tokens)?;
        let mut all = Vec::with_capacity(tokens.len() * self.scratch.n_embd);
        let mut part = Vec::new();
        let r = tokens.chunks(self.scratch.max_batch).try_for_each(|chunk| {
            self.run(chunk, Logits::Hidden, &mut part)?;
            all.extend_from_slice(&part);
            Ok(())
        });
        self.reset();
        r.map(|()| all)
    }

    /// Feed tokens and return the logits of every one of them (`tokens.len() × vocab`).
    pub fn feed_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SessionError> {
        self.check(tokens)?;
        let vocab = self.model.config().vocab_size;
        let mut all = Vec::with_capacity(tokens.len() * vocab);
        let mut part = Vec::new();
        for chunk in tokens.chunks(self.scratch.max_batch) {
            self.run(chunk, Logits::All, &mut part)?;
            all.extend_from_slice(&part);
        }
        if let Some(last) = all.len().checked_sub(vocab) {
            self.logits.clear();
            self.logits.extend_from_slice(&all[last..]);
        }
        Ok(all)
    }

    /// An encoder's final hidden states of one whole sequence (`tokens.len() × n_embd`, row
    /// per token), with token types `types` (empty: all 0): [`Session::encode_packed`] of one
    /// sequence without pooling.
    pub fn encode(&mut self, tokens: &[u32], types: &[u32]) -> Result<Vec<f32>, SessionError> {
        self.encode_packed(&[EncoderInput { tokens, types }], None)
    }

    /// An encoder's forward pass over several sequences at once, packed back to back (no
    /// padding): each starts at position 0 and attends only itself, and every matrix product
    /// serves all of them. Returns every token's final hidden state (`Σ len × n_embd`, in
    /// order) or, with `pool`, one pooled row per sequence (`seqs.len() × n_embd`). Each
    /// sequence must fit the model's positions and all of them the session's batch
    /// ([`Session::max_batch`]). The session keeps no state between calls.
    pub fn encode_packed(
        &mut self,
        seqs: &[EncoderInput<'_>],
        pool: Option<PoolKind>,
    ) -> Result<Vec<f32>, SessionError> {
        let model = self.model.clone();
        let arch = &model.inner.arch;
        if !arch.is_encoder() {
            return Err(SessionError::NotEncoder);
        }
        if seqs.is_empty() || seqs.iter().any(|s| s.tokens.is_empty()) {
            return Err(SessionError::EmptyPrompt);
        }
        self.reset();
        let positions = arch.max_positions();
        let total: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        for s in seqs {
            if s.tokens.len() > positions {
                return Err(SessionError::ContextFull {
                    needed: s.tokens.len(),
                    n_ctx: positions,
                });
            }
        }
        if total > self.scratch.max_batch {
            return Err(SessionError::ContextFull {
                needed: total,
                n_ctx: self.scratch.max_batch,
            });
        }
        let vocab = model.config().vocab_size;
        let n_types = arch.n_token_types();
        let mut tokens = Vec::with_capacity(total);
        let mut types = Vec::new();
        let mut bounds = Vec::with_capacity(seqs.len() + 1);
        bounds.push(0u32);
        let any_types = seqs.iter().any(|s| !s.types.is_empty());
        for s in seqs {
            if let Some(&id) = s.tokens.iter().find(|&&id| id as usize >= vocab) {
                return Err(SessionError::BadToken { id, vocab });
            }
            if let Some(&ty) = s.types.iter().find(|&&t| t as usize >= n_types.max(1)) {
                return Err(SessionError::BadTokenType { ty, n: n_types });
            }
            tokens.extend_from_slice(s.tokens);
            if any_types {
                let n = s.tokens.len();
                types.extend((0..n).map(|i| s.types.get(i).copied().unwrap_or(0)));
            }
            bounds.push(tokens.len() as u32);
        }
        let b = self.backend.as_mut();
        let Some(states) = arch.encode(b, &self.scratch, &tokens, &types, &bounds) else {
            return Err(SessionError::NotEncoder);
        };
        let e = model.config().n_embd;
        let mut out = Vec::new();
        match pool {
            Some(kind) => {
                b.pool(states, &bounds, kind, self.scratch.out);
                out.resize(seqs.len() * e, 0.0);
                b.read(self.scratch.out, 0, &mut out);
            }
            None => {
                out.resize(total * e, 0.0);
                b.read(states, 0, &mut out);
            }
        }
        if let Some(e) = self.backend.take_error() {
            return Err(SessionError::Backend(e));
        }
        Ok(out)
    }

    /// The most tokens one forward pass takes (an encoder's packed batch, a prompt's chunk).
    pub fn max_batch(&self) -> usize {
        self.scratch.max_batch
    }

    /// Feed `prompt`, then sample up to `opts.max_tokens` tokens. The context is checked
    /// before any work: `prompt + max_tokens` must fit.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Generation<'_>, SessionError> {
        let mut sampler = Sampler::new(opts.sampler.clone());
        if let Some(spec) = &opts.sampler.constraint {
            let c = self.model.grammars()?.compile(spec)?;
            sampler.set_constraint(Some(c));
        }
        self.generate_with(prompt, opts, sampler)
    }

    /// [`Session::generate`] with a sampler of the caller's (e.g. one holding a constraint
    /// compiled once with [`Model::grammars`]); `opts.sampler` is not used.
    pub fn generate_with(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut sampler: Sampler,
    ) -> Result<Generation<'_>, SessionError> {
        if prompt.is_empty() && self.tokens.is_empty() {
            return Err(SessionError::EmptyPrompt);
        }
        let limit = usize::try_from(opts.max_tokens).ok();
        if let Some(n) = limit {
            let needed = self.tokens.len() + prompt.len() + n;
            // The last sampled token is never fed back, so it needs no cache slot.
            if needed > self.n_ctx + usize::from(n > 0) {
                return Err(SessionError::ContextFull {
                    needed,
                    n_ctx: self.n_ctx,
                });
            }
        }
        for &t in self.tokens.iter().chain(prompt) {
            sampler.accept(t);
        }
        if !prompt.is_empty() {
            self.feed(prompt)?;
        }
        Ok(Generation {
            session: self,
            sampler,
            limit,
            produced: 0,
            top_logits: opts.top_logits,
            stop: None,
            ignore_eog: false,
            next_id: None,
        })
    }

    fn is_eog(&self, id: u32) -> bool {
        self.model.is_eog(id)
    }
}

/// Generation settings.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Tokens to generate: `0` = prompt only, negative = until an end-of-generation token or a
    /// full context.
    pub max_tokens: i64,
    pub sampler: SamplerOptions,
    /// How many of the largest raw logits to report per step (0 = none).
    pub top_logits: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            sampler: SamplerOptions::default(),
            top_logits: 0,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token was produced (it is the last step).
    Eos,
    /// `max_tokens` were produced or the context is full.
    Length,
    /// The caller stopped (e.g. a stop string).
    Stop,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::Length => "length",
            StopReason::Stop => "stop",
        }
    }
}

/// One generated token.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub id: u32,
    /// The largest raw logits (before any sampling transform), largest first.
    pub top: Vec<(u32, f32)>,
    /// Whether `id` ends generation.
    pub is_eog: bool,
}

/// Iterator of generated tokens; see [`Session::generate`].
pub struct Generation<'s> {
    session: &'s mut Session,
    sampler: Sampler,
    limit: Option<usize>,
    produced: usize,
    top_logits: usize,
    stop: Option<StopReason>,
    ignore_eog: bool,
    /// The next token when the backend already chose it (greedy decoding on the device).
    next_id: Option<u32>,
}

impl Generation<'_> {
    /// Never sample an end-of-generation token (llama.cpp's `--ignore-eos`: their logits
    /// become -inf); generation ends by length or [`Generation::stop`]. The reported top
    /// logits stay raw.
    pub fn ignore_eog(&mut self) {
        self.ignore_eog = true;
    }

    /// Why generation ended (`None` while it has not).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    /// End generation early (the reason becomes [`StopReason::Stop`]).
    pub fn stop(&mut self) {
        self.stop.get_or_insert(StopReason::Stop);
    }

    /// The session being generated in.
    pub fn session(&self) -> &Session {
        self.session
    }

    /// The constraint, if generating under one.
    pub fn constraint(&self) -> Option<&crate::constraint::Constraint> {
        self.sampler.constraint()
    }

    /// Under a constraint, whether the output so far is a complete valid value (`None`
    /// without one). A generation that ended by [`StopReason::Length`] with `Some(false)` was
    /// cut off before its value was complete.
    pub fn constraint_satisfied(&self) -> Option<bool> {
        self.sampler.constraint().map(|c| c.is_accepting())
    }

    fn next_step(&mut self) -> Result<Option<Step>, SessionError> {
        if self.stop.is_some() {
            return Ok(None);
        }
        if self.limit.is_some_and(|l| self.produced >= l) {
            self.stop = Some(StopReason::Length);
            return Ok(None);
        }
        let logits = &self.session.logits;
        let top = top_logits(logits, self.top_logits);
        let id = if let Some(id) = self.next_id.take() {
            id
        } else if self.sampler.constraint().is_some() {
            let banned: &[u32] = if self.ignore_eog {
                self.session.model.tokenizer().eog_ids()
            } else {
                &[]
            };
            self.sampler.try_sample(logits, banned)?
        } else if self.ignore_eog {
            let mut masked = logits.clone();
            for &e in self.session.model.tokenizer().eog_ids() {
                if let Some(l) = masked.get_mut(e as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            self.sampler.sample(&masked)
        } else {
            self.sampler.sample(logits)
        };
        self.sampler.accept(id);
        self.sampler.commit(id)?;
        self.produced += 1;
        let is_eog = self.session.is_eog(id);
        if is_eog {
            self.stop = Some(StopReason::Eos);
        } else if self.sampler.constraint().is_some_and(|c| c.is_done()) {
            // The grammar allows nothing more: the value is complete, no forward pass needed.
            self.stop = Some(StopReason::Eos);
        } else if self.limit.is_some_and(|l| self.produced >= l)
            || self.session.n_past() >= self.session.n_ctx
        {
            // Done (or no room to feed the token back): the last token needs no forward pass.
            self.stop = Some(StopReason::Length);
        } else if self.top_logits == 0 && !self.ignore_eog && self.sampler.is_plain_argmax() {
            // Greedy with nothing else asked of the logits: the backend picks the next token.
            self.next_id = Some(self.session.feed_argmax(id)?);
        } else if let Some(c) = self.sampler.constraint_mut() {
            // The next mask is computed on another thread while the forward pass runs.
            let session = &mut *self.session;
            let (fed, mask) = std::thread::scope(|s| {
                let h = s.spawn(|| c.compute_mask());
                let fed = session.feed(&[id]).map(|_| ());
                (fed, h.join())
            });
            fed?;
            match mask {
                Ok(r) => r?,
                Err(_) => {
                    return Err(SessionError::Constraint(
                        crate::constraint::ConstraintError(
                            "constraint: the mask computation panicked".into(),
                        ),
                    ))
                }
            }
        } else {
            self.session.feed(&[id])?;
        }
        Ok(Some(Step { id, top, is_eog }))
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<Step, SessionError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_step() {
            Ok(s) => s.map(Ok),
            Err(e) => {
                self.stop = Some(StopReason::Stop);
                Some(Err(e))
            }
        }
    }
}
