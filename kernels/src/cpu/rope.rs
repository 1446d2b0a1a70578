//! RoPE settings and the per-model table of cos/sin that every ISA's `rope` kernel reads.

use thiserror::Error;

/// Invalid settings for an op (from a model file).
#[derive(Debug, Error, PartialEq)]
pub enum OpsError {
    #[error("rope: rotary dimension count {0} must be even and non-zero")]
    RopeDims(usize),
    #[error("rope: {got} frequency factors given, {need} needed (n_rot / 2)")]
    RopeFreqFactors { got: usize, need: usize },
    #[error("rope: invalid {name} = {value}")]
    RopeParam { name: &'static str, value: f32 },
}

/// Which pairs of a head RoPE rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// GGUF llama convention (`LLAMA_ROPE_TYPE_NORM`): adjacent pairs `(x[2i], x[2i+1])`.
    Normal,
    /// GPT-NeoX convention (phi2, gemma, qwen, stablelm): `(x[i], x[i + n_rot/2])`.
    Neox,
}

/// RoPE settings, mirroring the arguments of ggml's `ggml_rope_ext`.
///
/// Angle of pair `i` (0 ≤ i < n_rot/2) at position `p`, as ggml computes it:
/// `theta = freq_scale * p * freq_base^(-2i/n_rot) / freq_factors[i]` (the power is built by
/// repeated multiplication in f32, like ggml), then `cos(theta) * attn_factor`,
/// `sin(theta) * attn_factor`. With `ext_factor != 0` the YaRN ramp between interpolated and
/// extrapolated angles and YaRN's magnitude scaling are applied exactly as in ggml's `rope_yarn`.
#[derive(Clone, Debug)]
pub struct RopeCfg<'a> {
    pub mode: RopeMode,
    /// Rotated dimensions per head (`rope.dimension_count`); the rest of the head is untouched.
    pub n_rot: usize,
    pub freq_base: f32,
    /// 1 / (linear scaling factor).
    pub freq_scale: f32,
    /// Llama-3 `rope_freqs.weight`: theta of pair `i` is divided by `freq_factors[i]`.
    pub freq_factors: Option<&'a [f32]>,
    /// YaRN extrapolation mix; 0 disables YaRN (the default and all current fixtures).
    pub ext_factor: f32,
    /// Multiplies cos and sin (YaRN attention factor); 1 by default.
    pub attn_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// Training context for YaRN's correction dims; unused when `ext_factor == 0`.
    pub n_ctx_orig: usize,
}

impl RopeCfg<'static> {
    /// Plain RoPE: no scaling, no frequency factors, no YaRN (llama.cpp's defaults).
    pub fn new(mode: RopeMode, n_rot: usize, freq_base: f32) -> Self {
        RopeCfg {
            mode,
            n_rot,
            freq_base,
            freq_scale: 1.0,
            freq_factors: None,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 0,
        }
    }
}

/// Precomputed cos/sin of every position `0..max_pos` for one [`RopeCfg`]. Build it once per
/// model (per distinct RoPE setting, e.g. Gemma-3's local and global layers).
#[derive(Clone, Debug)]
pub struct RopeCache {
    mode: RopeMode,
    n_rot: usize,
    max_pos: usize,
    /// `max_pos` rows of `n_rot` values. Normal: `[cos0, sin0, cos1, sin1, ...]` (ggml's own
    /// layout, lined up with the pairs it rotates); Neox: `[cos0..cos_{h-1}, sin0..sin_{h-1}]`.
    table: Vec<f32>,
}

impl RopeCache {
    pub fn new(cfg: &RopeCfg, max_pos: usize) -> Result<Self, OpsError> {
        let n_rot = cfg.n_rot;
        if n_rot == 0 || !n_rot.is_multiple_of(2) {
            return Err(OpsError::RopeDims(n_rot));
        }
        let half = n_rot / 2;
        if let Some(ff) = cfg.freq_factors {
            if ff.len() < half {
                return Err(OpsError::RopeFreqFactors {
                    got: ff.len(),
                    need: half,
                });
            }
        }
        for (name, value) in [("freq_base", cfg.freq_base), ("freq_scale", cfg.freq_scale)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(OpsError::RopeParam { name, value });
            }
        }
        for (name, value) in [
            ("ext_factor", cfg.ext_factor),
            ("attn_factor", cfg.attn_factor),
            ("beta_fast", cfg.beta_fast),
            ("beta_slow", cfg.beta_slow),
        ] {
            if !value.is_finite() {
                return Err(OpsError::RopeParam { name, value });
            }
        }
        // ggml `ggml_compute_forward_rope_flt` + `ggml_rope_cache_init` + `rope_yarn`.
        let theta_scale = cfg.freq_base.powf(-2.0 / n_rot as f32);
        let corr_dims = yarn_corr_dims(
            n_rot,
            cfg.n_ctx_orig,
            cfg.freq_base,
            cfg.beta_fast,
            cfg.beta_slow,
        );
        let mut table = vec![0.0f32; max_pos * n_rot];
        for (pos, row) in table.chunks_exact_mut(n_rot).enumerate() {
            let mut theta = pos as i32 as f32;
            for i in 0..half {
                let ff = cfg.freq_factors.map_or(1.0, |f| f[i]);
                let (c, s) = rope_yarn(
                    theta / ff,
                    cfg.freq_scale,
                    corr_dims,
                    2 * i,
                    cfg.ext_factor,
                    cfg.attn_factor,
                );
                match cfg.mode {
                    RopeMode::Normal => {
                        row[2 * i] = c;
                        row[2 * i + 1] = s;
                    }
                    RopeMode::Neox => {
                        row[i] = c;
                        row[half + i] = s;
                    }
                }
                theta *= theta_scale;
            }
        }
        Ok(RopeCache {
            mode: cfg.mode,
            n_rot,
            max_pos,
            table,
        })
    }

    pub fn mode(&self) -> RopeMode {
        self.mode
    }

    pub fn n_rot(&self) -> usize {
        self.n_rot
    }

    /// Positions `0..max_pos()` are in the table.
    pub fn max_pos(&self) -> usize {
        self.max_pos
    }

    /// The `n_rot` table values of one position (layout in the field's comment).
    #[inline]
    pub fn row(&self, pos: usize) -> &[f32] {
        &self.table[pos * self.n_rot..(pos + 1) * self.n_rot]
    }
}

/// ggml `ggml_rope_yarn_corr_dims`.
fn yarn_corr_dims(
    n_dims: usize,
    n_ctx_orig: usize,
    freq_base: f32,
    beta_fast: f32,
    beta_slow: f32,
) -> [f32; 2] {
    let corr_dim = |n_rot: f32| -> f32 {
        n_dims as f32 * (n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
            / (2.0 * freq_base.ln())
    };
    let start = corr_dim(beta_fast).floor();
    let end = corr_dim(beta_slow).ceil();
    [start.max(0.0), end.min(n_dims as f32 - 1.0)]
}

/// ggml `rope_yarn`: (cos, sin) of one pair.
fn rope_yarn(
    theta_extrap: f32,
    freq_scale: f32,
    corr_dims: [f32; 2],
    i0: usize,
    ext_factor: f32,
    attn_factor: f32,
) -> (f32, f32) {
    let theta_interp = freq_scale * theta_extrap;
    let mut theta = theta_interp;
    let mut mscale = attn_factor;
    if ext_factor != 0.0 {
        let y = ((i0 / 2) as f32 - corr_dims[0]) / (corr_dims[1] - corr_dims[0]).max(0.001);
        let ramp = 1.0 - y.clamp(0.0, 1.0);
        let ramp_mix = ramp * ext_factor;
        theta = theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix;
        mscale *= 1.0 + 0.1 * (1.0 / freq_scale).ln();
    }
    (theta.cos() * mscale, theta.sin() * mscale)
}
