//! Weight matrices repacked once at load for the AVX-512 GEMM ([`Kernels::repack`]): the same
//! bytes as the GGUF blocks, reordered so that the one-token product streams them with plain
//! sequential loads, without the gathers and register transposes of reading 16 rows at once.
//!
//! The rows are grouped in panels of [`PANEL_ROWS`] (the last padded with zero rows). A panel
//! holds its rows' blocks one after another: block `b` of the 16 rows takes `16 × type_size`
//! bytes (the 16 GGUF blocks' bytes, nothing widened), laid out as
//!
//! ```text
//! codes  : the qs bytes as 64-byte lines; line j holds qs bytes 4j..4j+4 of every row (row r
//!          at 4r), still nibble-packed for the 4-bit types (4 lines; Q8_0: 8 lines)
//! qh     : Q5_0 only: the 16 rows' 4-byte qh, row r at 4r (64 bytes)
//! d      : the 16 rows' f16 scales (32 bytes)
//! m      : Q4_1 only: the 16 rows' f16 minimums (32 bytes)
//! ```
//!
//! Q6_K's super-blocks likewise: `ql` as 32 lines, `qh` as 16, the int8 scales byte by byte
//! (sub-block k's 16 scales at 16k), then the 16 f16 `d` ([`repack_layout`]).

use crate::cpu::gemm::PANEL_ROWS;
use crate::cpu::matmul::QMatrix;
use crate::cpu::{GemmKernels, Kernels};
use crate::quant::{GgmlType, QuantFormat};

/// The layout of a repackable type's blocks: the legacy 32-value types and Q6_K.
pub(crate) fn repack_layout(ty: GgmlType) -> Option<BlockLayout> {
    type Ranges = &'static [(usize, usize)];
    let (ts, bs, lines, bytes, halves): (usize, usize, Ranges, Ranges, &'static [usize]) = match ty
    {
        GgmlType::Q4_0 | GgmlType::IQ4_NL => (18, 32, &[(2, 16)], &[], &[0]),
        GgmlType::Q4_1 => (20, 32, &[(4, 16)], &[], &[0, 2]),
        GgmlType::Q5_0 => (22, 32, &[(6, 16), (2, 4)], &[], &[0]),
        GgmlType::Q8_0 => (34, 32, &[(2, 32)], &[], &[0]),
        // ql and qh as lines, the int8 sub-block scales byte by byte, d.
        GgmlType::Q6_K => (210, 256, &[(0, 128), (128, 64)], &[(192, 16)], &[208]),
        _ => return None,
    };
    Some(BlockLayout {
        ts,
        bs,
        lines,
        bytes,
        halves,
    })
}

/// Where the parts of one GGUF block of a repackable type lie, and where they go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockLayout {
    /// Bytes of one block.
    pub ts: usize,
    /// Values of one block.
    pub bs: usize,
    /// The byte ranges (offset, length: a multiple of 4) stored as dword lines, in this
    /// order: range i's dword j of every row is one 64-byte line.
    pub lines: &'static [(usize, usize)],
    /// The byte ranges stored byte by byte after the lines: range i's byte k of every row as
    /// 16 contiguous bytes (Q6_K's scales: one sub-block's 16 scales per 16-byte load).
    pub bytes: &'static [(usize, usize)],
    /// The offsets of the f16s stored as 16 contiguous values after the lines, in this order.
    pub halves: &'static [usize],
}

impl BlockLayout {
    /// Bytes of one repacked block of 16 rows.
    pub(crate) fn panel_block(&self) -> usize {
        PANEL_ROWS * self.ts
    }

    /// The offset of line range `i` in a repacked block.
    pub(crate) fn lines_at(&self, i: usize) -> usize {
        PANEL_ROWS * self.lines[..i].iter().map(|&(_, n)| n).sum::<usize>()
    }

    /// The offset of byte range `i` in a repacked block (after every line).
    pub(crate) fn bytes_at(&self, i: usize) -> usize {
        let before: usize = self.bytes[..i].iter().map(|&(_, n)| n).sum();
        self.lines_at(self.lines.len()) + PANEL_ROWS * before
    }

    /// The offset of the 16 f16 scales in a repacked block (after the lines and bytes), then
    /// the other f16s (Q4_1's minimums) 32 bytes apart.
    pub(crate) fn d_at(&self) -> usize {
        self.bytes_at(self.bytes.len())
    }
}

/// A matrix repacked for the AVX-512 GEMM (see the module docs); built by [`Kernels::repack`]
/// and read by the matrix products through [`QMatrix::repacked`].
pub struct Repacked {
    pub(crate) ty: GgmlType,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) data: Vec<u8>,
}

impl Repacked {
    /// Bytes held (the matrix's GGUF bytes, its rows padded to a multiple of 16).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The weight type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Row `r`'s GGUF bytes, put back together from the repacked blocks into `out` (one row's
    /// bytes; embedding lookups of a matrix whose stored pages were given back).
    pub fn row(&self, r: usize, out: &mut [u8]) {
        let l = repack_layout(self.ty).expect("repacked types have a layout");
        let nblk = self.cols / l.bs;
        assert!(
            r < self.rows && out.len() == nblk * l.ts,
            "repacked row {r}: bad sizes"
        );
        let panel = self.panel(r - r % PANEL_ROWS);
        let lane = r % PANEL_ROWS;
        for (src, blk) in panel
            .chunks_exact(l.panel_block())
            .zip(out.chunks_exact_mut(l.ts))
        {
            for (i, &(at, n)) in l.lines.iter().enumerate() {
                for j in 0..n / 4 {
                    let from = l.lines_at(i) + 64 * j + 4 * lane;
                    blk[at + 4 * j..at + 4 * j + 4].copy_from_slice(&src[from..from + 4]);
                }
            }
            for (i, &(at, n)) in l.bytes.iter().enumerate() {
                for k in 0..n {
                    blk[at + k] = src[l.bytes_at(i) + 16 * k + lane];
                }
            }
            for (k, &at) in l.halves.iter().enumerate() {
                let from = l.d_at() + 32 * k + 2 * lane;
                blk[at..at + 2].copy_from_slice(&src[from..from + 2]);
            }
        }
    }

    /// Whether this is the repacked form of `w` (its type and shape).
    pub fn matches(&self, w: &QMatrix<'_>) -> bool {
        w.ty == QuantFormat::Ggml(self.ty) && w.rows == self.rows && w.cols == self.cols
    }

    /// Bytes of one panel of 16 rows.
    pub(crate) fn panel_bytes(&self) -> usize {
        let l = repack_layout(self.ty).expect("repacked types have a layout");
        self.cols / l.bs * l.panel_block()
    }

    /// The repacked blocks of the panel that starts at row `r0` (a multiple of 16).
    pub(crate) fn panel(&self, r0: usize) -> &[u8] {
        assert!(
            r0.is_multiple_of(PANEL_ROWS) && r0 < self.rows,
            "repacked panel: row {r0} does not start a panel"
        );
        let pb = self.panel_bytes();
        &self.data[r0 / PANEL_ROWS * pb..][..pb]
    }
}

impl std::fmt::Debug for Repacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repacked")
            .field("ty", &self.ty)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl Kernels {
    /// `w` repacked for this ISA's one-token product and panel packing (AVX-512: Q4_0, Q4_1,
    /// Q5_0, Q8_0, IQ4_NL and Q6_K), or `None` where the ISA reads the GGUF layout directly. The
    /// products give the same bits with or without it.
    pub fn repack(&self, w: &QMatrix<'_>) -> Option<Repacked> {
        let GemmKernels::Panels(p) = &self.gemm else {
            return None;
        };
        let QuantFormat::Ggml(ty) = w.ty else {
            return None;
        };
        repack_layout(ty)?;
        let wrb = w.row_bytes().ok()?;
        if w.rows == 0 || w.data.len() < w.rows.checked_mul(wrb)? {
            return None;
        }
        let mut data = vec![0u8; w.rows.div_ceil(PANEL_ROWS) * PANEL_ROWS * wrb];
        (p.repacked?.repack)(ty, w.data, wrb, w.rows, &mut data);
        Some(Repacked {
            ty,
            rows: w.rows,
            cols: w.cols,
            data,
        })
    }
}

/// The repacked bytes of `rows` rows of `wrb` bytes of type `ty` (see the module docs) into
/// `out` (zeros, the rows rounded up to a multiple of 16): the portable form of
/// `RepackedGemm::repack`, which the tests compare it with.
#[cfg(test)]
pub(crate) fn repack_rows(ty: GgmlType, data: &[u8], wrb: usize, rows: usize, out: &mut [u8]) {
    let l = repack_layout(ty).expect("a repackable type");
    let nblk = wrb / l.ts;
    let pb = nblk * l.panel_block();
    for (p, panel) in out.chunks_exact_mut(pb).enumerate() {
        let n_rows = (rows - p * PANEL_ROWS).min(PANEL_ROWS);
        let src = &data[p * PANEL_ROWS * wrb..];
        for (b, dst) in panel.chunks_exact_mut(l.panel_block()).enumerate() {
            for r in 0..n_rows {
                let blk = &src[r * wrb + b * l.ts..][..l.ts];
                repack_block(l, blk, r, dst);
            }
        }
    }
}

/// Puts one GGUF block of row `r` of a panel into its repacked block `dst`.
#[cfg(test)]
fn repack_block(l: BlockLayout, blk: &[u8], r: usize, dst: &mut [u8]) {
    for (i, &(at, n)) in l.lines.iter().enumerate() {
        let base = l.lines_at(i);
        for (j, q) in blk[at..at + n].chunks_exact(4).enumerate() {
            dst[base + 64 * j + 4 * r..][..4].copy_from_slice(q);
        }
    }
    for (i, &(at, n)) in l.bytes.iter().enumerate() {
        for k in 0..n {
            dst[l.bytes_at(i) + 16 * k + r] = blk[at + k];
        }
    }
    for (k, &at) in l.halves.iter().enumerate() {
        dst[l.d_at() + 32 * k + 2 * r..][..2].copy_from_slice(&blk[at..at + 2]);
    }
}
