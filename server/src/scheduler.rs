//! Continuous batching on one dedicated thread that owns the [`Engine`].
//!
//! Each step feeds the engine the next token of every running sequence plus chunks of the
//! prompts being read, under a token budget (chunked prefill: running streams keep their pace
//! while a long prompt is read). Queued requests take slots as they free up; a finished
//! sequence leaves its slot at once, and so does one whose client went away (its event channel
//! closed), within one step. A new request takes the free slot whose cache shares the longest
//! prefix with its prompt (same adapters) and feeds only the rest. The HTTP side talks to it
//! through [`Scheduler::submit`] and the [`Event`]s of each job.
//!
//! Answers do not depend on the load: every prompt position is fed in the numerics class
//! ([`Engine::class`]) that `tinyrt generate`'s chunking gives it, whatever the step budget
//! left and whatever prefix was reused (a cached prefix counts only where its classes match
//! too), and a prompt piece is never cut to fit a step.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tinyrt::adapters::LoraAdapter;
use tinyrt::chat::StopMatcher;
use tinyrt::constraint::Constraint;
use tinyrt::sampler::top_logits;
use tinyrt::tokenizer::StreamDecoder;
use tinyrt::{Model, Sampler, SamplerOptions};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::engine::{Engine, StepItem, MAX_ITEM_TOKENS};
use crate::metrics::Metrics;

/// Tokens per forward pass (decode tokens first, then whole prompt pieces; the first piece
/// goes in even when it is larger).
pub const STEP_BUDGET: usize = 512;

/// The LoRA adapters of a request: `key` (names and scale bits) tells which slots computed
/// their cache with the same set.
#[derive(Clone, Default)]
pub struct AdapterSet {
    pub key: Vec<(String, u32)>,
    pub set: Vec<(Arc<LoraAdapter>, f32)>,
}

/// A generation request, tokenized and checked.
pub struct Job {
    pub prompt: Vec<u32>,
    /// `None`: until an end-of-generation token, a stop string or a full slot.
    pub max_tokens: Option<usize>,
    pub sampler: SamplerOptions,
    pub stop: Vec<String>,
    /// `Some(k)`: report each token's log-probability and the `k` most likely.
    pub logprobs: Option<usize>,
    /// Never sample an end-of-generation token (llama-server's `ignore_eos`).
    pub ignore_eos: bool,
    pub adapters: AdapterSet,
    /// What the output must match, compiled ([`tinyrt::Model::grammars`]); `None`: anything.
    pub constraint: Option<Constraint>,
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
}

/// A token's log-probability (log-softmax of the raw logits) and the most likely ones.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Why a sequence ended, in OpenAI's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens`, a full slot, or the server cutting it at shutdown.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What a job hears back, in order: `Token`s, then one `Done` or `Error`.
#[derive(Debug)]
pub enum Event {
    /// A generated token (never an end-of-generation one) and the text it releases: valid
    /// UTF-8, stop strings held back (possibly empty).
    Token {
        id: u32,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    Done {
        reason: FinishReason,
        /// Text released at the end (what the stop matcher or the decoder held).
        tail: String,
        prompt_tokens: usize,
        cached_tokens: usize,
        completion_tokens: usize,
    },
    Error(String),
}

enum Msg {
    Job(Box<Job>),
    /// End every sequence now (the shutdown deadline passed).
    Cut,
}

/// The handle of the scheduler thread.
#[derive(Clone)]
pub struct Scheduler {
    tx: UnboundedSender<Msg>,
    n_slots: usize,
    slot_ctx: usize,
}

impl Scheduler {
    /// Starts the scheduler thread over `engine`; it ends when every handle is dropped.
    pub fn start<E: Engine>(
        engine: E,
        model: Model,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Scheduler> {
        let (tx, rx) = unbounded_channel();
        let n_slots = engine.n_slots();
        let slot_ctx = engine.slot_ctx();
        std::thread::Builder::new()
            .name("tinyrt-scheduler".into())
            .spawn(move || run(engine, &model, rx, &metrics))?;
        Ok(Scheduler {
            tx,
            n_slots,
            slot_ctx,
        })
    }

    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    pub fn slot_ctx(&self) -> usize {
        self.slot_ctx
    }

    /// Queues a job; `false` when the scheduler is gone.
    pub fn submit(&self, job: Job) -> bool {
        self.tx.send(Msg::Job(Box::new(job))).is_ok()
    }

    /// Ends every running sequence (finish reason `length`) and fails the queued ones.
    pub fn cut(&self) {
        let _ = self.tx.send(Msg::Cut);
    }
}

/// A sequence holding a slot.
struct Seq<'t> {
    job: Box<Job>,
    /// Prompt tokens in the slot's cache (the reused prefix included).
    fed: usize,
    cached: usize,
    /// The sampled token to feed next.
    pending: Option<u32>,
    /// Sizes of the prompt items still to feed.
    pieces: VecDeque<usize>,
    generated: usize,
    sampler: Sampler,
    decoder: StreamDecoder<'t>,
    stops: StopMatcher,
    last_token: Option<Instant>,
    /// Admission order: prompts are read first come, first served.
    order: u64,
}

/// The class of every position of a prompt of `n` tokens fed as `tinyrt generate` feeds it
/// (chunks of [`MAX_ITEM_TOKENS`]).
fn canonical_classes<E: Engine>(engine: &E, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = (n - out.len()).min(MAX_ITEM_TOKENS);
        out.extend(std::iter::repeat_n(engine.class(len), len));
    }
    out
}

/// Item sizes that feed positions `from..` each in its class, or `None` when no split does.
fn plan_pieces<E: Engine>(engine: &E, classes: &[u8], from: usize) -> Option<VecDeque<usize>> {
    let mut pieces = VecDeque::new();
    let mut p = from;
    while p < classes.len() {
        let c = classes[p];
        let end = classes[p..]
            .iter()
            .position(|&x| x != c)
            .map_or(classes.len(), |k| p + k);
        let n = end - p;
        let take = (1..=n.min(MAX_ITEM_TOKENS)).rev().find(|&t| {
            engine.class(t) == c && (t == n || engine.class((n - t).min(MAX_ITEM_TOKENS)) == c)
        })?;
        pieces.push_back(take);
        p += take;
    }
    Some(pieces)
}

/// The log-softmax of `logits` at `id` and at the `k` largest.
fn logprobs(logits: &[f32], id: u32, k: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    let lp = |l: f32| (l as f64 - lse) as f32;
    TokenLogprob {
        logprob: lp(logits
            .get(id as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY)),
        top: top_logits(logits, k)
            .into_iter()
            .map(|(i, l)| (i, lp(l)))
            .collect(),
    }
}

struct State<'t, E> {
    engine: E,
    model: &'t Model,
    metrics: &'t Metrics,
    seqs: Vec<Option<Seq<'t>>>,
    keys: Vec<Vec<(String, u32)>>,
    /// The class each cached position of a slot was fed in.
    classes: Vec<Vec<u8>>,
    queue: VecDeque<Box<Job>>,
    admitted: u64,
}

fn run<E: Engine>(engine: E, model: &Model, mut rx: UnboundedReceiver<Msg>, metrics: &Metrics) {
    let n = engine.n_slots();
    let mut st = State {
        engine,
        model,
        metrics,
        seqs: (0..n).map(|_| None).collect(),
        keys: vec![Vec::new(); n],
        classes: vec![Vec::new(); n],
        queue: VecDeque::new(),
        admitted: 0,
    };
    loop {
        let idle = st.queue.is_empty() && st.seqs.iter().all(Option::is_none);
        if idle {
            match rx.blocking_recv() {
                Some(m) => st.handle(m),
                None => return,
            }
        }
        while let Ok(m) = rx.try_recv() {
            st.handle(m);
        }
        st.drop_abandoned();
        st.admit();
        st.step();
    }
}

impl<'t, E: Engine> State<'t, E> {
    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Job(job) => self.queue.push_back(job),
            Msg::Cut => {
                for slot in 0..self.seqs.len() {
                    if self.seqs[slot].is_some() {
                        self.finish(slot, FinishReason::Length);
                    }
                }
                for job in self.queue.drain(..) {
                    self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                    let _ = job
                        .events
                        .send(Event::Error("the server is shutting down".into()));
                }
            }
        }
    }

    fn retire(&mut self, slot: usize) {
        if self.seqs[slot].take().is_some() {
            self.metrics.running.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Frees the slots and queue places of jobs whose client went away.
    fn drop_abandoned(&mut self) {
        for slot in 0..self.seqs.len() {
            if self.seqs[slot]
                .as_ref()
                .is_some_and(|s| s.job.events.is_closed())
            {
                self.retire(slot);
            }
        }
        let before = self.queue.len();
        self.queue.retain(|j| !j.events.is_closed());
        let gone = before - self.queue.len();
        self.metrics.queued.fetch_sub(gone, Ordering::Relaxed);
    }

    /// Gives free slots to queued jobs, each to the free slot sharing the longest prefix.
    fn admit(&mut self) {
        while !self.queue.is_empty() {
            let free: Vec<usize> = (0..self.seqs.len())
                .filter(|&s| self.seqs[s].is_none())
                .collect();
            if free.is_empty() {
                return;
            }
            let job = self.queue.pop_front().expect("not empty");
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            let canon = canonical_classes(&self.engine, job.prompt.len());
            let (common, slot) = free
                .iter()
                .map(|&s| {
                    let same = self.keys[s] == job.adapters.key;
                    let c = if same {
                        self.engine
                            .cached(s)
                            .iter()
                            .zip(&self.classes[s])
                            .zip(job.prompt.iter().zip(&canon))
                            .take_while(|(a, b)| a == b)
                            .count()
                    } else {
                        0
                    };
                    (c, same, std::cmp::Reverse(s))
                })
                .max()
                .map(|(c, same, s)| ((c, same), s.0))
                .expect("a free slot");
            let (common, same) = common;
            // At least the last prompt token is fed: its logits give the first token.
            let mut reuse = common.min(job.prompt.len().saturating_sub(1));
            if !same {
                reuse = 0;
            }
            let pieces = loop {
                match plan_pieces(&self.engine, &canon, reuse) {
                    Some(p) => break p,
                    None if reuse > 0 => reuse -= 1,
                    // Unreachable for a monotone class; feed generate's chunks then.
                    None => {
                        break (0..job.prompt.len())
                            .step_by(MAX_ITEM_TOKENS)
                            .map(|at| (job.prompt.len() - at).min(MAX_ITEM_TOKENS))
                            .collect()
                    }
                }
            };
            self.classes[slot].truncate(reuse);
            if same {
                self.engine.truncate(slot, reuse);
            } else {
                self.classes[slot].clear();
                if let Err(e) = self.engine.set_adapters(slot, &job.adapters.set) {
                    // The slot's cache is gone either way; its old key no longer applies.
                    self.keys[slot] = vec![(String::from("\0failed"), 0)];
                    let _ = job.events.send(Event::Error(e));
                    continue;
                }
                self.keys[slot] = job.adapters.key.clone();
            }
            let mut job = job;
            let mut sampler = Sampler::new(job.sampler.clone());
            sampler.set_constraint(job.constraint.take());
            for &t in &job.prompt {
                sampler.accept(t);
            }
            self.metrics
                .prompt_tokens
                .fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
            self.metrics
                .cached_prompt_tokens
                .fetch_add(reuse as u64, Ordering::Relaxed);
            self.metrics.running.fetch_add(1, Ordering::Relaxed);
            let stops = StopMatcher::new(&job.stop);
            self.admitted += 1;
            self.seqs[slot] = Some(Seq {
                job,
                fed: reuse,
                cached: reuse,
                pending: None,
                pieces,
                generated: 0,
                sampler,
                decoder: self.model.tokenizer().stream_decoder(),
                stops,
                last_token: None,
                order: self.admitted,
            });
        }
    }

    /// One forward pass over every running sequence, then sampling.
    fn step(&mut self) {
        // (slot, prompt tokens in this item; 0 for a decode token)
        let mut plan: Vec<(usize, usize)> = Vec::new();
        let mut budget = STEP_BUDGET;
        for (slot, s) in self.seqs.iter().enumerate() {
            if let Some(s) = s {
                if s.pending.is_some() {
                    plan.push((slot, 0));
                    budget = budget.saturating_sub(1);
                }
            }
        }
        let mut reading: Vec<(u64, usize)> = self
            .seqs
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| {
                s.as_ref()
                    .filter(|s| s.pending.is_none() && s.fed < s.job.prompt.len())
                    .map(|s| (s.order, slot))
            })
            .collect();
        reading.sort_unstable();
        let mut first = true;
        for (_, slot) in reading {
            let s = self.seqs[slot].as_ref().expect("reading");
            let mut take = s
                .pieces
                .front()
                .copied()
                .unwrap_or(s.job.prompt.len() - s.fed);
            // An engine whose bits do not depend on the split reads what the budget allows.
            if take > budget && budget > 0 && self.engine.split_free() {
                take = budget;
            }
            if take > budget && !first {
                break;
            }
            first = false;
            plan.push((slot, take));
            budget = budget.saturating_sub(take);
        }
        if plan.is_empty() {
            return;
        }
        // The constrained sequences that sample after this pass: their next masks depend only
        // on the tokens so far, so they are computed on another thread while the forward
        // pass runs (llguidance's masks take tens to hundreds of microseconds each).
        let mut masks: Vec<(usize, Constraint)> = plan
            .iter()
            .filter_map(|&(slot, take)| {
                let s = self.seqs[slot].as_mut()?;
                let samples = take == 0 || s.fed + take == s.job.prompt.len();
                if !samples {
                    return None;
                }
                // Taken out for the pass, put back before sampling.
                Some((slot, s.sampler.take_constraint()?))
            })
            .collect();
        let masked_slots: Vec<usize> = masks.iter().map(|&(slot, _)| slot).collect();
        let masker = (!masks.is_empty()).then(|| {
            std::thread::spawn(move || {
                for (_, c) in masks.iter_mut() {
                    // An error stays in the constraint; sampling reports it.
                    let _ = c.compute_mask();
                }
                masks
            })
        });
        let result = {
            let items: Vec<StepItem<'_>> = plan
                .iter()
                .map(|&(slot, take)| {
                    let s = self.seqs[slot].as_ref().expect("planned");
                    if take == 0 {
                        StepItem {
                            slot,
                            tokens: std::slice::from_ref(s.pending.as_ref().expect("decoding")),
                            logits: true,
                        }
                    } else {
                        StepItem {
                            slot,
                            tokens: &s.job.prompt[s.fed..s.fed + take],
                            logits: s.fed + take == s.job.prompt.len(),
                        }
                    }
                })
                .collect();
            self.engine.step(&items)
        };
        if let Some(m) = masker {
            match m.join() {
                Ok(done) => {
                    for (slot, c) in done {
                        if let Some(s) = self.seqs[slot].as_mut() {
                            s.sampler.set_constraint(Some(c));
                        }
                    }
                }
                // Never let a constrained sequence go on unconstrained.
                Err(_) => {
                    for slot in masked_slots {
                        if let Some(s) = &self.seqs[slot] {
                            let _ = s
                                .job
                                .events
                                .send(Event::Error("the constraint's mask thread failed".into()));
                        }
                        self.retire(slot);
                    }
                }
            }
        }
        let outputs = match result {
            Ok(o) if o.len() == plan.len() => o,
            Ok(_) | Err(_) => {
                let msg = match result {
                    Err(e) => e,
                    Ok(_) => "the engine returned a wrong number of outputs".into(),
                };
                for &(slot, _) in &plan {
                    if let Some(s) = &self.seqs[slot] {
                        let _ = s.job.events.send(Event::Error(msg.clone()));
                    }
                    self.engine.truncate(slot, 0);
                    self.classes[slot].clear();
                    self.retire(slot);
                }
                return;
            }
        };
        for (&(slot, take), logits) in plan.iter().zip(outputs) {
            let n = take.max(1);
            let class = self.engine.class(n);
            self.classes[slot].extend(std::iter::repeat_n(class, n));
            let s = self.seqs[slot].as_mut().expect("planned");
            if take == 0 {
                s.pending = None;
            } else {
                match s.pieces.front_mut() {
                    Some(p) if *p > take => *p -= take,
                    _ => {
                        s.pieces.pop_front();
                    }
                }
                s.fed += take;
                if s.fed < s.job.prompt.len() {
                    continue;
                }
            }
            match logits {
                Some(l) => self.sample(slot, &l),
                None => {
                    let _ = s
                        .job
                        .events
                        .send(Event::Error("the engine gave no logits".into()));
                    self.retire(slot);
                }
            }
        }
    }

    /// Samples the next token of the sequence in `slot` and sends it; ends the sequence when
    /// it is done.
    fn sample(&mut self, slot: usize, logits: &[f32]) {
        let slot_ctx = self.engine.slot_ctx();
        let n_cached = self.engine.cached(slot).len();
        let s = self.seqs[slot].as_mut().expect("running");
        let banned: &[u32] = if s.job.ignore_eos {
            self.model.tokenizer().eog_ids()
        } else {
            &[]
        };
        let id = match s
            .sampler
            .try_sample(logits, banned)
            .and_then(|id| s.sampler.commit(id).map(|_| id))
        {
            Ok(id) => id,
            Err(e) => {
                let _ = s.job.events.send(Event::Error(format!("{e}")));
                self.retire(slot);
                return;
            }
        };
        s.sampler.accept(id);
        s.generated += 1;
        let now = Instant::now();
        match s.last_token {
            None => self.metrics.ttft.observe(now - s.job.arrived),
            Some(t) => self.metrics.inter_token.observe(now - t),
        }
        s.last_token = Some(now);
        self.metrics
            .generated_tokens
            .fetch_add(1, Ordering::Relaxed);
        if self.model.is_eog(id) {
            self.finish(slot, FinishReason::Stop);
            return;
        }
        let logprob = s.job.logprobs.map(|k| logprobs(logits, id, k));
        let out = s.stops.push(&s.decoder.push(id));
        let _ = s.job.events.send(Event::Token {
            id,
            text: out.text,
            logprob,
        });
        // A constraint that allows nothing more ended the value: no forward pass for its
        // end-of-generation token.
        if out.stopped || s.sampler.constraint().is_some_and(|c| c.is_done()) {
            self.finish(slot, FinishReason::Stop);
        } else if s.job.max_tokens.is_some_and(|m| s.generated >= m) || n_cached >= slot_ctx {
            self.finish(slot, FinishReason::Length);
        } else {
            s.pending = Some(id);
        }
    }

    /// Ends the sequence in `slot`: the slot is free before its client hears `Done`.
    fn finish(&mut self, slot: usize, mut reason: FinishReason) {
        let Some(mut s) = self.seqs[slot].take() else {
            return;
        };
        self.metrics.running.fetch_sub(1, Ordering::Relaxed);
        let mut tail = String::new();
        if !s.stops.stopped() {
            tail = s.stops.push(&s.decoder.finish()).text;
            if s.stops.stopped() {
                reason = FinishReason::Stop;
            } else {
                tail.push_str(&s.stops.finish());
            }
        }
        let _ = s.job.events.send(Event::Done {
            reason,
            tail,
            prompt_tokens: s.job.prompt.len(),
            cached_tokens: s.cached,
            completion_tokens: s.generated,
        });
    }
}
