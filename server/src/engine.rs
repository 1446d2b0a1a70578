//! The seam between the scheduler and the model: an [`Engine`] holds `n_slots` sequences, each
//! with its own cache of at most `slot_ctx` positions, and runs one forward pass over items of
//! several slots. The scheduler never knows which engine runs: [`SessionEngine`] (one
//! [`Session`] per slot, the items one after another) or a batched one.

use std::sync::Arc;

use tinyrt::adapters::LoraAdapter;
use tinyrt::{Model, Session, SessionOptions};

/// One slot's part of a forward pass.
#[derive(Clone, Copy, Debug)]
pub struct StepItem<'a> {
    pub slot: usize,
    /// Tokens appended to the slot's cache (at least one).
    pub tokens: &'a [u32],
    /// Whether the logits after the last of `tokens` are wanted.
    pub logits: bool,
}

/// Many sequences over one model.
pub trait Engine: Send + 'static {
    /// Sequences held at once (`-np`).
    fn n_slots(&self) -> usize;
    /// Positions of each slot's cache.
    fn slot_ctx(&self) -> usize;
    /// The tokens in the slot's cache.
    fn cached(&self, slot: usize) -> &[u32];
    /// Keep only the first `n` cached tokens of the slot.
    fn truncate(&mut self, slot: usize, n: usize);
    /// The LoRA adapters (with scales) of the slot's later passes; the slot's cache is emptied.
    fn set_adapters(&mut self, slot: usize, set: &[(Arc<LoraAdapter>, f32)]) -> Result<(), String>;
    /// One forward pass: each item appends its tokens to its slot (distinct slots, at most
    /// [`MAX_ITEM_TOKENS`] tokens each); returns, per item, the logits (vocabulary floats)
    /// after its last token when it asked for them.
    fn step(&mut self, items: &[StepItem<'_>]) -> Result<Vec<Option<Vec<f32>>>, String>;
    /// The numerics class of an item of `n_tokens` tokens: a token's bits (its cache entries,
    /// its logits) depend only on the tokens up to it and on the classes of the items each of
    /// their positions was fed in. The scheduler feeds every prompt position in the class
    /// `tinyrt generate` would (chunks of [`MAX_ITEM_TOKENS`]), so that answers do not depend
    /// on what else runs or on what a slot held. An engine whose bits never depend on the
    /// split keeps the default: one class.
    fn class(&self, n_tokens: usize) -> u8 {
        let _ = n_tokens;
        0
    }
    /// Whether an item may hold any number of a prompt's tokens (the bits do not depend on
    /// the split at all), so that the scheduler cuts prompts to its step budget.
    fn split_free(&self) -> bool {
        true
    }
}

/// Most tokens of one item (`SessionOptions::n_batch`: the chunk `tinyrt generate` feeds).
pub const MAX_ITEM_TOKENS: usize = 512;

/// One [`Session`] per slot: correct, not batched.
pub struct SessionEngine {
    sessions: Vec<Session>,
    slot_ctx: usize,
}

impl SessionEngine {
    /// `n_slots` sessions of `slot_ctx` positions each, with the other options of `opts`.
    pub fn new(
        model: &Model,
        n_slots: usize,
        slot_ctx: usize,
        opts: SessionOptions,
    ) -> Result<SessionEngine, String> {
        if n_slots == 0 || slot_ctx == 0 {
            return Err("the server needs at least one slot of at least one position".into());
        }
        let opts = SessionOptions {
            n_ctx: Some(slot_ctx),
            n_batch: MAX_ITEM_TOKENS,
            ..opts
        };
        let sessions = (0..n_slots)
            .map(|_| Session::new(model, opts.clone()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(SessionEngine { sessions, slot_ctx })
    }
}

impl Engine for SessionEngine {
    fn n_slots(&self) -> usize {
        self.sessions.len()
    }

    fn slot_ctx(&self) -> usize {
        self.slot_ctx
    }

    fn cached(&self, slot: usize) -> &[u32] {
        self.sessions[slot].tokens()
    }

    fn truncate(&mut self, slot: usize, n: usize) {
        self.sessions[slot].truncate(n);
    }

    fn set_adapters(&mut self, slot: usize, set: &[(Arc<LoraAdapter>, f32)]) -> Result<(), String> {
        self.sessions[slot]
            .set_adapters(set)
            .map_err(|e| e.to_string())
    }

    fn step(&mut self, items: &[StepItem<'_>]) -> Result<Vec<Option<Vec<f32>>>, String> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let logits = self.sessions[item.slot]
                .feed(item.tokens)
                .map_err(|e| e.to_string())?;
            out.push(item.logits.then(|| logits.to_vec()));
        }
        Ok(out)
    }

    /// The CPU attention follows llama.cpp: batches of at least `GGML_FA_TILE_Q` tokens take
    /// the tiled path (f32 accumulators), smaller ones the per-key path (f16 accumulators).
    fn class(&self, n_tokens: usize) -> u8 {
        u8::from(n_tokens >= tinyrt::kernels::cpu::attention::GGML_FA_TILE_Q)
    }

    fn split_free(&self) -> bool {
        false
    }
}

/// Every slot in one forward pass per step ([`tinyrt::batch::Batch`]): the weights are read
/// once for all the running sequences, and the batch-invariant numerics make a sequence's bits
/// independent of the others and of how its prompt was cut (one class, any split).
pub struct BatchEngine {
    batch: tinyrt::batch::Batch,
}

impl BatchEngine {
    /// `n_slots` slots of `slot_ctx` positions, a step of at most a prompt piece of
    /// [`MAX_ITEM_TOKENS`] plus one decode token per slot.
    pub fn new(
        model: &Model,
        n_slots: usize,
        slot_ctx: usize,
        opts: SessionOptions,
    ) -> Result<BatchEngine, String> {
        if n_slots == 0 || slot_ctx == 0 {
            return Err("the server needs at least one slot of at least one position".into());
        }
        let batch = tinyrt::batch::Batch::new(
            model,
            tinyrt::batch::BatchOptions {
                n_seq: n_slots,
                n_ctx: slot_ctx,
                kv_type: opts.kv_type,
                n_batch: MAX_ITEM_TOKENS + n_slots,
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(BatchEngine { batch })
    }
}

impl Engine for BatchEngine {
    fn n_slots(&self) -> usize {
        self.batch.n_seq()
    }

    fn slot_ctx(&self) -> usize {
        self.batch.n_ctx()
    }

    fn cached(&self, slot: usize) -> &[u32] {
        self.batch.tokens(slot)
    }

    fn truncate(&mut self, slot: usize, n: usize) {
        self.batch.truncate(slot, n);
    }

    fn set_adapters(&mut self, slot: usize, set: &[(Arc<LoraAdapter>, f32)]) -> Result<(), String> {
        // The scheduler expects an emptied slot, whatever the set.
        self.batch.truncate(slot, 0);
        self.batch
            .set_adapters(slot, set)
            .map_err(|e| e.to_string())
    }

    fn step(&mut self, items: &[StepItem<'_>]) -> Result<Vec<Option<Vec<f32>>>, String> {
        let chunks: Vec<tinyrt::batch::Chunk<'_>> = items
            .iter()
            .map(|i| tinyrt::batch::Chunk {
                seq: i.slot,
                tokens: i.tokens,
                logits: i.logits,
            })
            .collect();
        let mut logits = self
            .batch
            .step(&chunks)
            .map_err(|e| e.to_string())?
            .into_iter();
        Ok(items
            .iter()
            .map(|i| if i.logits { logits.next() } else { None })
            .collect())
    }
}

/// An engine chosen at run time (batched on the CPU, sessions on a device).
impl Engine for Box<dyn Engine> {
    fn n_slots(&self) -> usize {
        (**self).n_slots()
    }
    fn slot_ctx(&self) -> usize {
        (**self).slot_ctx()
    }
    fn cached(&self, slot: usize) -> &[u32] {
        (**self).cached(slot)
    }
    fn truncate(&mut self, slot: usize, n: usize) {
        (**self).truncate(slot, n)
    }
    fn set_adapters(&mut self, slot: usize, set: &[(Arc<LoraAdapter>, f32)]) -> Result<(), String> {
        (**self).set_adapters(slot, set)
    }
    fn step(&mut self, items: &[StepItem<'_>]) -> Result<Vec<Option<Vec<f32>>>, String> {
        (**self).step(items)
    }
    fn class(&self, n_tokens: usize) -> u8 {
        (**self).class(n_tokens)
    }
    fn split_free(&self) -> bool {
        (**self).split_free()
    }
}
