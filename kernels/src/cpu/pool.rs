//! A small persistent thread pool for per-matmul fork/join.
//!
//! Decode calls a matmul a few hundred times per token, each lasting tens of microseconds, so
//! the cost of waking threads matters more than scheduling flexibility: the workers spin for a
//! short while after each task (the next matmul usually arrives within microseconds), then park
//! on a condition variable. Two ways to hand out a task `f(thread_idx, n_threads)`:
//!
//! - [`ThreadPool::run`]: every thread (the caller is thread 0) calls `f` exactly once; for
//!   work split statically by thread index.
//! - [`ThreadPool::run_dynamic`]: the caller calls `f`, and so does every worker that arrives
//!   before the caller's call has returned; a worker that arrives later skips the task. For work
//!   shared out through an atomic counter (the matmuls): on a busy host a descheduled worker
//!   then costs nothing instead of stalling the caller until the OS runs it again.
//!
//! # Protocol
//! The caller publishes a [`Slot`] (on its stack) through `Shared::slot` and bumps `epoch` to
//! wake workers. A worker announces itself in `active` *before* it loads `slot`; the caller
//! withdraws the slot (stores null) *before* it waits for `active` to drain. With sequentially
//! consistent operations on both sides, a worker either sees null and skips, or the caller sees
//! it in `active` and waits for it, so the slot (and the borrowed closure) outlive every use.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(200);

/// One task, on the stack of the thread inside `run` / `run_dynamic`.
struct Slot<'a> {
    f: &'a (dyn Fn(usize, usize) + Sync),
    /// The epoch the task was published with (a worker runs each epoch at most once).
    id: usize,
    /// Workers that have finished `f`.
    done: AtomicUsize,
    panicked: AtomicBool,
}

struct Shared {
    /// Bumped once per task; wakes the workers.
    epoch: AtomicUsize,
    /// The open task, or null. Points to a `Slot` that lives until the slot is withdrawn and
    /// `active` has drained (see the module docs).
    slot: AtomicPtr<Slot<'static>>,
    /// Workers between announcing themselves and leaving the slot.
    active: AtomicUsize,
    shutdown: AtomicBool,
    /// Workers parked (or about to park) on `wake`.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    n_threads: usize,
}

/// A fixed set of worker threads; see the module docs.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held for the duration of a task; a nested or concurrent task runs serially instead.
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
            slot: AtomicPtr::new(ptr::null_mut()),
            active: AtomicUsize::new(0),
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
        self.run_task(&f, true)
    }

    /// Runs `f(thread_idx, n_threads)` on the calling thread (index 0) and on every worker that
    /// picks the task up before that call returns; workers that come later skip it. `f` must
    /// therefore share out its work dynamically (e.g. chunks taken from an atomic counter), so
    /// that any subset of calls, the caller's alone included, completes it. Panics propagate as
    /// in [`ThreadPool::run`].
    pub fn run_dynamic<F>(&self, f: F)
    where
        F: Fn(usize, usize) + Sync,
    {
        self.run_task(&f, false)
    }

    fn run_task(&self, f: &(dyn Fn(usize, usize) + Sync), all: bool) {
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
        let id = sh.epoch.load(Relaxed).wrapping_add(1);
        let slot = Slot {
            f,
            id,
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        // Publish, then wake. The slot is withdrawn (and `active` drained) by `Withdraw` before
        // this frame is left, also when `f` panics below.
        sh.slot
            .store((&slot as *const Slot<'_>).cast_mut().cast(), SeqCst);
        sh.epoch.store(id, SeqCst);
        if sh.sleeping.load(SeqCst) > 0 {
            let _g = sh.lock.lock().unwrap_or_else(|p| p.into_inner());
            sh.wake.notify_all();
        }
        let withdraw = Withdraw {
            sh,
            slot: &slot,
            wait_all: all.then_some(n - 1),
        };
        f(0, n);
        drop(withdraw);
        if slot.panicked.load(Acquire) {
            resume_unwind(Box::new("a task of tinyrt's thread pool panicked"));
        }
    }
}

/// Ends a task (in `drop`, so also while unwinding): waits until every worker has run it when
/// `wait_all` says so, then withdraws the slot and waits for workers still inside it.
struct Withdraw<'a, 'b> {
    sh: &'a Shared,
    slot: &'a Slot<'b>,
    wait_all: Option<usize>,
}

impl Drop for Withdraw<'_, '_> {
    fn drop(&mut self) {
        if let Some(workers) = self.wait_all {
            spin_until(|| self.slot.done.load(Acquire) == workers);
        }
        self.sh.slot.store(ptr::null_mut(), SeqCst);
        spin_until(|| self.sh.active.load(SeqCst) == 0);
    }
}

/// Spins, then yields, until `cond` holds.
fn spin_until(cond: impl Fn() -> bool) {
    let start = Instant::now();
    let mut spins = 0u32;
    while !cond() {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) && start.elapsed() > SPIN_BEFORE_PARK {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

fn worker_loop(sh: &Shared, idx: usize) {
    // `seen`: the last epoch this worker woke up for; `last_run`: the id of the last task it
    // ran (a task is run at most once per worker, even if it sees it twice).
    let (mut seen, mut last_run) = (0usize, 0usize);
    loop {
        // Wait for a new epoch: spin first, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        let e = loop {
            let e = sh.epoch.load(Acquire);
            if e != seen {
                break e;
            }
            if sh.shutdown.load(Acquire) {
                return;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN_BEFORE_PARK {
                std::hint::spin_loop();
                continue;
            }
            let mut g = sh.lock.lock().unwrap_or_else(|p| p.into_inner());
            sh.sleeping.fetch_add(1, SeqCst);
            while sh.epoch.load(SeqCst) == seen && !sh.shutdown.load(SeqCst) {
                g = sh.wake.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            sh.sleeping.fetch_sub(1, SeqCst);
        };
        if sh.shutdown.load(Acquire) {
            return;
        }
        // If a newer task opened meanwhile, the epoch differs from `e` again and the loop above
        // comes straight back here: no task is missed.
        seen = e;
        sh.active.fetch_add(1, SeqCst);
        let p = sh.slot.load(SeqCst);
        // SAFETY: a non-null slot loaded after announcing ourselves in `active` stays valid until
        // we leave `active`: its owner withdraws it and then waits for `active` to drain (module
        // docs). The closure it points to is Sync.
        if let Some(slot) = unsafe { p.as_ref() } {
            if slot.id != last_run {
                last_run = slot.id;
                if catch_unwind(AssertUnwindSafe(|| (slot.f)(idx, sh.n_threads))).is_err() {
                    slot.panicked.store(true, Release);
                }
                slot.done.fetch_add(1, Release);
            }
        }
        sh.active.fetch_sub(1, SeqCst);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
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

// ---------------------------------------------------------------------------------------------
// The seam through which ops use a pool, and a row-parallel helper.

/// Runs `f(thread_idx, n_threads)` once on each of `n_threads()` threads and returns when all
/// calls have returned. The seam through which ops use a thread pool.
pub trait ParallelRun: Sync {
    fn n_threads(&self) -> usize;
    fn run(&self, f: &(dyn Fn(usize, usize) + Sync));
    /// Runs `f` on the calling thread and on any other threads that join before it returns
    /// (`cpu::ThreadPool::run_dynamic`): `f` must share its work out dynamically, so that any
    /// subset of the calls completes it. By default the same as [`ParallelRun::run`].
    fn run_dynamic(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        self.run(f)
    }
}

/// Runs on the calling thread only.
pub struct Sequential;

impl ParallelRun for Sequential {
    fn n_threads(&self) -> usize {
        1
    }
    fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        f(0, 1)
    }
}

/// The persistent pool of `cpu::pool` (workers spin briefly, so back-to-back ops avoid wake-ups).
impl ParallelRun for crate::cpu::ThreadPool {
    fn n_threads(&self) -> usize {
        crate::cpu::ThreadPool::n_threads(self)
    }
    fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        crate::cpu::ThreadPool::run(self, f)
    }
    fn run_dynamic(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        crate::cpu::ThreadPool::run_dynamic(self, f)
    }
}

/// Values below which [`par_rows_mut`] stays on the calling thread: a pool round trip costs a
/// few microseconds, about what an element-wise op takes on this many values.
pub const PAR_MIN_VALUES: usize = 16 * 1024;

/// Runs `f(first_row, rows)` over consecutive runs of whole rows of `x` (rows of `row_len`
/// values) on `par`'s threads, taken dynamically in chunks: the caller alone completes the work
/// when the other threads are busy, so a descheduled worker never stalls it. Below
/// [`PAR_MIN_VALUES`] values (e.g. every decode step) `f(0, x)` runs on the calling thread.
/// `f` must give the same result for any split into runs of rows (a per-row op).
pub fn par_rows_mut<T: Send>(
    par: &dyn ParallelRun,
    x: &mut [T],
    row_len: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    assert!(
        row_len > 0 && x.len().is_multiple_of(row_len),
        "par_rows_mut: length {} is not a multiple of the row length {row_len}",
        x.len()
    );
    let n_rows = x.len() / row_len;
    let n_threads = par.n_threads();
    if n_threads <= 1 || n_rows <= 1 || x.len() < PAR_MIN_VALUES {
        f(0, x);
        return;
    }
    // A few chunks per thread, each at least PAR_MIN_VALUES / 4 values.
    let chunk_rows = n_rows
        .div_ceil(4 * n_threads)
        .max((PAR_MIN_VALUES / 4).div_ceil(row_len))
        .max(1);
    let n_chunks = n_rows.div_ceil(chunk_rows);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let base = SendPtr(x.as_mut_ptr());
    par.run_dynamic(&|_, _| loop {
        let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if c >= n_chunks {
            break;
        }
        let r0 = c * chunk_rows;
        let r1 = (r0 + chunk_rows).min(n_rows);
        // SAFETY: rows `r0..r1` lie inside `x` (r1 <= n_rows); each chunk index is taken by
        // exactly one call (atomic counter), so no two live slices overlap, and `x` is borrowed
        // mutably for the whole of `run_dynamic`, which returns only after every call has.
        let rows = unsafe {
            std::slice::from_raw_parts_mut(base.get().add(r0 * row_len), (r1 - r0) * row_len)
        };
        f(r0, rows);
    });
}

/// A raw pointer that may cross threads; the user guarantees disjoint access.
struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: only used by `par_rows_mut`, whose calls write disjoint runs of rows of `T: Send`.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above; the pointer itself is only copied, never dereferenced concurrently at
// overlapping places.
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// `n` rayon tasks on rayon's global pool.
pub struct RayonRun(pub usize);

impl ParallelRun for RayonRun {
    fn n_threads(&self) -> usize {
        self.0.max(1)
    }
    fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.n_threads();
        rayon::scope(|s| {
            for i in 1..n {
                s.spawn(move |_| f(i, n));
            }
            f(0, n);
        });
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
    use std::sync::atomic::{AtomicU64, Ordering};

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
    fn dynamic_tasks_complete_whoever_joins() {
        for n in 1..=3 {
            let pool = ThreadPool::new(n).unwrap();
            for round in 0..300usize {
                let next = AtomicUsize::new(0);
                let sum = AtomicU64::new(0);
                let items = 1 + round % 97;
                pool.run_dynamic(|_, nt| {
                    assert_eq!(nt, n);
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= items {
                            break;
                        }
                        sum.fetch_add(k as u64 + 1, Ordering::Relaxed);
                    }
                });
                let items = items as u64;
                assert_eq!(sum.load(Ordering::Relaxed), items * (items + 1) / 2);
                if round.is_multiple_of(100) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                // Static tasks interleaved with dynamic ones still reach every thread once.
                let hits = AtomicU64::new(0);
                pool.run(|_, _| {
                    hits.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(hits.load(Ordering::Relaxed), n as u64);
            }
        }
    }

    #[test]
    fn a_panicking_dynamic_task_propagates() {
        let pool = ThreadPool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run_dynamic(|i, _| assert_ne!(i, 0))
        }));
        assert!(r.is_err());
        let sum = AtomicU64::new(0);
        pool.run(|i, _| {
            sum.fetch_add(i as u64 + 1, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn default_threads_is_positive() {
        assert!(ThreadPool::default_threads() >= 1);
    }
}
