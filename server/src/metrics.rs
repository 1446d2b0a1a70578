//! Counters of the server in Prometheus' text format (`GET /metrics` with `--metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A cumulative histogram of durations.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| s <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// What the server counts; shared by the HTTP side and the scheduler.
pub struct Metrics {
    /// Requests waiting for a slot.
    pub queued: AtomicUsize,
    /// Sequences holding a slot.
    pub running: AtomicUsize,
    pub prompt_tokens: AtomicU64,
    pub cached_prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Time from a request's arrival to its first token.
    pub ttft: Histogram,
    /// Time between two tokens of a sequence.
    pub inter_token: Histogram,
    requests: Mutex<BTreeMap<u16, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            queued: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            prompt_tokens: AtomicU64::new(0),
            cached_prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            ttft: Histogram::new(),
            inter_token: Histogram::new(),
            requests: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// One answered request with its HTTP status.
    pub fn count_request(&self, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry(status).or_insert(0) += 1;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP tinyrt_requests_total HTTP requests answered, by status.\n# TYPE tinyrt_requests_total counter\n",
        );
        if let Ok(m) = self.requests.lock() {
            for (status, n) in m.iter() {
                let _ = writeln!(out, "tinyrt_requests_total{{status=\"{status}\"}} {n}");
            }
        }
        let counters = [
            (
                "tinyrt_prompt_tokens_total",
                "Prompt tokens of admitted requests.",
                self.prompt_tokens.load(Ordering::Relaxed),
            ),
            (
                "tinyrt_prompt_tokens_cached_total",
                "Prompt tokens reused from a slot's cache.",
                self.cached_prompt_tokens.load(Ordering::Relaxed),
            ),
            (
                "tinyrt_generated_tokens_total",
                "Tokens generated.",
                self.generated_tokens.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let gauges = [
            (
                "tinyrt_queue_depth",
                "Requests waiting for a slot.",
                self.queued.load(Ordering::Relaxed),
            ),
            (
                "tinyrt_running_sequences",
                "Sequences holding a slot.",
                self.running.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        self.ttft.render(
            &mut out,
            "tinyrt_time_to_first_token_seconds",
            "Time from a request's arrival to its first token.",
        );
        self.inter_token.render(
            &mut out,
            "tinyrt_inter_token_latency_seconds",
            "Time between two tokens of a sequence.",
        );
        out
    }
}
