//! Allocation budgets for untrusted work on one thread (rendering a model file's chat template).
//!
//! A template engine cannot be made to fail an allocation gracefully: Rust aborts the process
//! when the allocator returns null. So [`BudgetAlloc`], installed as a program's global
//! allocator (the `tinyrt` CLI does), counts every byte a thread inside [`Budget::enter`] asks
//! for. When the count passes the budget (or the budget is cancelled by a watchdog) the
//! allocation never happens: the thread marks the budget as stopped and sleeps for good, so the
//! memory it holds stays at most the budget, and the thread that waits for its result reports
//! one clear error instead of the machine swapping or the process aborting. The cost to every
//! other allocation is one thread-local read.
//!
//! Without [`BudgetAlloc`] installed ([`enforced`] is false) budgets count nothing; callers
//! still bound the work with their other limits (output size, instruction fuel, a deadline).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A byte budget for the allocations of the threads that [`Budget::enter`] it.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    stopped: AtomicBool,
    cancelled: AtomicBool,
}

impl Budget {
    /// A budget of `limit` bytes, counted cumulatively (every allocation and every
    /// reallocation's new size, frees not subtracted): it bounds the memory held and, as
    /// copying dominates string building, the work done.
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
        })
    }

    /// Counts this thread's allocations against `budget` until the guard is dropped. A thread
    /// that passes the budget stops inside the allocator and never returns; give it only work
    /// whose result another thread waits for with [`Budget::stopped`] in view.
    pub fn enter(budget: &Arc<Budget>) -> BudgetGuard {
        let keep = Arc::clone(budget);
        CURRENT.with(|c| c.set(Arc::as_ptr(&keep)));
        BudgetGuard { _budget: keep }
    }

    /// Whether a thread was stopped for passing the budget (or for allocating after
    /// [`Budget::cancel`]).
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Bytes counted so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Stops the budget's threads at their next allocation (a deadline passed).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }
}

/// Ends a thread's [`Budget::enter`].
pub struct BudgetGuard {
    _budget: Arc<Budget>,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(std::ptr::null()));
    }
}

thread_local! {
    // A const-initialised `Cell` of a raw pointer has no destructor, so reading it from inside
    // the allocator registers nothing and allocates nothing.
    static CURRENT: Cell<*const Budget> = const { Cell::new(std::ptr::null()) };
}

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether [`BudgetAlloc`] is this program's global allocator (it has served an allocation).
pub fn enforced() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// The system allocator with [`Budget`] accounting: `#[global_allocator] static A:
/// BudgetAlloc = BudgetAlloc;`.
pub struct BudgetAlloc;

impl BudgetAlloc {
    #[inline]
    fn charge(&self, bytes: usize) {
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
        let Ok(ptr) = CURRENT.try_with(Cell::get) else {
            return;
        };
        if ptr.is_null() {
            return;
        }
        // SAFETY: a non-null CURRENT was set by `Budget::enter` on this thread from an `Arc`
        // that its `BudgetGuard` keeps alive until it resets CURRENT to null; a thread stopped
        // below never returns, so its guard (and the `Arc`) is never dropped.
        let budget = unsafe { &*ptr };
        let used = budget
            .used
            .fetch_add(bytes as u64, Ordering::Relaxed)
            .saturating_add(bytes as u64);
        if used > budget.limit || budget.cancelled.load(Ordering::Relaxed) {
            budget.stopped.store(true, Ordering::SeqCst);
            // Nothing is allocated or locked here (sleep is a bare system call): the memory
            // this thread holds stays as it is, and the waiting thread reports the error.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, after
// `charge`, which allocates nothing and either returns or never returns.
unsafe impl GlobalAlloc for BudgetAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.charge(layout.size());
        // SAFETY: the caller's contract for `GlobalAlloc::alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.charge(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.charge(new_size);
        // SAFETY: as for `dealloc`, and `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
