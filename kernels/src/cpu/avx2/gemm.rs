//! The AVX2 + FMA form of the GEMM's arithmetic (see `RowsJob` in `cpu/gemm.rs`): groups of 8 weight
//! rows, one row per f32 lane, so that the float steps are the AVX-512 micro-kernel's, lane for
//! lane.
//!
//! Each weight block of the 8 rows is unpacked row-major (codes in value order, as
//! `gemm::unpack_block` gives them) once per tile of tokens. Per token and sub-block, each row's
//! codes meet the token's int8 values in `maddubs` + `madd` (8 i32 partial sums per row), and a
//! `hadd` tree turns the 8 rows' partial sums into one register of 8 row sums; the integer
//! start, the scales and the minimums then go in as the AVX-512 kernel applies them.
//!
//! `maddubs` adds two u8 × s8 products in i16 with saturation. The 4-, 5- and 6-bit codes stay
//! far below it (2 · 63 · 128 < 2¹⁵). Q8_0's and IQ4_NL's codes are the int8 levels offset by
//! 128, which could saturate; for them the signed levels `s` meet the activations through the
//! sign trick (|s| × sign(s)·y, each product at most 128 · 127 since Q8_0 activations lie in
//! −127..=127) and Σ s·y is the GEMM's integer sum (its start −128·Σy plus Σ (s + 128)·y).

use std::arch::x86_64::*;

use crate::cpu::avx2::dot::{bits_to_0x10, gather_f16, nibbles_16, u32_at};
use crate::cpu::gemm::{side_index, unpack_block, RowsJob};
use crate::quant::{GgmlType, QuantFormat, KVALUES_IQ4NL};

/// Rows per group (f32 lanes of a 256-bit register).
const GROUP: usize = 8;
/// Tokens whose accumulators are kept while a group of rows is walked.
const TOKEN_TILE: usize = 32;

/// The codes of one weight block of the 8 rows of a group, row-major.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Codes([[u8; 256]; GROUP]);

/// One weight block of a group: codes, and per sub-block the 8 rows' scales and minimums.
struct GroupBlock {
    /// Unsigned codes; for the signed forms |s|.
    codes: Codes,
    /// The signed forms' levels s (unused otherwise).
    signs: Codes,
    scales: [[f32; GROUP]; 16],
    mins: [[f32; GROUP]; 16],
}

/// Computes rows `r0 .. r0 + n_rows` of `job` for every token.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `job` describes valid buffers (as `matmul_q` checks),
/// `r0 + n_rows ≤ job.rows`, and no other thread writes the outputs of these rows meanwhile.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rows_times_tokens(job: &RowsJob<'_>, r0: usize, n_rows: usize) {
    // SAFETY: the caller's contract.
    if job.n_tokens == 1 && unsafe { one_token(job, r0, n_rows) } {
        return;
    }
    let signed = matches!(job.ty, GgmlType::Q8_0 | GgmlType::IQ4_NL);
    // SAFETY: the caller's contract.
    unsafe {
        match (job.form.kb, job.form.mins, signed) {
            (32, false, false) => rows_body::<32, false, false>(job, r0, n_rows),
            (32, true, false) => rows_body::<32, true, false>(job, r0, n_rows),
            (32, false, true) => rows_body::<32, false, true>(job, r0, n_rows),
            (16, false, false) => rows_body::<16, false, false>(job, r0, n_rows),
            _ => unreachable!("no GEMM form has these parameters"),
        }
    }
}

/// Decode (one token) of the single-scale types straight from the weight blocks; `false` for
/// the other types.
///
/// # Safety
/// As [`rows_times_tokens`], with `job.n_tokens == 1`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn one_token(job: &RowsJob<'_>, r0: usize, n_rows: usize) -> bool {
    // SAFETY: the table has 16 bytes.
    let table =
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()) });
    // SAFETY: the caller's contract; each closure reads within the block at `x` (layouts as
    // in `unpack_block_avx2`), which `rows_one_token` passes whole.
    unsafe {
        match job.ty {
            GgmlType::Q4_0 => {
                rows_one_token::<false, false>(job, r0, n_rows, |x| nibbles_16(x.add(2)))
            }
            GgmlType::Q4_1 => {
                rows_one_token::<true, false>(job, r0, n_rows, |x| nibbles_16(x.add(4)))
            }
            GgmlType::Q5_0 => rows_one_token::<false, false>(job, r0, n_rows, |x| {
                _mm256_or_si256(nibbles_16(x.add(6)), bits_to_0x10(u32_at(x.add(2))))
            }),
            GgmlType::Q8_0 => rows_one_token::<false, true>(job, r0, n_rows, |x| {
                _mm256_loadu_si256(x.add(2).cast())
            }),
            GgmlType::IQ4_NL => rows_one_token::<false, true>(job, r0, n_rows, |x| {
                _mm256_shuffle_epi8(table, nibbles_16(x.add(2)))
            }),
            _ => return false,
        }
    }
    true
}

/// One token through a 32-value, single-scale type (f16 d at offset 0 of its block and, with
/// `MINS`, the f16 minimum at offset 2): each block's codes go from the weight bytes to
/// `maddubs` in registers (`code(block)`: the unsigned codes, or with `SIGNED` the signed
/// levels), and the 8 rows' scales are gathered.
///
/// # Safety
/// As [`rows_times_tokens`], with `job.n_tokens == 1`; `code` reads only within the block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_one_token<const MINS: bool, const SIGNED: bool>(
    job: &RowsJob<'_>,
    r0: usize,
    n_rows: usize,
    code: impl Fn(*const u8) -> __m256i,
) {
    let ts = QuantFormat::Ggml(job.ty).type_size();
    let (nb, wrb) = (job.cols / 32, job.wrb);
    assert!(
        job.n_tokens == 1
            && job.form.kb == 32
            && QuantFormat::Ggml(job.ty).block_size() == 32
            && wrb == nb * ts
            && job.data.len() >= (r0 + n_rows) * wrb
            && job.acts.y.len() >= job.cols
            && job.acts.side.len() >= nb,
        "rows_one_token: bad sizes"
    );
    let ones = _mm256_set1_epi16(1);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for g0 in (r0..r0 + n_rows).step_by(GROUP) {
        let gn = (r0 + n_rows - g0).min(GROUP);
        // Absent rows read row g0 again (their lanes are not stored).
        let row_of = |r: usize| if r < gn { r } else { 0 };
        let idx = _mm256_mullo_epi32(
            _mm256_min_epi32(lane, _mm256_set1_epi32(gn as i32 - 1)),
            _mm256_set1_epi32(wrb as i32),
        );
        let base = job.data[g0 * wrb..].as_ptr();
        let rows: [*const u8; GROUP] = std::array::from_fn(|r| base.wrapping_add(row_of(r) * wrb));
        let mut acc = _mm256_setzero_ps();
        // SAFETY (whole loop): block b < nb of rows g0 .. g0 + gn (checked above; absent rows
        // read row g0); the token's 32 values and side value of sub-block b.
        unsafe {
            for b in 0..nb {
                if b % 2 == 0 && b + 8 < nb {
                    // Decode streams every weight once: ask for each row a few blocks ahead.
                    for p in &rows[..gn] {
                        _mm_prefetch::<_MM_HINT_T0>(p.add((b + 8) * ts).cast());
                    }
                }
                let yv = _mm256_loadu_si256(job.acts.y.as_ptr().add(32 * b).cast());
                let p: [__m256i; GROUP] = std::array::from_fn(|r| {
                    let c = code(rows[r].add(b * ts));
                    let prod = if SIGNED {
                        _mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(yv, c))
                    } else {
                        _mm256_maddubs_epi16(c, yv)
                    };
                    _mm256_madd_epi16(prod, ones)
                });
                let (lo, hi) = rows_to_lanes(&p);
                let sd = &job.acts.side[b];
                let mut isum = _mm256_add_epi32(lo, hi);
                if !SIGNED {
                    isum = _mm256_add_epi32(isum, _mm256_set1_epi32(sd.init));
                }
                let blk = base.add(b * ts);
                let scale = _mm256_mul_ps(gather_f16(blk, idx), _mm256_set1_ps(sd.d));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc);
                if MINS {
                    acc = _mm256_fmadd_ps(gather_f16(blk.add(2), idx), _mm256_set1_ps(sd.ms), acc);
                }
            }
            let o = job.out.add(g0);
            if gn == GROUP {
                _mm256_storeu_ps(o, acc);
            } else {
                let mut v = [0f32; GROUP];
                _mm256_storeu_ps(v.as_mut_ptr(), acc);
                std::ptr::copy_nonoverlapping(v.as_ptr(), o, gn);
            }
        }
    }
}

/// Unpacks weight block `wb` of rows `g0 .. g0 + gn` into `gb` (the code rows past `gn`
/// untouched; their scale lanes get row g0's, which are never stored).
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_group(job: &RowsJob<'_>, g0: usize, gn: usize, wb: usize, gb: &mut GroupBlock) {
    let fmt = QuantFormat::Ggml(job.ty);
    let (bs, ts) = (fmt.block_size(), fmt.type_size());
    let per = bs / job.form.kb;
    assert!(gn >= 1 && job.data.len() >= (g0 + gn) * job.wrb && (wb + 1) * ts <= job.wrb);
    // SAFETY: rows g0 .. g0 + gn hold block wb (asserted above).
    let vector_scales = unsafe {
        group_scales(
            job.ty,
            job.data[g0 * job.wrb + wb * ts..].as_ptr(),
            job.wrb,
            gn,
            gb,
        )
    };
    for r in 0..gn {
        let at = (g0 + r) * job.wrb + wb * ts;
        let blk = &job.data[at..at + ts];
        // Decode streams every weight once: ask for this row's bytes a few hundred bytes
        // ahead (every line of a K-quant block; one line per small block, which is enough).
        let ahead = at + (2 * ts).max(512);
        let prefetch = |at: usize| {
            if at < job.data.len() {
                // SAFETY: a prefetch is only a hint and the address lies within the matrix.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(job.data.as_ptr().add(at).cast()) };
            }
        };
        prefetch(ahead);
        if ts > 64 {
            prefetch(ahead + 64);
            prefetch(ahead + 128);
            if ts > 192 {
                prefetch(ahead + 192);
            }
        }
        // SAFETY: `blk` is one whole block of `job.ty`; the code rows hold 256 bytes.
        let done =
            unsafe { unpack_codes_avx2(job.ty, blk, &mut gb.codes.0[r], &mut gb.signs.0[r]) };
        if !(done && vector_scales) {
            // Any other (unsigned) form: the portable unpacking.
            let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
            unpack_block(job.ty, blk, &mut gb.codes.0[r], &mut scales, &mut mins);
            for s in 0..per {
                gb.scales[s][r] = scales[s];
                gb.mins[s][r] = mins[s];
            }
        }
    }
}

/// The 8 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lanes(v: __m256) -> [f32; 8] {
    let mut out = [0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

/// The f16 values in the low halves of the i32 lanes of `v`, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_lanes(v: __m256i) -> __m256 {
    let g = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
    let p = _mm256_permute4x64_epi64::<0b10_00>(_mm256_packus_epi32(g, g));
    _mm256_cvtph_ps(_mm256_castsi256_si128(p))
}

/// The scales and minimums of one weight block of 8 rows (`blk`: the block of the group's
/// first row; row r at `r · wrb`; rows from `gn` on read the first row again) into `gb`, as
/// `gemm::unpack_block` computes them, with gathers. `false` for types it does not know.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; rows 0 .. gn hold a whole block of `ty` at
/// `blk + r · wrb`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group_scales(
    ty: GgmlType,
    blk: *const u8,
    wrb: usize,
    gn: usize,
    gb: &mut GroupBlock,
) -> bool {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let idx = _mm256_mullo_epi32(
        _mm256_min_epi32(lane, _mm256_set1_epi32(gn as i32 - 1)),
        _mm256_set1_epi32(wrb as i32),
    );
    // SAFETY (whole body): every gather reads 4 bytes within the block of one of the rows
    // 0 .. gn (layouts as in `unpack_block_avx2`; Q6_K's f16 d, its last two bytes, as the top
    // half of the dword at 206).
    unsafe {
        let gather = |at: usize| _mm256_i32gather_epi32::<1>(blk.add(at).cast(), idx);
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL => {
                gb.scales[0] = lanes(f16_lanes(gather(0)));
            }
            GgmlType::Q4_1 => {
                let dm = gather(0);
                gb.scales[0] = lanes(f16_lanes(dm));
                gb.mins[0] = lanes(f16_lanes(_mm256_srli_epi32(dm, 16)));
            }
            GgmlType::Q4_K => {
                let dm = gather(0);
                let d = f16_lanes(dm);
                let dmin = f16_lanes(_mm256_srli_epi32(dm, 16));
                let (s0, s1, s2) = (gather(4), gather(8), gather(12));
                let byte =
                    |v: __m256i, i: u32| _mm256_srlv_epi32(v, _mm256_set1_epi32(8 * i as i32));
                let (b63, b15, b3) = (
                    _mm256_set1_epi32(63),
                    _mm256_set1_epi32(15),
                    _mm256_set1_epi32(3),
                );
                // The 6-bit scales and minimums of ggml's get_scale_min_k4.
                for k in 0..8u32 {
                    let (sc, mn) = if k < 4 {
                        (
                            _mm256_and_si256(byte(s0, k), b63),
                            _mm256_and_si256(byte(s1, k), b63),
                        )
                    } else {
                        let i = k - 4;
                        let hi_s = _mm256_slli_epi32(
                            _mm256_and_si256(_mm256_srli_epi32(byte(s0, i), 6), b3),
                            4,
                        );
                        let hi_m = _mm256_slli_epi32(
                            _mm256_and_si256(_mm256_srli_epi32(byte(s1, i), 6), b3),
                            4,
                        );
                        (
                            _mm256_or_si256(_mm256_and_si256(byte(s2, i), b15), hi_s),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi32(byte(s2, i), 4), b15),
                                hi_m,
                            ),
                        )
                    };
                    let k = k as usize;
                    gb.scales[k] = lanes(_mm256_mul_ps(d, _mm256_cvtepi32_ps(sc)));
                    // −x exactly (−0.0 for 0), as the portable unpacking.
                    let m = _mm256_xor_ps(
                        _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(mn)),
                        _mm256_set1_ps(-0.0),
                    );
                    gb.mins[k] = lanes(m);
                }
            }
            GgmlType::Q6_K => {
                let d = f16_lanes(_mm256_srli_epi32(gather(206), 16));
                for q in 0..4 {
                    let sv = gather(192 + 4 * q);
                    for i in 0..4 {
                        // Byte i of the lane, sign-extended.
                        let sc = _mm256_srai_epi32(
                            _mm256_sllv_epi32(sv, _mm256_set1_epi32(24 - 8 * i as i32)),
                            24,
                        );
                        gb.scales[4 * q + i] = lanes(_mm256_mul_ps(d, _mm256_cvtepi32_ps(sc)));
                    }
                }
            }
            _ => return false,
        }
    }
    true
}

/// The codes of one weight block of `ty` as `gemm::unpack_block` gives them (value order),
/// except that for Q8_0 and IQ4_NL `signs` gets the signed levels s and `codes` |s|
/// (`unpack_block`'s codes are s + 128). `false` for types it does not know.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_codes_avx2(
    ty: GgmlType,
    blk: &[u8],
    codes: &mut [u8; 256],
    signs: &mut [u8; 256],
) -> bool {
    assert!(blk.len() >= QuantFormat::Ggml(ty).type_size());
    let b = blk.as_ptr();
    let c = codes.as_mut_ptr();
    let m4 = _mm256_set1_epi8(0x0F);
    let store = |at: *mut u8, v: __m256i| {
        // SAFETY: the callers below store at most 256 bytes from the start of a 256-byte row.
        unsafe { _mm256_storeu_si256(at.cast(), v) }
    };
    // SAFETY (whole match): every load reads within the block (its layout, ggml-common.h:
    // Q4_0 d qs[16]; Q4_1 d m qs[16]; Q5_0 d qh[4] qs[16]; Q8_0 d qs[32]; IQ4_NL d qs[16];
    // Q4_K d dmin scales[12] qs[128]; Q6_K ql[128] qh[64] scales[16] d), whose size was
    // asserted above.
    unsafe {
        match ty {
            GgmlType::Q4_0 => store(c, nibbles_16(b.add(2))),
            GgmlType::Q4_1 => store(c, nibbles_16(b.add(4))),
            GgmlType::Q5_0 => {
                let q = _mm256_or_si256(nibbles_16(b.add(6)), bits_to_0x10(u32_at(b.add(2))));
                store(c, q);
            }
            GgmlType::Q8_0 | GgmlType::IQ4_NL => {
                let s = if ty == GgmlType::Q8_0 {
                    _mm256_loadu_si256(b.add(2).cast())
                } else {
                    let table =
                        _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
                    _mm256_shuffle_epi8(table, nibbles_16(b.add(2)))
                };
                store(signs.as_mut_ptr(), s);
                store(c, _mm256_abs_epi8(s));
            }
            GgmlType::Q4_K => {
                for n in 0..4 {
                    let q = _mm256_loadu_si256(b.add(16 + 32 * n).cast());
                    store(c.add(64 * n), _mm256_and_si256(q, m4));
                    store(
                        c.add(64 * n + 32),
                        _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                    );
                }
            }
            GgmlType::Q6_K => {
                let m30 = _mm256_set1_epi8(0x30);
                for h in 0..2 {
                    let a = _mm256_loadu_si256(b.add(64 * h).cast());
                    let cc = _mm256_loadu_si256(b.add(64 * h + 32).cast());
                    let hb = _mm256_loadu_si256(b.add(128 + 32 * h).cast());
                    // Bits 2i, 2i + 1 of qh as bits 4, 5 of the code (16-bit shifts: the bits
                    // moved across bytes fall outside the mask).
                    let hi = |v: __m256i| _mm256_and_si256(v, m30);
                    let o = c.add(128 * h);
                    let lo_a = _mm256_and_si256(a, m4);
                    let lo_c = _mm256_and_si256(cc, m4);
                    let up_a = _mm256_and_si256(_mm256_srli_epi16(a, 4), m4);
                    let up_c = _mm256_and_si256(_mm256_srli_epi16(cc, 4), m4);
                    store(o, _mm256_or_si256(lo_a, hi(_mm256_slli_epi16(hb, 4))));
                    store(
                        o.add(32),
                        _mm256_or_si256(lo_c, hi(_mm256_slli_epi16(hb, 2))),
                    );
                    store(o.add(64), _mm256_or_si256(up_a, hi(hb)));
                    store(
                        o.add(96),
                        _mm256_or_si256(up_c, hi(_mm256_srli_epi16(hb, 2))),
                    );
                }
            }
            _ => return false,
        }
    }
    true
}

/// The 8 rows' partial sums `p[r]` (8 i32 lanes each) as two registers of row sums (row r in
/// lane r): of lanes 0..4 (bytes 0..16 of the `maddubs` inputs) and of lanes 4..8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn rows_to_lanes(p: &[__m256i; GROUP]) -> (__m256i, __m256i) {
    // Per 128-bit half: [r0 01, r0 23, r1 01, r1 23], then [r0 0123, r1 0123, r2 .., r3 ..].
    let h01 = _mm256_hadd_epi32(p[0], p[1]);
    let h23 = _mm256_hadd_epi32(p[2], p[3]);
    let h45 = _mm256_hadd_epi32(p[4], p[5]);
    let h67 = _mm256_hadd_epi32(p[6], p[7]);
    let q0 = _mm256_hadd_epi32(h01, h23);
    let q1 = _mm256_hadd_epi32(h45, h67);
    (
        _mm256_permute2x128_si256::<0x20>(q0, q1),
        _mm256_permute2x128_si256::<0x31>(q0, q1),
    )
}

/// # Safety
/// As [`rows_times_tokens`]; `KB`, `MINS` and `SIGNED` match `job`'s form and type.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_body<const KB: usize, const MINS: bool, const SIGNED: bool>(
    job: &RowsJob<'_>,
    r0: usize,
    n_rows: usize,
) {
    let fmt = QuantFormat::Ggml(job.ty);
    let bs = fmt.block_size();
    let per = bs / KB;
    let (cols, n_tokens, rows) = (job.cols, job.n_tokens, job.rows);
    let nsub = cols / KB;
    let mut gb = GroupBlock {
        codes: Codes([[0; 256]; GROUP]),
        signs: Codes([[0; 256]; GROUP]),
        scales: [[0.0; GROUP]; 16],
        mins: [[0.0; GROUP]; 16],
    };
    let mut acc = [_mm256_setzero_ps(); TOKEN_TILE];
    let ones = _mm256_set1_epi16(1);
    let y0 = job.acts.y.as_ptr();
    let side0 = job.acts.side.as_ptr();
    for g0 in (r0..r0 + n_rows).step_by(GROUP) {
        let gn = (r0 + n_rows - g0).min(GROUP);
        if gn < GROUP {
            // Lanes of absent rows: zeros (their results are not stored).
            for r in gn..GROUP {
                gb.codes.0[r] = [0; 256];
                gb.signs.0[r] = [0; 256];
                for s in 0..16 {
                    gb.scales[s][r] = 0.0;
                    gb.mins[s][r] = 0.0;
                }
            }
        }
        for t0 in (0..n_tokens).step_by(TOKEN_TILE) {
            let nt = (n_tokens - t0).min(TOKEN_TILE);
            acc[..nt].fill(_mm256_setzero_ps());
            for wb in 0..cols / bs {
                unpack_group(job, g0, gn, wb, &mut gb);
                for s in (0..per).step_by(32 / KB) {
                    let b = wb * per + s;
                    // SAFETY (whole block): s · KB + 32 ≤ 256 within each row of the codes;
                    // token t0 + t < n_tokens reads its 32 values at b · KB (cols is a
                    // multiple of the block and KB = 16 takes sub-blocks in pairs) and its side
                    // values of sub-blocks b (and b + 1 < nsub for KB = 16) at `side_index`,
                    // below n_tokens · nsub.
                    unsafe {
                        let c: [__m256i; GROUP] = std::array::from_fn(|r| {
                            _mm256_load_si256(gb.codes.0[r].as_ptr().add(s * KB).cast())
                        });
                        let sg: [__m256i; GROUP] = if SIGNED {
                            std::array::from_fn(|r| {
                                _mm256_load_si256(gb.signs.0[r].as_ptr().add(s * KB).cast())
                            })
                        } else {
                            [_mm256_setzero_si256(); GROUP]
                        };
                        for (t, a) in acc[..nt].iter_mut().enumerate() {
                            let yv = _mm256_loadu_si256(
                                y0.add((t0 + t) * cols + b * KB).cast::<__m256i>(),
                            );
                            let p: [__m256i; GROUP] = std::array::from_fn(|r| {
                                let prod = if SIGNED {
                                    _mm256_maddubs_epi16(c[r], _mm256_sign_epi8(yv, sg[r]))
                                } else {
                                    _mm256_maddubs_epi16(c[r], yv)
                                };
                                _mm256_madd_epi16(prod, ones)
                            });
                            let (lo, hi) = rows_to_lanes(&p);
                            let step = |a: __m256, isum: __m256i, b: usize, k: usize| {
                                let sd = &*side0.add(side_index(n_tokens, nsub, b, t0 + t));
                                let isum = if SIGNED {
                                    isum
                                } else {
                                    _mm256_add_epi32(isum, _mm256_set1_epi32(sd.init))
                                };
                                let sc = _mm256_loadu_ps(gb.scales[k].as_ptr());
                                let scale = _mm256_mul_ps(sc, _mm256_set1_ps(sd.d));
                                let a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, a);
                                if MINS {
                                    let mn = _mm256_loadu_ps(gb.mins[k].as_ptr());
                                    _mm256_fmadd_ps(mn, _mm256_set1_ps(sd.ms), a)
                                } else {
                                    a
                                }
                            };
                            if KB == 32 {
                                *a = step(*a, _mm256_add_epi32(lo, hi), b, s);
                            } else {
                                *a = step(*a, lo, b, s);
                                *a = step(*a, hi, b + 1, s + 1);
                            }
                        }
                    }
                }
            }
            for (t, a) in acc[..nt].iter().enumerate() {
                // SAFETY: t0 + t < n_tokens and g0 + gn ≤ rows: within the n_tokens × rows
                // output (caller contract); these rows belong to this call only.
                unsafe {
                    let o = job.out.add((t0 + t) * rows + g0);
                    if gn == GROUP {
                        _mm256_storeu_ps(o, *a);
                    } else {
                        let mut v = [0f32; GROUP];
                        _mm256_storeu_ps(v.as_mut_ptr(), *a);
                        std::ptr::copy_nonoverlapping(v.as_ptr(), o, gn);
                    }
                }
            }
        }
    }
}
