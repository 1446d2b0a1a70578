//! Transformer ops on the CPU: norms, RoPE, activations, element-wise arithmetic, f16 row
//! conversion and causal GQA attention over a KV cache.
//!
//! # Dispatch
//! Every function takes the [`Isa`] first (chosen once by the caller and checked, e.g. by
//! `Model::load`) and calls that ISA's kernel through its table ([`Kernels::get`], the one
//! check that the CPU supports it). There is no fallback: an ISA this CPU lacks panics.
//! The RoPE types live in [`crate::cpu::rope`], attention in [`crate::cpu::attention`] and the
//! pool seam in [`crate::cpu::pool`]; they are re-exported here.
//!
//! # Shapes
//! Shapes are the caller's contract (they come from checked model hyperparameters, not from a
//! user): a mismatch is a bug and panics with a message. Values from a file that a constructor
//! checks (RoPE settings) give an [`OpsError`].
//!
//! # Numerics
//! The ops follow ggml's CPU backend (llama.cpp build 11434), which made the goldens; see the
//! scalar reference `cpu/scalar/ops/` for each op's exact recipe. The ops a model runs give
//! the same bits on every ISA (`tests/ggml_bits.rs`): GELU/GeGLU, SiLU/SwiGLU, the norms, RoPE
//! and the per-key attention path (every decode step) are computed with the very operations
//! of ggml's AVX-512 build, and match ggml's own outputs bit for bit on data written by
//! `tests/data/ops-ggml/gen_ops_ggml.c`. This matters because ggml rounds to f16 and to 8 bits
//! between ops: a last-bit difference can flip such a rounding and grow into tenths of a logit.
//! The tiled attention path (batches of 64+ tokens) and the softmax sum in other orders than
//! the scalar reference (within a few ulp; `tests/ops.rs`).

use crate::cpu::{Isa, Kernels};

pub use crate::cpu::attention::{
    attended_keys, attention, attention_invariant, attention_invariant_many, attention_parallel,
    AttnJob, AttnParams, AttnTile, InvariantCall, KvData, KvView, DECODE_KV_CHUNKS, GGML_FA_TILE_Q,
    GGML_SPLIT_KV_MIN_KEYS,
};
pub use crate::cpu::pool::{par_rows_mut, ParallelRun, RayonRun, Sequential, PAR_MIN_VALUES};
pub use crate::cpu::rope::{OpsError, RopeCache, RopeCfg, RopeMode};

/// The kernels of `isa`: the one check that the CPU supports it is [`Kernels::get`]'s.
///
/// # Panics
/// When the CPU lacks `isa` (callers choose the ISA once and check it, e.g. `Model::load`).
#[inline]
pub(crate) fn kernels(isa: Isa) -> &'static Kernels {
    Kernels::get(isa).unwrap_or_else(|| panic!("the {} kernels on a CPU without {0}", isa.name()))
}

/// Runs op `$name` of the kernels of `$isa`.
macro_rules! run {
    ($isa:expr, $name:ident ( $($arg:expr),* )) => {{
        let k = kernels($isa);
        // SAFETY: `k` came from `Kernels::get`, which checked that the CPU supports its ISA;
        // the shapes the kernels rely on were checked above.
        unsafe { (k.ops.$name)($($arg),*) }
    }};
}

// ---------------------------------------------------------------------------------------------
// Norms

/// RMSNorm of each row of `x` (rows of `weight.len()` values), times `weight`, into `out`.
/// ggml: `ggml_mul(ggml_rms_norm(x, eps), weight)`.
pub fn rms_norm(isa: Isa, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "rms_norm: out length");
    out.copy_from_slice(x);
    rms_norm_inplace(isa, out, weight, eps)
}

/// [`rms_norm`] in place. Also the per-head Q/K norm of qwen3 / gemma3 (`weight` of one head).
pub fn rms_norm_inplace(isa: Isa, x: &mut [f32], weight: &[f32], eps: f32) {
    check_rows("rms_norm", x.len(), weight.len());
    run!(isa, rms_norm_inplace(x, weight, eps))
}

/// LayerNorm of each row of `x` (rows of `weight.len()` values): subtract the mean, divide by
/// sqrt(variance + eps), times `weight`, plus `bias` when given (phi2, stablelm).
/// ggml: `ggml_add(ggml_mul(ggml_norm(x, eps), weight), bias)`.
pub fn layer_norm(
    isa: Isa,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
) {
    assert_eq!(x.len(), out.len(), "layer_norm: out length");
    out.copy_from_slice(x);
    layer_norm_inplace(isa, out, weight, bias, eps)
}

/// [`layer_norm`] in place.
pub fn layer_norm_inplace(isa: Isa, x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    check_rows("layer_norm", x.len(), weight.len());
    if let Some(b) = bias {
        assert_eq!(b.len(), weight.len(), "layer_norm: bias length");
    }
    run!(isa, layer_norm_inplace(x, weight, bias, eps))
}

fn check_rows(op: &str, len: usize, row: usize) {
    assert!(
        row > 0 && len.is_multiple_of(row),
        "{op}: length {len} is not a multiple of the row length {row}"
    );
}

// ---------------------------------------------------------------------------------------------
// RoPE

/// Rotates the first `cache.n_rot()` dimensions of every head of `x`
/// (`n_tokens × n_heads × head_dim`, token `t` at position `positions[t]`), in place.
///
/// # Panics
/// On a shape mismatch, `n_rot > head_dim`, or a position `>= cache.max_pos()`.
pub fn rope(
    isa: Isa,
    x: &mut [f32],
    n_heads: usize,
    head_dim: usize,
    positions: &[usize],
    cache: &RopeCache,
) {
    assert_eq!(
        x.len(),
        positions.len() * n_heads * head_dim,
        "rope: x must hold positions.len() × n_heads × head_dim values"
    );
    assert!(
        cache.n_rot() <= head_dim,
        "rope: n_rot {} > head_dim {head_dim}",
        cache.n_rot()
    );
    assert!(
        positions.is_empty() || n_heads * head_dim > 0,
        "rope: empty head shape"
    );
    if let Some(&p) = positions.iter().find(|&&p| p >= cache.max_pos()) {
        panic!("rope: position {p} beyond the cache ({})", cache.max_pos());
    }
    run!(isa, rope(x, n_heads, head_dim, positions, cache))
}

// ---------------------------------------------------------------------------------------------
// Softmax, activations, element-wise

/// GELU, tanh approximation, as ggml's CPU backend computes it for f32 (input and result
/// rounded to f16 through its lookup table; see `scalar::gelu_tanh_ggml`): the same table on
/// every ISA, so the bits equal ggml's.
pub fn gelu_tanh_inplace(isa: Isa, x: &mut [f32]) {
    run!(isa, gelu_tanh_inplace(x))
}

/// GELU's tanh approximation in f32 without ggml's f16 table (`scalar::gelu_tanh_exact`,
/// PyTorch's formula), for models whose reference is Hugging Face: one scalar loop on every
/// ISA (the same bits everywhere; an element-wise op beside the matrix products).
pub fn gelu_tanh_exact_inplace(x: &mut [f32]) {
    crate::cpu::scalar::ops::gelu_tanh_exact_inplace(x)
}

/// `gate = gelu_tanh_exact(gate) * up` (see [`gelu_tanh_exact_inplace`]).
pub fn geglu_tanh_exact_inplace(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu_tanh_exact: lengths");
    crate::cpu::scalar::ops::geglu_tanh_exact_inplace(gate, up)
}

/// The exact GELU, `x/2 · (1 + erf(x/√2))` (BERT; see `scalar::gelu_erf` for the recipe): the
/// same bits on every ISA.
pub fn gelu_erf_inplace(isa: Isa, x: &mut [f32]) {
    run!(isa, gelu_erf_inplace(x))
}

/// `out = silu(gate) * up`.
pub fn swiglu(isa: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert_eq!(gate.len(), out.len(), "swiglu: lengths");
    out.copy_from_slice(gate);
    swiglu_inplace(isa, out, up)
}

/// `gate = silu(gate) * up`.
pub fn swiglu_inplace(isa: Isa, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: lengths");
    run!(isa, swiglu_inplace(gate, up))
}

/// `out = gelu_tanh(gate) * up` (ggml `geglu`, same f16 table semantics as [`gelu_tanh_inplace`]).
pub fn geglu_tanh(isa: Isa, gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert_eq!(gate.len(), out.len(), "geglu_tanh: lengths");
    out.copy_from_slice(gate);
    geglu_tanh_inplace(isa, out, up)
}

/// `gate = gelu_tanh(gate) * up`.
pub fn geglu_tanh_inplace(isa: Isa, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu_tanh: lengths");
    run!(isa, geglu_tanh_inplace(gate, up))
}

/// `x += y`.
pub fn add_inplace(isa: Isa, x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "add_inplace: lengths");
    run!(isa, add_inplace(x, y))
}

/// `x *= s`.
pub fn scale_inplace(isa: Isa, x: &mut [f32], s: f32) {
    run!(isa, scale_inplace(x, s))
}

/// f32 → f16 bits, round to nearest even (F16C's rounding), e.g. to store K/V rows.
pub fn f32_to_f16_row(isa: Isa, src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_f16_row: lengths");
    run!(isa, f32_to_f16_row(src, dst))
}

/// f16 bits → f32 (exact).
pub fn f16_to_f32_row(isa: Isa, src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32_row: lengths");
    run!(isa, f16_to_f32_row(src, dst))
}
