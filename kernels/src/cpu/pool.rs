//! A small persistent thread pool for per-matmul fork/join.
//!
//! Decode calls a matmul a few hundred times per token, each lasting tens of microseconds, so
//! the cost of waking threads matters more than scheduling flexibility: the workers spin for a
//! short while after each task (the next matmul usually arrives within microseconds), then park
//! on a condition variable. `run` hands the same closure to every thread, the caller included,
//! as `f(thread_idx, n_threads)`; the closure splits the work itself.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(200);

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// Bumped once per task; workers run the task when they see a new value.
    epoch: AtomicUsize,
    /// The task of the current epoch. Written only by the thread inside `run` while no worker
    /// is running a task (all finished the previous one), read by workers after they observe
    /// the new epoch (Release/Acquire on `epoch`).
    job: UnsafeCell<Option<*const Job>>,
    /// Workers that have not finished the current task.
    pending: AtomicUsize,
    /// Set when a task panicked on a worker.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Workers parked (or about to park) on `wake`.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    n_threads: usize,
}

// SAFETY: `job` is the only non-Sync field. It is written only by the single thread holding
// `ThreadPool::busy` while every worker is idle (pending == 0), and read by workers only between
// observing a new epoch and decrementing `pending`; the raw pointer it holds points to a
// `Sync` closure that outlives that window (see `ThreadPool::run`).
unsafe impl Sync for Shared {}
// SAFETY: as above; the pointer is only dereferenced under the same protocol.
unsafe impl Send for Shared {}

/// A fixed set of worker threads; see the module docs.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held for the duration of a `run`; a nested or concurrent `run` runs serially instead.
    busy: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` threads in all: the caller of `run` plus `n_threads - 1` workers.
    /// `0` means [`ThreadPool::default_threads`].
    pub fn new(n_threads: usize) -> std::io::Result<ThreadPool> {
        let n_threads = if n_threads == 0 {
            ThreadPool::default_threads()
        } else {
            n_threads
        };
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            n_threads,
        });
        let mut pool = ThreadPool {
            shared: shared.clone(),
            workers: Vec::with_capacity(n_threads - 1),
            busy: Mutex::new(()),
        };
        for idx in 1..n_threads {
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("tinyrt-worker-{idx}"))
                .spawn(move || worker_loop(&shared, idx))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// The number of physical cores (hyper-threads share the vector units, so they rarely help
    /// bandwidth-bound matmuls), or the logical CPU count when that cannot be read.
    pub fn default_threads() -> usize {
        physical_cores().unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// Threads taking part in `run`, the caller included.
    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Runs `f(thread_idx, n_threads)` once on each thread of the pool (the caller is thread 0)
    /// and returns when all calls have returned. If any call panics, `run` panics after all
    /// calls have finished. A nested or concurrent `run` on the same pool runs `f(0, 1)` on the
    /// calling thread instead.
    pub fn run<F>(&self, f: F)
    where
        F: Fn(usize, usize) + Sync,
    {
        let n = self.shared.n_threads;
        if n == 1 {
            f(0, 1);
            return;
        }
        let _busy = match self.busy.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                f(0, 1);
                return;
            }
        };
        let sh = &*self.shared;
        let job: &(dyn Fn(usize, usize) + Sync + '_) = &f;
        // SAFETY: erasing the lifetime of `job` is sound because this function does not return
        // or unwind before every worker has finished calling it: `WaitForWorkers` below waits for
        // `pending == 0` in its destructor, which also runs if `f` panics on this thread, and
        // workers never touch the pointer after decrementing `pending`.
        let job_static: *const Job = unsafe {
            std::mem::transmute::<&(dyn Fn(usize, usize) + Sync + '_), &'static Job>(job)
        };
        sh.panicked.store(false, Ordering::Relaxed);
        sh.pending.store(n - 1, Ordering::Relaxed);
        // SAFETY: all workers are idle (pending was 0 when the previous run returned, and we hold
        // `busy`), so nobody reads `job` concurrently; the Release store of `epoch` publishes it.
        unsafe { *sh.job.get() = Some(job_static) };
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        if sh.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = sh.lock.lock().unwrap_or_else(|p| p.into_inner());
            sh.wake.notify_all();
        }
        let wait = WaitForWorkers(sh);
        f(0, n);
        drop(wait);
        if sh.panicked.load(Ordering::Acquire) {
            resume_unwind(Box::new("a task of tinyrt's thread pool panicked"));
        }
    }
}

/// Waits (in `drop`) until every worker has finished the current task.
struct WaitForWorkers<'a>(&'a Shared);

impl Drop for WaitForWorkers<'_> {
    fn drop(&mut self) {
        let start = Instant::now();
        let mut spins = 0u32;
        while self.0.pending.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 && start.elapsed() > SPIN_BEFORE_PARK {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // SAFETY: every worker is done with the task (pending == 0), so this thread is the only
        // one touching `job`; clearing it drops the dangling-to-be pointer.
        unsafe { *self.0.job.get() = None };
    }
}

fn worker_loop(sh: &Shared, idx: usize) {
    let mut seen = 0usize;
    loop {
        // Wait for a new epoch: spin first, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = sh.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if sh.shutdown.load(Ordering::Acquire) {
                return;
            }
            spins = spins.wrapping_add(1);
            if spins % 64 != 0 || start.elapsed() < SPIN_BEFORE_PARK {
                std::hint::spin_loop();
                continue;
            }
            let mut g = sh.lock.lock().unwrap_or_else(|p| p.into_inner());
            sh.sleeping.fetch_add(1, Ordering::SeqCst);
            while sh.epoch.load(Ordering::SeqCst) == seen && !sh.shutdown.load(Ordering::SeqCst) {
                g = sh.wake.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            sh.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: `job` was written before the epoch we just observed (Acquire) and stays
        // valid until we decrement `pending` below (see `ThreadPool::run`).
        let job = unsafe { *sh.job.get() };
        if let Some(job) = job {
            // SAFETY: the pointer is valid for this window (see above), and the closure is Sync.
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| f(idx, sh.n_threads))).is_err() {
                sh.panicked.store(true, Ordering::Release);
            }
        }
        sh.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.shared.n_threads)
            .finish()
    }
}

/// Distinct (physical id, core id) pairs of /proc/cpuinfo (Linux only).
fn physical_cores() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = std::collections::HashSet::new();
    let (mut phys, mut core) = (None::<String>, None::<String>);
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                cores.insert((p, c));
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim() {
                "physical id" => phys = Some(v.trim().to_string()),
                "core id" => core = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let n = cores.len();
    let logical = std::thread::available_parallelism().map(|n| n.get()).ok()?;
    // A cgroup or affinity limit below the core count wins.
    (n > 0).then_some(n.min(logical))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_thread_runs_once_per_call() {
        for n in 1..=3 {
            let pool = ThreadPool::new(n).unwrap();
            assert_eq!(pool.n_threads(), n);
            for round in 0..200u64 {
                let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
                pool.run(|i, nt| {
                    assert_eq!(nt, n);
                    hits[i].fetch_add(round + 1, Ordering::Relaxed);
                });
                for h in &hits {
                    assert_eq!(h.load(Ordering::Relaxed), round + 1);
                }
                if round == 100 {
                    // Let the workers park, then wake them.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    #[test]
    fn a_panicking_task_propagates_and_the_pool_survives() {
        let pool = ThreadPool::new(2).unwrap();
        for who in [0usize, 1] {
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.run(|i, _| {
                    if i == who {
                        panic!("task {i} fails on purpose");
                    }
                })
            }));
            assert!(r.is_err(), "panic on thread {who} must propagate");
            let sum = AtomicU64::new(0);
            pool.run(|i, _| {
                sum.fetch_add(i as u64 + 1, Ordering::Relaxed);
            });
            assert_eq!(sum.load(Ordering::Relaxed), 3);
        }
    }

    #[test]
    fn nested_run_falls_back_to_serial() {
        let pool = ThreadPool::new(2).unwrap();
        let total = AtomicU64::new(0);
        pool.run(|_, _| {
            pool.run(|i, n| {
                assert_eq!((i, n), (0, 1));
                total.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert_eq!(total.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn default_threads_is_positive() {
        assert!(ThreadPool::default_threads() >= 1);
    }
}
