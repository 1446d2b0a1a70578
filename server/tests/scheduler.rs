//! The scheduler over a recording engine (logits a function of the slot's cached tokens):
//! continuous batching, whole prompt pieces in their class, a vanished client freed at once,
//! prefix reuse reported, and answers that do not depend on what else runs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tinyrt::adapters::LoraAdapter;
use tinyrt::{LoadOptions, Model, SamplerOptions};
use tinyrt_server::engine::{Engine, StepItem};
use tinyrt_server::metrics::Metrics;
use tinyrt_server::scheduler::{AdapterSet, Event, FinishReason, Job, Scheduler};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const VOCAB: usize = 2048;

/// Per pass, the (slot, token count) of each item.
type Steps = Arc<Mutex<Vec<Vec<(usize, usize)>>>>;

/// The next token the fake model predicts after `tokens`.
fn next_of(tokens: &[u32]) -> u32 {
    let h = tokens.iter().fold(1469598103934665603u64, |h, &t| {
        (h ^ t as u64).wrapping_mul(1099511628211)
    });
    (h % 1000) as u32 + 500
}

struct Fake {
    slots: Vec<Vec<u32>>,
    steps: Steps,
    /// One class and any split (the batched engine) instead of two classes.
    split_free: bool,
}

impl Engine for Fake {
    fn n_slots(&self) -> usize {
        self.slots.len()
    }
    fn slot_ctx(&self) -> usize {
        4096
    }
    fn cached(&self, slot: usize) -> &[u32] {
        &self.slots[slot]
    }
    fn truncate(&mut self, slot: usize, n: usize) {
        self.slots[slot].truncate(n);
    }
    fn set_adapters(&mut self, slot: usize, _: &[(Arc<LoraAdapter>, f32)]) -> Result<(), String> {
        self.slots[slot].clear();
        Ok(())
    }
    fn step(&mut self, items: &[StepItem<'_>]) -> Result<Vec<Option<Vec<f32>>>, String> {
        // A pass takes time, so that requests sent together meet in the scheduler.
        std::thread::sleep(Duration::from_millis(2));
        self.steps
            .lock()
            .unwrap()
            .push(items.iter().map(|i| (i.slot, i.tokens.len())).collect());
        Ok(items
            .iter()
            .map(|i| {
                self.slots[i.slot].extend_from_slice(i.tokens);
                i.logits.then(|| {
                    let mut l = vec![0.0; VOCAB];
                    l[next_of(&self.slots[i.slot]) as usize] = 1.0;
                    l
                })
            })
            .collect())
    }
    fn class(&self, n: usize) -> u8 {
        if self.split_free {
            0
        } else {
            u8::from(n >= 64)
        }
    }
    fn split_free(&self) -> bool {
        self.split_free
    }
}

fn start(n_slots: usize) -> (Scheduler, Steps, Arc<Metrics>) {
    start_with(n_slots, false)
}

fn start_with(n_slots: usize, split_free: bool) -> (Scheduler, Steps, Arc<Metrics>) {
    let model = Model::load(
        "../tests/fixtures/llama-tiny-q8_0.gguf",
        LoadOptions::default(),
    )
    .unwrap();
    let steps = Arc::new(Mutex::new(Vec::new()));
    let engine = Fake {
        slots: vec![Vec::new(); n_slots],
        steps: Arc::clone(&steps),
        split_free,
    };
    let metrics = Arc::new(Metrics::default());
    let s = Scheduler::start(engine, model, Arc::clone(&metrics)).unwrap();
    (s, steps, metrics)
}

fn submit(s: &Scheduler, prompt: Vec<u32>, max_tokens: usize) -> UnboundedReceiver<Event> {
    let (tx, rx) = unbounded_channel();
    assert!(s.submit(Job {
        prompt,
        max_tokens: Some(max_tokens),
        sampler: SamplerOptions::greedy(),
        stop: Vec::new(),
        logprobs: None,
        ignore_eos: true,
        adapters: AdapterSet::default(),
        constraint: None,
        events: tx,
        arrived: Instant::now(),
    }));
    rx
}

/// The ids and (prompt, cached) of a finished job.
fn finish(mut rx: UnboundedReceiver<Event>) -> (Vec<u32>, usize, usize, FinishReason) {
    let mut ids = Vec::new();
    loop {
        match rx.blocking_recv().expect("an event") {
            Event::Token { id, .. } => ids.push(id),
            Event::Done {
                reason,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
                ..
            } => {
                assert_eq!(completion_tokens, ids.len());
                return (ids, prompt_tokens, cached_tokens, reason);
            }
            Event::Error(e) => panic!("{e}"),
        }
    }
}

/// Greedy generation by the fake model alone.
fn expected(prompt: &[u32], n: usize) -> Vec<u32> {
    let mut t = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let id = next_of(&t);
        out.push(id);
        t.push(id);
    }
    out
}

fn prompt(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i * 7 + seed * 13) % 400 + 1)
        .collect()
}

#[test]
fn sequences_share_steps_and_prompts_go_in_whole_pieces_of_their_class() {
    let (s, steps, metrics) = start(4);
    let prompts = [prompt(600, 1), prompt(10, 2), prompt(70, 3), prompt(530, 4)];
    let rxs: Vec<_> = prompts.iter().map(|p| submit(&s, p.clone(), 6)).collect();
    for (rx, p) in rxs.into_iter().zip(&prompts) {
        let (ids, n, cached, reason) = finish(rx);
        assert_eq!(ids, expected(p, 6));
        assert_eq!((n, cached, reason), (p.len(), 0, FinishReason::Length));
    }
    let steps = steps.lock().unwrap().clone();
    // Several sequences in one pass.
    assert!(steps.iter().any(|st| st.len() >= 3), "{steps:?}");
    // Each prompt in the pieces `tinyrt generate` would feed (512, then the rest), a piece
    // never cut to fit; the 530-token prompt's 18-token rest stays in its own (small) class.
    let pieces = |slot: usize| -> Vec<usize> {
        steps
            .iter()
            .flatten()
            .filter(|&&(s, n)| s == slot && n > 1)
            .map(|&(_, n)| n)
            .collect()
    };
    let mut all: Vec<Vec<usize>> = (0..4).map(pieces).collect();
    all.sort();
    assert_eq!(all, vec![vec![10], vec![70], vec![512, 18], vec![512, 88]]);
    assert_eq!(
        metrics.running.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn a_repeated_prompt_reuses_the_cache_and_answers_the_same() {
    let (s, _, _) = start(2);
    for len in [20usize, 200] {
        let p = prompt(len, 9);
        let first = finish(submit(&s, p.clone(), 5));
        let again = finish(submit(&s, p.clone(), 5));
        assert_eq!(first.0, again.0);
        assert_eq!(first.2, 0);
        // Below 64 tokens all but the last; above, the last 64 are fed again in their class.
        assert_eq!(again.2, if len < 64 { len - 1 } else { len - 64 });
    }
}

#[test]
fn a_vanished_client_frees_its_slot_within_a_step() {
    let (s, steps, metrics) = start(1);
    let mut rx = submit(&s, prompt(5, 1), 100_000);
    // Wait for its first token, then go away.
    assert!(matches!(rx.blocking_recv(), Some(Event::Token { .. })));
    drop(rx);
    let t0 = Instant::now();
    let p = prompt(8, 2);
    let (ids, ..) = finish(submit(&s, p.clone(), 3));
    assert_eq!(ids, expected(&p, 3));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(
        metrics.running.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // The abandoned sequence ran a bounded number of steps, not to its 100000 tokens.
    assert!(steps.lock().unwrap().len() < 10_000);
}

#[test]
fn a_split_free_engine_gets_prompts_cut_to_the_step_budget() {
    // With one class, prompts are cut to what each step's budget leaves after the decode
    // tokens: no step holds more than the budget plus nothing, and the answers are unchanged.
    let (s, steps, _) = start_with(4, true);
    let prompts = [
        prompt(600, 5),
        prompt(300, 6),
        prompt(450, 7),
        prompt(20, 8),
    ];
    let rxs: Vec<_> = prompts.iter().map(|p| submit(&s, p.clone(), 8)).collect();
    for (rx, p) in rxs.into_iter().zip(&prompts) {
        let (ids, n, _, _) = finish(rx);
        assert_eq!((ids, n), (expected(p, 8), p.len()));
    }
    let steps = steps.lock().unwrap().clone();
    let budget = tinyrt_server::scheduler::STEP_BUDGET;
    for st in &steps {
        let total: usize = st.iter().map(|&(_, n)| n).sum();
        assert!(total <= budget, "a step of {total} tokens: {st:?}");
    }
    // Some prompt was cut where the budget ended (a piece neither 512 nor a prompt's rest).
    assert!(
        steps
            .iter()
            .flatten()
            .any(|&(_, n)| n > 1 && n < 512 && n != 20),
        "{steps:?}"
    );
}
