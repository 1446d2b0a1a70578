//! The AVX-512 products on repacked weights (`cpu/repack.rs`): the one-token product and the
//! panel packing of the prefill GEMM, with the operations of `avx512/gemm.rs` on the same
//! registers, so the same bits, but each register one sequential 64-byte load.

use std::arch::x86_64::*;

use crate::cpu::gemm::{GemmForm, Line, Side, Tile, PANEL_ROWS, TILE_TOKENS};
use crate::cpu::repack::{repack_layout, BlockLayout, Repacked};
use crate::quant::{GgmlType, KVALUES_IQ4NL};

/// The repacked types, as the const parameter of the kernels.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q8_0: u8 = 3;
const IQ4_NL: u8 = 4;
const Q6_K: u8 = 5;

/// The kernel parameter of `ty`.
fn kind(ty: GgmlType) -> u8 {
    match ty {
        GgmlType::Q4_0 => Q4_0,
        GgmlType::Q4_1 => Q4_1,
        GgmlType::Q5_0 => Q5_0,
        GgmlType::Q8_0 => Q8_0,
        GgmlType::IQ4_NL => IQ4_NL,
        GgmlType::Q6_K => Q6_K,
        _ => unreachable!("only repackable types are repacked"),
    }
}

/// The repacked block layout of kernel parameter `K`.
fn layout<const K: u8>() -> BlockLayout {
    let ty = match K {
        Q4_0 => GgmlType::Q4_0,
        Q4_1 => GgmlType::Q4_1,
        Q5_0 => GgmlType::Q5_0,
        Q8_0 => GgmlType::Q8_0,
        Q6_K => GgmlType::Q6_K,
        _ => GgmlType::IQ4_NL,
    };
    repack_layout(ty).expect("a repackable type")
}

/// The repacked block layout of `ty`.
fn layout_of(ty: GgmlType) -> BlockLayout {
    repack_layout(ty).expect("only repackable types are repacked")
}

/// The constants of the block decoding, made once per panel.
#[derive(Clone, Copy)]
struct Consts {
    low4: __m512i,
    flip: __m512i,
    spread_mul: __m512i,
    ones: __m512i,
    iq4nl: __m512i,
    /// The real rows, as dwords and as the bytes of their dwords.
    rows_m: __mmask16,
    bytes_m: __mmask64,
}

impl Consts {
    /// # Safety
    /// The CPU supports AVX-512 F/BW.
    #[inline(always)]
    unsafe fn new(n_rows: usize) -> Consts {
        // IQ4_NL's codebook offset by 128 (unsigned for vpdpbusd), in every 128-bit lane.
        let mut table = [0u8; 16];
        for (t, &k) in table.iter_mut().zip(&KVALUES_IQ4NL) {
            *t = (k as u8) ^ 0x80;
        }
        // SAFETY: `table` has 16 bytes; the caller runs on AVX-512.
        unsafe {
            Consts {
                low4: _mm512_set1_epi8(0x0F),
                flip: _mm512_set1_epi8(-128),
                spread_mul: _mm512_set1_epi32(0x0020_4081),
                ones: _mm512_set1_epi32(0x0101_0101),
                iq4nl: _mm512_broadcast_i32x4(_mm_loadu_si128(table.as_ptr().cast())),
                rows_m: ((1u32 << n_rows) - 1) as u16,
                bytes_m: if n_rows == PANEL_ROWS {
                    u64::MAX
                } else {
                    (1u64 << (4 * n_rows)) - 1
                },
            }
        }
    }
}

/// The eight code lines of one repacked block at `blk`: line j < 4 the codes of values 4j..4j+4
/// of every row, line j + 4 those of values 16+4j.. (Q8_0: line j values 4j..4j+4), as
/// `unpack_legacy` (`avx512/gemm.rs`) makes them, rows past the real ones zero.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VNNI; `blk` points to a repacked block of type `K`.
#[inline(always)]
unsafe fn block_codes<const K: u8>(blk: *const u8, c: &Consts) -> [__m512i; 8] {
    // SAFETY: the lines, and Q5_0's qh, lie within the block (caller contract).
    unsafe {
        // No closures here: a closure is a function of its own without this caller's target
        // features, so its intrinsics stayed calls (perf: a tenth of an 8-stream decode step).
        macro_rules! line {
            ($j:expr) => {
                _mm512_loadu_si512(blk.add(64 * $j).cast())
            };
        }
        if K == Q8_0 {
            let mut out = [_mm512_setzero_si512(); 8];
            for (j, o) in out.iter_mut().enumerate() {
                *o = _mm512_maskz_xor_epi32(c.rows_m, line!(j), c.flip);
            }
            return out;
        }
        let qh = if K == Q5_0 {
            _mm512_loadu_si512(blk.add(256).cast())
        } else {
            _mm512_setzero_si512()
        };
        // Q5_0: bits `shift..shift + 4` of each lane's qh as 0x10 in the lane's four bytes
        // (x · 0x00204081 puts bit i at bit 8i; the four shifted copies do not overlap).
        macro_rules! fifth {
            ($shift:expr) => {{
                let x = _mm512_and_si512(
                    _mm512_srlv_epi32(qh, _mm512_set1_epi32($shift as i32)),
                    _mm512_set1_epi32(0xF),
                );
                _mm512_slli_epi32(
                    _mm512_and_si512(_mm512_mullo_epi32(x, c.spread_mul), c.ones),
                    4,
                )
            }};
        }
        let mut out = [_mm512_setzero_si512(); 8];
        for j in 0..4 {
            let v = line!(j);
            let mut lo = _mm512_and_si512(v, c.low4);
            let mut hi = _mm512_and_si512(_mm512_srli_epi32(v, 4), c.low4);
            if K == Q5_0 {
                lo = _mm512_or_si512(lo, fifth!(4 * j as u32));
                hi = _mm512_or_si512(hi, fifth!(16 + 4 * j as u32));
            } else if K == IQ4_NL {
                lo = _mm512_maskz_shuffle_epi8(c.bytes_m, c.iq4nl, lo);
                hi = _mm512_maskz_shuffle_epi8(c.bytes_m, c.iq4nl, hi);
            }
            out[j] = lo;
            out[j + 4] = hi;
        }
        out
    }
}

/// The 16 rows' scales and (Q4_1) minimums of the repacked block at `blk`.
///
/// # Safety
/// As [`block_codes`].
#[inline(always)]
unsafe fn block_scales<const K: u8>(blk: *const u8, l: BlockLayout) -> (__m512, __m512) {
    // SAFETY: the f16 scales (and minimums) lie within the block (caller contract).
    unsafe {
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(l.d_at()).cast()));
        let m = if K == Q4_1 {
            _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(l.d_at() + 32).cast()))
        } else {
            _mm512_setzero_ps()
        };
        (d, m)
    }
}

/// Repacks `rows` rows of `wrb` bytes of `ty` into `out` (zeros, `rows` rounded up to a
/// multiple of 16 rows): `cpu/repack.rs`'s `repack_rows`, bit for bit, with the register
/// transposes and gathers the one-token product used to make per token.
pub(crate) fn repack_rows(ty: GgmlType, data: &[u8], wrb: usize, rows: usize, out: &mut [u8]) {
    let l = repack_layout(ty).expect("a repackable type");
    let nblk = wrb / l.ts;
    let pb = nblk * l.panel_block();
    assert!(
        wrb == nblk * l.ts
            && data.len() >= rows * wrb
            && out.len() >= rows.div_ceil(PANEL_ROWS) * pb
            && wrb < i32::MAX as usize / PANEL_ROWS,
        "repack_rows: bad sizes"
    );
    for (p, panel) in out
        .chunks_exact_mut(pb)
        .take(rows.div_ceil(PANEL_ROWS))
        .enumerate()
    {
        let n_rows = (rows - p * PANEL_ROWS).min(PANEL_ROWS);
        let src = &data[p * PANEL_ROWS * wrb..];
        // SAFETY: the GEMM's tables (this one's callers) are handed out only when the CPU
        // supports AVX-512; `src` holds the panel's n_rows rows of wrb bytes and `panel` its
        // nblk repacked blocks (checked above).
        unsafe { repack_panel(l, src.as_ptr(), wrb, nblk, n_rows, panel.as_mut_ptr()) };
    }
}

/// # Safety
/// The CPU supports AVX-512 F/BW; `src` points to `n_rows` (≤ 16) rows of `wrb` bytes (`nblk`
/// blocks of layout `l`), `dst` to `nblk` repacked blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn repack_panel(
    l: BlockLayout,
    src: *const u8,
    wrb: usize,
    nblk: usize,
    n_rows: usize,
    dst: *mut u8,
) {
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(wrb as i32));
    let m: __mmask16 = ((1u32 << n_rows) - 1) as u16;
    let z = _mm512_setzero_si512();
    // SAFETY (whole body): the transposes, gathers and byte copies read within block b < nblk
    // of the n_rows rows (masked rows read nothing), the stores write within repacked block b.
    unsafe {
        for b in 0..nblk {
            let blk = src.add(b * l.ts);
            let out = dst.add(b * l.panel_block());
            for (i, &(at, n)) in l.lines.iter().enumerate() {
                let base = out.add(l.lines_at(i));
                for c in 0..n / 16 {
                    let t = super::gemm::transpose_16x4(blk.add(at + 16 * c), wrb, n_rows);
                    for (j, v) in t.into_iter().enumerate() {
                        _mm512_storeu_si512(base.add(64 * (4 * c + j)).cast(), v);
                    }
                }
                if n % 16 == 4 {
                    // One dword left (Q5_0's qh): gathered.
                    let v = _mm512_mask_i32gather_epi32::<1>(z, m, idx, blk.add(at + n - 4).cast());
                    _mm512_storeu_si512(base.add(64 * (n / 4 - 1)).cast(), v);
                }
            }
            for (i, &(at, n)) in l.bytes.iter().enumerate() {
                let base = out.add(l.bytes_at(i));
                for r in 0..n_rows {
                    for k in 0..n {
                        *base.add(16 * k + r) = *blk.add(r * wrb + at + k);
                    }
                }
            }
            for (k, &at) in l.halves.iter().enumerate() {
                // The dword that holds the f16 within the block: its low or its high half.
                let h = if at + 4 <= l.ts {
                    _mm512_mask_i32gather_epi32::<1>(z, m, idx, blk.add(at).cast())
                } else {
                    let v = _mm512_mask_i32gather_epi32::<1>(z, m, idx, blk.add(at - 2).cast());
                    _mm512_srli_epi32(v, 16)
                };
                let dst = out.add(l.d_at() + 32 * k);
                _mm256_storeu_si256(dst.cast(), _mm512_cvtepi32_epi16(h));
            }
        }
    }
}

/// Multiplies rows `r0 .. r0 + n_rows` (one panel) of a repacked matrix with one token: the
/// bits of `rows_times_one_token` on the GGUF blocks. `y` and `side` are the token's GEMM
/// activations and the `n_rows` results go to `out`.
pub(crate) fn repacked_times_one_token(
    w: &Repacked,
    r0: usize,
    n_rows: usize,
    y: &[i8],
    side: &[Side],
    out: &mut [f32],
) {
    let panel = w.panel(r0);
    let kb = if w.ty == GgmlType::Q6_K { 16 } else { 32 };
    assert!(
        (1..=PANEL_ROWS).contains(&n_rows)
            && r0 + n_rows <= w.rows
            && y.len() >= w.cols
            && side.len() >= w.cols / kb
            && out.len() >= n_rows,
        "repacked_times_one_token: bad sizes"
    );
    let f = match kind(w.ty) {
        Q4_0 => one_token::<Q4_0>,
        Q4_1 => one_token::<Q4_1>,
        Q5_0 => one_token::<Q5_0>,
        Q8_0 => one_token::<Q8_0>,
        Q6_K => one_token_q6k,
        _ => one_token::<IQ4_NL>,
    };
    // SAFETY: the GEMM runs only on AVX-512 tables, handed out when the CPU supports them;
    // the panel holds cols / bs repacked blocks, and the activations and the output were
    // checked above.
    unsafe {
        f(
            panel,
            w.cols / layout_of(w.ty).bs,
            n_rows,
            y.as_ptr(),
            side.as_ptr(),
            out.as_mut_ptr(),
        )
    };
}

/// # Safety
/// The CPU supports AVX-512 VNNI; `panel` holds `nblk` repacked blocks of type `K`, `y`
/// `32 · nblk` values, `side` `nblk` entries and `out` `n_rows` floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn one_token<const K: u8>(
    panel: &[u8],
    nblk: usize,
    n_rows: usize,
    y: *const i8,
    side: *const Side,
    out: *mut f32,
) {
    let l = layout::<K>();
    let pb = l.panel_block();
    let p = panel.as_ptr();
    // SAFETY (whole body): block b < nblk of the panel, its activations and its side value lie
    // within the buffers (caller contract); prefetches do not fault.
    unsafe {
        let c = Consts::new(n_rows);
        let mut facc = _mm512_setzero_ps();
        for b in 0..nblk {
            let blk = p.add(b * pb);
            // The panel is one sequential stream: ask for it a few blocks ahead.
            for l in 0..pb.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(8 * pb + 64 * l).cast());
            }
            let codes = block_codes::<K>(blk, &c);
            let yb = y.add(32 * b);
            // Two chains of integer sums (exact, so their order does not matter).
            let (mut a0, mut a1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for j in 0..4 {
                let y0 = _mm512_set1_epi32(yb.add(4 * j).cast::<i32>().read_unaligned());
                let y1 = _mm512_set1_epi32(yb.add(16 + 4 * j).cast::<i32>().read_unaligned());
                a0 = _mm512_dpbusd_epi32(a0, codes[j], y0);
                a1 = _mm512_dpbusd_epi32(a1, codes[j + 4], y1);
            }
            let (d, m) = block_scales::<K>(blk, l);
            // `OneToken::done`'s float steps (`avx512/gemm.rs`), in its order.
            let side = *side.add(b);
            let isum = _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_set1_epi32(side.init));
            let s = _mm512_mul_ps(d, _mm512_set1_ps(side.d));
            facc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, facc);
            if K == Q4_1 {
                facc = _mm512_fmadd_ps(m, _mm512_set1_ps(side.ms), facc);
            }
        }
        _mm512_mask_storeu_ps(out, c.rows_m, facc);
    }
}

/// Multiplies the panel of rows `r0 .. r0 + n_rows` of a repacked matrix with every token of
/// `tile` (its `panel` unused) without packing it: per block the codes are decoded into
/// registers once and multiplied with up to [`TILE_TOKENS`] tokens right away, with
/// `tile_kernel`'s float operations per token (`avx512/gemm.rs`), so the bits of the
/// pack-and-tile path. `false` (nothing done) for a type it does not handle (Q6_K).
///
/// # Safety
/// The CPU supports AVX-512 VNNI; `tile` describes the activations and outputs of its
/// `n_tokens` tokens as [`Tile`] says, for `w.cols` values, and `tile.mask` has `n_rows`
/// low bits set.
pub(crate) unsafe fn repacked_times_tokens(
    w: &Repacked,
    r0: usize,
    n_rows: usize,
    tile: &Tile,
) -> bool {
    type TokensFn = unsafe fn(&[u8], usize, usize, &Tile);
    macro_rules! table {
        ($k:expr) => {
            [
                tokens::<$k, 1> as TokensFn,
                tokens::<$k, 2>,
                tokens::<$k, 3>,
                tokens::<$k, 4>,
                tokens::<$k, 5>,
                tokens::<$k, 6>,
                tokens::<$k, 7>,
                tokens::<$k, 8>,
            ]
        };
    }
    let table: [TokensFn; TILE_TOKENS] = match kind(w.ty) {
        Q4_0 => table!(Q4_0),
        Q4_1 => table!(Q4_1),
        Q5_0 => table!(Q5_0),
        Q8_0 => table!(Q8_0),
        IQ4_NL => table!(IQ4_NL),
        _ => return false,
    };
    let nblk = w.cols / layout_of(w.ty).bs;
    assert!(
        (1..=PANEL_ROWS).contains(&n_rows)
            && r0 + n_rows <= w.rows
            && tile.cols == w.cols
            && tile.nsub == nblk
            && tile.mask == ((1u32 << n_rows) - 1) as u16,
        "repacked_times_tokens: bad sizes"
    );
    let panel = w.panel(r0);
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
        // SAFETY: the panel holds `nblk` repacked blocks; the sub-tile covers tokens t0..t0 + c,
        // all within the caller's buffers; the CPU runs AVX-512 (caller contract).
        unsafe { table[c - 1](panel, nblk, n_rows, &sub) };
        t0 += c;
    }
    true
}

/// # Safety
/// The CPU supports AVX-512 VNNI; `panel` holds `nblk` repacked blocks of type `K`, and `tile`
/// describes `C` tokens (one side group) of `32 · nblk` values as [`Tile`] says.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn tokens<const K: u8, const C: usize>(
    panel: &[u8],
    nblk: usize,
    n_rows: usize,
    tile: &Tile,
) {
    let l = layout::<K>();
    let pb = l.panel_block();
    let p = panel.as_ptr();
    // SAFETY (whole body): block b < nblk of the panel, the activations and side values of
    // tokens t < C at block b, and the masked outputs of each token lie within the buffers
    // (caller contract); prefetches do not fault.
    unsafe {
        let c = Consts::new(n_rows);
        let mut facc = [_mm512_setzero_ps(); C];
        for b in 0..nblk {
            let blk = p.add(b * pb);
            for l in 0..pb.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(8 * pb + 64 * l).cast());
            }
            let codes = block_codes::<K>(blk, &c);
            let sd = tile.side.add(b * C);
            let yb = tile.y.add(32 * b);
            // `tile_kernel`'s steps: iacc = init, then the exact vpdpbusd sums; no closures
            // (`std::array::from_fn`) here, see `block_codes`.
            let mut iacc = [_mm512_setzero_si512(); C];
            for (t, acc) in iacc.iter_mut().enumerate() {
                *acc = _mm512_set1_epi32((*sd.add(t)).init);
            }
            for (j, &code) in codes.iter().enumerate() {
                // Line j holds the codes of values 4j..4j + 4 of every row.
                for (t, acc) in iacc.iter_mut().enumerate() {
                    let yv = yb.add(t * tile.cols + 4 * j).cast::<i32>().read_unaligned();
                    *acc = _mm512_dpbusd_epi32(*acc, code, _mm512_set1_epi32(yv));
                }
            }
            let (d, m) = block_scales::<K>(blk, l);
            for (t, f) in facc.iter_mut().enumerate() {
                let side = &*sd.add(t);
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(side.d));
                *f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[t]), scale, *f);
                if K == Q4_1 {
                    *f = _mm512_fmadd_ps(m, _mm512_set1_ps(side.ms), *f);
                }
            }
        }
        for (t, f) in facc.iter().enumerate() {
            _mm512_mask_storeu_ps(tile.out.add(t * tile.out_stride), c.rows_m, *f);
        }
    }
}

/// Packs rows `r0 .. r0 + n_rows` (one panel) of a repacked matrix into the panel form of
/// `cpu/gemm.rs`: `pack_panel_fast`'s result on the GGUF blocks, bit for bit.
pub(crate) fn pack_repacked(w: &Repacked, r0: usize, n_rows: usize, panel: &mut Vec<Line>) {
    let src = w.panel(r0);
    assert!(
        (1..=PANEL_ROWS).contains(&n_rows) && r0 + n_rows <= w.rows,
        "pack_repacked: bad sizes"
    );
    let form = crate::cpu::gemm::gemm_form(crate::quant::QuantFormat::Ggml(w.ty))
        .expect("repacked types have a GEMM form");
    let nsub = w.cols / form.kb;
    let lines = nsub * form.sub_stride() / 64;
    if panel.len() < lines {
        panel.resize(lines, Line([0; 64]));
    }
    let f = match kind(w.ty) {
        Q4_0 => pack::<Q4_0>,
        Q4_1 => pack::<Q4_1>,
        Q5_0 => pack::<Q5_0>,
        Q8_0 => pack::<Q8_0>,
        Q6_K => pack_q6k,
        _ => pack::<IQ4_NL>,
    };
    // SAFETY: as in `repacked_times_one_token`; the panel holds every sub-block (every byte
    // of it is written).
    let nblk = w.cols / layout_of(w.ty).bs;
    unsafe { f(src, nblk, n_rows, form, panel.as_mut_ptr().cast()) };
}

/// # Safety
/// The CPU supports AVX-512 VNNI; `src` holds `nblk` repacked blocks of type `K`, `out` the
/// panel's `nblk` sub-blocks of `form` (64-byte aligned).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn pack<const K: u8>(src: &[u8], nblk: usize, n_rows: usize, form: GemmForm, out: *mut u8) {
    let l = layout::<K>();
    let stride = form.sub_stride();
    // SAFETY (whole body): block b < nblk of `src` and sub-block b of the panel lie within the
    // buffers (caller contract); the panel's lines are 64-byte aligned.
    unsafe {
        let c = Consts::new(n_rows);
        for b in 0..nblk {
            let blk = src.as_ptr().add(b * l.panel_block());
            let at = out.add(b * stride);
            for (j, v) in block_codes::<K>(blk, &c).into_iter().enumerate() {
                _mm512_store_si512(at.add(64 * j).cast(), v);
            }
            let (d, m) = block_scales::<K>(blk, l);
            _mm512_store_ps(at.add(16 * 32).cast(), d);
            if K == Q4_1 {
                _mm512_store_ps(at.add(16 * 32 + 64).cast(), m);
            }
        }
    }
}

/// Where Q6_K's parts lie in a repacked super-block (`cpu/repack.rs`): ql's 32 lines, qh's 16,
/// the scales (16 bytes per sub-block), then the f16 d.
const Q6K_QH: usize = 32 * 64;
const Q6K_SCALES: usize = 48 * 64;
const Q6K_D: usize = 52 * 64;

/// The codes of line `j` of the four sub-blocks `8h + 2g + e` (g = 0..4) of a repacked Q6_K
/// super-block at `blk`: `unpack_kquant`'s (`avx512/gemm.rs`) from the same bytes.
///
/// # Safety
/// The CPU supports AVX-512 F/BW; `blk` points to a repacked Q6_K super-block.
#[inline(always)]
unsafe fn q6k_codes(blk: *const u8, h: usize, e: usize, j: usize) -> [__m512i; 4] {
    // SAFETY: the lines lie within the super-block (caller contract).
    unsafe {
        macro_rules! line {
            ($at:expr) => {
                _mm512_loadu_si512(blk.add($at).cast())
            };
        }
        let low4 = _mm512_set1_epi8(0x0F);
        let a = line!(64 * (16 * h + 4 * e + j));
        let b = line!(64 * (16 * h + 8 + 4 * e + j));
        let c = line!(Q6K_QH + 64 * (8 * h + 4 * e + j));
        // Bits 2g, 2g + 1 of each qh byte at bits 4, 5 (`unpack_kquant`'s `(c >> 2g & 3) << 4`,
        // byte by byte: the masks keep only bits that stay within their byte).
        let m30 = _mm512_set1_epi8(0x30);
        let hb = [
            _mm512_and_si512(_mm512_slli_epi32(c, 4), m30),
            _mm512_and_si512(_mm512_slli_epi32(c, 2), m30),
            _mm512_and_si512(c, m30),
            _mm512_and_si512(_mm512_srli_epi32(c, 2), m30),
        ];
        [
            _mm512_or_si512(_mm512_and_si512(a, low4), hb[0]),
            _mm512_or_si512(_mm512_and_si512(b, low4), hb[1]),
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(a, 4), low4), hb[2]),
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(b, 4), low4), hb[3]),
        ]
    }
}

/// The 16 float scales of sub-block `k` of a repacked Q6_K super-block: d · the int8 scale.
///
/// # Safety
/// As [`q6k_codes`].
#[inline(always)]
unsafe fn q6k_scale(blk: *const u8, d: __m512, k: usize) -> __m512 {
    // SAFETY: the scale lines lie within the super-block (caller contract).
    unsafe {
        let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(blk.add(Q6K_SCALES + 16 * k).cast()));
        _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc))
    }
}

/// [`one_token`] for Q6_K: `nsb` super-blocks of 16 sub-blocks of 16 values.
///
/// # Safety
/// As [`one_token`], with `16 · nsb` side entries.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn one_token_q6k(
    panel: &[u8],
    nsb: usize,
    n_rows: usize,
    y: *const i8,
    side: *const Side,
    out: *mut f32,
) {
    let pb = layout_of(GgmlType::Q6_K).panel_block();
    let p = panel.as_ptr();
    // SAFETY (whole body): super-block sb < nsb of the panel, its 256 activations and 16 side
    // values lie within the buffers (caller contract); prefetches do not fault.
    unsafe {
        let mut facc = _mm512_setzero_ps();
        for sb in 0..nsb {
            let blk = p.add(sb * pb);
            for l in 0..pb.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(pb + 64 * l).cast());
            }
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(Q6K_D).cast()));
            let yb = y.add(256 * sb);
            let sd = side.add(16 * sb);
            for h in 0..2 {
                let mut isum = [_mm512_setzero_si512(); 8];
                for e in 0..2 {
                    for j in 0..4 {
                        for (g, v) in q6k_codes(blk, h, e, j).into_iter().enumerate() {
                            let k = 8 * h + 2 * g + e;
                            let at = yb.add(16 * k + 4 * j);
                            let yv = _mm512_set1_epi32(at.cast::<i32>().read_unaligned());
                            isum[2 * g + e] = _mm512_dpbusd_epi32(isum[2 * g + e], v, yv);
                        }
                    }
                }
                // `OneToken::done`'s float steps, sub-block by sub-block in order.
                for (i, acc) in isum.into_iter().enumerate() {
                    let k = 8 * h + i;
                    let side = *sd.add(k);
                    let total = _mm512_add_epi32(acc, _mm512_set1_epi32(side.init));
                    let s = _mm512_mul_ps(q6k_scale(blk, d, k), _mm512_set1_ps(side.d));
                    facc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), s, facc);
                }
            }
        }
        _mm512_mask_storeu_ps(out, ((1u32 << n_rows) - 1) as u16, facc);
    }
}

/// [`pack`] for Q6_K: `nsb` super-blocks into `16 · nsb` sub-blocks of the panel.
///
/// # Safety
/// As [`pack`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn pack_q6k(src: &[u8], nsb: usize, _n_rows: usize, form: GemmForm, out: *mut u8) {
    let pb = layout_of(GgmlType::Q6_K).panel_block();
    let stride = form.sub_stride();
    // SAFETY (whole body): super-block sb < nsb of `src` and its sub-blocks in the panel lie
    // within the buffers (caller contract); the panel's lines are 64-byte aligned.
    unsafe {
        for sb in 0..nsb {
            let blk = src.as_ptr().add(sb * pb);
            let at = out.add(16 * sb * stride);
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(Q6K_D).cast()));
            for k in 0..16 {
                _mm512_store_ps(at.add(k * stride + 16 * 16).cast(), q6k_scale(blk, d, k));
            }
            for h in 0..2 {
                for e in 0..2 {
                    for j in 0..4 {
                        for (g, v) in q6k_codes(blk, h, e, j).into_iter().enumerate() {
                            let k = 8 * h + 2 * g + e;
                            _mm512_store_si512(at.add(k * stride + 64 * j).cast(), v);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::avx512::gemm::{pack_panel_fast, rows_times_one_token};
    use crate::cpu::matmul::QMatrix;
    use crate::cpu::{Isa, Kernels};
    use crate::quant::QuantFormat;
    use crate::rng::SplitMix64;

    const TYPES: [GgmlType; 6] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::IQ4_NL,
        GgmlType::Q6_K,
    ];

    /// Random blocks of `ty` with finite f16 scales (and minimums).
    fn random_rows(ty: GgmlType, rows: usize, cols: usize, rng: &mut SplitMix64) -> Vec<u8> {
        let fmt = QuantFormat::Ggml(ty);
        let ts = fmt.type_size();
        let wrb = cols / fmt.block_size() * ts;
        (0..rows * wrb)
            .map(|i| {
                let b = (rng.next_u64() >> 56) as u8;
                let o = i % ts;
                // Keep the f16s finite: clear their exponent's top bit.
                let f16_hi = match ty {
                    GgmlType::Q6_K => o == 209,
                    GgmlType::Q4_1 => o == 1 || o == 3,
                    _ => o == 1,
                };
                if f16_hi {
                    b & 0x3F
                } else {
                    b
                }
            })
            .collect()
    }

    /// One token's GEMM activations: random int8 values, scales, sums and offsets.
    fn random_acts(ty: GgmlType, cols: usize, rng: &mut SplitMix64) -> (Vec<i8>, Vec<Side>) {
        let form = crate::cpu::gemm::gemm_form(QuantFormat::Ggml(ty)).unwrap();
        let y: Vec<i8> = (0..cols).map(|_| (rng.next_u64() >> 56) as i8).collect();
        let side = y
            .chunks_exact(form.kb)
            .map(|b| {
                let sum: i32 = b.iter().map(|&v| v as i32).sum();
                let d = 0.01 + (rng.next_u64() >> 40) as f32 * 1e-9;
                Side {
                    d,
                    ms: d * sum as f32,
                    init: -form.offset * sum,
                    _pad: 0,
                }
            })
            .collect();
        (y, side)
    }

    /// The repacked one-token product and panel packing give the bits of the GGUF-block ones,
    /// for every repackable type, every row count of a panel and several row lengths.
    #[test]
    fn repacked_products_match_the_gguf_block_ones() {
        let Some(k) = Kernels::get(Isa::Avx512) else {
            return;
        };
        let mut rng = SplitMix64::new(0x5eed_4e9a);
        for ty in TYPES {
            let fmt = QuantFormat::Ggml(ty);
            let (ts, bs) = (fmt.type_size(), fmt.block_size());
            for cols in [32, 96, 256, 576, 768, 2048] {
                if cols % bs != 0 {
                    continue;
                }
                let wrb = cols / bs * ts;
                for rows in (1..=16).chain([37, 48]) {
                    let data = random_rows(ty, rows, cols, &mut rng);
                    let w = QMatrix::new(ty, &data, rows, cols).unwrap();
                    let rp = k.repack(&w).expect("repackable");
                    assert_eq!(rp.bytes(), rows.div_ceil(16) * 16 * wrb);
                    let mut portable = vec![0u8; rp.bytes()];
                    crate::cpu::repack::repack_rows(ty, &data, wrb, rows, &mut portable);
                    assert!(rp.data == portable, "{ty} {rows}x{cols}: repacked bytes");
                    let mut row = vec![0u8; wrb];
                    for r in 0..rows {
                        rp.row(r, &mut row);
                        assert!(row == data[r * wrb..(r + 1) * wrb], "{ty} row {r} back");
                    }
                    let (y, side) = random_acts(ty, cols, &mut rng);
                    for r0 in (0..rows).step_by(PANEL_ROWS) {
                        let n = (rows - r0).min(PANEL_ROWS);
                        let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
                        assert!(rows_times_one_token(
                            ty, &data, wrb, cols, r0, n, &y, &side, &mut want
                        ));
                        repacked_times_one_token(&rp, r0, n, &y, &side, &mut got);
                        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                            let at = format!("{ty} {rows}x{cols} row {}", r0 + r);
                            assert_eq!(g.to_bits(), w.to_bits(), "{at}: {g} vs {w}");
                        }
                        let (mut a, mut b) = (Vec::new(), Vec::new());
                        assert!(pack_panel_fast(ty, &data, wrb, cols, r0, n, &mut a));
                        pack_repacked(&rp, r0, n, &mut b);
                        assert_eq!(a.len(), b.len());
                        for (x, y) in a.iter().zip(&b) {
                            assert_eq!(x.0, y.0, "{ty} {rows}x{cols} panel {r0}");
                        }
                    }
                }
            }
        }
    }

    /// Types without a repacked layout (Q4_K), and ISAs without the kernels, are not repacked; a
    /// repacked form is refused for another matrix.
    #[test]
    fn only_the_types_with_a_layout_on_avx512_are_repacked() {
        let mut rng = SplitMix64::new(7);
        let data = random_rows(GgmlType::Q4_0, 16, 64, &mut rng);
        let w = QMatrix::new(GgmlType::Q4_0, &data, 16, 64).unwrap();
        for isa in [Isa::Scalar, Isa::Avx2] {
            if let Some(k) = Kernels::get(isa) {
                assert!(k.repack(&w).is_none(), "{isa:?}");
            }
        }
        let Some(k) = Kernels::get(Isa::Avx512) else {
            return;
        };
        let q4k = vec![0u8; 144];
        let wk = QMatrix::new(GgmlType::Q4_K, &q4k, 1, 256).unwrap();
        assert!(k.repack(&wk).is_none());
        let rp = k.repack(&w).unwrap();
        let other = QMatrix::new(GgmlType::Q4_0, &data, 8, 128).unwrap();
        assert!(other.with_repacked(&rp).is_err());
        assert!(w.with_repacked(&rp).is_ok());
    }
}
