//! One trait per block format and one table of the formats ([`FORMATS`]), the way ggml's
//! `type_traits` and candle's `GgmlType` tie a type to its block, its activation type and its
//! references. Every list of formats (which ones quantize, which ones take the GEMM, which
//! ones have SIMD dot products, the test lists) is a query on [`FORMATS`].
//!
//! Adding a format: its block struct and scalar references in one file of this module (with
//! `block_format!` / `weight_format!` there), one row in [`FORMATS`], and, for fast paths, its
//! kernels in each `cpu/<isa>/dot` table (a test checks that every `simd` format has them).

use bytemuck::{Pod, Zeroable};

use super::{GgmlType, QuantFormat};

/// A block format: the GGUF block struct and the scalar dequantize / quantize references.
pub trait BlockFormat {
    const FORMAT: QuantFormat;
    /// One block, `#[repr(C)]` with GGUF's byte layout (a plain scalar for F32 / F16 / BF16).
    type Block: Pod;
    fn dequantize_row(x: &[Self::Block], y: &mut [f32]);
    fn quantize_row(x: &[f32], y: &mut [Self::Block]);
}

/// A format that weights are stored in: its dot product takes activations of [`Self::Act`]
/// (ggml's `vec_dot_type`).
pub trait WeightFormat: BlockFormat {
    type Act: BlockFormat;
    /// The scalar reference dot product (integer sums per block, f32 across blocks).
    fn vec_dot(w: &[Self::Block], a: &[<Self::Act as BlockFormat>::Block]) -> f32;
}

/// How a weight format maps onto the GEMM's common form (`cpu/gemm.rs`): sub-blocks of `kb`
/// values with one scale, value = s·(q − offset) (+ a minimum when `mins`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmForm {
    /// Values per sub-block (one scale each): 32, or 16 for Q6_K.
    pub kb: usize,
    /// The integer offset `o` subtracted from every code.
    pub offset: i32,
    /// Whether there is a per-sub-block minimum `mn`.
    pub mins: bool,
}

/// A scalar reference dot product on raw bytes (whole blocks of the weight format and of its
/// activation format).
pub type DotBytesFn = fn(w: &[u8], a: &[u8]) -> f32;

/// One row of [`FORMATS`]: a format, its byte-level references and what the fast paths do
/// with it.
#[derive(Clone, Copy)]
pub struct Format {
    pub format: QuantFormat,
    /// ggml's `vec_dot_type`; `None` for activation-only formats (Q8_1, Q8_K).
    pub vec_dot_type: Option<GgmlType>,
    /// Whole blocks of raw bytes (any alignment) into values.
    pub dequantize: fn(data: &[u8], out: &mut [f32]),
    /// Values into whole blocks of raw bytes (any alignment).
    pub quantize: fn(x: &[f32], out: &mut [u8]),
    /// The scalar reference dot product on raw bytes, for weight formats.
    pub vec_dot: Option<DotBytesFn>,
    /// The GEMM's form, for the formats whose matrix products take the GEMM on every ISA.
    pub gemm: Option<GemmForm>,
    /// Whether AVX2 and AVX-512 have their own dot-product kernel (otherwise they run the
    /// scalar reference).
    pub simd: bool,
}

/// A table row for a weight format.
pub const fn weight<F: WeightFormat>(gemm: Option<GemmForm>, simd: bool) -> Format {
    Format {
        format: F::FORMAT,
        vec_dot_type: match <F::Act as BlockFormat>::FORMAT {
            QuantFormat::Ggml(t) => Some(t),
            QuantFormat::Nf4 => panic!("NF4 is not an activation format"),
        },
        dequantize: dequantize_bytes::<F>,
        quantize: quantize_bytes::<F>,
        vec_dot: Some(dot_bytes::<F>),
        gemm,
        simd,
    }
}

/// A table row for an activation-only format.
pub const fn activation<F: BlockFormat>() -> Format {
    Format {
        format: F::FORMAT,
        vec_dot_type: None,
        dequantize: dequantize_bytes::<F>,
        quantize: quantize_bytes::<F>,
        vec_dot: None,
        gemm: None,
        simd: false,
    }
}

const fn gemm(kb: usize, offset: i32, mins: bool) -> Option<GemmForm> {
    Some(GemmForm { kb, offset, mins })
}

use super::float::{BF16, F16, F32};
use super::kquants::{Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K};
use super::legacy::{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1};
use super::lut4::{IQ4_NL, NF4};

/// Every format this crate supports.
pub static FORMATS: [Format; 17] = [
    weight::<F32>(None, true),
    weight::<F16>(None, true),
    weight::<BF16>(None, true),
    weight::<Q4_0>(gemm(32, 8, false), true),
    weight::<Q4_1>(gemm(32, 0, true), true),
    weight::<Q5_0>(gemm(32, 16, false), true),
    weight::<Q5_1>(None, true),
    weight::<Q8_0>(gemm(32, 128, false), true),
    activation::<Q8_1>(),
    weight::<Q2_K>(None, false),
    weight::<Q3_K>(None, false),
    weight::<Q4_K>(gemm(32, 0, true), true),
    weight::<Q5_K>(None, true),
    weight::<Q6_K>(gemm(16, 32, false), true),
    activation::<Q8_K>(),
    weight::<IQ4_NL>(gemm(32, 128, false), true),
    weight::<NF4>(None, true),
];

/// The table row of `fmt`, `None` when this crate does not support it.
pub fn format(fmt: impl Into<QuantFormat>) -> Option<&'static Format> {
    let fmt = fmt.into();
    FORMATS.iter().find(|f| f.format == fmt)
}

/// The formats weights can be stored in (those with a dot product).
pub fn weight_formats() -> impl Iterator<Item = QuantFormat> {
    FORMATS
        .iter()
        .filter(|f| f.vec_dot.is_some())
        .map(|f| f.format)
}

/// The weight formats with their own AVX2 / AVX-512 dot-product kernels.
pub fn simd_formats() -> impl Iterator<Item = QuantFormat> {
    FORMATS.iter().filter(|f| f.simd).map(|f| f.format)
}

/// The weight formats whose matrix products take the GEMM, with their form.
pub fn gemm_formats() -> impl Iterator<Item = (GgmlType, GemmForm)> {
    FORMATS.iter().filter_map(|f| match (f.format, f.gemm) {
        (QuantFormat::Ggml(t), Some(g)) => Some((t, g)),
        _ => None,
    })
}

/// Runs a typed row dequantizer over raw bytes; blocks are copied out one at a time when the
/// bytes are not aligned for the block (GGUF data is usually aligned, arbitrary slices need
/// not be).
fn dequantize_bytes<F: BlockFormat>(data: &[u8], out: &mut [f32]) {
    let bs = F::FORMAT.block_size();
    match bytemuck::try_cast_slice::<u8, F::Block>(data) {
        Ok(blocks) => F::dequantize_row(blocks, out),
        Err(_) => {
            for (chunk, o) in data
                .chunks_exact(std::mem::size_of::<F::Block>())
                .zip(out.chunks_exact_mut(bs))
            {
                let b: F::Block = bytemuck::pod_read_unaligned(chunk);
                F::dequantize_row(std::slice::from_ref(&b), o);
            }
        }
    }
}

fn quantize_bytes<F: BlockFormat>(x: &[f32], out: &mut [u8]) {
    let bs = F::FORMAT.block_size();
    match bytemuck::try_cast_slice_mut::<u8, F::Block>(out) {
        Ok(blocks) => F::quantize_row(x, blocks),
        Err(_) => {
            for (xs, chunk) in x
                .chunks_exact(bs)
                .zip(out.chunks_exact_mut(std::mem::size_of::<F::Block>()))
            {
                let mut b = F::Block::zeroed();
                F::quantize_row(xs, std::slice::from_mut(&mut b));
                chunk.copy_from_slice(bytemuck::bytes_of(&b));
            }
        }
    }
}

/// Views bytes as blocks, copying them out when they are not aligned for `B`.
fn blocks_of<B: Pod>(data: &[u8]) -> std::borrow::Cow<'_, [B]> {
    match bytemuck::try_cast_slice::<u8, B>(data) {
        Ok(blocks) => std::borrow::Cow::Borrowed(blocks),
        Err(_) => std::borrow::Cow::Owned(
            data.chunks_exact(std::mem::size_of::<B>())
                .map(bytemuck::pod_read_unaligned)
                .collect(),
        ),
    }
}

fn dot_bytes<F: WeightFormat>(w: &[u8], a: &[u8]) -> f32 {
    F::vec_dot(
        &blocks_of::<F::Block>(w),
        &blocks_of::<<F::Act as BlockFormat>::Block>(a),
    )
}

/// Declares the marker type of a block format and its [`BlockFormat`] impl.
macro_rules! block_format {
    ($name:ident, $fmt:expr, $block:ty, $deq:path, $q:path) => {
        #[doc = concat!("The ", stringify!($name), " format (see [`crate::quant::BlockFormat`]).")]
        #[allow(non_camel_case_types)]
        pub struct $name;
        impl $crate::quant::BlockFormat for $name {
            const FORMAT: $crate::quant::QuantFormat = $fmt;
            type Block = $block;
            fn dequantize_row(x: &[$block], y: &mut [f32]) {
                $deq(x, y)
            }
            fn quantize_row(x: &[f32], y: &mut [$block]) {
                $q(x, y)
            }
        }
    };
}

/// [`block_format!`] plus the [`WeightFormat`] impl (activation format and dot product).
macro_rules! weight_format {
    ($name:ident, $fmt:expr, $block:ty, $deq:path, $q:path, $act:ty, $dot:path) => {
        block_format!($name, $fmt, $block, $deq, $q);
        impl $crate::quant::WeightFormat for $name {
            type Act = $act;
            fn vec_dot(w: &[$block], a: &[<$act as $crate::quant::BlockFormat>::Block]) -> f32 {
                $dot(w, a)
            }
        }
    };
}
