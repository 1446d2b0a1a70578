//! Prefill matrix products (many tokens at once): a register-blocked integer GEMM.
//!
//! The dot-product kernels reduce one (row, token) pair at a time, so every 32-value block
//! costs a horizontal step per pair. Here every quantized weight type is brought to one common
//! form, a *panel* of [`PANEL_ROWS`] rows packed so that one 512-bit register holds four
//! consecutive weight codes of each of the 16 rows (GotoBLAS-style packing, done per panel on
//! the fly into a per-thread buffer, so no second copy of the weights is ever kept). A
//! micro-kernel then multiplies the panel with a few tokens at a time: one `vpdpbusd` per four
//! columns feeds 16 rows × 1 token with a broadcast activation dword, integer sums stay in
//! registers for a whole sub-block (16 or 32 values with one scale), and one FMA per sub-block
//! and token applies the float scales of all 16 rows. The panel is unpacked once and reused for
//! every token.
//!
//! The common form of a sub-block of `kb` values of one row: unsigned codes `q` (0..=255), a
//! float scale `s`, an integer offset `o` (per type) and, for types with a minimum, a float
//! `mn`: value = s·(q − o) + mn. The activations (Q8_0, Q8_1 or Q8_K, as the dot products use
//! them) give per token and sub-block the int8 values `y`, their scale `d` and sum Σy:
//! Σ value·d·y = s·d·(Σ q·y − o·Σy) + mn·d·Σy. The integer part is exactly the integer sum of
//! the reference dot products (offset folded in before any rounding); only the order of the
//! float additions differs. Q8_1's stored block sum (an f16 of d·Σy) is used as is, as the
//! reference does.

use crate::cpu::pool::ThreadPool;
use crate::quant::{GgmlType, QuantFormat, KVALUES_IQ4NL};

/// Weight rows per panel (one 512-bit register of i32 lanes).
pub(crate) const PANEL_ROWS: usize = 16;

/// Tokens per micro-tile of the AVX-512 kernel, and per group of the side values
/// ([`side_index`]).
pub(crate) const TILE_TOKENS: usize = 8;

pub(crate) use crate::quant::GemmForm;

impl GemmForm {
    /// Bytes of one packed sub-block of a panel: codes (`kb` × 16 rows), 16 f32 scales and,
    /// with mins, 16 f32 minimums.
    pub(crate) fn sub_stride(&self) -> usize {
        self.kb * PANEL_ROWS + 64 + if self.mins { 64 } else { 0 }
    }
}

/// The common form of `ty` (its row in [`crate::quant::FORMATS`]), or `None` when the GEMM
/// does not handle it (the dot-product path is used instead).
pub(crate) fn gemm_form(ty: QuantFormat) -> Option<GemmForm> {
    crate::quant::format(ty).and_then(|f| f.gemm)
}

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

#[inline]
fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The low nibbles of `qs` then the high nibbles, into `codes` (2 × `qs.len()` bytes).
#[inline]
fn nibbles(qs: &[u8], codes: &mut [u8]) {
    let n = qs.len();
    let (lo, hi) = codes.split_at_mut(n);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
        *l = q & 0x0F;
        *h = q >> 4;
    }
}

/// Unpacks one weight block `b` of `ty` (its whole `type_size` bytes) into codes (one per
/// value), and the scale and minimum of each of its sub-blocks (see the module docs).
/// Block layouts: ggml-common.h.
pub(crate) fn unpack_block(
    ty: GgmlType,
    b: &[u8],
    codes: &mut [u8],
    scales: &mut [f32],
    mins: &mut [f32],
) {
    match ty {
        GgmlType::Q4_0 => {
            scales[0] = f16_at(b, 0);
            nibbles(&b[2..18], codes);
        }
        GgmlType::Q4_1 => {
            scales[0] = f16_at(b, 0);
            mins[0] = f16_at(b, 2);
            nibbles(&b[4..20], codes);
        }
        GgmlType::Q5_0 => {
            scales[0] = f16_at(b, 0);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            nibbles(&b[6..22], codes);
            for (j, c) in codes[..32].iter_mut().enumerate() {
                *c |= (((qh >> j) & 1) << 4) as u8;
            }
        }
        GgmlType::Q8_0 => {
            scales[0] = f16_at(b, 0);
            for (c, &q) in codes[..32].iter_mut().zip(&b[2..34]) {
                *c = q ^ 0x80;
            }
        }
        GgmlType::IQ4_NL => {
            scales[0] = f16_at(b, 0);
            for (j, &q) in b[2..18].iter().enumerate() {
                codes[j] = (KVALUES_IQ4NL[(q & 0x0F) as usize] as u8) ^ 0x80;
                codes[j + 16] = (KVALUES_IQ4NL[(q >> 4) as usize] as u8) ^ 0x80;
            }
        }
        GgmlType::Q4_K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let sm = crate::cpu::scalar::dot::unpack_scales_mins_k4(&b[4..16]);
            for k in 0..8 {
                scales[k] = d * sm[k] as f32;
                mins[k] = -(dmin * sm[8 + k] as f32);
            }
            for n in 0..4 {
                let qs = &b[16 + 32 * n..16 + 32 * n + 32];
                nibbles(qs, &mut codes[64 * n..64 * n + 64]);
            }
        }
        GgmlType::Q6_K => {
            let d = f16_at(b, 208);
            for (k, s) in scales[..16].iter_mut().enumerate() {
                *s = d * (b[192 + k] as i8) as f32;
            }
            for h in 0..2 {
                let (ql, qh) = (&b[64 * h..64 * h + 64], &b[128 + 32 * h..160 + 32 * h]);
                let o = &mut codes[128 * h..128 * h + 128];
                for l in 0..32 {
                    let (a, c, hb) = (ql[l], ql[l + 32], qh[l]);
                    o[l] = (a & 0x0F) | ((hb & 3) << 4);
                    o[l + 32] = (c & 0x0F) | (((hb >> 2) & 3) << 4);
                    o[l + 64] = (a >> 4) | (((hb >> 4) & 3) << 4);
                    o[l + 96] = (c >> 4) | (((hb >> 6) & 3) << 4);
                }
            }
        }
        _ => unreachable!("FORMATS gives a GEMM form to the types above only"),
    }
}

/// One 64-byte line, the unit of the packed buffers (aligned loads in the micro-kernels).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(pub [u8; 64]);

/// Packs rows `r0 .. r0 + n_rows` (`n_rows` ≤ 16) of the weight matrix `data` (`wrb` bytes
/// per row, `cols` values, type `ty` of form `form`) into `panel`: for each sub-block `b`,
/// at `b · sub_stride`: codes `[kb/4][16 rows][4]`, then the 16 scales, then the 16 minimums.
/// Rows past `n_rows` are zero (they contribute nothing and are not stored). Each weight block
/// of the 16 rows is unpacked into a small row-major scratch, and `transpose` moves one
/// sub-block of it (16 rows × `kb` codes, `bs` bytes apart) into the panel's order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_panel(
    ty: GgmlType,
    form: GemmForm,
    data: &[u8],
    wrb: usize,
    cols: usize,
    r0: usize,
    n_rows: usize,
    panel: &mut Vec<Line>,
    transpose: fn(src: &[u8], src_stride: usize, kb: usize, dst: &mut [u8]),
) {
    let kb = form.kb;
    let stride = form.sub_stride();
    let nsub = cols / kb;
    let lines = (nsub * stride).div_ceil(64);
    panel.clear();
    panel.resize(lines, Line([0; 64]));
    let out: &mut [u8] = bytemuck_lines(panel);
    let info = QuantFormat::Ggml(ty);
    let (bs, ts) = (info.block_size(), info.type_size());
    let per = bs / kb;
    let mut codes = [0u8; PANEL_ROWS * 256];
    let mut scales = [[0f32; 16]; PANEL_ROWS];
    let mut mins = [[0f32; 16]; PANEL_ROWS];
    for wb in 0..cols / bs {
        for r in 0..n_rows {
            let at = (r0 + r) * wrb + wb * ts;
            unpack_block(
                ty,
                &data[at..at + ts],
                &mut codes[r * bs..(r + 1) * bs],
                &mut scales[r],
                &mut mins[r],
            );
        }
        for s in 0..per {
            let b = wb * per + s;
            let dst = &mut out[b * stride..(b + 1) * stride];
            transpose(&codes[s * kb..], bs, kb, &mut dst[..kb * PANEL_ROWS]);
            let sc = kb * PANEL_ROWS;
            for r in 0..n_rows {
                dst[sc + 4 * r..sc + 4 * r + 4].copy_from_slice(&scales[r][s].to_le_bytes());
                if form.mins {
                    dst[sc + 64 + 4 * r..sc + 68 + 4 * r]
                        .copy_from_slice(&mins[r][s].to_le_bytes());
                }
            }
        }
    }
}

/// The portable form of `pack_panel`'s `transpose`: `dst[j][r][0..4]` = `src[r · src_stride +
/// 4j ..][..4]` for 16 rows and `kb / 4` dwords.
#[allow(dead_code)]
pub(crate) fn transpose_codes(src: &[u8], src_stride: usize, kb: usize, dst: &mut [u8]) {
    for j in 0..kb / 4 {
        for r in 0..PANEL_ROWS {
            let at = r * src_stride + 4 * j;
            dst[64 * j + 4 * r..64 * j + 4 * r + 4].copy_from_slice(&src[at..at + 4]);
        }
    }
}

/// The bytes of a line buffer.
fn bytemuck_lines(lines: &mut [Line]) -> &mut [u8] {
    // SAFETY: `Line` is 64 plain bytes with no padding (repr(C), one [u8; 64] field), so the
    // buffer is `64 · len` initialised bytes; the borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), lines.len() * 64) }
}

/// Per token and sub-block: the activation scale, the minimum multiplier (d·Σy, or Q8_1's
/// stored sum) and the integer start −o·Σy.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Side {
    pub d: f32,
    pub ms: f32,
    pub init: i32,
    pub _pad: i32,
}

/// Activations in the GEMM's form: the int8 values of every token contiguous (`cols` per
/// token) and the [`Side`] values in token groups of [`TILE_TOKENS`], sub-block-major within
/// a group ([`side_index`]), so that a micro-tile reads its side values in one forward run.
#[derive(Default)]
pub(crate) struct GemmActs {
    pub y: Vec<i8>,
    pub side: Vec<Side>,
}

impl GemmActs {
    /// Fills `self` from `n_tokens` activation rows (`row(t)`, of type `act`, `cols` values)
    /// for a weight of form `form`, the tokens of a batch shared out on `pool` when one is
    /// given (each token's values are computed alone: the same result either way).
    pub(crate) fn build<'a>(
        &mut self,
        pool: Option<&ThreadPool>,
        act: GgmlType,
        form: GemmForm,
        n_tokens: usize,
        cols: usize,
        row: impl Fn(usize) -> &'a [u8] + Sync,
    ) {
        let nsub = cols / form.kb;
        self.y.clear();
        self.y.resize(n_tokens * cols, 0);
        self.side.clear();
        self.side.resize(n_tokens * nsub, Side::default());
        let (y, side) = (Shared(self.y.as_mut_ptr()), Shared(self.side.as_mut_ptr()));
        let token = |t: usize| {
            // SAFETY: t < n_tokens, and token t's values (`y[t·cols..][..cols]`, and its
            // side values at `side_index(.., t)`, all < n_tokens · nsub) are written by this
            // call only (each token is handed out once).
            let yt = unsafe { std::slice::from_raw_parts_mut(y.at(t * cols), cols) };
            fill_token(act, form, row(t), yt, |b, v| unsafe {
                *side.at(side_index(n_tokens, nsub, b, t)) = v;
            });
        };
        match pool {
            Some(pool) if pool.n_threads() > 1 && n_tokens >= 16 => {
                let chunk = n_tokens.div_ceil(4 * pool.n_threads());
                let next = std::sync::atomic::AtomicUsize::new(0);
                pool.run_dynamic(|_, _| loop {
                    let t0 = next.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
                    if t0 >= n_tokens {
                        return;
                    }
                    (t0..(t0 + chunk).min(n_tokens)).for_each(token);
                });
            }
            _ => (0..n_tokens).for_each(token),
        }
    }
}

/// Where token `t`'s side value of sub-block `b` lies among `n_tokens × nsub`: the tokens in
/// groups of [`TILE_TOKENS`] (the last one shorter), each group sub-block-major (`b · width +
/// t − g0` from the group's start `g0 · nsub`). A micro-tile is one group, so it walks its
/// side values forward in one run; sub-block-major over the whole batch, the same walk would
/// jump `16 · n_tokens` bytes per sub-block (8 KiB at 512 tokens: every step to the same L1
/// sets, past the stride prefetcher's reach), which cost prefill 12%. With one token, it is `b`.
#[inline]
pub(crate) fn side_index(n_tokens: usize, nsub: usize, b: usize, t: usize) -> usize {
    let g0 = t / TILE_TOKENS * TILE_TOKENS;
    let width = (n_tokens - g0).min(TILE_TOKENS);
    g0 * nsub + b * width + (t - g0)
}

/// A buffer written by several threads at disjoint indices.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: the threads of `GemmActs::build` write disjoint elements (each token's own), of a
// buffer that outlives the pool run.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// Element `i` (a method, so that closures capture the whole wrapper).
    ///
    /// # Safety
    /// `i` lies within the buffer.
    unsafe fn at(self, i: usize) -> *mut T {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(i) }
    }
}

/// One token's activations in the GEMM's form: its int8 values into `y` and, per sub-block
/// `b`, its [`Side`] values through `side(b, ..)`.
fn fill_token(
    act: GgmlType,
    form: GemmForm,
    a: &[u8],
    y: &mut [i8],
    mut side: impl FnMut(usize, Side),
) {
    let kb = form.kb;
    let nsub = y.len() / kb;
    for b in 0..nsub {
        let (d, ms_stored, qs, sum) = match act {
            GgmlType::Q8_0 | GgmlType::Q8_1 => {
                let (ts, q0) = if act == GgmlType::Q8_0 {
                    (34, 2)
                } else {
                    (36, 4)
                };
                let blk = &a[b * ts..(b + 1) * ts];
                let ms = if act == GgmlType::Q8_1 {
                    Some(f16_at(blk, 2))
                } else {
                    None
                };
                let qs = &blk[q0..q0 + 32];
                let sum: i32 = qs.iter().map(|&q| q as i8 as i32).sum();
                (f16_at(blk, 0), ms, qs, sum)
            }
            GgmlType::Q8_K => {
                let per = 256 / kb;
                let (sb, s) = (b / per, b % per);
                let blk = &a[sb * 292..(sb + 1) * 292];
                let qs = &blk[4 + kb * s..4 + kb * (s + 1)];
                let nsums = kb / 16;
                let sum: i32 = (0..nsums)
                    .map(|k| {
                        let at = 260 + 2 * (nsums * s + k);
                        i16::from_le_bytes([blk[at], blk[at + 1]]) as i32
                    })
                    .sum();
                (f32_at(blk, 0), None, qs, sum)
            }
            _ => unreachable!("GEMM activations are Q8_0, Q8_1 or Q8_K"),
        };
        for (o, &q) in y[b * kb..(b + 1) * kb].iter_mut().zip(qs) {
            *o = q as i8;
        }
        side(
            b,
            Side {
                d,
                ms: ms_stored.unwrap_or(d * sum as f32),
                init: -form.offset * sum,
                _pad: 0,
            },
        );
    }
}

/// The arguments of one micro-tile of the panel GEMM (`PanelGemm::multiply`).
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    /// Sub-blocks along the row.
    pub nsub: usize,
    /// The packed panel (64-byte aligned, `nsub` sub-blocks of the form's stride).
    pub panel: *const u8,
    /// The int8 activations of the tile's first token; token `t` starts `t · cols` bytes on.
    pub y: *const i8,
    pub cols: usize,
    /// The side values of the first token at sub-block 0, in `GemmActs`' order
    /// (`gemm::side_index`): for a tile of `C` tokens (one group), sub-block `b`, token `t` at
    /// `b · C + t`.
    pub side: *const Side,
    pub n_tokens: usize,
    /// Where the first token's 16 results go; token `t` at `t · out_stride` floats on.
    pub out: *mut f32,
    pub out_stride: usize,
    /// Which of the 16 rows are real.
    pub mask: u16,
}

// ---------------------------------------------------------------------------------------------
// The GEMM's arithmetic on the ISAs without its AVX-512 micro-kernel (scalar, AVX2).
//
// On AVX-512 the GEMM types take the register-blocked GEMM of `cpu/gemm.rs` for every token
// count. For a model to give the same logits on every ISA, the other ISAs must compute those
// matrix products with the very same float operations, not merely the same integer sums.
// Per output (row, token), for each sub-block `b` in order:
//
// ```text
// isum  = init[b] + Σ code·y                 (exact integer; any method)
// scale = s_row[b] · d_tok[b]                (f32 multiply)
// acc   = fma(f32(isum), scale, acc)
// acc   = fma(mn_row[b], ms_tok[b], acc)     (forms with minimums only)
// ```
//
// starting from `acc = +0.0`. The per-ISA kernels (`scalar/gemm.rs`, `avx2/gemm.rs`) work on
// the row-major codes of `gemm::unpack_block` (or a SIMD unpack of the same bytes), so no panel
// is packed; `matmul.rs` hands out the rows to the threads as it does the panels.

/// One matrix product in the GEMM's form.
pub(crate) struct RowsJob<'a> {
    pub ty: GgmlType,
    pub form: GemmForm,
    /// The weight matrix: `rows` rows of `wrb` bytes, `cols` values each.
    pub data: &'a [u8],
    pub wrb: usize,
    pub cols: usize,
    pub rows: usize,
    pub acts: &'a GemmActs,
    pub n_tokens: usize,
    /// `n_tokens × rows` outputs, token-major.
    pub out: *mut f32,
}

impl<'a> RowsJob<'a> {
    /// The job of `matmul_q`'s checked sizes (checked again here: the kernels index the
    /// buffers unchecked).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ty: GgmlType,
        form: GemmForm,
        data: &'a [u8],
        wrb: usize,
        cols: usize,
        rows: usize,
        acts: &'a GemmActs,
        n_tokens: usize,
        out: *mut f32,
    ) -> RowsJob<'a> {
        let fmt = QuantFormat::Ggml(ty);
        assert!(
            cols.is_multiple_of(fmt.block_size())
                && wrb == cols / fmt.block_size() * fmt.type_size()
                && data.len() >= rows * wrb
                && acts.y.len() >= n_tokens * cols
                && acts.side.len() >= n_tokens * (cols / form.kb),
            "RowsJob: bad sizes"
        );
        RowsJob {
            ty,
            form,
            data,
            wrb,
            cols,
            rows,
            acts,
            n_tokens,
            out,
        }
    }
}
