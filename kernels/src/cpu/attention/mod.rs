//! Causal GQA attention over a KV cache: the ISA-neutral driver that cuts a call into jobs
//! ([`job`]) and runs them on a thread pool through the kernels of one ISA ([`crate::cpu::Kernels`]).

pub mod job;
pub mod packed;

pub use job::{attended_keys, AttnJob, AttnParams, AttnTile, KvData, KvView, GGML_FA_TILE_Q};

use crate::cpu::pool::{ParallelRun, Sequential};
use crate::cpu::scalar::ops as scalar;
use crate::cpu::Isa;

/// Causal multi-head attention of `n_tokens` new query tokens over the cache.
///
/// - `q`: `n_tokens × n_heads × head_dim`, already roped and unscaled.
/// - `kv`: the layer's cache; the batch's own K/V are already stored at positions
///   `n_past..n_past + n_tokens`; token `t` sits at position `n_past + t` and attends keys
///   `0..=n_past + t` (minus those outside the sliding window).
/// - `out`: `n_tokens × n_heads × head_dim`.
///
/// Numerics follow llama.cpp's default on the CPU, flash attention (`ggml_compute_forward_flash_attn_ext_f16`):
/// - batches of fewer than [`GGML_FA_TILE_Q`] tokens (so every decode step) take ggml's per-key
///   path: Q is rounded to f16 when K is f16 (ggml converts Q to K's `vec_dot_type`), scores and
///   the running softmax are f32, and with an f16 V the output accumulator is rounded to f16
///   after every key, as ggml's `ggml_vec_mad_f16` does;
/// - larger batches take ggml's tiled path (when K and V have the same type, as in ggml):
///   f32 Q·K over K converted to f32, online softmax over blocks of 64 keys, f32 accumulator.
///
/// - a single query token over at least [`GGML_SPLIT_KV_MIN_KEYS`] keys takes ggml's split-KV
///   decode: the keys are cut into [`DECODE_KV_CHUNKS`] chunks (ggml: one per thread; the
///   goldens used 2), each run on the per-key path, merged in f32 like
///   `ggml_flash_attn_ext_reduce_partials`.
///
/// The chunk count does not depend on the thread count, so [`attention_parallel`] gives the
/// same bits on any number of threads. Tested against ggml's own `ggml_flash_attn_ext`
/// (`tests/data/ops-ggml`).
pub fn attention(
    isa: Isa,
    q: &[f32],
    kv: &KvView,
    n_past: usize,
    params: &AttnParams,
    out: &mut [f32],
) {
    attention_parallel(isa, q, kv, n_past, params, out, &Sequential)
}

/// [`attention`] with the (query token, GQA group) pairs split across `par`'s threads. The
/// result is identical to [`attention`] for any thread count (each pair is computed by the
/// same code, independent of the split).
pub fn attention_parallel(
    isa: Isa,
    q: &[f32],
    kv: &KvView,
    n_past: usize,
    params: &AttnParams,
    out: &mut [f32],
    par: &dyn ParallelRun,
) {
    check_shapes(q, kv, n_past, params, out);
    let n_tokens = q.len() / (params.n_heads * kv.head_dim);
    let one_type = same_kv_type(kv);
    // The tiled kernels mask by position (causal); bidirectional attention takes the per-key
    // path, whose key range per token is set here.
    if n_tokens >= GGML_FA_TILE_Q && one_type && params.causal {
        return tiled(isa, q, kv, n_past, params, out, par);
    }
    per_key(isa, q, kv, n_past, params, out, par, one_type);
}

/// Batch-invariant causal attention: every query token takes ggml's tiled path
/// ([`attention`]'s numerics for batches of at least [`GGML_FA_TILE_Q`] tokens, f32
/// throughout), whatever the number of tokens in the call. A token's result then depends only
/// on its query and the keys and values it attends, not on the other tokens of the call nor on
/// how a sequence was cut into calls: a prompt fed in one call, in chunks or token by token
/// gives the same bits, and so does a sequence in a batch of many (the multi-sequence batch of
/// the server). `params.causal` must be true; K and V must have the same type.
pub fn attention_invariant(
    isa: Isa,
    q: &[f32],
    kv: &KvView,
    n_past: usize,
    params: &AttnParams,
    out: &mut [f32],
    par: &dyn ParallelRun,
) {
    assert!(params.causal, "invariant attention is causal");
    assert!(same_kv_type(kv), "invariant attention: K and V of one type");
    check_shapes(q, kv, n_past, params, out);
    tiled(isa, q, kv, n_past, params, out, par)
}

/// Whether K and V have one type (ggml takes its tiled and split-KV paths only then).
fn same_kv_type(kv: &KvView) -> bool {
    matches!(
        (kv.k, kv.v),
        (KvData::F32(_), KvData::F32(_)) | (KvData::F16(_), KvData::F16(_))
    )
}

/// The sizes of an attention call (checked by [`check_shapes`]).
struct Shape {
    hd: usize,
    n_heads: usize,
    n_kv: usize,
    tok_len: usize,
    n_tokens: usize,
    group: usize,
}

impl Shape {
    fn of(q: &[f32], kv: &KvView, params: &AttnParams) -> Shape {
        let (hd, n_heads, n_kv) = (kv.head_dim, params.n_heads, kv.n_kv_heads);
        let tok_len = n_heads * hd;
        Shape {
            hd,
            n_heads,
            n_kv,
            tok_len,
            n_tokens: q.len() / tok_len,
            group: n_heads / n_kv,
        }
    }
}

/// Panics unless the shapes of an attention call agree.
fn check_shapes(q: &[f32], kv: &KvView, n_past: usize, params: &AttnParams, out: &[f32]) {
    let hd = kv.head_dim;
    let n_heads = params.n_heads;
    let n_kv = kv.n_kv_heads;
    assert!(hd > 0 && n_kv > 0, "attention: empty head shape");
    assert!(
        n_heads > 0 && n_heads.is_multiple_of(n_kv),
        "attention: n_heads {n_heads} is not a multiple of n_kv_heads {n_kv}"
    );
    let tok_len = n_heads * hd;
    assert!(
        q.len().is_multiple_of(tok_len),
        "attention: q length {} is not a multiple of n_heads × head_dim",
        q.len()
    );
    assert_eq!(q.len(), out.len(), "attention: out length");
    let n_tokens = q.len() / tok_len;
    assert!(
        n_past + n_tokens <= kv.capacity(),
        "attention: {} positions needed, the cache holds {}",
        n_past + n_tokens,
        kv.capacity()
    );
    if let Some(w) = params.window {
        assert!(w > 0, "attention: window of 0");
        assert!(params.causal, "attention: a sliding window is causal");
    }
}

/// One sequence's part of [`attention_invariant_many`]: its query rows, its cache (the new
/// K/V already stored at `n_past..`), and its output rows.
pub struct InvariantCall<'a> {
    pub q: &'a [f32],
    pub kv: KvView<'a>,
    pub n_past: usize,
    pub out: &'a mut [f32],
}

/// [`attention_invariant`] for several sequences, each over its own cache, in one parallel
/// run: the (sequence, tile, kv head) jobs of all of them share the threads, so a decode step
/// of many sequences (a few jobs each) keeps every thread busy and pays for one dispatch. Each
/// call's result is bit-identical to [`attention_invariant`] on it alone (the same job code,
/// whatever the split). Calls of at least [`GGML_FA_TILE_Q`] tokens over an f16 cache convert
/// it once and run on their own, as [`attention_invariant`] does.
pub fn attention_invariant_many(
    isa: Isa,
    calls: &mut [InvariantCall<'_>],
    params: &AttnParams,
    par: &dyn ParallelRun,
) {
    assert!(params.causal, "invariant attention is causal");
    let kern = crate::cpu::ops::kernels(isa);
    let mut small = Vec::with_capacity(calls.len());
    for c in calls.iter_mut() {
        assert!(
            same_kv_type(&c.kv),
            "invariant attention: K and V of one type"
        );
        check_shapes(c.q, &c.kv, c.n_past, params, c.out);
        let geom = TileGeom::of(kern, Shape::of(c.q, &c.kv, params));
        if geom.shape.n_tokens >= GGML_FA_TILE_Q && matches!(c.kv.k, KvData::F16(_)) {
            tiled(isa, c.q, &c.kv, c.n_past, params, c.out, par);
        } else if geom.n_jobs > 0 {
            small.push((geom, c.q, c.kv, c.n_past, SharedMut(c.out.as_mut_ptr())));
        }
    }
    // Job indices: call i owns first[i]..first[i + 1].
    let mut first = Vec::with_capacity(small.len() + 1);
    first.push(0);
    for (g, ..) in &small {
        first.push(first.last().unwrap() + g.n_jobs);
    }
    let n_jobs = *first.last().unwrap();
    let cap = small
        .iter()
        .map(|(g, ..)| g.tile_tokens * g.glen)
        .max()
        .unwrap_or(0);
    let init = || (Vec::with_capacity(cap), Vec::with_capacity(cap));
    let job = |scratch: &mut (Vec<f32>, Vec<f32>), j: usize| {
        let i = first.partition_point(|&f| f <= j) - 1;
        let (geom, q, kv, n_past, out) = &small[i];
        // SAFETY: `out` points at call i's output, of `q`'s length (checked above); its jobs
        // write disjoint ranges of it, and distinct calls own distinct output slices.
        unsafe {
            tile_job(
                kern,
                geom,
                q,
                kv,
                *n_past,
                params,
                *out,
                j - first[i],
                scratch,
            )
        };
    };
    run_jobs(par, n_jobs, init, job);
}

/// How ggml's tiled path cuts a call into jobs of (tile of query tokens, kv head, run of the
/// group's heads), for one ISA's tile kernel.
struct TileGeom {
    shape: Shape,
    head_runs: usize,
    run_heads: usize,
    tile_tokens: usize,
    glen: usize,
    n_jobs: usize,
}

impl TileGeom {
    fn of(kern: &crate::cpu::Kernels, shape: Shape) -> TileGeom {
        // A group of more query heads than the ISA's tile kernel holds rows is split into runs
        // of heads (each run still shares the kv head): the AVX kernels then never fall back to
        // their per-token path, whose sums are ordered per ISA, and every ISA gives the same
        // bits (each row's result does not depend on the other rows of its tile).
        let rows_cap = kern.ops.attn_tile_rows;
        let head_runs = shape.group.div_ceil(rows_cap);
        let run_heads = shape.group.div_ceil(head_runs);
        let tile_tokens = (rows_cap / run_heads).clamp(1, 16);
        let n_jobs = shape.n_tokens.div_ceil(tile_tokens) * shape.n_kv * head_runs;
        TileGeom {
            glen: run_heads * shape.hd,
            shape,
            head_runs,
            run_heads,
            tile_tokens,
            n_jobs,
        }
    }
}

/// Job `job_idx` of ggml's tiled path over `q` / `kv` (cut as `geom` says), written into the
/// output that `out` points at.
///
/// # Safety
/// `out` points at an output of `q`'s length that no one else reads or writes during the
/// call except other jobs of the same call (which write disjoint ranges); `kern` is a
/// supported ISA's; the shapes were checked ([`check_shapes`]).
#[allow(clippy::too_many_arguments)]
unsafe fn tile_job(
    kern: &crate::cpu::Kernels,
    geom: &TileGeom,
    q: &[f32],
    kv: &KvView,
    n_past: usize,
    params: &AttnParams,
    out: SharedMut,
    job_idx: usize,
    (q_tile, out_tile): &mut (Vec<f32>, Vec<f32>),
) {
    let TileGeom {
        shape,
        head_runs,
        run_heads,
        tile_tokens,
        ..
    } = geom;
    let (head_runs, run_heads, tile_tokens) = (*head_runs, *run_heads, *tile_tokens);
    let (hd, n_kv, group, tok_len) = (shape.hd, shape.n_kv, shape.group, shape.tok_len);
    let run = job_idx % head_runs;
    let g = job_idx / head_runs % n_kv;
    let t0 = job_idx / (head_runs * n_kv) * tile_tokens;
    let nt = tile_tokens.min(shape.n_tokens - t0);
    let h0 = run * run_heads;
    let nh = run_heads.min(group - h0);
    let len = nh * hd;
    let head_off = (g * group + h0) * hd;
    q_tile.clear();
    for t in t0..t0 + nt {
        let st = t * tok_len + head_off;
        q_tile.extend_from_slice(&q[st..st + len]);
    }
    out_tile.clear();
    out_tile.resize(nt * len, 0.0);
    let tile = AttnTile {
        kv,
        kv_head: g,
        head_dim: hd,
        group: nh,
        first_pos: n_past + t0,
        n_tokens: nt,
        window: params.window,
        scale: params.scale,
    };
    // SAFETY: `kern` is a supported ISA's (the caller's promise); the tile's rows lie within
    // `q_tile` / `out_tile` (built above) and its keys within the cache (shapes checked).
    unsafe { (kern.ops.attend_tile)(&tile, q_tile, out_tile) };
    for (i, t) in (t0..t0 + nt).enumerate() {
        let st = t * tok_len + head_off;
        // SAFETY: `st..st + len` lies inside the output (same shape as `q`); distinct jobs
        // write distinct (token, head run) ranges and each job runs on exactly one thread, so
        // no two live slices overlap (the caller's promise covers everyone else).
        let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(st), len) };
        dst.copy_from_slice(&out_tile[i * len..(i + 1) * len]);
    }
}

/// ggml's tiled path (shapes checked by the caller; K and V of one type; causal).
fn tiled(
    isa: Isa,
    q: &[f32],
    kv: &KvView,
    n_past: usize,
    params: &AttnParams,
    out: &mut [f32],
    par: &dyn ParallelRun,
) {
    let kern = crate::cpu::ops::kernels(isa);
    let geom = TileGeom::of(kern, Shape::of(q, kv, params));
    let Shape {
        hd, n_kv, n_tokens, ..
    } = geom.shape;
    let out_ptr = SharedMut(out.as_mut_ptr());
    // ggml converts an f16 K/V block to f32 for every tile; the conversion is exact, so
    // converting the cache rows once per call gives the same bits, and the kernels then read
    // the f32 rows in place. A few tokens (a decode step of the invariant path) convert block
    // by block in the kernels instead: the same bits, without converting the whole cache per
    // call.
    let n_pos = n_past + n_tokens;
    let converted = match (kv.k, kv.v) {
        (KvData::F16(k), KvData::F16(v)) if n_tokens >= GGML_FA_TILE_Q => {
            let len = n_pos * n_kv * hd;
            let mut kf = vec![0.0f32; len];
            let mut vf = vec![0.0f32; len];
            // SAFETY: a supported ISA (`Kernels::get`); source and destination have the same
            // length.
            unsafe {
                (kern.ops.f16_to_f32_row)(&k[..len], &mut kf);
                (kern.ops.f16_to_f32_row)(&v[..len], &mut vf);
            }
            Some((kf, vf))
        }
        _ => None,
    };
    let kv_f32;
    let kv = match &converted {
        Some((kf, vf)) => {
            kv_f32 = KvView {
                k: KvData::F32(kf),
                v: KvData::F32(vf),
                n_kv_heads: n_kv,
                head_dim: hd,
            };
            &kv_f32
        }
        None => kv,
    };
    let cap = geom.tile_tokens * geom.glen;
    let init = || (Vec::with_capacity(cap), Vec::with_capacity(cap));
    let job = |scratch: &mut (Vec<f32>, Vec<f32>), j: usize| {
        // SAFETY: `out_ptr` is `out`, of `q`'s length (checked by the caller), borrowed
        // mutably for this call; its jobs write disjoint ranges.
        unsafe { tile_job(kern, &geom, q, kv, n_past, params, out_ptr, j, scratch) };
    };
    run_jobs(par, geom.n_jobs, init, job);
}

/// ggml's per-key path (shapes checked by the caller).
#[allow(clippy::too_many_arguments)]
fn per_key(
    isa: Isa,
    q: &[f32],
    kv: &KvView,
    n_past: usize,
    params: &AttnParams,
    out: &mut [f32],
    par: &dyn ParallelRun,
    same_kv_type: bool,
) {
    let Shape {
        hd,
        n_heads,
        n_kv,
        tok_len,
        n_tokens,
        group,
    } = Shape::of(q, kv, params);
    let kern = crate::cpu::ops::kernels(isa);
    let out_ptr = SharedMut(out.as_mut_ptr());
    // ggml's per-key path. A job is (query token, kv head, run of that group's query heads,
    // key chunk). Groups are split only when there are fewer (token, group, chunk) triples than
    // threads (decode with few kv heads, e.g. Gemma-3-270M's single one); a head's result does
    // not depend on that split.
    //
    // A single query token over at least GGML_SPLIT_KV_MIN_KEYS keys splits its keys into
    // DECODE_KV_CHUNKS chunks, as ggml's split-KV decode does (one chunk per thread; the goldens
    // were made with 2 threads): f16 accumulators per chunk, merged in f32. The chunk count is
    // fixed, so the result does not depend on `par`.
    let keys_of = |t: usize| {
        if params.causal {
            attended_keys(n_past + t, params.window)
        } else {
            0..n_past + n_tokens
        }
    };
    let n_keys = keys_of(0).len();
    let chunks = if n_tokens == 1 && n_keys >= GGML_SPLIT_KV_MIN_KEYS && same_kv_type {
        DECODE_KV_CHUNKS
    } else {
        1
    };
    let partial = chunks > 1;
    // Per chunk and head: the unnormalised accumulator, M and S.
    let mut scratch = vec![
        0.0f32;
        if partial {
            chunks * n_heads * (hd + 2)
        } else {
            0
        }
    ];
    let scratch_ptr = SharedMut(scratch.as_mut_ptr());
    let triples = n_tokens * n_kv * chunks;
    let splits = par.n_threads().div_ceil(triples.max(1)).clamp(1, group);
    let heads_per_job = group.div_ceil(splits);
    let jobs_per_group = group.div_ceil(heads_per_job);
    let n_jobs = triples * jobs_per_group;
    let job = |_: &mut (), job_idx: usize| {
        let part = job_idx % jobs_per_group;
        let triple = job_idx / jobs_per_group;
        let chunk = triple % chunks;
        let pair = triple / chunks;
        let t = pair / n_kv;
        let g = pair % n_kv;
        let keys = keys_of(t);
        let chunk_keys = keys.len().div_ceil(chunks);
        let key_lo = (keys.start + chunk * chunk_keys).min(keys.end);
        let job = AttnJob {
            kv,
            kv_head: g,
            head_dim: hd,
            key_lo,
            key_hi: (key_lo + chunk_keys).min(keys.end),
            scale: params.scale,
            ggml_vec_path: true,
            partial,
        };
        let first_head = g * group + part * heads_per_job;
        let n_job_heads = heads_per_job.min((g + 1) * group - first_head);
        let start = t * tok_len + first_head * hd;
        let q_heads = &q[start..start + n_job_heads * hd];
        let out_heads = if partial {
            let at = (chunk * n_heads + first_head) * (hd + 2);
            // SAFETY: `at..at + n_job_heads*(hd+2)` lies inside `scratch` (chunk < chunks,
            // first_head + n_job_heads <= n_heads); distinct jobs write distinct
            // (chunk, head run) ranges, each on exactly one thread.
            unsafe {
                std::slice::from_raw_parts_mut(scratch_ptr.get().add(at), n_job_heads * (hd + 2))
            }
        } else {
            // SAFETY: `start..start + n_job_heads*hd` lies inside `out` (same shape as `q`,
            // checked above); distinct job indices map to disjoint head runs and each job
            // index runs on exactly one thread, so no two live slices overlap.
            unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(start), n_job_heads * hd) }
        };
        // SAFETY: as for the tiled path: a supported ISA, and the heads and keys of `job`
        // lie within `q_heads`, `out_heads` and the cache (checked above).
        unsafe { (kern.ops.attend_group)(&job, q_heads, out_heads) };
    };
    run_jobs(par, n_jobs, || (), job);
    if partial {
        // One token: `out` is `n_heads × hd`.
        for (h, oh) in out.chunks_exact_mut(hd).enumerate() {
            let parts = (0..chunks).map(|c| {
                let at = (c * n_heads + h) * (hd + 2);
                &scratch[at..at + hd + 2]
            });
            scalar::combine_partials(parts, oh);
        }
    }
}

/// Keys from which ggml's CPU flash attention splits one query token's keys across threads
/// (`use_split_kv_path` in `ggml_compute_forward_flash_attn_ext_f16`).
pub const GGML_SPLIT_KV_MIN_KEYS: usize = 512;

/// Key chunks of a long decode (ggml uses one per thread; 2 = the goldens' thread count).
pub const DECODE_KV_CHUNKS: usize = 2;

/// Runs `job(state, job_idx)` for every job index below `n_jobs` on `par`'s threads, each
/// thread with its own `init()` state. Jobs are taken from an atomic counter, highest index
/// first (with causal attention later tokens attend more keys: the biggest jobs go first and
/// the small ones fill the gaps), and the caller alone finishes them when the other threads are
/// busy ([`ParallelRun::run_dynamic`]). A job's result does not depend on who runs it.
fn run_jobs<S>(
    par: &dyn ParallelRun,
    n_jobs: usize,
    init: impl Fn() -> S + Sync,
    job: impl Fn(&mut S, usize) + Sync,
) {
    if par.n_threads() <= 1 || n_jobs <= 1 {
        let mut state = init();
        for j in (0..n_jobs).rev() {
            job(&mut state, j);
        }
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    par.run_dynamic(&|_, _| {
        let mut state = None;
        loop {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if k >= n_jobs {
                break;
            }
            job(state.get_or_insert_with(&init), n_jobs - 1 - k);
        }
    });
}

/// A raw pointer that may cross threads; the user guarantees disjoint access.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);

impl SharedMut {
    fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: only used by `attention_parallel`, whose jobs write disjoint ranges.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}
