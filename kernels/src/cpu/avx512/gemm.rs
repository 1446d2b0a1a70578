//! The AVX-512 VNNI micro-kernel of the prefill GEMM (see `cpu/gemm.rs` for the packed forms):
//! 16 weight rows × `C` tokens, the i32 sums of one sub-block in `C` registers and the f32
//! results in `C` more.

use std::arch::x86_64::*;

use crate::cpu::gemm::{GemmForm, Line, Side, PANEL_ROWS};
use crate::quant::{GgmlType, KVALUES_IQ4NL};

/// The arguments of one micro-tile.
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    /// Sub-blocks along the row.
    pub nsub: usize,
    /// The packed panel (64-byte aligned, `nsub` sub-blocks of the form's stride).
    pub panel: *const u8,
    /// The int8 activations of the tile's first token; token `t` starts `t · cols` bytes on.
    pub y: *const i8,
    pub cols: usize,
    /// The side values of the first token at sub-block 0; sub-block `b`, token `t` at
    /// `b · n_tokens + t`.
    pub side: *const Side,
    pub n_tokens: usize,
    /// Where the first token's 16 results go; token `t` at `t · out_stride` floats on.
    pub out: *mut f32,
    pub out_stride: usize,
    /// Which of the 16 rows are real.
    pub mask: u16,
}

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
            let sd = tile.side.add(b * tile.n_tokens);
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

/// Tokens per micro-tile.
pub(crate) const TILE_TOKENS: usize = 8;

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
            side: unsafe { tile.side.add(t0) },
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

/// Packs rows `r0 .. r0 + n_rows` (≤ 16) of a Q4_0, Q4_1, Q5_0, Q8_0 or IQ4_NL matrix straight from the
/// GGUF blocks into the panel form of `cpu/gemm.rs` (`pack_panel`'s result, bit for bit),
/// with one gather per four columns of the 16 rows. Returns `false` for other types.
///
/// This is fast enough to run per matrix product even for one token, so these types take the
/// GEMM for every token count and a prompt gives the same results however it is split into
/// batches.
pub(crate) fn pack_panel_fast(
    ty: GgmlType,
    data: &[u8],
    wrb: usize,
    cols: usize,
    r0: usize,
    n_rows: usize,
    panel: &mut Vec<Line>,
) -> bool {
    if matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K) {
        let (ts, kb, stride) = if ty == GgmlType::Q4_K {
            (144, 32, 32 * PANEL_ROWS + 128)
        } else {
            (210, 16, 16 * PANEL_ROWS + 64)
        };
        assert!(
            (1..=PANEL_ROWS).contains(&n_rows)
                && cols.is_multiple_of(256)
                && wrb == cols / 256 * ts
                && data.len() >= (r0 + n_rows) * wrb,
            "pack_panel_fast: bad sizes"
        );
        let lines = cols / kb * stride / 64;
        if panel.len() < lines {
            panel.resize(lines, Line([0; 64]));
        }
        // SAFETY: as below.
        unsafe {
            pack_kquant_avx512(
                ty == GgmlType::Q4_K,
                data.as_ptr().add(r0 * wrb),
                wrb,
                cols / 256,
                n_rows,
                panel.as_mut_ptr().cast(),
            )
        };
        return true;
    }
    let (ts, qs_at, mins) = match ty {
        GgmlType::Q4_0 | GgmlType::IQ4_NL => (18, 2, false),
        GgmlType::Q4_1 => (20, 4, true),
        GgmlType::Q5_0 => (22, 6, false),
        GgmlType::Q8_0 => (34, 2, false),
        _ => return false,
    };
    assert!(
        (1..=PANEL_ROWS).contains(&n_rows)
            && cols.is_multiple_of(32)
            && wrb == cols / 32 * ts
            && data.len() >= (r0 + n_rows) * wrb,
        "pack_panel_fast: bad sizes"
    );
    let stride = 32 * PANEL_ROWS + 64 + if mins { 64 } else { 0 };
    let nsub = cols / 32;
    // Every byte of the panel is written below (rows past n_rows as zeros): no need to clear.
    if panel.len() < nsub * stride / 64 {
        panel.resize(nsub * stride / 64, Line([0; 64]));
    }
    // SAFETY: the GEMM runs only on AVX-512 tables, handed out when the CPU supports them; the
    // sizes were checked above.
    unsafe {
        pack_fast_avx512(
            ty,
            data.as_ptr().add(r0 * wrb),
            wrb,
            nsub,
            n_rows,
            ts,
            qs_at,
            mins,
            panel.as_mut_ptr().cast(),
        )
    };
    true
}

/// # Safety
/// The CPU supports AVX-512; `w` points to `n_rows` rows of `wrb` bytes (`nsub` blocks of `ts`
/// bytes each) and `out` to `nsub` sub-blocks of the panel stride.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn pack_fast_avx512(
    ty: GgmlType,
    w: *const u8,
    wrb: usize,
    nsub: usize,
    n_rows: usize,
    ts: usize,
    qs_at: usize,
    mins: bool,
    out: *mut u8,
) {
    let stride = 32 * PANEL_ROWS + 64 + if mins { 64 } else { 0 };
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
    // of the n_rows rows (masked rows read nothing); the stores write sub-block b of the
    // panel (caller contract).
    unsafe {
        // Decode streams every weight once: ask for each row's bytes a few blocks ahead (the
        // hardware prefetcher alone leaves the gathers and loads of 16 rows waiting).
        let ahead = 8 * ts;
        let every = if ts > 32 { 1 } else { 2 };
        for b in 0..nsub {
            let blk = w.add(b * ts);
            let o = out.add(b * stride);
            if b % every == 0 && (b + 8) < nsub {
                for r in 0..n_rows {
                    _mm_prefetch::<_MM_HINT_T0>(blk.add(r * wrb + ahead).cast());
                }
            }
            if ty == GgmlType::Q8_0 {
                for half in 0..2 {
                    let t = transpose_16x4(blk.add(qs_at + 16 * half), wrb, n_rows);
                    for (j, v) in t.into_iter().enumerate() {
                        let v = _mm512_maskz_xor_epi32(m, v, flip);
                        _mm512_store_si512(o.add(64 * (4 * half + j)).cast(), v);
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
                    _mm512_store_si512(o.add(64 * j).cast(), lo);
                    _mm512_store_si512(o.add(64 * (j + 4)).cast(), hi);
                }
            }
            let dm = _mm512_mask_i32gather_epi32::<1>(z, m, idx, blk.cast());
            let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
            _mm512_store_ps(o.add(32 * PANEL_ROWS).cast(), d);
            if mins {
                let mn = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)));
                _mm512_store_ps(o.add(32 * PANEL_ROWS + 64).cast(), mn);
            }
        }
    }
}

/// [`pack_panel_fast`] for Q4_K (`q4k`) or Q6_K: `nsb` super-blocks per row.
///
/// # Safety
/// The CPU supports AVX-512; `w` points to `n_rows` rows of `wrb` bytes (`nsb` blocks each)
/// and `out` to the panel's `nsb · 256 / kb` sub-blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn pack_kquant_avx512(
    q4k: bool,
    w: *const u8,
    wrb: usize,
    nsb: usize,
    n_rows: usize,
    out: *mut u8,
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
    // SAFETY (whole body): the gathers and row loads read within super-block sb of each of
    // the n_rows rows (the f16 d of Q6_K, its last two bytes, as the top half of the dword at
    // 206); the stores write the panel's sub-blocks of super-block sb (caller contract).
    unsafe {
        let gather = |p: *const u8| _mm512_mask_i32gather_epi32::<1>(z, m, idx, p.cast());
        for sb in 0..nsb {
            if q4k {
                let blk = w.add(144 * sb);
                let o = out.add(8 * sb * 640);
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
                    let ok = o.add(640 * k as usize);
                    _mm512_store_ps(ok.add(512).cast(), _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)));
                    let mins = _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(mn));
                    // -x exactly (also -0.0 for 0), as the portable packing.
                    _mm512_store_ps(
                        ok.add(576).cast(),
                        _mm512_maskz_xor_ps(m, mins, _mm512_set1_ps(-0.0)),
                    );
                }
                for n in 0..4 {
                    for half in 0..2 {
                        let t = transpose_16x4(blk.add(16 + 32 * n + 16 * half), wrb, n_rows);
                        for (j, v) in t.into_iter().enumerate() {
                            let jj = 4 * half + j;
                            let lo = _mm512_and_si512(v, low4);
                            let hi = _mm512_and_si512(_mm512_srli_epi32(v, 4), low4);
                            _mm512_store_si512(o.add(640 * 2 * n + 64 * jj).cast(), lo);
                            _mm512_store_si512(o.add(640 * (2 * n + 1) + 64 * jj).cast(), hi);
                        }
                    }
                }
            } else {
                let blk = w.add(210 * sb);
                let o = out.add(16 * sb * 320);
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
                        _mm512_store_ps(
                            o.add(320 * k + 256).cast(),
                            _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)),
                        );
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
                                let k = 8 * h + 2 * g + e;
                                _mm512_store_si512(o.add(320 * k + 64 * j).cast(), v);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The 16 bytes at `p + r · wrb` for rows r < `n_rows` (zeros for the others) as four
/// registers: register j holds dword j of every row (lane r). 4×4 dword transposes within the
/// 128-bit lanes, after loading rows q, q+4, q+8, q+12 into the lanes of register q.
///
/// # Safety
/// The CPU supports AVX-512; 16 bytes are readable at `p + r · wrb` for r < `n_rows`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn transpose_16x4(p: *const u8, wrb: usize, n_rows: usize) -> [__m512i; 4] {
    // SAFETY: only rows below n_rows are read (caller contract).
    let row = |r: usize| unsafe {
        if r < n_rows {
            _mm_loadu_si128(p.add(r * wrb).cast())
        } else {
            _mm_setzero_si128()
        }
    };
    let z: [__m512i; 4] = std::array::from_fn(|q| {
        let v = _mm512_castsi128_si512(row(q));
        let v = _mm512_inserti32x4::<1>(v, row(q + 4));
        let v = _mm512_inserti32x4::<2>(v, row(q + 8));
        _mm512_inserti32x4::<3>(v, row(q + 12))
    });
    let t0 = _mm512_unpacklo_epi32(z[0], z[1]);
    let t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    let t2 = _mm512_unpacklo_epi32(z[2], z[3]);
    let t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    [
        _mm512_unpacklo_epi64(t0, t2),
        _mm512_unpackhi_epi64(t0, t2),
        _mm512_unpacklo_epi64(t1, t3),
        _mm512_unpackhi_epi64(t1, t3),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gemm::{gemm_form, pack_panel, transpose_codes as transpose_portable};
    use crate::cpu::Isa;
    use crate::quant::QuantFormat;

    /// The gather packing gives the bytes of the portable unpack-and-transpose packing.
    #[test]
    fn fast_packing_matches_the_portable_one() {
        if !Isa::Avx512.is_supported() {
            return;
        }
        let mut seed = 0x1234_5678u32;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::IQ4_NL,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let fmt = QuantFormat::Ggml(ty);
            let (rows, cols) = (37, if fmt.block_size() == 256 { 512 } else { 96 });
            let wrb = cols / fmt.block_size() * fmt.type_size();
            let data: Vec<u8> = (0..rows * wrb)
                .map(|i| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    // Keep the f16 scales finite: clear their exponent's top bit.
                    let b = (seed >> 24) as u8;
                    let o = i % fmt.type_size();
                    if o % 2 == 1 && (o < 4 || (ty == GgmlType::Q6_K && o == 209)) {
                        b & 0x3F
                    } else {
                        b
                    }
                })
                .collect();
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
