//! The weight formats the CUDA kernels read.

use tinyrt_kernels::quant::{GgmlType, QuantFormat};

/// A weight format with a CUDA matrix-vector, matrix-matrix and embedding-lookup kernel.
///
/// All but [`WeightType::NF4`] are ggml types with the GGUF block layout. NF4 is tinyrt's
/// 4-bit NormalFloat format (QLoRA) in IQ4_NL's block layout: 32 weights per 18-byte block
/// (f16 scale, 16 bytes of indices, low nibbles = elements 0..15, high nibbles = 16..31),
/// codebook round(127 × level).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum WeightType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
    IQ4_NL,
    NF4,
}

impl WeightType {
    pub const ALL: [WeightType; 11] = [
        WeightType::F32,
        WeightType::F16,
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::Q5_0,
        WeightType::Q8_0,
        WeightType::Q4_K,
        WeightType::Q5_K,
        WeightType::Q6_K,
        WeightType::IQ4_NL,
        WeightType::NF4,
    ];

    /// The kernels' storage format this CUDA type reads: block size, bytes and layout come
    /// from `tinyrt_kernels::quant` (the one format table), not restated here.
    pub const fn format(self) -> QuantFormat {
        match self {
            WeightType::F32 => QuantFormat::Ggml(GgmlType::F32),
            WeightType::F16 => QuantFormat::Ggml(GgmlType::F16),
            WeightType::Q4_0 => QuantFormat::Ggml(GgmlType::Q4_0),
            WeightType::Q4_1 => QuantFormat::Ggml(GgmlType::Q4_1),
            WeightType::Q5_0 => QuantFormat::Ggml(GgmlType::Q5_0),
            WeightType::Q8_0 => QuantFormat::Ggml(GgmlType::Q8_0),
            WeightType::Q4_K => QuantFormat::Ggml(GgmlType::Q4_K),
            WeightType::Q5_K => QuantFormat::Ggml(GgmlType::Q5_K),
            WeightType::Q6_K => QuantFormat::Ggml(GgmlType::Q6_K),
            WeightType::IQ4_NL => QuantFormat::Ggml(GgmlType::IQ4_NL),
            WeightType::NF4 => QuantFormat::Nf4,
        }
    }

    /// Elements per block.
    pub const fn block_size(self) -> usize {
        self.format().block_size()
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        self.format().type_size()
    }

    /// Whether the matrix-vector kernel takes the activation quantized to Q8_1 (all but F32/F16).
    pub const fn is_quantized(self) -> bool {
        !matches!(self, WeightType::F32 | WeightType::F16)
    }

    /// Bytes of one row of `ncols` elements, or `None` when `ncols` is not a whole number of
    /// blocks (or, for the quantized formats, of 32-value activation blocks).
    pub fn row_bytes(self, ncols: usize) -> Option<usize> {
        let unit = if self.is_quantized() {
            self.block_size().max(32)
        } else {
            1
        };
        if ncols == 0 || !ncols.is_multiple_of(unit) {
            return None;
        }
        (ncols / self.block_size()).checked_mul(self.block_bytes())
    }

    /// The CUDA type reading `fmt`, if there is one.
    pub fn from_format(fmt: QuantFormat) -> Option<WeightType> {
        WeightType::ALL.into_iter().find(|w| w.format() == fmt)
    }

    /// The CUDA format for a ggml tensor type, if there is one.
    pub fn from_ggml(t: GgmlType) -> Option<WeightType> {
        WeightType::from_format(QuantFormat::Ggml(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_match_the_ggml_table() {
        for w in WeightType::ALL {
            assert_eq!(WeightType::from_format(w.format()), Some(w));
            if let Some(g) = GgmlType::ALL
                .iter()
                .copied()
                .find(|g| WeightType::from_ggml(*g) == Some(w))
            {
                assert_eq!(w.block_size(), g.block_size(), "{w:?}");
                assert_eq!(w.block_bytes(), g.type_size(), "{w:?}");
            } else {
                assert_eq!(w, WeightType::NF4);
            }
        }
        // The sizes the .cu sources hard-code (common.cuh's block structs).
        assert_eq!(WeightType::Q4_0.block_bytes(), 18);
        assert_eq!(WeightType::NF4.block_bytes(), 18);
        assert_eq!(WeightType::Q8_0.block_bytes(), 34);
        assert_eq!(WeightType::Q4_K.block_bytes(), 144);
        assert_eq!(WeightType::Q5_K.block_bytes(), 176);
        assert_eq!(WeightType::Q6_K.block_bytes(), 210);
    }

    #[test]
    fn row_bytes_rejects_partial_blocks() {
        assert_eq!(WeightType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(WeightType::Q4_0.row_bytes(48), None);
        assert_eq!(WeightType::Q6_K.row_bytes(512), Some(420));
        assert_eq!(WeightType::NF4.row_bytes(32), Some(18));
        assert_eq!(WeightType::NF4.row_bytes(48), None);
        assert_eq!(WeightType::F16.row_bytes(7), Some(14));
        assert_eq!(WeightType::F32.row_bytes(0), None);
    }
}
