//! The GGUF reader and writer against malformed input, the Python `gguf` oracle and themselves.
//!
//! - one handcrafted file per malformed-input class of `shared/design/PITFALLS.md`, each
//!   rejected with its specific `GgufError` variant;
//! - property tests: arbitrary bytes, every truncation of phi2-tiny's header, sampled
//!   truncations of the real models' headers, random bit flips → `Ok` or `Err`, never a panic,
//!   and never more memory than a small multiple of the input (a counting global allocator);
//! - writer → reader round trips for every value type and every tensor type;
//! - every fixture and real model parsed and compared with `tests/data/gguf_oracle.json`
//!   (made by `tests/scripts/gguf_oracle.py` with the Python `gguf` package).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use serde_json::Value as Json;
use tinyrt::gguf::{
    Array, GgmlType, GgufError, GgufFile, GgufWriter, Metadata, Value, MAX_TENSOR_NAME_LEN,
};
use tinyrt_tests::{fixture, fixtures, gguf_oracle, model, REAL_MODELS};

// ---------------------------------------------------------------------------------------------
// Allocation accounting: bytes live per thread, and the peak since the last reset.

struct CountingAllocator;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn track(delta: i64) {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to the system allocator with the caller's arguments, which
// satisfy GlobalAlloc's contract; the bookkeeping touches only const-initialised thread-locals
// (no allocation, no re-entrancy).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract (see the impl).
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as i64));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the peak number of bytes it had allocated at once
/// (on this thread, beyond what was live before).
fn peak_allocation<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get) - base;
    (r, peak.max(0) as u64)
}

/// Allocation allowed while parsing `len` bytes: the parsed form of metadata and tensor
/// tables takes a few times their encoded size (a `String` header per 8-byte length, ...).
fn allocation_budget(len: usize) -> u64 {
    8 * len as u64 + 16 * 1024
}

/// Parses `bytes` (no copy), checking the allocation bound; never panics by contract.
fn parse_bounded(bytes: &[u8]) -> Result<(), GgufError> {
    let (r, peak) = peak_allocation(|| GgufFile::validate(bytes));
    assert!(
        peak <= allocation_budget(bytes.len()),
        "parsing {} bytes allocated {peak} bytes at peak ({r:?})",
        bytes.len()
    );
    r
}

// ---------------------------------------------------------------------------------------------
// A raw GGUF byte builder for handcrafted (possibly invalid) files.

#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    /// A metadata pair with a u32 value.
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    /// A tensor info: name, dims, ggml type id, offset relative to the data section.
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(&mut self, n: usize) -> &mut Self {
        let len = self.0.len().next_multiple_of(32);
        self.0.resize(len + n, 0xAB);
        self
    }
    fn parse(&self) -> Result<(), GgufError> {
        parse_bounded(&self.0)
    }
}

/// A file with one metadata pair "k" of the given value type id and raw value bytes.
fn one_kv(type_id: u32, value: &[u8]) -> Raw {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(type_id).bytes(value);
    r
}

/// A file with no metadata and the given tensor infos, followed by `data` bytes.
fn tensors(infos: &[(&str, &[u64], u32, u64)], data: usize) -> Raw {
    let mut r = Raw::header(3, infos.len() as u64, 0);
    for &(name, dims, ty, offset) in infos {
        r.tensor(name, dims, ty, offset);
    }
    r.data(data);
    r
}

macro_rules! assert_err {
    ($r:expr, $pat:pat $(if $guard:expr)?) => {
        match $r {
            Err($pat) $(if $guard)? => {}
            other => panic!("expected {}, got {:?}", stringify!($pat), other),
        }
    };
}

// After the helpers above: `macro_rules!` macros are visible only below their definition.
mod llamacpp;
mod malformed;
mod oracle;
mod robustness;
mod roundtrip;
