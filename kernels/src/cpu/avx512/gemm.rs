//! The AVX-512 VNNI micro-kernel of the prefill GEMM (see `cpu/gemm.rs` for the packed forms):
//! 16 weight rows × `C` tokens, the i32 sums of one sub-block in `C` registers and the f32
//! results in `C` more.

use std::arch::x86_64::*;

use crate::cpu::gemm::{GemmForm, Line, Side, Tile, PANEL_ROWS, TILE_TOKENS};
use crate::quant::{GgmlType, KVALUES_IQ4NL};

/// One micro-tile of `C` tokens over sub-blocks of `KB` values.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VNNI; every pointer of `tile` covers what its comment says
/// for `C` tokens and `nsub` sub-blocks, and the panel is 64-byte aligned.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_kernel<const C: usize, const KB: usize, const MINS: bool>(tile: &Tile) {
    let stride = KB * PANEL_ROWS + 64 + if MINS { 64 } else { 0 };
    let mut facc = [_mm512_setzero_ps(); C];
    // SAFETY (whole body): sub-block b < nsub of the panel, tokens t < C of the activations
    // and side values, and the 16 masked outputs of each token lie within the buffers (caller
    // contract); the panel loads are aligned (stride and base are multiples of 64).
    unsafe {
        for b in 0..tile.nsub {
            let p = tile.panel.add(b * stride);
            let sd = tile.side.add(b * C);
            let mut iacc: [__m512i; C] =
                std::array::from_fn(|t| _mm512_set1_epi32((*sd.add(t)).init));
            let yb = tile.y.add(KB * b);
            for j in 0..KB / 4 {
                let w = _mm512_load_si512(p.add(64 * j).cast());
                for (t, acc) in iacc.iter_mut().enumerate() {
                    let yv = yb.add(t * tile.cols + 4 * j).cast::<i32>().read_unaligned();
                    *acc = _mm512_dpbusd_epi32(*acc, w, _mm512_set1_epi32(yv));
                }
            }
            let s = _mm512_load_ps(p.add(KB * PANEL_ROWS).cast());
            let mn = if MINS {
                _mm512_load_ps(p.add(KB * PANEL_ROWS + 64).cast())
            } else {
                _mm512_setzero_ps()
            };
            for t in 0..C {
                let side = &*sd.add(t);
                let scale = _mm512_mul_ps(s, _mm512_set1_ps(side.d));
                facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[t]), scale, facc[t]);
                if MINS {
                    facc[t] = _mm512_fmadd_ps(mn, _mm512_set1_ps(side.ms), facc[t]);
                }
            }
        }
        for (t, acc) in facc.iter().enumerate() {
            _mm512_mask_storeu_ps(tile.out.add(t * tile.out_stride), tile.mask, *acc);
        }
    }
}

type TileFn = unsafe fn(&Tile);

macro_rules! tile_table {
    ($kb:literal, $mins:literal) => {
        [
            tile_kernel::<1, $kb, $mins> as TileFn,
            tile_kernel::<2, $kb, $mins>,
            tile_kernel::<3, $kb, $mins>,
            tile_kernel::<4, $kb, $mins>,
            tile_kernel::<5, $kb, $mins>,
            tile_kernel::<6, $kb, $mins>,
            tile_kernel::<7, $kb, $mins>,
            tile_kernel::<8, $kb, $mins>,
        ]
    };
}

/// Multiplies one packed panel with tokens `0..n_tokens` of the activations.
///
/// # Safety
/// The CPU supports AVX-512 VNNI; `tile` describes the panel and the activations of all
/// `n_tokens` tokens (its `y`, `side` and `out` pointing at token 0) as [`Tile`] says.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn panel_times_tokens(form: GemmForm, tile: &Tile) {
    let table: [TileFn; TILE_TOKENS] = match (form.kb, form.mins) {
        (32, false) => tile_table!(32, false),
        (32, true) => tile_table!(32, true),
        (16, false) => tile_table!(16, false),
        (16, true) => tile_table!(16, true),
        _ => unreachable!("sub-blocks are 16 or 32 values"),
    };
    let mut t0 = 0;
    while t0 < tile.n_tokens {
        let c = (tile.n_tokens - t0).min(TILE_TOKENS);
        let sub = Tile {
            // SAFETY: t0 < n_tokens: these stay within the buffers (caller contract).
            y: unsafe { tile.y.add(t0 * tile.cols) },
            side: unsafe { tile.side.add(t0 * tile.nsub) },
            out: unsafe { tile.out.add(t0 * tile.out_stride) },
            ..*tile
        };
        // SAFETY: the sub-tile covers tokens t0..t0 + c, all within the caller's buffers.
        unsafe { table[c - 1](&sub) };
        t0 += c;
    }
}

/// `pack_panel`'s transpose with one gather per four columns: `dst[j][r][0..4]` =
/// `src[r · src_stride + 4j ..][..4]` for 16 rows and `kb / 4` dwords.
pub(crate) fn transpose_codes(src: &[u8], src_stride: usize, kb: usize, dst: &mut [u8]) {
    assert!(
        src.len() >= 15 * src_stride + kb && dst.len() >= kb * PANEL_ROWS && kb.is_multiple_of(4),
        "transpose_codes: buffers too small"
    );
    // SAFETY: the GEMM (the only caller) runs on AVX-512 tables only, handed out when the CPU
    // supports them; the bounds were checked above.
    unsafe { transpose_codes_avx512(src, src_stride, kb, dst) }
}

/// # Safety
/// The CPU supports AVX-512 F; `src` holds 16 rows of `src_stride` bytes (the last at least
/// `kb`), and `dst` `kb · 16` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn transpose_codes_avx512(src: &[u8], src_stride: usize, kb: usize, dst: &mut [u8]) {
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(src_stride as i32));
    for j in 0..kb / 4 {
        // SAFETY: row r's dword j lies at r · src_stride + 4j < 15 · src_stride + kb, and
        // the 64 bytes stored at 64j lie within dst (caller contract).
        unsafe {
            let v = _mm512_i32gather_epi32::<1>(idx, src.as_ptr().add(4 * j).cast());
            _mm512_storeu_si512(dst.as_mut_ptr().add(64 * j).cast(), v);
        }
    }
}

/// Rows `r0 .. r0 + n_rows` (≤ 16) of a weight matrix read straight from its GGUF blocks:
/// Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL, Q4_K or Q6_K, the types [`unpack_rows`] handles.
#[derive(Clone, Copy)]
struct Rows {
    ty: GgmlType,
    /// Row r0's first byte.
    w: *const u8,
    wrb: usize,
    cols: usize,
    n_rows: usize,
}

/// The common form (`cpu/gemm.rs`) of the types with a fast unpacking, checked against the
/// sizes of `data`: `None` for the other types.
fn fast_rows(
    ty: GgmlType,
    data: &[u8],
    wrb: usize,
    cols: usize,
    r0: usize,
    n_rows: usize,
) -> Option<(Rows, GemmForm)> {
    let form = crate::cpu::gemm::gemm_form(crate::quant::QuantFormat::Ggml(ty))?;
    let (bs, ts) = match ty {
        GgmlType::Q4_0 | GgmlType::IQ4_NL => (32, 18),
        GgmlType::Q4_1 => (32, 20),
        GgmlType::Q5_0 => (32, 22),
        GgmlType::Q8_0 => (32, 34),
        GgmlType::Q4_K => (256, 144),
        GgmlType::Q6_K => (256, 210),
        _ => return None,
    };
    assert!(
        (1..=PANEL_ROWS).contains(&n_rows)
            && cols.is_multiple_of(bs)
            && wrb == cols / bs * ts
            && data.len() >= (r0 + n_rows) * wrb,
        "fast unpacking: bad sizes"
    );
    let rows = Rows {
        ty,
        w: data[r0 * wrb..].as_ptr(),
        wrb,
        cols,
        n_rows,
    };
    Some((rows, form))
}

/// Packs rows `r0 .. r0 + n_rows` (≤ 16) of a Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL, Q4_K or Q6_K
/// matrix straight from the GGUF blocks into the panel form of `cpu/gemm.rs` (`pack_panel`'s
/// result, bit for bit), with 16-row register transposes. Returns `false` for other types.
pub(crate) fn pack_panel_fast(
    ty: GgmlType,
    data: &[u8],
    wrb: usize,
    cols: usize,
    r0: usize,
    n_rows: usize,
    panel: &mut Vec<Line>,
) -> bool {
    let Some((rows, form)) = fast_rows(ty, data, wrb, cols, r0, n_rows) else {
        return false;
    };
    // Every byte of the panel is written (rows past n_rows as zeros): no need to clear.
    let lines = cols / form.kb * form.sub_stride() / 64;
    if panel.len() < lines {
        panel.resize(lines, Line([0; 64]));
    }
    // SAFETY: the GEMM runs only on AVX-512 tables, handed out when the CPU supports them;
    // `fast_rows` checked the rows, and the panel holds every sub-block.
    unsafe { pack_into(rows, form, panel.as_mut_ptr().cast()) };
    true
}

/// # Safety
/// The CPU supports AVX-512 VNNI; `rows` is as [`fast_rows`] checked it and `out` holds the
/// panel's `cols / kb` sub-blocks (64-byte aligned).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn pack_into(rows: Rows, form: GemmForm, out: *mut u8) {
    let mut sink = PanelWriter {
        out,
        at: out,
        stride: form.sub_stride(),
        kb: form.kb,
    };
    // SAFETY: the caller's contract covers the rows and the panel.
    unsafe { unpack_rows(rows, &mut sink) }
}

/// The sink that stores a panel (`cpu/gemm.rs`'s packed form).
struct PanelWriter {
    out: *mut u8,
    /// The current weight block's first sub-block.
    at: *mut u8,
    stride: usize,
    kb: usize,
}

// SAFETY (every method): sub-block `sub0 + slot` of the panel lies within `out` (the
// contract of `pack_into`); its lines are 64-byte aligned.
impl Sink for PanelWriter {
    #[inline(always)]
    unsafe fn block(&mut self, sub0: usize) {
        self.at = unsafe { self.out.add(sub0 * self.stride) };
    }
    #[inline(always)]
    unsafe fn codes(&mut self, slot: usize, line: usize, v: __m512i) {
        unsafe { _mm512_store_si512(self.at.add(slot * self.stride + 64 * line).cast(), v) }
    }
    #[inline(always)]
    unsafe fn scale(&mut self, slot: usize, s: __m512) {
        unsafe { _mm512_store_ps(self.at.add(slot * self.stride + 16 * self.kb).cast(), s) }
    }
    #[inline(always)]
    unsafe fn min(&mut self, slot: usize, mn: __m512) {
        let at = slot * self.stride + 16 * self.kb + 64;
        unsafe { _mm512_store_ps(self.at.add(at).cast(), mn) }
    }
    #[inline(always)]
    unsafe fn done(&mut self, _slot: usize) {}
}

/// Multiplies rows `r0 .. r0 + n_rows` (≤ 16) of a matrix of a [`pack_panel_fast`] type with
/// one token, reading the GGUF blocks directly: [`panel_times_tokens`]' operations for that
/// token on the registers `pack_panel_fast` would have stored, so the results are the same
/// bits as packing and multiplying (and as any other batch size), without the panel's store
/// and reload. `y` and `side` are the token's GEMM activations (`GemmActs` of one token) and
/// the `n_rows` results go to `out`. Returns `false` for other types.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows_times_one_token(
    ty: GgmlType,
    data: &[u8],
    wrb: usize,
    cols: usize,
    r0: usize,
    n_rows: usize,
    y: &[i8],
    side: &[Side],
    out: &mut [f32],
) -> bool {
    let Some((rows, form)) = fast_rows(ty, data, wrb, cols, r0, n_rows) else {
        return false;
    };
    assert!(
        y.len() >= cols && side.len() >= cols / form.kb && out.len() >= n_rows,
        "rows_times_one_token: bad sizes"
    );
    // SAFETY: as in `pack_panel_fast`; the activations and the output were checked above.
    unsafe { times_one_token(rows, form, y.as_ptr(), side.as_ptr(), out.as_mut_ptr()) };
    true
}

/// # Safety
/// The CPU supports AVX-512 VNNI; `rows` is as [`fast_rows`] checked it, `y` holds `cols`
/// values, `side` `cols / kb` entries and `out` `n_rows` floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn times_one_token(
    rows: Rows,
    form: GemmForm,
    y: *const i8,
    side: *const Side,
    out: *mut f32,
) {
    let mut sink = OneToken {
        y,
        side,
        yb: y,
        sd: side,
        kb: form.kb,
        mins: form.mins,
        iacc: [_mm512_setzero_si512(); 16],
        scale: [_mm512_setzero_ps(); 16],
        minimum: [_mm512_setzero_ps(); 16],
        facc: _mm512_setzero_ps(),
    };
    // SAFETY: the caller's contract covers the rows, the activations and the output.
    unsafe {
        unpack_rows(rows, &mut sink);
        let mask = ((1u32 << rows.n_rows) - 1) as u16;
        _mm512_mask_storeu_ps(out, mask, sink.facc);
    }
}

/// The sink that multiplies the unpacked rows with one token as they come: the integer sums
/// of each sub-block `slot` of the current weight block in `iacc[slot]`, then
/// [`tile_kernel`]'s float steps for the sub-block once it is done.
struct OneToken {
    y: *const i8,
    side: *const Side,
    /// The current weight block's first sub-block: its activations and side values.
    yb: *const i8,
    sd: *const Side,
    kb: usize,
    mins: bool,
    iacc: [__m512i; 16],
    scale: [__m512; 16],
    minimum: [__m512; 16],
    facc: __m512,
}

// SAFETY (every method): sub-block `sub0 + slot` < cols / kb, so its activations and side
// value lie within `y` and `side` (the contract of `times_one_token`).
impl Sink for OneToken {
    #[inline(always)]
    unsafe fn block(&mut self, sub0: usize) {
        unsafe {
            self.yb = self.y.add(sub0 * self.kb);
            self.sd = self.side.add(sub0);
        }
    }
    #[inline(always)]
    unsafe fn codes(&mut self, slot: usize, line: usize, v: __m512i) {
        unsafe {
            let at = self.yb.add(slot * self.kb + 4 * line);
            let yv = _mm512_set1_epi32(at.cast::<i32>().read_unaligned());
            self.iacc[slot] = _mm512_dpbusd_epi32(self.iacc[slot], v, yv);
        }
    }
    #[inline(always)]
    unsafe fn scale(&mut self, slot: usize, s: __m512) {
        self.scale[slot] = s;
    }
    #[inline(always)]
    unsafe fn min(&mut self, slot: usize, mn: __m512) {
        self.minimum[slot] = mn;
    }
    #[inline(always)]
    unsafe fn done(&mut self, slot: usize) {
        // `tile_kernel`'s steps for one sub-block and token, in its order.
        unsafe {
            let side = *self.sd.add(slot);
            let isum = _mm512_add_epi32(self.iacc[slot], _mm512_set1_epi32(side.init));
            self.iacc[slot] = _mm512_setzero_si512();
            let s = _mm512_mul_ps(self.scale[slot], _mm512_set1_ps(side.d));
            self.facc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, self.facc);
            if self.mins {
                self.facc = _mm512_fmadd_ps(self.minimum[slot], _mm512_set1_ps(side.ms), self.facc);
            }
        }
    }
}

/// Where [`unpack_rows`] puts 16 rows, one weight block at a time: `block` (the index of the
/// block's first sub-block), then the codes (one panel line: 4 codes of each of the 16 rows),
/// scale and minimum of each sub-block `slot` of the block (in any order), and `done(slot)`
/// once a sub-block is complete, in increasing `slot` order.
///
/// # Safety
/// Implementations may write where the contract of their constructor says; the methods are
/// called from AVX-512 code only (they are inlined into it).
trait Sink {
    unsafe fn block(&mut self, sub0: usize);
    unsafe fn codes(&mut self, slot: usize, line: usize, v: __m512i);
    unsafe fn scale(&mut self, slot: usize, s: __m512);
    unsafe fn min(&mut self, slot: usize, mn: __m512);
    unsafe fn done(&mut self, slot: usize);
}

/// Unpacks 16 rows into the panel form, one weight block at a time, into `sink`.
///
/// # Safety
/// The CPU supports AVX-512 VNNI; `rows` is as [`fast_rows`] checked it.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack_rows(rows: Rows, sink: &mut impl Sink) {
    let Rows {
        ty,
        w,
        wrb,
        cols,
        n_rows,
    } = rows;
    // SAFETY: the caller's contract is the callees'.
    unsafe {
        match ty {
            GgmlType::Q4_K | GgmlType::Q6_K => {
                unpack_kquant(ty == GgmlType::Q4_K, w, wrb, cols / 256, n_rows, sink)
            }
            _ => unpack_legacy(ty, w, wrb, cols / 32, n_rows, sink),
        }
    }
}

/// [`unpack_rows`] for the 32-value block types (one sub-block per block): `nsub` blocks.
///
/// # Safety
/// The CPU supports AVX-512; `w` points to `n_rows` rows of `wrb` bytes (`nsub` blocks each).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack_legacy(
    ty: GgmlType,
    w: *const u8,
    wrb: usize,
    nsub: usize,
    n_rows: usize,
    sink: &mut impl Sink,
) {
    let (ts, qs_at, mins) = match ty {
        GgmlType::Q4_0 | GgmlType::IQ4_NL => (18, 2, false),
        GgmlType::Q4_1 => (20, 4, true),
        GgmlType::Q5_0 => (22, 6, false),
        GgmlType::Q8_0 => (34, 2, false),
        _ => unreachable!("unpack_rows admits only the types above"),
    };
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(wrb as i32));
    let m: __mmask16 = ((1u32 << n_rows) - 1) as u16;
    let z = _mm512_setzero_si512();
    let low4 = _mm512_set1_epi8(0x0F);
    let flip = _mm512_set1_epi8(-128);
    let spread_mul = _mm512_set1_epi32(0x0020_4081);
    let ones = _mm512_set1_epi32(0x0101_0101);
    // IQ4_NL's codebook offset by 128 (unsigned for vpdpbusd), in every 128-bit lane; only the
    // bytes of real rows are looked up (the others stay 0, as the portable packing leaves them).
    let mut table = [0u8; 16];
    for (t, &k) in table.iter_mut().zip(&KVALUES_IQ4NL) {
        *t = (k as u8) ^ 0x80;
    }
    // SAFETY: `table` has 16 bytes.
    let iq4nl = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(table.as_ptr().cast()) });
    let bytes_m: __mmask64 = if n_rows == PANEL_ROWS {
        u64::MAX
    } else {
        (1u64 << (4 * n_rows)) - 1
    };
    // SAFETY (whole body): the gathers read 4 bytes at offsets < ts within block b of each
    // of the n_rows rows (masked rows read nothing); prefetches do not fault.
    unsafe {
        // Decode streams every weight once: ask for each row's bytes a few blocks ahead (the
        // hardware prefetcher alone leaves the gathers and loads of 16 rows waiting).
        let ahead = 8 * ts;
        let every = if ts > 32 { 1 } else { 2 };
        prefetch_row_starts(w, wrb, n_rows, ahead);
        for b in 0..nsub {
            let blk = w.add(b * ts);
            sink.block(b);
            if b % every == 0 && (b + 8) < nsub {
                for r in 0..n_rows {
                    _mm_prefetch::<_MM_HINT_T0>(blk.add(r * wrb + ahead).cast());
                }
            }
            if ty == GgmlType::Q8_0 {
                for half in 0..2 {
                    let t = transpose_16x4(blk.add(qs_at + 16 * half), wrb, n_rows);
                    for (j, v) in t.into_iter().enumerate() {
                        sink.codes(0, 4 * half + j, _mm512_maskz_xor_epi32(m, v, flip));
                    }
                }
            } else {
                // Q5_0: bit k of qh is the fifth bit of value k.
                let qh = if ty == GgmlType::Q5_0 {
                    _mm512_mask_i32gather_epi32::<1>(z, m, idx, blk.add(2).cast())
                } else {
                    z
                };
                // Four bits of each lane (at `shift`) as 0x10 in the four bytes of the lane:
                // x · 0x00204081 puts bit i at bit 8i (the four shifted copies do not overlap).
                let fifth = |shift: u32| {
                    let x = _mm512_and_si512(
                        _mm512_srlv_epi32(qh, _mm512_set1_epi32(shift as i32)),
                        _mm512_set1_epi32(0xF),
                    );
                    let spread = _mm512_and_si512(_mm512_mullo_epi32(x, spread_mul), ones);
                    _mm512_slli_epi32(spread, 4)
                };
                let t = transpose_16x4(blk.add(qs_at), wrb, n_rows);
                for (j, v) in t.into_iter().enumerate() {
                    let mut lo = _mm512_and_si512(v, low4);
                    let mut hi = _mm512_and_si512(_mm512_srli_epi32(v, 4), low4);
                    match ty {
                        GgmlType::Q5_0 => {
                            lo = _mm512_or_si512(lo, fifth(4 * j as u32));
                            hi = _mm512_or_si512(hi, fifth(16 + 4 * j as u32));
                        }
                        GgmlType::IQ4_NL => {
                            lo = _mm512_maskz_shuffle_epi8(bytes_m, iq4nl, lo);
                            hi = _mm512_maskz_shuffle_epi8(bytes_m, iq4nl, hi);
                        }
                        _ => {}
                    }
                    sink.codes(0, j, lo);
                    sink.codes(0, j + 4, hi);
                }
            }
            let dm = _mm512_mask_i32gather_epi32::<1>(z, m, idx, blk.cast());
            sink.scale(0, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm)));
            if mins {
                let mn = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)));
                sink.min(0, mn);
            }
            sink.done(0);
        }
    }
}

/// [`unpack_rows`] for Q4_K (`q4k`) or Q6_K: `nsb` super-blocks per row.
///
/// # Safety
/// The CPU supports AVX-512; `w` points to `n_rows` rows of `wrb` bytes (`nsb` blocks each).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack_kquant(
    q4k: bool,
    w: *const u8,
    wrb: usize,
    nsb: usize,
    n_rows: usize,
    sink: &mut impl Sink,
) {
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(wrb as i32));
    let m: __mmask16 = ((1u32 << n_rows) - 1) as u16;
    let z = _mm512_setzero_si512();
    let low4 = _mm512_set1_epi8(0x0F);
    let low2 = _mm512_set1_epi8(0x03);
    let b63 = _mm512_set1_epi32(63);
    let b15 = _mm512_set1_epi32(15);
    let b3 = _mm512_set1_epi32(3);
    let ts = if q4k { 144 } else { 210 };
    // SAFETY (whole body): the gathers and row loads read within super-block sb of each of
    // the n_rows rows (the f16 d of Q6_K, its last two bytes, as the top half of the dword at
    // 206); prefetches do not fault.
    unsafe {
        let gather = |p: *const u8| _mm512_mask_i32gather_epi32::<1>(z, m, idx, p.cast());
        prefetch_row_starts(w, wrb, n_rows, 2 * ts);
        for sb in 0..nsb {
            // As in `unpack_legacy`: each of the 16 rows' next super-blocks, ahead of time.
            if sb + 2 < nsb {
                let next = w.add((sb + 2) * ts);
                for r in 0..n_rows {
                    for l in 0..=ts / 64 {
                        _mm_prefetch::<_MM_HINT_T0>(next.add(r * wrb + 64 * l).cast());
                    }
                }
            }
            if q4k {
                let blk = w.add(144 * sb);
                sink.block(8 * sb);
                let dm = gather(blk);
                let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
                let dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)));
                let (s0, s1, s2) = (gather(blk.add(4)), gather(blk.add(8)), gather(blk.add(12)));
                let byte =
                    |v: __m512i, i: u32| _mm512_srlv_epi32(v, _mm512_set1_epi32(8 * i as i32));
                for k in 0..8u32 {
                    let (sc, mn) = if k < 4 {
                        (
                            _mm512_and_si512(byte(s0, k), b63),
                            _mm512_and_si512(byte(s1, k), b63),
                        )
                    } else {
                        let i = k - 4;
                        let hi_s = _mm512_slli_epi32(
                            _mm512_and_si512(_mm512_srli_epi32(byte(s0, i), 6), b3),
                            4,
                        );
                        let hi_m = _mm512_slli_epi32(
                            _mm512_and_si512(_mm512_srli_epi32(byte(s1, i), 6), b3),
                            4,
                        );
                        (
                            _mm512_or_si512(_mm512_and_si512(byte(s2, i), b15), hi_s),
                            _mm512_or_si512(
                                _mm512_and_si512(_mm512_srli_epi32(byte(s2, i), 4), b15),
                                hi_m,
                            ),
                        )
                    };
                    let k = k as usize;
                    sink.scale(k, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)));
                    let mins = _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(mn));
                    // -x exactly (also -0.0 for 0), as the portable packing.
                    sink.min(k, _mm512_maskz_xor_ps(m, mins, _mm512_set1_ps(-0.0)));
                }
                for n in 0..4 {
                    for half in 0..2 {
                        let t = transpose_16x4(blk.add(16 + 32 * n + 16 * half), wrb, n_rows);
                        for (j, v) in t.into_iter().enumerate() {
                            let jj = 4 * half + j;
                            let lo = _mm512_and_si512(v, low4);
                            let hi = _mm512_and_si512(_mm512_srli_epi32(v, 4), low4);
                            sink.codes(2 * n, jj, lo);
                            sink.codes(2 * n + 1, jj, hi);
                        }
                    }
                    sink.done(2 * n);
                    sink.done(2 * n + 1);
                }
            } else {
                let blk = w.add(210 * sb);
                sink.block(16 * sb);
                let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(
                    gather(blk.add(206)),
                    16,
                )));
                for q in 0..4 {
                    let sv = gather(blk.add(192 + 4 * q));
                    for i in 0..4 {
                        // Byte i of the lane, sign-extended.
                        let sc = _mm512_srai_epi32(
                            _mm512_sllv_epi32(sv, _mm512_set1_epi32(24 - 8 * i)),
                            24,
                        );
                        let k = 4 * q + i as usize;
                        sink.scale(k, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)));
                    }
                }
                for h in 0..2 {
                    let ql = blk.add(64 * h);
                    let qh = blk.add(128 + 32 * h);
                    for e in 0..2 {
                        let a = transpose_16x4(ql.add(16 * e), wrb, n_rows);
                        let b = transpose_16x4(ql.add(32 + 16 * e), wrb, n_rows);
                        let c = transpose_16x4(qh.add(16 * e), wrb, n_rows);
                        for j in 0..4 {
                            let hb = |s: u32| {
                                _mm512_slli_epi32(
                                    _mm512_and_si512(
                                        _mm512_srlv_epi32(c[j], _mm512_set1_epi32(s as i32)),
                                        low2,
                                    ),
                                    4,
                                )
                            };
                            let codes = [
                                _mm512_or_si512(_mm512_and_si512(a[j], low4), hb(0)),
                                _mm512_or_si512(_mm512_and_si512(b[j], low4), hb(2)),
                                _mm512_or_si512(
                                    _mm512_and_si512(_mm512_srli_epi32(a[j], 4), low4),
                                    hb(4),
                                ),
                                _mm512_or_si512(
                                    _mm512_and_si512(_mm512_srli_epi32(b[j], 4), low4),
                                    hb(6),
                                ),
                            ];
                            for (g, v) in codes.into_iter().enumerate() {
                                sink.codes(8 * h + 2 * g + e, j, v);
                            }
                        }
                    }
                    for k in 8 * h..8 * h + 8 {
                        sink.done(k);
                    }
                }
            }
        }
    }
}

/// Prefetches the first `bytes` of each of the `n_rows` rows at `w`: the loops then prefetch a
/// fixed distance ahead, which leaves the start of every row (most of a short row, such as
/// SmolLM2's 576 values) to the hardware prefetcher, slow to pick up 16 new streams at once.
#[inline(always)]
fn prefetch_row_starts(w: *const u8, wrb: usize, n_rows: usize, bytes: usize) {
    for r in 0..n_rows {
        let row = w.wrapping_add(r * wrb);
        for l in 0..bytes.min(wrb).div_ceil(64) {
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64 * l).cast()) };
        }
    }
}

/// The 16 bytes at `p + r · wrb` for rows r < `n_rows` (zeros for the others) as four
/// registers: register j holds dword j of every row (lane r). 4×4 dword transposes within the
/// 128-bit lanes, after loading rows q, q+4, q+8, q+12 into the lanes of register q.
///
/// # Safety
/// The CPU supports AVX-512; 16 bytes are readable at `p + r · wrb` for r < `n_rows`.
///
/// Not a `target_feature` function, so that it can be `inline(always)`: its intrinsics are
/// inlined with it into the AVX-512 callers (a call per 16 rows and 16 bytes, passing four
/// registers through memory, cost a quarter of one-token decode).
#[inline(always)]
pub(super) unsafe fn transpose_16x4(p: *const u8, wrb: usize, n_rows: usize) -> [__m512i; 4] {
    // SAFETY: only rows below n_rows are read (caller contract); the caller runs on AVX-512.
    unsafe {
        // Macros, not closures: a closure is a function without the caller's target features,
        // so its intrinsics would stay calls.
        macro_rules! row {
            ($r:expr) => {
                if $r < n_rows {
                    _mm_loadu_si128(p.add($r * wrb).cast())
                } else {
                    _mm_setzero_si128()
                }
            };
        }
        macro_rules! lanes {
            ($q:expr) => {{
                let v = _mm512_castsi128_si512(row!($q));
                let v = _mm512_inserti32x4::<1>(v, row!($q + 4));
                let v = _mm512_inserti32x4::<2>(v, row!($q + 8));
                _mm512_inserti32x4::<3>(v, row!($q + 12))
            }};
        }
        let (z0, z1, z2, z3) = (lanes!(0), lanes!(1), lanes!(2), lanes!(3));
        let t0 = _mm512_unpacklo_epi32(z0, z1);
        let t1 = _mm512_unpackhi_epi32(z0, z1);
        let t2 = _mm512_unpacklo_epi32(z2, z3);
        let t3 = _mm512_unpackhi_epi32(z2, z3);
        [
            _mm512_unpacklo_epi64(t0, t2),
            _mm512_unpackhi_epi64(t0, t2),
            _mm512_unpacklo_epi64(t1, t3),
            _mm512_unpackhi_epi64(t1, t3),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gemm::{gemm_form, pack_panel, transpose_codes as transpose_portable};
    use crate::cpu::Isa;
    use crate::quant::QuantFormat;

    /// The types of `pack_panel_fast` and `rows_times_one_token`.
    /// The GEMM types (`FORMATS` rows with a GEMM form); `fast_rows` unpacks every one.
    fn fast_types() -> Vec<GgmlType> {
        crate::quant::gemm_formats().map(|(t, _)| t).collect()
    }

    use crate::rng::SplitMix64;

    /// Random weight rows of `ty` with finite f16 scales.
    fn random_rows(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        rng: &mut SplitMix64,
    ) -> (Vec<u8>, usize) {
        let fmt = QuantFormat::Ggml(ty);
        let wrb = cols / fmt.block_size() * fmt.type_size();
        let data = (0..rows * wrb)
            .map(|i| {
                // Keep the f16 scales finite: clear their exponent's top bit.
                let b = (rng.next_u64() >> 56) as u8;
                let o = i % fmt.type_size();
                if o % 2 == 1 && (o < 4 || (ty == GgmlType::Q6_K && o == 209)) {
                    b & 0x3F
                } else {
                    b
                }
            })
            .collect();
        (data, wrb)
    }

    /// The one-token kernel gives the bits of packing the panel and multiplying it.
    #[test]
    fn one_token_rows_match_pack_and_multiply() {
        use crate::cpu::gemm::{GemmActs, Side};
        if !Isa::Avx512.is_supported() {
            return;
        }
        let mut rng = SplitMix64::new(0x9e37_79b9);
        for ty in fast_types() {
            let fmt = QuantFormat::Ggml(ty);
            let form = gemm_form(fmt).unwrap();
            let (rows, cols) = (37, if fmt.block_size() == 256 { 768 } else { 160 });
            let (data, wrb) = random_rows(ty, rows, cols, &mut rng);
            // Activations: random int8 values, scales and sums in the side form.
            let nsub = cols / form.kb;
            let mut acts = GemmActs::default();
            acts.y = (0..cols).map(|_| (rng.next_u64() >> 56) as i8).collect();
            acts.side = (0..nsub)
                .map(|b| {
                    let sum: i32 = acts.y[b * form.kb..(b + 1) * form.kb]
                        .iter()
                        .map(|&v| v as i32)
                        .sum();
                    let d = 0.01 + b as f32 * 1e-3;
                    Side {
                        d,
                        ms: d * sum as f32,
                        init: -form.offset * sum,
                        _pad: 0,
                    }
                })
                .collect();
            for r0 in [0, 16, 32] {
                let n_rows = (rows - r0).min(PANEL_ROWS);
                let mut panel = Vec::new();
                assert!(pack_panel_fast(
                    ty, &data, wrb, cols, r0, n_rows, &mut panel
                ));
                let mut want = vec![0f32; 16];
                let tile = Tile {
                    nsub,
                    panel: panel.as_ptr().cast(),
                    y: acts.y.as_ptr(),
                    cols,
                    side: acts.side.as_ptr(),
                    n_tokens: 1,
                    out: want.as_mut_ptr(),
                    out_stride: rows,
                    mask: ((1u32 << n_rows) - 1) as u16,
                };
                // SAFETY: AVX-512 checked above; the tile covers the panel, one token's
                // activations and 16 outputs.
                unsafe { panel_times_tokens(form, &tile) };
                let mut got = vec![0f32; n_rows];
                assert!(rows_times_one_token(
                    ty, &data, wrb, cols, r0, n_rows, &acts.y, &acts.side, &mut got
                ));
                for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.to_bits(), w.to_bits(), "{ty} row {}: {g} vs {w}", r0 + r);
                }
            }
        }
    }

    /// The gather packing gives the bytes of the portable unpack-and-transpose packing.
    #[test]
    fn fast_packing_matches_the_portable_one() {
        if !Isa::Avx512.is_supported() {
            return;
        }
        let mut rng = SplitMix64::new(0x1234_5678);
        for ty in fast_types() {
            let fmt = QuantFormat::Ggml(ty);
            let (rows, cols) = (37, if fmt.block_size() == 256 { 512 } else { 96 });
            let (data, wrb) = random_rows(ty, rows, cols, &mut rng);
            let form = gemm_form(fmt).unwrap();
            for r0 in [0, 16, 32] {
                let n_rows = (rows - r0).min(PANEL_ROWS);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                assert!(pack_panel_fast(ty, &data, wrb, cols, r0, n_rows, &mut a));
                pack_panel(
                    ty,
                    form,
                    &data,
                    wrb,
                    cols,
                    r0,
                    n_rows,
                    &mut b,
                    transpose_portable,
                );
                assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(&b) {
                    assert_eq!(x.0, y.0, "{ty} rows {r0}..{}", r0 + n_rows);
                }
                let mut c = Vec::new();
                pack_panel(
                    ty,
                    form,
                    &data,
                    wrb,
                    cols,
                    r0,
                    n_rows,
                    &mut c,
                    transpose_codes,
                );
                assert!(c.iter().zip(&b).all(|(x, y)| x.0 == y.0));
            }
        }
    }
}
