//! Token sampling: repetition penalty, top-k, top-p, min-p, temperature, then a seeded draw.
//!
//! The chain and its defaults follow llama.cpp's `common_params_sampling` (common/common.h) and
//! the samplers of src/llama-sampler.cpp: penalties → top-k → top-p → min-p → temperature →
//! distribution. A temperature of 0 (or below) is greedy: the largest logit after penalties,
//! ties broken by the lowest id.

use std::collections::VecDeque;

use crate::constraint::{Constraint, ConstraintError, ConstraintSpec};

/// Sampling options. [`SamplerOptions::default`] gives llama.cpp's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerOptions {
    /// Softmax temperature; `<= 0` means greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; `<= 0` disables.
    pub top_k: i32,
    /// Keep the smallest set whose probability reaches `top_p`; `>= 1` disables.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` × the largest; `<= 0` disables.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens; `1` disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at (`0` disables, `-1` = the whole context).
    pub repeat_last_n: i32,
    /// Seed of the random draw; `None` picks one from the clock.
    pub seed: Option<u64>,
    /// What the output must match (JSON schema, regex, grammar); `None`: anything. The mask
    /// comes first in the chain: tokens it rules out are never candidates (their logits are
    /// -inf before the penalty, top-k, top-p, min-p and temperature).
    pub constraint: Option<ConstraintSpec>,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
            constraint: None,
        }
    }
}

impl SamplerOptions {
    /// Greedy decoding (temperature 0, no penalty): the options parity is judged with.
    pub fn greedy() -> Self {
        SamplerOptions {
            temperature: 0.0,
            ..SamplerOptions::default()
        }
    }
}

/// xoshiro256** (Blackman & Vigna, "Scrambled linear pseudorandom number generators", 2018),
/// seeded through splitmix64 as its authors recommend.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A candidate token: id, logit and (once computed) probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
    pub p: f32,
}

/// The index of the largest value, ties broken by the lowest index; `0` for an empty slice.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// The `k` largest logits as `(id, logit)`, largest first (ties: lowest id first).
pub fn top_logits(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(idx.len());
    let cmp = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, logits[i as usize])).collect()
}

/// A sampler with its own random state and penalty window.
#[derive(Clone, Debug)]
pub struct Sampler {
    opts: SamplerOptions,
    rng: Rng,
    /// The most recent tokens (prompt and generated), newest last.
    history: VecDeque<u32>,
    history_cap: usize,
    cands: Vec<Candidate>,
    /// A compiled constraint ([`Sampler::set_constraint`]); `opts.constraint` is only its spec.
    constraint: Option<Constraint>,
}

impl Sampler {
    pub fn new(opts: SamplerOptions) -> Sampler {
        let seed = opts.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5EED)
        });
        let history_cap = match opts.repeat_last_n {
            n if n < 0 => usize::MAX,
            n => n as usize,
        };
        Sampler {
            opts,
            rng: Rng::new(seed),
            history: VecDeque::new(),
            history_cap,
            cands: Vec::new(),
            constraint: None,
        }
    }

    /// This sampler under a compiled constraint (from [`crate::constraint::Grammars::compile`]).
    pub fn with_constraint(mut self, c: Constraint) -> Sampler {
        self.constraint = Some(c);
        self
    }

    /// Sample under `c` from now on (`None`: unconstrained).
    pub fn set_constraint(&mut self, c: Option<Constraint>) {
        self.constraint = c;
    }

    /// Takes the constraint out (e.g. to compute its next mask on another thread while the
    /// forward pass runs); [`Sampler::set_constraint`] puts it back.
    pub fn take_constraint(&mut self) -> Option<Constraint> {
        self.constraint.take()
    }

    /// The constraint, if any.
    pub fn constraint(&self) -> Option<&Constraint> {
        self.constraint.as_ref()
    }

    /// The constraint, to compute its next mask ahead of sampling (e.g. on another thread
    /// while the forward pass runs: `Constraint` is `Send`).
    pub fn constraint_mut(&mut self) -> Option<&mut Constraint> {
        self.constraint.as_mut()
    }

    pub fn options(&self) -> &SamplerOptions {
        &self.opts
    }

    /// Whether [`Sampler::sample`] is the plain argmax of the raw logits (temperature `<= 0`
    /// and no repetition penalty): then the backend may pick the token where the logits are.
    /// Never under a constraint.
    pub fn is_plain_argmax(&self) -> bool {
        self.constraint.is_none()
            && self.opts.temperature <= 0.0
            && (self.opts.repeat_penalty == 1.0 || self.history_cap == 0)
    }

    /// Advance the constraint past a sampled token (nothing without one). Call it for each
    /// generated token (not for prompt tokens), after [`Sampler::sample`].
    pub fn commit(&mut self, id: u32) -> Result<(), ConstraintError> {
        match &mut self.constraint {
            Some(c) => c.commit(id),
            None => Ok(()),
        }
    }

    /// Record a token (prompt or generated) for the repetition penalty.
    pub fn accept(&mut self, id: u32) {
        if self.history_cap == 0 {
            return;
        }
        if self.history.len() == self.history_cap {
            self.history.pop_front();
        }
        self.history.push_back(id);
    }

    /// Forget the recorded tokens.
    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// Choose the next token from raw logits. Under a constraint this is
    /// [`Sampler::try_sample`] with a failed constraint giving its first stop token (the
    /// error stays in [`Sampler::constraint`]).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.constraint.is_some() {
            return match self.try_sample(logits, &[]) {
                Ok(id) => id,
                Err(_) => self
                    .constraint
                    .as_ref()
                    .and_then(|c| c.stop_tokens().first().copied())
                    .unwrap_or(0),
            };
        }
        self.sample_plain(logits)
    }

    /// Choose the next token from raw logits; under a constraint only from the tokens its
    /// mask allows (computed here unless [`Constraint::compute_mask`] ran already), never one
    /// of `banned` unless nothing else is allowed (`--ignore-eos` under a finished grammar).
    pub fn try_sample(&mut self, logits: &[f32], banned: &[u32]) -> Result<u32, ConstraintError> {
        let Some(c) = self.constraint.as_mut() else {
            if banned.is_empty() {
                return Ok(self.sample_plain(logits));
            }
            let mut masked = logits.to_vec();
            for &e in banned {
                if let Some(l) = masked.get_mut(e as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            return Ok(self.sample_plain(&masked));
        };
        c.compute_mask()?;
        let mut cands = std::mem::take(&mut self.cands);
        cands.clear();
        let n = logits.len() as u32;
        c.for_each_allowed(|id| {
            if id < n && !banned.contains(&id) {
                cands.push(Candidate {
                    id,
                    logit: logits[id as usize],
                    p: 0.0,
                });
            }
        });
        if cands.is_empty() {
            // Only banned tokens (or none in range) remain: take the first allowed.
            let mut first = None;
            c.for_each_allowed(|id| {
                if first.is_none() && id < n {
                    first = Some(id);
                }
            });
            self.cands = cands;
            return first.ok_or_else(|| {
                ConstraintError("constraint: no allowed token is in the vocabulary".into())
            });
        }
        apply_repeat_penalty_sparse(&mut cands, &self.history, self.opts.repeat_penalty);
        let id = self.pick(&mut cands);
        self.cands = cands;
        Ok(id)
    }

    fn pick(&mut self, cands: &mut Vec<Candidate>) -> u32 {
        if self.opts.temperature <= 0.0 {
            greedy(cands)
        } else {
            apply_top_k(cands, self.opts.top_k);
            apply_top_p(cands, self.opts.top_p);
            apply_min_p(cands, self.opts.min_p);
            apply_temperature(cands, self.opts.temperature);
            draw(cands, &mut self.rng)
        }
    }

    fn sample_plain(&mut self, logits: &[f32]) -> u32 {
        self.cands.clear();
        self.cands
            .extend(logits.iter().enumerate().map(|(i, &l)| Candidate {
                id: i as u32,
                logit: l,
                p: 0.0,
            }));
        let mut cands = std::mem::take(&mut self.cands);
        apply_repeat_penalty(&mut cands, &self.history, self.opts.repeat_penalty);
        let id = if self.opts.temperature <= 0.0 {
            greedy(&cands)
        } else {
            apply_top_k(&mut cands, self.opts.top_k);
            apply_top_p(&mut cands, self.opts.top_p);
            apply_min_p(&mut cands, self.opts.min_p);
            apply_temperature(&mut cands, self.opts.temperature);
            draw(&mut cands, &mut self.rng)
        };
        self.cands = cands;
        id
    }
}

fn greedy(cands: &[Candidate]) -> u32 {
    let mut best: Option<&Candidate> = None;
    for c in cands {
        match best {
            Some(b) if c.logit < b.logit || (c.logit == b.logit && c.id > b.id) => {}
            _ => best = Some(c),
        }
    }
    best.map_or(0, |c| c.id)
}

/// [`apply_repeat_penalty`] on candidates in any order (a constraint's allowed subset).
fn apply_repeat_penalty_sparse(cands: &mut [Candidate], history: &VecDeque<u32>, penalty: f32) {
    if penalty == 1.0 || history.is_empty() {
        return;
    }
    let seen: std::collections::HashSet<u32> = history.iter().copied().collect();
    for c in cands.iter_mut() {
        if seen.contains(&c.id) {
            if c.logit <= 0.0 {
                c.logit *= penalty;
            } else {
                c.logit /= penalty;
            }
        }
    }
}

/// llama.cpp's repeat penalty: each distinct recent token once, negative logits multiplied.
pub fn apply_repeat_penalty(cands: &mut [Candidate], history: &VecDeque<u32>, penalty: f32) {
    if penalty == 1.0 || history.is_empty() {
        return;
    }
    // Candidates are still indexed by id here (the penalty runs first in the chain).
    let mut seen = std::collections::HashSet::with_capacity(history.len());
    for &id in history {
        if !seen.insert(id) {
            continue;
        }
        if let Some(c) = cands.get_mut(id as usize).filter(|c| c.id == id) {
            if c.logit <= 0.0 {
                c.logit *= penalty;
            } else {
                c.logit /= penalty;
            }
        }
    }
}

fn sort_desc(cands: &mut [Candidate]) {
    cands.sort_by(|a, b| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id)));
}

/// Keep the `k` largest logits (sorted, largest first). `k <= 0` keeps everything.
pub fn apply_top_k(cands: &mut Vec<Candidate>, k: i32) {
    if k <= 0 {
        return;
    }
    let k = (k as usize).min(cands.len());
    if k > 0 && k < cands.len() {
        cands.select_nth_unstable_by(k - 1, |a, b| {
            b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
        });
        cands.truncate(k);
    }
    sort_desc(cands);
}

/// Softmax of the candidates' logits into `p` (max subtracted).
pub fn softmax(cands: &mut [Candidate]) {
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for c in cands.iter_mut() {
        c.p = (c.logit - max).exp();
        sum += c.p;
    }
    for c in cands.iter_mut() {
        c.p /= sum;
    }
}

/// Keep the smallest prefix (by probability) whose cumulative probability reaches `p`.
pub fn apply_top_p(cands: &mut Vec<Candidate>, p: f32) {
    if p >= 1.0 || cands.is_empty() {
        return;
    }
    sort_desc(cands);
    softmax(cands);
    let mut cum = 0.0f32;
    let mut keep = cands.len();
    for (i, c) in cands.iter().enumerate() {
        cum += c.p;
        if cum >= p {
            keep = i + 1;
            break;
        }
    }
    cands.truncate(keep);
}

/// Keep tokens whose probability is at least `p` times the largest one.
pub fn apply_min_p(cands: &mut Vec<Candidate>, p: f32) {
    if p <= 0.0 || cands.is_empty() {
        return;
    }
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let min_logit = max + p.ln();
    cands.retain(|c| c.logit >= min_logit);
}

pub fn apply_temperature(cands: &mut [Candidate], t: f32) {
    for c in cands.iter_mut() {
        c.logit /= t;
    }
}

fn draw(cands: &mut [Candidate], rng: &mut Rng) -> u32 {
    if cands.is_empty() {
        return 0;
    }
    softmax(cands);
    let r = rng.next_f64() as f32;
    let mut cum = 0.0f32;
    for c in cands.iter() {
        cum += c.p;
        if r < cum {
            return c.id;
        }
    }
    cands[cands.len() - 1].id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(logits: &[f32]) -> Vec<Candidate> {
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| Candidate {
                id: i as u32,
                logit: l,
                p: 0.0,
            })
            .collect()
    }

    fn ids(c: &[Candidate]) -> Vec<u32> {
        let mut v: Vec<u32> = c.iter().map(|c| c.id).collect();
        v.sort();
        v
    }

    #[test]
    fn greedy_breaks_ties_by_lowest_id() {
        let mut s = Sampler::new(SamplerOptions::greedy());
        assert_eq!(s.sample(&[0.0, 3.0, 1.0, 3.0]), 1);
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
    }

    #[test]
    fn top_logits_are_sorted_largest_first() {
        let t = top_logits(&[0.5, 2.0, -1.0, 2.0, 1.0], 3);
        assert_eq!(t, vec![(1, 2.0), (3, 2.0), (4, 1.0)]);
    }

    #[test]
    fn top_p_keeps_the_smallest_sufficient_prefix() {
        // probabilities 0.5, 0.25, 0.125, 0.125 (logits are their logs).
        let l = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
        let mut c = cands(&l);
        apply_top_p(&mut c, 0.7);
        assert_eq!(ids(&c), vec![0, 1]);
        let mut c = cands(&l);
        apply_top_p(&mut c, 0.5);
        assert_eq!(ids(&c), vec![0]);
        let mut c = cands(&l);
        apply_top_p(&mut c, 0.8);
        assert_eq!(ids(&c), vec![0, 1, 2]);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let l = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
        let mut c = cands(&l);
        apply_min_p(&mut c, 0.2); // threshold 0.1
        assert_eq!(ids(&c), vec![0, 1, 2]);
        let mut c = cands(&l);
        apply_min_p(&mut c, 0.7); // threshold 0.35
        assert_eq!(ids(&c), vec![0]);
    }

    #[test]
    fn repeat_penalty_divides_positive_and_multiplies_negative() {
        let mut c = cands(&[2.0, -2.0, 1.0]);
        let h: VecDeque<u32> = [0, 1, 0].into_iter().collect();
        apply_repeat_penalty(&mut c, &h, 2.0);
        assert_eq!(c[0].logit, 1.0);
        assert_eq!(c[1].logit, -4.0);
        assert_eq!(c[2].logit, 1.0);
    }

    #[test]
    fn repeat_window_limits_history() {
        let mut s = Sampler::new(SamplerOptions {
            repeat_penalty: 10.0,
            repeat_last_n: 1,
            ..SamplerOptions::greedy()
        });
        s.accept(0);
        s.accept(1);
        // Only token 1 is penalised; token 0 stays the largest.
        assert_eq!(s.sample(&[5.0, 6.0, 1.0]), 0);
    }
}
