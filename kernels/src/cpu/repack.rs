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

use crate::cpu::gemm::PANEL_ROWS;
use crate::cpu::matmul::QMatrix;
use crate::cpu::{GemmKernels, Kernels};
use crate::quant::{GgmlType, QuantFormat};

/// The legacy (32-value block) types that can be repacked: their block size in bytes, where
/// `qs` starts in a block and how many bytes it has.
pub(crate) fn repack_layout(ty: GgmlType) -> Option<BlockLayout> {
    let (ts, qs_at, qs_len) = match ty {
        GgmlType::Q4_0 | GgmlType::IQ4_NL => (18, 2, 16),
        GgmlType::Q4_1 => (20, 4, 16),
        GgmlType::Q5_0 => (22, 6, 16),
        GgmlType::Q8_0 => (34, 2, 32),
        _ => return None,
    };
    Some(BlockLayout { ts, qs_at, qs_len })
}

/// Where the parts of one GGUF block of a repackable type lie.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockLayout {
    /// Bytes of one block.
    pub ts: usize,
    /// The offset of `qs` in the block.
    pub qs_at: usize,
    /// Bytes of `qs`.
    pub qs_len: usize,
}

impl BlockLayout {
    /// Bytes of one repacked block of 16 rows.
    pub(crate) fn panel_block(&self) -> usize {
        PANEL_ROWS * self.ts
    }

    /// The offset of the 16 f16 scales in a repacked block (after the codes and Q5_0's qh).
    pub(crate) fn d_at(&self) -> usize {
        let qh = if self.qs_at == 6 { 64 } else { 0 };
        PANEL_ROWS * self.qs_len + qh
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

    /// Whether this is the repacked form of `w` (its type and shape).
    pub fn matches(&self, w: &QMatrix<'_>) -> bool {
        w.ty == QuantFormat::Ggml(self.ty) && w.rows == self.rows && w.cols == self.cols
    }

    /// Bytes of one panel of 16 rows.
    pub(crate) fn panel_bytes(&self) -> usize {
        let l = repack_layout(self.ty).expect("repacked types have a layout");
        self.cols / 32 * l.panel_block()
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
    /// Q5_0, Q8_0 and IQ4_NL), or `None` where the ISA reads the GGUF layout directly. The
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
    let qs = &blk[l.qs_at..l.qs_at + l.qs_len];
    for (j, q) in qs.chunks_exact(4).enumerate() {
        dst[64 * j + 4 * r..][..4].copy_from_slice(q);
    }
    let mut at = PANEL_ROWS * l.qs_len;
    if l.qs_at == 6 {
        // Q5_0's qh.
        dst[at + 4 * r..][..4].copy_from_slice(&blk[2..6]);
        at += 64;
    }
    dst[at + 2 * r..][..2].copy_from_slice(&blk[0..2]);
    if l.qs_at == 4 {
        // Q4_1's minimum.
        dst[at + 32 + 2 * r..][..2].copy_from_slice(&blk[2..4]);
    }
}
