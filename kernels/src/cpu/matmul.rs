//! Matrix products of a quantized weight matrix with activations: `out = x · Wᵀ`.
//!
//! The weight matrix is in ggml layout (row-major, `cols` = ne0 = row length, each row a whole
//! number of blocks). The activations are converted once to the type the weight type's dot
//! product wants ([`Kernels::act_type`], ggml's `vec_dot_type`) and can be reused for every
//! matrix that reads the same input (Q, K, V; gate and up). Output rows are split across the
//! threads of a [`ThreadPool`] in chunks handed out dynamically (the host is shared and one
//! thread may be descheduled); prefill visits the tokens in tiles so that a chunk of weight rows
//! is read from memory once and reused from cache for every token.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cpu::gemm::{
    gemm_form, pack_panel, GemmActs, GemmForm, Line, RowsJob, Tile, PANEL_ROWS,
};
use crate::cpu::pool::ThreadPool;
use crate::cpu::repack::Repacked;
use crate::cpu::{
    row_bytes, GemmKernels, KernelError, Kernels, PanelGemm, VecDot4Fn, VecDotEntry, VecDotFn,
};
use crate::quant::{GgmlType, QuantFormat};

/// A weight matrix in ggml layout: `rows` rows of `cols` values of type `ty` (a ggml type, or
/// tinyrt's NF4; `GgmlType` converts with `.into()`).
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: QuantFormat,
    pub data: &'a [u8],
    pub rows: usize,
    /// Values per row (ggml's ne0).
    pub cols: usize,
    /// The same matrix repacked at load ([`Kernels::repack`]), read instead of `data` by the
    /// products that can (the same bits either way).
    pub repacked: Option<&'a Repacked>,
}

impl<'a> QMatrix<'a> {
    /// Checks that `data` holds `rows × cols` values of `ty` and that `cols` is a whole number
    /// of blocks.
    pub fn new(
        ty: impl Into<QuantFormat>,
        data: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Result<QMatrix<'a>, MatmulError> {
        let m = QMatrix {
            ty: ty.into(),
            data,
            rows,
            cols,
            repacked: None,
        };
        m.check()?;
        Ok(m)
    }

    /// This matrix read through `r`, its repacked form ([`Kernels::repack`] of it).
    pub fn with_repacked(self, r: &'a Repacked) -> Result<QMatrix<'a>, MatmulError> {
        if !r.matches(&self) {
            return Err(MatmulError::RepackMismatch);
        }
        Ok(QMatrix {
            repacked: Some(r),
            ..self
        })
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> Result<usize, MatmulError> {
        Ok(row_bytes(self.ty, self.cols)?)
    }

    fn check(&self) -> Result<usize, MatmulError> {
        let rb = self.row_bytes()?;
        let need = rb.checked_mul(self.rows).ok_or(MatmulError::WeightSize {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            need: usize::MAX,
            got: self.data.len(),
        })?;
        if self.data.len() < need {
            return Err(MatmulError::WeightSize {
                ty: self.ty,
                rows: self.rows,
                cols: self.cols,
                need,
                got: self.data.len(),
            });
        }
        Ok(rb)
    }
}

/// Activations converted for a dot-product kernel: `n_tokens` rows of `cols` values of `ty`.
/// Reuse one value across calls to avoid reallocating.
#[derive(Clone, Debug)]
pub struct QuantizedActs {
    ty: GgmlType,
    data: Vec<u8>,
    n_tokens: usize,
    cols: usize,
    row_bytes: usize,
}

impl Default for QuantizedActs {
    fn default() -> Self {
        QuantizedActs::new()
    }
}

impl QuantizedActs {
    pub fn new() -> QuantizedActs {
        QuantizedActs {
            ty: GgmlType::F32,
            data: Vec::new(),
            n_tokens: 0,
            cols: 0,
            row_bytes: 0,
        }
    }
    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The converted row of token `t` (ggml layout of [`QuantizedActs::ty`]).
    pub fn row(&self, t: usize) -> &[u8] {
        &self.data[t * self.row_bytes..(t + 1) * self.row_bytes]
    }
}

/// One product of [`Kernels::matmul_q_group`]: `out[t * w.rows + r] = Σ_c w[r][c] ·
/// acts[t][c]`.
pub struct MatmulJob<'a, 'w> {
    pub w: &'a QMatrix<'w>,
    pub acts: &'a QuantizedActs,
    pub out: &'a mut [f32],
}

/// Errors of the matrix products.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatmulError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("weight matrix {rows}x{cols} of {ty} needs {need} bytes, got {got}")]
    WeightSize {
        ty: QuantFormat,
        rows: usize,
        cols: usize,
        need: usize,
        got: usize,
    },
    #[error("input has {got} values, expected {n_tokens} tokens x {cols}")]
    InputSize {
        n_tokens: usize,
        cols: usize,
        got: usize,
    },
    #[error("output has room for {got} values, expected {need}")]
    OutputSize { need: usize, got: usize },
    #[error("the repacked form is of another matrix type or shape")]
    RepackMismatch,
    #[error(
        "activations are {got_ty} x {got_cols}, the {weight} matrix needs {need_ty} x {need_cols}"
    )]
    ActsMismatch {
        weight: QuantFormat,
        got_ty: GgmlType,
        got_cols: usize,
        need_ty: GgmlType,
        need_cols: usize,
    },
}

/// Below this many weight bytes a matmul runs on the calling thread only (waking the pool costs
/// more than it saves).
const MIN_PARALLEL_BYTES: usize = 32 * 1024;
/// Tokens visited per pass over a chunk of rows in prefill.
const TOKEN_TILE: usize = 8;

/// Rows ahead of the current one whose bytes are prefetched (decode streams every weight once;
/// the hardware prefetcher alone leaves the kernels waiting on memory).
const PREFETCH_ROWS: usize = 2;

/// Asks for every cache line of `bytes` to be brought into the cache.
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch is only a hint: it never faults and changes no architectural
        // state; the address lies within `bytes` anyway. (SSE, part of the x86_64 baseline.)
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Runs `f` on this thread's scratch value in `key`, or on a fresh one when that is already
/// borrowed (a matrix product called from inside another on the same thread, e.g. by a
/// nested pool task), so buffers are reused across calls without ever being shared.
fn with_scratch<T: Default, R>(
    key: &'static std::thread::LocalKey<RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut T::default()),
    })
}

/// Tokens from which `quantize_acts_on` and the GEMM's activation form use the pool.
const PAR_MIN_TOKENS: usize = 16;

/// A byte buffer shared by the threads converting activations.
#[derive(Clone, Copy)]
struct OutBytes(*mut u8);
// SAFETY: threads write disjoint token rows (each claimed once), within a buffer that outlives
// the pool run.
unsafe impl Send for OutBytes {}
// SAFETY: as above.
unsafe impl Sync for OutBytes {}

impl OutBytes {
    /// The pointer `offset` bytes on (a method, so that closures capture the whole wrapper).
    ///
    /// # Safety
    /// `offset` stays within the buffer.
    unsafe fn at(self, offset: usize) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(offset) }
    }
}

/// The output buffer shared by the threads of one matmul.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: threads write disjoint elements (each output row index belongs to exactly one chunk,
// and each chunk is taken by exactly one thread), and `matmul_q` outlives every write.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl Kernels {
    /// Converts `n_tokens` rows of `cols` floats (`x`, token-major) to activation type `act`
    /// into `acts` (its buffer is reused).
    pub fn quantize_acts(
        &self,
        act: GgmlType,
        x: &[f32],
        n_tokens: usize,
        cols: usize,
        acts: &mut QuantizedActs,
    ) -> Result<(), MatmulError> {
        self.quantize_acts_on(None, act, x, n_tokens, cols, acts)
    }

    /// [`Kernels::quantize_acts`], with the tokens of a batch shared out on `pool` when one
    /// is given (the same bits: each row is converted alone). Serial, this was 1-2% of a
    /// 512-token prefill on one thread while the other waited.
    pub fn quantize_acts_on(
        &self,
        pool: Option<&ThreadPool>,
        act: GgmlType,
        x: &[f32],
        n_tokens: usize,
        cols: usize,
        acts: &mut QuantizedActs,
    ) -> Result<(), MatmulError> {
        if n_tokens.checked_mul(cols) != Some(x.len()) {
            return Err(MatmulError::InputSize {
                n_tokens,
                cols,
                got: x.len(),
            });
        }
        let rb = row_bytes(act, cols)?;
        let total = rb.checked_mul(n_tokens).ok_or(KernelError::Size {
            what: "activation buffer overflow",
            need: usize::MAX,
            got: n_tokens,
        })?;
        acts.data.clear();
        acts.data.resize(total, 0);
        acts.ty = act;
        acts.n_tokens = n_tokens;
        acts.cols = cols;
        acts.row_bytes = rb;
        if cols == 0 || n_tokens == 0 {
            return Ok(());
        }
        // Row 0 alone first: every row has its sizes, so if it converts, all do.
        let (x0, rest_x) = x.split_at(cols);
        let (o0, rest_o) = acts.data.split_at_mut(rb);
        self.quantize_row(act, x0, o0)?;
        let rows = |xs: &[f32], os: &mut [u8]| {
            for (xr, or) in xs.chunks_exact(cols).zip(os.chunks_exact_mut(rb)) {
                self.quantize_row(act, xr, or)
                    .expect("the sizes of a row that converted");
            }
        };
        match pool {
            Some(pool) if pool.n_threads() > 1 && n_tokens >= PAR_MIN_TOKENS => {
                let chunk = (n_tokens - 1).div_ceil(4 * pool.n_threads());
                let next = AtomicUsize::new(0);
                let out = OutBytes(rest_o.as_mut_ptr());
                pool.run_dynamic(|_, _| loop {
                    let t0 = next.fetch_add(chunk, Ordering::Relaxed);
                    if t0 >= n_tokens - 1 {
                        return;
                    }
                    let t1 = (t0 + chunk).min(n_tokens - 1);
                    // SAFETY: tokens t0..t1 of the rest are claimed once (`next`), so this
                    // slice of the output is written by this call only; it lies within
                    // `rest_o` (t1 ≤ n_tokens - 1 rows of rb bytes).
                    let os =
                        unsafe { std::slice::from_raw_parts_mut(out.at(t0 * rb), (t1 - t0) * rb) };
                    rows(&rest_x[t0 * cols..t1 * cols], os);
                });
            }
            _ => rows(rest_x, rest_o),
        }
        Ok(())
    }

    /// `out[t * w.rows + r] = Σ_c w[r][c] · acts[t][c]` for every token `t` and row `r`.
    /// `acts` must be of [`Kernels::act_type`]`(w.ty)` with `w.cols` columns.
    pub fn matmul_q(
        &self,
        pool: &ThreadPool,
        w: &QMatrix<'_>,
        acts: &QuantizedActs,
        out: &mut [f32],
    ) -> Result<(), MatmulError> {
        self.matmul_q_group(pool, &mut [MatmulJob { w, acts, out }])
    }

    /// Several products at once, [`Kernels::matmul_q`] for each job: those the GEMM takes
    /// (`uses_gemm`) share one hand-out of the pool (a decode step's Q, K and V, or gate and
    /// up: one wake-up and one join instead of one per matrix, and a small matrix's last
    /// panels do not leave a thread idle), the others run one after another. Every job is
    /// checked before any runs.
    pub fn matmul_q_group(
        &self,
        pool: &ThreadPool,
        jobs: &mut [MatmulJob<'_, '_>],
    ) -> Result<(), MatmulError> {
        let mut sizes = Vec::with_capacity(jobs.len());
        for job in jobs.iter() {
            sizes.push(self.check_job(job)?);
        }
        let mut gemm = Vec::new();
        for (job, &(entry, wrb)) in jobs.iter_mut().zip(&sizes) {
            if job.acts.n_tokens == 0 || job.w.rows == 0 {
                continue;
            }
            if self.uses_gemm(job.w.ty, job.acts.n_tokens) {
                gemm.push((job.w, wrb, job.acts, OutPtr(job.out.as_mut_ptr())));
            } else {
                self.matmul_dots(pool, entry, job.w, wrb, job.acts, job.out);
            }
        }
        if !gemm.is_empty() {
            self.matmul_gemm(pool, &gemm);
        }
        Ok(())
    }

    /// The kernel entry and row bytes of `job`, or why it cannot run.
    fn check_job(&self, job: &MatmulJob<'_, '_>) -> Result<(VecDotEntry, usize), MatmulError> {
        let (w, acts) = (job.w, job.acts);
        let entry = self.entry_for(w.ty).ok_or(KernelError::UnsupportedWeight {
            isa: self.isa.name(),
            ty: w.ty,
        })?;
        let wrb = w.check()?;
        if w.repacked.is_some_and(|r| !r.matches(w)) {
            return Err(MatmulError::RepackMismatch);
        }
        if acts.ty != entry.act || acts.cols != w.cols {
            return Err(MatmulError::ActsMismatch {
                weight: w.ty,
                got_ty: acts.ty,
                got_cols: acts.cols,
                need_ty: entry.act,
                need_cols: w.cols,
            });
        }
        let need = acts
            .n_tokens
            .checked_mul(w.rows)
            .ok_or(MatmulError::OutputSize {
                need: usize::MAX,
                got: job.out.len(),
            })?;
        if job.out.len() < need {
            return Err(MatmulError::OutputSize {
                need,
                got: job.out.len(),
            });
        }
        Ok((entry, wrb))
    }

    /// The dot-product path of `matmul_q` (sizes already checked).
    fn matmul_dots(
        &self,
        pool: &ThreadPool,
        entry: VecDotEntry,
        w: &QMatrix<'_>,
        wrb: usize,
        acts: &QuantizedActs,
        out: &mut [f32],
    ) {
        let task = MatmulTask {
            f: entry.f,
            f4: entry.f4,
            w,
            wrb,
            acts,
            out: OutPtr(out.as_mut_ptr()),
            chunk: chunk_rows(w.rows, pool.n_threads()),
            next: AtomicUsize::new(0),
        };
        if w.data.len() < MIN_PARALLEL_BYTES || pool.n_threads() == 1 {
            task.work();
        } else {
            // Rows are handed out through `task.next`, so whoever joins shares the work and a
            // descheduled worker does not hold up the caller.
            pool.run_dynamic(|_, _| task.work());
        }
    }

    /// Converts `x` (`n_tokens × w.cols` floats, token-major) and multiplies:
    /// `out[t * w.rows + r]`. Uses a per-thread scratch buffer for the converted activations.
    pub fn matmul(
        &self,
        pool: &ThreadPool,
        w: &QMatrix<'_>,
        x: &[f32],
        n_tokens: usize,
        out: &mut [f32],
    ) -> Result<(), MatmulError> {
        thread_local! {
            static SCRATCH: RefCell<QuantizedActs> = RefCell::new(QuantizedActs::new());
        }
        let act = self.act_type(w.ty).ok_or(KernelError::UnsupportedWeight {
            isa: self.isa.name(),
            ty: w.ty,
        })?;
        with_scratch(&SCRATCH, |acts| {
            self.quantize_acts(act, x, n_tokens, w.cols, acts)?;
            self.matmul_q(pool, w, acts, out)
        })
    }

    /// Matrix × vector: `out[r] = Σ_c w[r][c] · x[c]`.
    pub fn matvec(
        &self,
        pool: &ThreadPool,
        w: &QMatrix<'_>,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<(), MatmulError> {
        self.matmul(pool, w, x, 1, out)
    }
}

impl Kernels {
    /// Whether [`Kernels::matmul_q`] takes the GEMM for `n_tokens` tokens of weight type `ty`:
    /// Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL, Q4_K and Q6_K, for every token count, decode included
    /// (their AVX-512 panels pack fast enough). On AVX-512 that is the register-blocked GEMM
    /// (`cpu/gemm.rs`); scalar and AVX2 compute the same float operations without panels
    /// (`RowsJob` in `cpu/gemm.rs`), so every ISA gives the same bits. The results agree with the dot
    /// products within float rounding (the same integer sums, scaled and added in another
    /// order) and do not depend on how the tokens are split into calls.
    pub fn uses_gemm(&self, ty: QuantFormat, n_tokens: usize) -> bool {
        n_tokens > 0 && gemm_form(ty).is_some()
    }

    /// The GEMM path of `matmul_q_group` (sizes already checked): one [`GemmTask`] per job,
    /// all handed out in one pool run; a thread takes panels of the first task until none is
    /// left, then of the next.
    fn matmul_gemm(&self, pool: &ThreadPool, jobs: &[GemmJob<'_, '_>]) {
        thread_local! {
            static GEMM_ACTS: RefCell<Vec<GemmActs>> = const { RefCell::new(Vec::new()) };
        }
        with_scratch(&GEMM_ACTS, |all_acts| {
            if all_acts.len() < jobs.len() {
                all_acts.resize_with(jobs.len(), GemmActs::default);
            }
            // The activations in each job's form, built once per distinct (activations,
            // form): Q and K, or gate and up, usually share theirs.
            let forms: Vec<(GgmlType, GemmForm)> = jobs
                .iter()
                .map(|&(w, ..)| match (w.ty, gemm_form(w.ty)) {
                    (QuantFormat::Ggml(ty), Some(form)) => (ty, form),
                    _ => unreachable!("uses_gemm checked the form"),
                })
                .collect();
            let same =
                |i: usize, k: usize| std::ptr::eq(jobs[i].2, jobs[k].2) && forms[i].1 == forms[k].1;
            let built: Vec<usize> = (0..jobs.len())
                .map(|i| (0..i).find(|&k| same(i, k)).unwrap_or(i))
                .collect();
            for (i, &(w, _, acts, _)) in jobs.iter().enumerate() {
                if built[i] == i {
                    all_acts[i].build(
                        Some(pool),
                        acts.ty,
                        forms[i].1,
                        acts.n_tokens,
                        w.cols,
                        |t| acts.row(t),
                    );
                }
            }
            let mut tasks = Vec::with_capacity(jobs.len());
            let mut bytes = 0;
            for (i, &(w, wrb, acts, out)) in jobs.iter().enumerate() {
                let (ty, form) = forms[i];
                let ga = &all_acts[built[i]];
                bytes += w.data.len();
                tasks.push(GemmTask {
                    kernels: &self.gemm,
                    n_threads: pool.n_threads(),
                    ty,
                    form,
                    w,
                    wrb,
                    acts: ga,
                    n_tokens: acts.n_tokens,
                    out,
                    next: AtomicUsize::new(0),
                });
            }
            let work = || tasks.iter().for_each(GemmTask::work);
            if bytes < MIN_PARALLEL_BYTES || pool.n_threads() == 1 {
                work();
            } else {
                pool.run_dynamic(|_, _| work());
            }
        });
    }
}

/// Up to how many tokens a repacked matrix is multiplied without packing its panels
/// (`RepackedGemm::tokens`): the fused kernel decodes each block once per group of
/// `TILE_TOKENS` tokens, while a packed panel is decoded once and reused by every tile.
/// Measured with `serve --parallel N -t 2` on SmolLM2-135M Q4_1 under 25 s of
/// `scripts/loadtest.py --clients N --max-tokens 64 --ignore-eos` (a shared noisy host,
/// old/new interleaved): 8 streams 151-171 -> 194-320 tok/s over 3 rounds; 16 streams
/// (two groups of 8) 228 vs 226, even; prefill (`bench -p 64`) keeps pack+tile.
const FEW_TOKENS: usize = 16;

/// One product for the GEMM: the weights, their row bytes, the activations and the output.
type GemmJob<'a, 'w> = (&'a QMatrix<'w>, usize, &'a QuantizedActs, OutPtr);

/// One GEMM: panels of 16 rows handed out one at a time.
struct GemmTask<'a, 'w> {
    /// The GEMM kernels of the table that runs it.
    kernels: &'a GemmKernels,
    /// The pool's threads (for the claim sizes).
    n_threads: usize,
    ty: GgmlType,
    form: GemmForm,
    w: &'a QMatrix<'w>,
    wrb: usize,
    acts: &'a GemmActs,
    n_tokens: usize,
    out: OutPtr,
    next: AtomicUsize,
}

impl GemmTask<'_, '_> {
    fn work(&self) {
        match self.kernels {
            GemmKernels::Rows(f) => self.work_rows(*f),
            GemmKernels::Panels(p) => {
                thread_local! {
                    static PANEL: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
                }
                with_scratch(&PANEL, |panel| self.work_with(p, panel));
            }
        }
    }

    /// Claims the next rows to multiply: a few panels at a time while many are left, one at
    /// a time towards the end (guided scheduling). One claim per panel made the shared
    /// counter's cache line a tenth of SmolLM2's decode time (`perf annotate`: the `lock
    /// xadd`), its panels being a few microseconds of work each.
    fn claim(&self) -> Option<std::ops::Range<usize>> {
        let rows = self.w.rows;
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            if cur >= rows {
                return None;
            }
            let left = (rows - cur).div_ceil(PANEL_ROWS);
            let panels = (left / (4 * self.n_threads)).clamp(1, 8);
            let end = (cur + panels * PANEL_ROWS).min(rows);
            match self
                .next
                .compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(cur..end),
                Err(now) => cur = now,
            }
        }
    }

    /// The GEMM's float operations without panels (`RowsJob` in `cpu/gemm.rs`).
    fn work_rows(&self, rows_times_tokens: crate::cpu::table::RowsFn) {
        let job = RowsJob::new(
            self.ty,
            self.form,
            self.w.data,
            self.wrb,
            self.w.cols,
            self.w.rows,
            self.acts,
            self.n_tokens,
            self.out.0,
        );
        while let Some(claimed) = self.claim() {
            assert!(claimed.end <= job.rows);
            // SAFETY: the table's ISA is supported (it came from `Kernels::get`); the claimed
            // rows are within the matrix and handed out once (`claim`), so no other thread
            // writes their outputs.
            unsafe { rows_times_tokens(&job, claimed.start, claimed.len()) };
        }
    }

    fn work_with(&self, gemm: &PanelGemm, panel: &mut Vec<Line>) {
        while let Some(claimed) = self.claim() {
            for r0 in claimed.step_by(PANEL_ROWS) {
                self.panel_rows(gemm, panel, r0);
            }
        }
    }

    /// Multiplies the panel of rows `r0 .. r0 + 16` (fewer at the end).
    fn panel_rows(&self, gemm: &PanelGemm, panel: &mut Vec<Line>, r0: usize) {
        let rows = self.w.rows;
        let n_rows = (rows - r0).min(PANEL_ROWS);
        let repacked = self.w.repacked.zip(gemm.repacked);
        if self.n_tokens == 1 {
            // SAFETY: r0 + n_rows ≤ rows = the one token's outputs, and rows r0..r0 +
            // n_rows belong to this panel only (handed out once through `next`).
            let out = unsafe { std::slice::from_raw_parts_mut(self.out.0.add(r0), n_rows) };
            if let Some((w, k)) = repacked {
                (k.one_token)(w, r0, n_rows, &self.acts.y, &self.acts.side, out);
                return;
            }
            if (gemm.one_token)(
                self.ty,
                self.w.data,
                self.wrb,
                self.w.cols,
                r0,
                n_rows,
                &self.acts.y,
                &self.acts.side,
                out,
            ) {
                return;
            }
        }
        let mut tile = Tile {
            nsub: self.w.cols / self.form.kb,
            panel: std::ptr::null(),
            y: self.acts.y.as_ptr(),
            cols: self.w.cols,
            side: self.acts.side.as_ptr(),
            n_tokens: self.n_tokens,
            // SAFETY: r0 < rows, so the offset stays within the n_tokens × rows output.
            out: unsafe { self.out.0.add(r0) },
            out_stride: rows,
            mask: ((1u32 << n_rows) - 1) as u16,
        };
        if let Some((w, k)) = repacked {
            // SAFETY: as for `multiply` below (the panel unused).
            if self.n_tokens <= FEW_TOKENS && unsafe { (k.tokens)(w, r0, n_rows, &tile) } {
                return;
            }
        }
        let packed = if let Some((w, k)) = repacked {
            (k.pack)(w, r0, n_rows, panel);
            true
        } else {
            (gemm.pack_fast)(
                self.ty,
                self.w.data,
                self.wrb,
                self.w.cols,
                r0,
                n_rows,
                panel,
            )
        };
        if !packed {
            pack_panel(
                self.ty,
                self.form,
                self.w.data,
                self.wrb,
                self.w.cols,
                r0,
                n_rows,
                panel,
                gemm.transpose,
            );
        }
        tile.panel = panel.as_ptr().cast();
        // SAFETY: the table's ISA is supported (it came from `Kernels::get`); the panel holds
        // `nsub` packed sub-blocks, the activations n_tokens × cols values and n_tokens × nsub
        // side values, and the output rows r0..r0 + n_rows of every token belong to this
        // panel only.
        unsafe { (gemm.multiply)(self.form, &tile) };
    }
}

/// Rows per chunk: about eight chunks per thread so that a slow thread does not hold up the
/// others, but large enough that the atomic counter is not contended.
fn chunk_rows(rows: usize, n_threads: usize) -> usize {
    (rows / (n_threads * 8)).clamp(4, 512)
}

struct MatmulTask<'a, 'w> {
    f: VecDotFn,
    f4: Option<VecDot4Fn>,
    w: &'a QMatrix<'w>,
    wrb: usize,
    acts: &'a QuantizedActs,
    out: OutPtr,
    chunk: usize,
    next: AtomicUsize,
}

impl MatmulTask<'_, '_> {
    /// Takes chunks of rows until none are left.
    fn work(&self) {
        let rows = self.w.rows;
        let n_tokens = self.acts.n_tokens;
        let cols = self.w.cols;
        loop {
            let r0 = self.next.fetch_add(self.chunk, Ordering::Relaxed);
            if r0 >= rows {
                return;
            }
            let r1 = (r0 + self.chunk).min(rows);
            for t0 in (0..n_tokens).step_by(TOKEN_TILE) {
                let t1 = (t0 + TOKEN_TILE).min(n_tokens);
                for r in r0..r1 {
                    let wrow = &self.w.data[r * self.wrb..(r + 1) * self.wrb];
                    if t0 == 0 && r + PREFETCH_ROWS < r1 {
                        let ahead = r + PREFETCH_ROWS;
                        prefetch(&self.w.data[ahead * self.wrb..(ahead + 1) * self.wrb]);
                    }
                    let mut t = t0;
                    if let Some(f4) = self.f4 {
                        while t + 4 <= t1 {
                            let a = std::array::from_fn(|k| self.acts.row(t + k));
                            // SAFETY: as for the single kernel below, for each of the 4 rows.
                            let v = unsafe { f4(cols, wrow, a) };
                            for (k, v) in v.into_iter().enumerate() {
                                // SAFETY: t + k < n_tokens and r < rows (see below).
                                unsafe { *self.out.0.add((t + k) * rows + r) = v };
                            }
                            t += 4;
                        }
                    }
                    for t in t..t1 {
                        let arow = self.acts.row(t);
                        // SAFETY: `Kernels` tables are only handed out for supported ISAs;
                        // `cols` is a whole number of blocks of both types (checked by
                        // `QMatrix::check` and `quantize_acts`), and both rows have exactly
                        // their row bytes.
                        let v = unsafe { (self.f)(cols, wrow, arow) };
                        // SAFETY: t < n_tokens and r < rows, and out holds n_tokens × rows
                        // values (checked in `matmul_q`); row r belongs to this chunk only.
                        unsafe { *self.out.0.add(t * rows + r) = v };
                    }
                }
            }
        }
    }
}
