//! The shapes of an attention call as the per-ISA kernels see them: the KV cache view, one
//! (token, kv head) job of the per-key path and one tile of the tiled path.

use std::ops::Range;

/// The elements of one K or V cache: f32 values or f16 bits (llama.cpp's default cache type).
#[derive(Clone, Copy, Debug)]
pub enum KvData<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

impl KvData<'_> {
    pub fn len(&self) -> usize {
        match self {
            KvData::F32(d) => d.len(),
            KvData::F16(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One layer's KV cache. Layout of both K and V: `[position][kv_head][head_dim]`, contiguous
/// (one position is a row of `n_kv_heads * head_dim` values, exactly what the K/V projection
/// of one token produces). The slices may be longer than the positions in use.
#[derive(Clone, Copy, Debug)]
pub struct KvView<'a> {
    pub k: KvData<'a>,
    pub v: KvData<'a>,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl KvView<'_> {
    /// Positions the cache slices can hold.
    pub fn capacity(&self) -> usize {
        let row = self.n_kv_heads * self.head_dim;
        self.k.len().min(self.v.len()).checked_div(row).unwrap_or(0)
    }
}

/// Settings of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    /// Query heads; a multiple of the cache's `n_kv_heads` (GQA: `n_heads / n_kv_heads` query
    /// heads share one K/V head, query head `h` reads kv head `h / (n_heads / n_kv_heads)`).
    pub n_heads: usize,
    /// Multiplies Q·K (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// Sliding window (llama.cpp `LLAMA_SWA_TYPE_STANDARD`, Gemma-3 local layers): the query at
    /// position `p` attends keys at positions `p' ` with `p - p' < window`, i.e. `(p - window, p]`.
    pub window: Option<usize>,
    /// Causal (decoders): token `t` attends keys up to its own position. Not causal (encoders,
    /// BERT's bidirectional attention): every token of the call attends every key of the call
    /// and before it, `0..n_past + n_tokens`; `window` must then be `None`.
    pub causal: bool,
}

/// The work of one query token and one kv head (for all or a run of the query heads that share
/// it), handed to the per-ISA kernels.
#[derive(Clone, Copy, Debug)]
pub struct AttnJob<'a> {
    pub kv: &'a KvView<'a>,
    pub kv_head: usize,
    pub head_dim: usize,
    /// Keys `key_lo..key_hi` (cache positions) are attended.
    pub key_lo: usize,
    pub key_hi: usize,
    pub scale: f32,
    /// ggml's per-key ("vec") path instead of its tiled path; see [`attention`].
    pub ggml_vec_path: bool,
    /// Write per head the unnormalised accumulator, the running max M and the sum S
    /// (`head_dim + 2` values) instead of the output: one chunk of a split key range.
    pub partial: bool,
}

/// A tile of consecutive query tokens × the query heads of one kv head, for ggml's tiled path
/// (batches of at least [`GGML_FA_TILE_Q`] tokens). Handed to the per-ISA kernels.
#[derive(Clone, Copy, Debug)]
pub struct AttnTile<'a> {
    pub kv: &'a KvView<'a>,
    pub kv_head: usize,
    pub head_dim: usize,
    /// Query heads per token in the tile: the GQA group of `kv_head`, or a run of its heads.
    pub group: usize,
    /// Position of the tile's first token; token `t` is at `first_pos + t`.
    pub first_pos: usize,
    pub n_tokens: usize,
    pub window: Option<usize>,
    pub scale: f32,
}

impl AttnTile<'_> {
    /// Token `t` of the tile as a one-token job on ggml's tiled path: the keys its position
    /// attends (causal, minus the sliding window) for all heads of the group.
    pub fn token_job(&self, t: usize) -> AttnJob<'_> {
        let keys = attended_keys(self.first_pos + t, self.window);
        AttnJob {
            kv: self.kv,
            kv_head: self.kv_head,
            head_dim: self.head_dim,
            key_lo: keys.start,
            key_hi: keys.end,
            scale: self.scale,
            ggml_vec_path: false,
            partial: false,
        }
    }

    /// The keys row `r` of the tile attends (rows are token-major, `group` query heads per
    /// token).
    pub fn row_keys(&self, r: usize) -> Range<usize> {
        attended_keys(self.first_pos + r / self.group, self.window)
    }

    /// The keys the first `rows` rows attend, all together: (lowest first key, highest end),
    /// `(usize::MAX, 0)` for no rows. Panics unless the cache holds them.
    pub fn key_span(&self, rows: usize) -> (usize, usize) {
        let (lo, hi) = (0..rows)
            .map(|r| self.row_keys(r))
            .fold((usize::MAX, 0), |(lo, hi), k| {
                (lo.min(k.start), hi.max(k.end))
            });
        let (hd, kv) = (self.head_dim, self.kv);
        assert!(
            hi == 0
                || (hi - 1) * kv.n_kv_heads * hd + (self.kv_head + 1) * hd
                    <= kv.k.len().min(kv.v.len()),
            "attention: cache too short"
        );
        (lo, hi)
    }

    /// Runs `attend` on each token of the tile as its one-token job ([`AttnTile::token_job`])
    /// with its rows of `q_tile` and `out_tile`: every ISA's fallback for tiles its tile kernel
    /// does not take.
    pub fn by_token(
        &self,
        q_tile: &[f32],
        out_tile: &mut [f32],
        mut attend: impl FnMut(&AttnJob, &[f32], &mut [f32]),
    ) {
        let len = self.group * self.head_dim;
        for (t, (qt, ot)) in q_tile
            .chunks_exact(len)
            .zip(out_tile.chunks_exact_mut(len))
            .enumerate()
        {
            attend(&self.token_job(t), qt, ot);
        }
    }
}

/// Query tokens from which ggml's CPU flash attention switches to its tiled path
/// (`GGML_FA_TILE_Q` in `ggml-cpu/common.h`).
pub const GGML_FA_TILE_Q: usize = 64;

/// The key positions a query at `pos` attends (for tests and callers building masks).
pub fn attended_keys(pos: usize, window: Option<usize>) -> Range<usize> {
    window.map_or(0, |w| (pos + 1).saturating_sub(w))..pos + 1
}
