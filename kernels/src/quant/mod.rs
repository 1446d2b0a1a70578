//! Quantization formats: the ggml type table and one module per format family.
//!
//! The table follows `ggml_type` of ggml (ggml.h): ids, block sizes (elements per block) and
//! bytes per block. Removed ids (4, 5, 31..33, 36..38) are reported as unknown.
//!
//! Every supported format has a `#[repr(C)]` block struct with GGUF's exact byte layout (ggml's
//! `ggml-common.h`, size asserted at compile time) and three scalar references, named after
//! ggml's: `dequantize_row_*`, `quantize_row_*` (ggml's `quantize_row_*_ref` algorithm, so the
//! bytes match `llama-quantize` without an importance matrix) and `vec_dot_*` (integer sum per
//! block times the block scales, f32 accumulation across blocks, as ggml's scalar path).
//! Fast per-ISA kernels live in [`crate::cpu`] and are tested against these references.
//!
//! Each format is a marker type implementing [`BlockFormat`] (and [`WeightFormat`] for weight
//! formats: activation type and dot product), declared next to its references, and one row of
//! [`FORMATS`]. Every list of formats is a query on that table: [`format`], [`weight_formats`],
//! [`simd_formats`], [`gemm_formats`], [`is_supported`], [`vec_dot_type`], and the byte-level
//! [`dequantize`] / [`quantize`] / [`vec_dot`] dispatch.
//!
//! | weight type | module | elements / block | bytes / block | activation type of its dot |
//! | --- | --- | --- | --- | --- |
//! | F32 | [`float`] | 1 | 4 | F32 ([`vec_dot_f32`]) |
//! | F16 | [`float`] | 1 | 2 | F32 ([`vec_dot_f16_f32`]) |
//! | BF16 | [`float`] | 1 | 2 | F32 ([`vec_dot_bf16_f32`]) |
//! | Q4_0 | [`legacy`] | 32 | 18 | Q8_0 |
//! | Q4_1 | [`legacy`] | 32 | 20 | Q8_1 |
//! | Q5_0 | [`legacy`] | 32 | 22 | Q8_0 |
//! | Q5_1 | [`legacy`] | 32 | 24 | Q8_1 |
//! | Q8_0 | [`legacy`] | 32 | 34 | Q8_0 |
//! | Q8_1 | [`legacy`] | 32 | 36 | (activation only) |
//! | Q2_K, Q3_K, Q4_K, Q5_K, Q6_K | [`kquants`] | 256 | 84, 110, 144, 176, 210 | Q8_K |
//! | Q8_K | [`kquants`] | 256 | 292 | (activation only) |
//! | IQ4_NL | [`lut4`] | 32 | 18 | Q8_0 |
//! | NF4 (tinyrt's own, no GGUF id) | [`lut4`] | 32 | 18 | Q8_0 |
//!
//! ggml itself pairs F16 and BF16 weights with F16 / BF16 activations; these references take
//! F32 activations (more accurate, no conversion pass). A kernel table that wants llama.cpp's
//! exact numbers for F16 / BF16 weights has to convert the activations first.
//!
//! The `quantize_row_q8_*` here are ggml's `_ref` quantizers (`id = 1 / d`, `roundf` ties away
//! from zero for Q8_0 / Q8_1), the bytes of a Q8_0 *weight* file. At run time llama.cpp's SIMD
//! code quantizes *activations* slightly differently (ties to even; on x86 also
//! `id = 127 / amax`), which can flip a quant on rare ties: the activation quantizers that match
//! it live with the fast kernels in [`crate::cpu`]. Q8_K has one algorithm for both uses.
//!
//! The `unpack_*` helpers decode a block's packed quants into one byte per element, in element
//! order: the plain statement of each layout, and a fast path for the scalar references.
//!
//! [`dequantize`], [`quantize`], [`vec_dot`] and the [`QuantFormat`] forms work on raw bytes (a whole
//! number of blocks, any alignment) and return a [`QuantError`] for unsupported types or wrong
//! lengths instead of panicking. The typed row functions panic on mismatched slice lengths:
//! that is a programming error, not bad input.

#[macro_use]
mod format;
pub mod float;
pub mod kquants;
pub mod legacy;
pub mod lut4;
mod types;

pub use float::{
    dequantize_row_bf16, dequantize_row_f16, dequantize_row_f32, quantize_row_bf16,
    quantize_row_f16, quantize_row_f32, vec_dot_bf16_f32, vec_dot_f16_f32, vec_dot_f32,
};
pub use format::{
    activation, format, gemm_formats, simd_formats, weight, weight_formats, BlockFormat,
    DotBytesFn, Format, GemmForm, WeightFormat, FORMATS,
};
pub use kquants::{
    dequantize_row_q2_K, dequantize_row_q3_K, dequantize_row_q4_K, dequantize_row_q5_K,
    dequantize_row_q6_K, dequantize_row_q8_K, quantize_row_q2_K, quantize_row_q3_K,
    quantize_row_q4_K, quantize_row_q5_K, quantize_row_q6_K, quantize_row_q8_K, vec_dot_q2_K_q8_K,
    vec_dot_q3_K_q8_K, vec_dot_q4_K_q8_K, vec_dot_q5_K_q8_K, vec_dot_q6_K_q8_K, BlockQ2K, BlockQ3K,
    BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K,
};
pub use legacy::{
    dequantize_row_q4_0, dequantize_row_q4_1, dequantize_row_q5_0, dequantize_row_q5_1,
    dequantize_row_q8_0, dequantize_row_q8_1, quantize_row_q4_0, quantize_row_q4_1,
    quantize_row_q5_0, quantize_row_q5_1, quantize_row_q8_0, quantize_row_q8_1, vec_dot_q4_0_q8_0,
    vec_dot_q4_1_q8_1, vec_dot_q5_0_q8_0, vec_dot_q5_1_q8_1, vec_dot_q8_0_q8_0, BlockQ4_0,
    BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK4_0, QK4_1, QK5_0, QK5_1, QK8_0,
    QK8_1,
};
pub use lut4::{
    dequantize_row_iq4_nl, dequantize_row_nf4, quantize_row_iq4_nl, quantize_row_nf4,
    vec_dot_iq4_nl_q8_0, vec_dot_nf4_q8_0, BlockIQ4NL, BlockNF4, KVALUES_IQ4NL, KVALUES_NF4,
    QK4_NL, QK_NF4,
};
pub use types::{GgmlType, TypeInfo};

/// An error from the byte-level entry points.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("type {0} is not supported yet")]
    Unsupported(&'static str),
    #[error("{values} values are not a whole number of {ty} blocks of {block_size}")]
    NotWholeBlocks {
        ty: &'static str,
        values: usize,
        block_size: usize,
    },
    #[error("{ty}: {values} values need {expected} bytes, got {got}")]
    ByteLength {
        ty: &'static str,
        values: usize,
        expected: usize,
        got: usize,
    },
}

/// A tensor storage format: a ggml type, or NF4, tinyrt's own 4-bit format, which has no GGUF
/// type id (see [`lut4`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    Ggml(GgmlType),
    Nf4,
}

impl QuantFormat {
    pub const fn name(self) -> &'static str {
        match self {
            QuantFormat::Ggml(t) => t.name(),
            QuantFormat::Nf4 => "NF4",
        }
    }
    /// Elements per block.
    pub const fn block_size(self) -> usize {
        match self {
            QuantFormat::Ggml(t) => t.block_size(),
            QuantFormat::Nf4 => QK_NF4,
        }
    }
    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        match self {
            QuantFormat::Ggml(t) => t.type_size(),
            QuantFormat::Nf4 => std::mem::size_of::<BlockNF4>(),
        }
    }
    /// Whether this crate has block struct and references for the format.
    pub fn is_supported(self) -> bool {
        format(self).is_some()
    }
    /// The activation format this weight format's dot product takes, `None` for
    /// activation-only or unsupported formats.
    pub fn vec_dot_type(self) -> Option<GgmlType> {
        format(self).and_then(|f| f.vec_dot_type)
    }
}

impl From<GgmlType> for QuantFormat {
    fn from(t: GgmlType) -> Self {
        QuantFormat::Ggml(t)
    }
}

impl std::fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether [`dequantize`] and [`quantize`] handle this type (it has a row in [`FORMATS`]).
pub fn is_supported(ty: GgmlType) -> bool {
    format(ty).is_some()
}

/// The activation type a weight type's dot product takes (ggml's `vec_dot_type`), or `None`
/// for types that are only activations (Q8_1, Q8_K) or are not supported.
pub fn vec_dot_type(ty: GgmlType) -> Option<GgmlType> {
    format(ty).and_then(|f| f.vec_dot_type)
}

/// Checks that `n_values` values in `n_bytes` bytes are whole blocks of `fmt`.
fn check_lengths(fmt: QuantFormat, n_values: usize, n_bytes: usize) -> Result<(), QuantError> {
    let (bs, ts) = (fmt.block_size(), fmt.type_size());
    if !n_values.is_multiple_of(bs) {
        return Err(QuantError::NotWholeBlocks {
            ty: fmt.name(),
            values: n_values,
            block_size: bs,
        });
    }
    let expected = (n_values / bs) * ts;
    if n_bytes != expected {
        return Err(QuantError::ByteLength {
            ty: fmt.name(),
            values: n_values,
            expected,
            got: n_bytes,
        });
    }
    Ok(())
}

/// Dequantizes whole blocks of `ty` from raw GGUF bytes into `out` (`out.len()` values).
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    dequantize_format(QuantFormat::Ggml(ty), data, out)
}

/// Quantizes `x` into whole blocks of `ty` as raw GGUF bytes.
pub fn quantize(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    quantize_format(QuantFormat::Ggml(ty), x, out)
}

/// [`dequantize`] for any [`QuantFormat`], NF4 included.
pub fn dequantize_format(fmt: QuantFormat, data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let f = format(fmt).ok_or(QuantError::Unsupported(fmt.name()))?;
    check_lengths(fmt, out.len(), data.len())?;
    (f.dequantize)(data, out);
    Ok(())
}

/// [`quantize`] for any [`QuantFormat`], NF4 included.
pub fn quantize_format(fmt: QuantFormat, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    let f = format(fmt).ok_or(QuantError::Unsupported(fmt.name()))?;
    check_lengths(fmt, x.len(), out.len())?;
    (f.quantize)(x, out);
    Ok(())
}

/// The scalar reference dot product of `n` weights of format `fmt` (raw bytes `w`) with `n`
/// activations already quantized to `fmt.vec_dot_type()` (raw bytes `a`), `n` implied by the
/// lengths. For tests and fallbacks: the fast kernels are in [`crate::cpu`].
pub fn vec_dot(fmt: QuantFormat, w: &[u8], a: &[u8]) -> Result<f32, QuantError> {
    let f = format(fmt).ok_or(QuantError::Unsupported(fmt.name()))?;
    let (Some(act), Some(dot)) = (f.vec_dot_type, f.vec_dot) else {
        return Err(QuantError::Unsupported(fmt.name()));
    };
    let n = w.len() / fmt.type_size() * fmt.block_size();
    check_lengths(fmt, n, w.len())?;
    check_lengths(QuantFormat::Ggml(act), n, a.len())?;
    Ok(dot(w, a))
}

/// IEEE half bits to f32 (exact).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// f32 to IEEE half bits, round to nearest even (ggml's `GGML_FP32_TO_FP16`).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// ggml's `nearest_int` (ggml-quants.c): round to nearest, ties to even, by adding 1.5 * 2^23
/// and reading the low mantissa bits. Exact for |x| <= 2^22; out of that range it returns
/// garbage as ggml does (ggml asserts), but never panics.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `GROUP_MAX_EPS`: groups with a smaller maximum are treated as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(31.49), 31);
    }

    #[test]
    fn dispatch_reports_errors() {
        let mut out = [0f32; 32];
        assert_eq!(
            dequantize(GgmlType::IQ2_XXS, &[0u8; 66], &mut [0f32; 256]),
            Err(QuantError::Unsupported("IQ2_XXS"))
        );
        assert_eq!(
            dequantize(GgmlType::IQ2_XXS, &[0u8; 66], &mut [0f32; 256])
                .unwrap_err()
                .to_string(),
            "type IQ2_XXS is not supported yet"
        );
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0u8; 17], &mut out),
            Err(QuantError::ByteLength { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0u8; 18], &mut out[..31]),
            Err(QuantError::NotWholeBlocks { .. })
        ));
        assert!(matches!(
            quantize(GgmlType::Q4_K, &[0f32; 32], &mut [0u8; 144]),
            Err(QuantError::NotWholeBlocks { .. })
        ));
    }

    #[test]
    fn unaligned_bytes_give_the_same_result() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
            .collect();
        for ty in [
            GgmlType::Q4_K,
            GgmlType::Q8_K,
            GgmlType::F32,
            GgmlType::Q4_0,
        ] {
            let n = x.len() / ty.block_size() * ty.type_size();
            let mut aligned = vec![0u32; n / 4 + 2];
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut aligned);
            quantize(ty, &x, &mut bytes[..n]).unwrap();
            let expected = bytes[..n].to_vec();
            quantize(ty, &x, &mut bytes[1..n + 1]).unwrap();
            assert_eq!(&bytes[1..n + 1], &expected[..], "{ty}");
            let mut a = vec![0f32; x.len()];
            let mut b = vec![0f32; x.len()];
            dequantize(ty, &expected, &mut a).unwrap();
            dequantize(ty, &bytes[1..n + 1], &mut b).unwrap();
            assert_eq!(a, b, "{ty}");
        }
    }
}
