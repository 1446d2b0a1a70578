//! Many sequences in one forward pass: the core of the batched server.
//!
//! A [`Batch`] holds `n_seq` sequence slots over one shared [`Model`], each with its own KV
//! cache (of `n_ctx` positions, allocated as they are written), tokens and LoRA set. A
//! [`Batch::step`] runs chunks of any of them in one forward pass: every matrix product reads
//! the weights once for all the rows, and attention runs per sequence on its own cache.
//!
//! **Batch invariance.** A sequence's logits do not depend on the other sequences of a step,
//! nor on how its tokens were cut into steps: the matrix products give every row the same
//! bits whatever the batch, the element-wise ops are per row, and attention takes the
//! batch-invariant path (`attention_invariant`: ggml's tiled numerics for every token, f32
//! throughout). A request's greedy output is then bit-identical alone or among fifteen others,
//! and a prefix computed by one request serves another exactly. (A [`Session`] instead follows
//! llama.cpp's per-key decode numerics, so the two agree to rounding, not bit for bit.)
//!
//! [`Session`]: crate::Session

use std::sync::Arc;

use crate::adapters::LoraAdapter;
use crate::arch::{Logits, Scratch};
use crate::backend::{Backend, LoraTerm, Segment};
use crate::kv_cache::{KvCacheSpec, KvType};
use crate::model::Model;
use crate::session::{lora_terms, SessionError};

/// Settings of a [`Batch`].
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// Sequence slots.
    pub n_seq: usize,
    /// Positions per slot.
    pub n_ctx: usize,
    pub kv_type: KvType,
    /// Most tokens in one step, all sequences together.
    pub n_batch: usize,
}

/// Part of a [`Batch::step`]: `tokens` appended to sequence `seq`; with `logits`, the step
/// returns the logits after the last of them.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    pub seq: usize,
    pub tokens: &'a [u32],
    pub logits: bool,
}

struct Seq {
    tokens: Vec<u32>,
    adapters: Vec<(Arc<LoraAdapter>, f32)>,
    terms: Vec<LoraTerm>,
}

/// Sequence slots sharing one model and one forward pass per step.
pub struct Batch {
    model: Model,
    backend: Box<dyn Backend>,
    scratch: Scratch,
    n_ctx: usize,
    seqs: Vec<Seq>,
    /// The union of the slots' LoRA terms is stale.
    lora_dirty: bool,
}

impl Batch {
    /// `opts.n_seq` empty slots of `opts.n_ctx` positions over `model` (a decoder). The KV
    /// memory of every slot filling its context must fit the memory available.
    pub fn new(model: &Model, opts: BatchOptions) -> Result<Batch, SessionError> {
        let model = model.clone();
        if model.is_encoder() {
            return Err(SessionError::Encoder);
        }
        let cfg = model.config().clone();
        if opts.n_ctx == 0 || opts.n_seq == 0 {
            return Err(SessionError::ZeroContext);
        }
        let spec = KvCacheSpec {
            n_layer: cfg.n_layer,
            n_ctx: opts.n_ctx,
            k_width: cfg.k_width(),
            v_width: cfg.v_width(),
            ty: opts.kv_type,
        };
        let total = spec
            .checked_bytes()
            .and_then(|b| b.checked_mul(opts.n_seq))
            .filter(|_| opts.n_ctx <= i32::MAX as usize);
        let Some(bytes) = total else {
            return Err(SessionError::ContextOverflow { n_ctx: opts.n_ctx });
        };
        if let Some(available) = crate::kv_cache::memory_limit() {
            if bytes as u64 > available {
                return Err(SessionError::ContextTooLarge {
                    n_ctx: opts.n_ctx * opts.n_seq,
                    bytes: bytes as u64,
                    available,
                });
            }
        }
        let mut backend = model
            .new_backend()
            .map_err(|e| SessionError::Backend(e.to_string()))?;
        let scratch = Scratch::new(backend.as_mut(), &cfg, opts.n_batch.max(1));
        backend
            .alloc_kv_slots(&spec, opts.n_seq)
            .map_err(SessionError::Backend)?;
        if let Some(e) = backend.take_error() {
            return Err(SessionError::Backend(e));
        }
        let seqs = (0..opts.n_seq)
            .map(|_| Seq {
                tokens: Vec::new(),
                adapters: Vec::new(),
                terms: Vec::new(),
            })
            .collect();
        Ok(Batch {
            model,
            backend,
            scratch,
            n_ctx: opts.n_ctx,
            seqs,
            lora_dirty: false,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Sequence slots.
    pub fn n_seq(&self) -> usize {
        self.seqs.len()
    }

    /// Positions per slot.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Most tokens per step.
    pub fn max_tokens(&self) -> usize {
        self.scratch.max_batch
    }

    /// The tokens in slot `seq`'s cache.
    pub fn tokens(&self, seq: usize) -> &[u32] {
        &self.seqs[seq].tokens
    }

    /// Keep only the first `n` tokens of slot `seq` (a shared prefix is reused: its keys and
    /// values stay, later positions are overwritten).
    pub fn truncate(&mut self, seq: usize, n: usize) {
        self.seqs[seq].tokens.truncate(n);
    }

    /// The LoRA adapters of slot `seq` (with their user scales).
    pub fn adapters(&self, seq: usize) -> &[(Arc<LoraAdapter>, f32)] {
        &self.seqs[seq].adapters
    }

    /// Give slot `seq` these adapters (empty: the base alone). A different set empties the
    /// slot (its cache was computed with the old one); the same set keeps it.
    pub fn set_adapters(
        &mut self,
        seq: usize,
        adapters: &[(Arc<LoraAdapter>, f32)],
    ) -> Result<(), SessionError> {
        let same = {
            let cur = &self.seqs[seq].adapters;
            cur.len() == adapters.len()
                && cur
                    .iter()
                    .zip(adapters)
                    .all(|(a, b)| Arc::ptr_eq(&a.0, &b.0) && a.1.to_bits() == b.1.to_bits())
        };
        if same {
            return Ok(());
        }
        let terms = lora_terms(&self.model, adapters, seq as u32)?;
        let s = &mut self.seqs[seq];
        s.adapters = adapters.to_vec();
        s.terms = terms;
        s.tokens.clear();
        self.lora_dirty = true;
        Ok(())
    }

    /// One forward pass over `chunks` (at most one per slot; together at most
    /// [`Batch::max_tokens`] tokens, each chunk within its slot's context): every chunk's
    /// tokens are appended to its slot. Returns the logits (`vocab` values) after the last
    /// token of each chunk that asks for them, in the order of `chunks`. On an error no slot
    /// has changed its tokens (but a slot that was being written may hold stale keys past
    /// its tokens, which are overwritten later).
    pub fn step(&mut self, chunks: &[Chunk<'_>]) -> Result<Vec<Vec<f32>>, SessionError> {
        let vocab = self.model.config().vocab_size;
        let mut total = 0usize;
        for (i, c) in chunks.iter().enumerate() {
            let Some(s) = self.seqs.get(c.seq) else {
                return Err(SessionError::Backend(format!(
                    "sequence slot {} of {}",
                    c.seq,
                    self.seqs.len()
                )));
            };
            if c.tokens.is_empty() {
                return Err(SessionError::EmptyPrompt);
            }
            if chunks[..i].iter().any(|d| d.seq == c.seq) {
                return Err(SessionError::Backend(format!(
                    "sequence slot {} twice in one step",
                    c.seq
                )));
            }
            let needed = s.tokens.len() + c.tokens.len();
            if needed > self.n_ctx {
                return Err(SessionError::ContextFull {
                    needed,
                    n_ctx: self.n_ctx,
                });
            }
            if let Some(&id) = c.tokens.iter().find(|&&id| id as usize >= vocab) {
                return Err(SessionError::BadToken { id, vocab });
            }
            total += c.tokens.len();
        }
        if total == 0 {
            return Ok(Vec::new());
        }
        if total > self.scratch.max_batch {
            return Err(SessionError::ContextFull {
                needed: total,
                n_ctx: self.scratch.max_batch,
            });
        }
        if self.lora_dirty {
            let all: Vec<LoraTerm> = self.seqs.iter().flat_map(|s| s.terms.clone()).collect();
            self.backend.set_lora(&all);
            if let Some(e) = self.backend.take_error() {
                return Err(SessionError::Backend(e));
            }
            self.lora_dirty = false;
        }
        let mut tokens = Vec::with_capacity(total);
        let mut segs = Vec::with_capacity(chunks.len());
        let mut rows = Vec::new();
        for c in chunks {
            tokens.extend_from_slice(c.tokens);
            segs.push(Segment {
                seq: c.seq as u32,
                pos0: self.seqs[c.seq].tokens.len() as u32,
                len: c.tokens.len() as u32,
                lora_set: c.seq as u32,
            });
            if c.logits {
                rows.push(tokens.len() - 1);
            }
        }
        self.backend
            .set_batch(&segs)
            .map_err(SessionError::Backend)?;
        let mut out = Vec::new();
        let arch = &self.model.inner.arch;
        arch.forward(
            self.backend.as_mut(),
            &self.scratch,
            &tokens,
            0,
            Logits::Rows(&rows),
            &mut out,
        );
        let done = self.backend.set_batch(&[]);
        if let Some(e) = self.backend.take_error() {
            return Err(SessionError::Backend(e));
        }
        done.map_err(SessionError::Backend)?;
        for c in chunks {
            self.seqs[c.seq].tokens.extend_from_slice(c.tokens);
        }
        Ok(out.chunks(vocab).map(<[f32]>::to_vec).collect())
    }
}
