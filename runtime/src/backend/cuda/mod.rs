//! The CUDA backend over `tinyrt-cuda`'s kernels.
//!
//! At load, every weight matrix is uploaded once in its GGUF layout (Q4_0 matrices also in
//! the planar layout the decode kernel reads with 128-bit loads); 1-D tensors (norm weights,
//! biases) are dequantized to f32 and uploaded. Per session: activation buffers, the KV cache
//! (f16, or f32 when the session asks), the Q8_1 activation buffer, the attention scratch and
//! the RoPE cos/sin tables (built on the host with the kernels' `RopeCache` from
//! `RopeParams::kernel_cfg`, as the CPU backend builds them, so Llama-3 frequency factors,
//! linear scaling and YaRN match it) live on the device.
//!
//! Batched ops (prefill) launch at once. Single-token ops (decode) are recorded and run at the
//! next sync point (`read`, `argmax`): planned with fusions (RMSNorm writing its Q8_1 copy for
//! the matmul after it, gate/up and SwiGLU/GeGLU in one matrix-vector kernel, RoPE of Q and K
//! with the KV-cache write in one kernel, a projection and the residual add after it as one
//! accumulating matrix-vector launch, the Q/K/V projections of one input as one `matvec3_*`
//! launch, the attention's combine pass writing the Q8_1 input of the output projection) and,
//! for a whole decode step, captured once as a graph
//! and replayed while the recorded step stays the same (positions and token ids live in device
//! memory; the KV length is rounded up to a whole attention split, so one graph serves 256
//! tokens). A failed capture falls back to plain launches. `TINYRT_CUDA_GRAPH=0` and
//! `TINYRT_CUDA_FUSE=0` turn graphs / fusions off (for comparisons). Batched products of
//! Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL, Q4_K and Q5_K matrices run on the int8 tensor cores over
//! Q8_1-quantized activations (`matmul_q8_1_mma`; `TINYRT_CUDA_MMQ=0`: the f32 tiled kernel),
//! other types on the f32 tiled kernel. Host ↔ device traffic per token: the token id, the
//! position, and the logits or (greedy, `Backend::argmax`) one id.
//!
//! LoRA terms (`Backend::set_lora`): each pair's `A` and `B` go to the device once, as f32,
//! kept while the session's set uses them (`lora.rs`); after each product whose weight has
//! terms, one recorded op per term runs `lora_down` (`t = A·x`) and `lora_up`
//! (`out += s·B·t`), f32 accumulation. A LoRA op keeps its product from fusing with the op
//! after it; a new set invalidates the captured graph.
//!
//! The [`Backend`] trait's methods return nothing, so the first CUDA error is kept and
//! reported through [`Backend::take_error`]; later ops are skipped.

mod exec;
mod lora;
mod plan;
mod state;
#[cfg(test)]
mod tests;
mod weights;

pub use weights::{
    cuda_format, requant_matrices, requant_matrices_with_progress, upload_plan, upload_source,
    CudaBackendError, CudaWeights, UploadPlan,
};

use std::sync::Arc;

use tinyrt_cuda::GluActivation;

use super::{AttnParams, Backend, BufId, PoolKind, RopeParams, WeightId};
use crate::kv_cache::KvCacheSpec;
use exec::Recorder;
use plan::{Exec, Op};
use state::{Buf, DeviceState, ATTENTION_CHUNK};

/// Whether an environment switch is off (`0`, `off`, `false`, `no`).
fn env_off(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.as_str(), "0" | "off" | "false" | "no"))
}

/// One session's GPU state.
pub struct CudaBackend {
    st: DeviceState,
    rec: Recorder,
    error: Option<String>,
}

impl CudaBackend {
    pub fn new(w: Arc<CudaWeights>) -> CudaBackend {
        CudaBackend {
            // TINYRT_CUDA_GRAPH=0 / TINYRT_CUDA_FUSE=0: plain launches, for comparisons.
            st: DeviceState::new(w, !env_off("TINYRT_CUDA_FUSE"), !env_off("TINYRT_CUDA_MMQ")),
            rec: Recorder::new(!env_off("TINYRT_CUDA_GRAPH")),
            error: None,
        }
    }

    /// Record or run `op` unless an error is pending; keep the first error.
    ///
    /// Single-token ops are recorded and run at the next sync point (`read`, `argmax`, or an
    /// op over more rows), fused and, for a whole decode step, as one CUDA graph. Everything
    /// that needs the host (token ids, positions, buffer sizes, RoPE tables) is done here, at
    /// record time, so the recorded launches never allocate or copy from the host.
    fn submit(&mut self, op: Op, pos0: usize) {
        if self.error.is_some() {
            return;
        }
        let r = (|| {
            // The packed encoder ops read the sequence boundaries written for them just
            // before: they run now, never recorded.
            let single = op.n() == 1 && !matches!(op, Op::AttentionPacked { .. } | Op::Pool { .. });
            // A second embed or another position range cannot share the device-side ids and
            // positions with the ops already recorded: run those first.
            let clash = matches!(op, Op::Embed { .. }) && self.rec.ops_embed
                || matches!(op, Op::Rope { .. } | Op::Attention { .. })
                    && self.st.pos_written.is_some_and(|p| p != (pos0, op.n()))
                    && self
                        .rec
                        .ops
                        .iter()
                        .any(|o| matches!(o, Op::Rope { .. } | Op::Attention { .. }));
            if !single || clash {
                self.flush()?;
            }
            self.st.prepare(&op, pos0)?;
            if single {
                self.rec.ops_embed |= matches!(op, Op::Embed { .. });
                self.rec.ops.push(op);
                Ok(())
            } else {
                self.st.exec(
                    std::slice::from_ref(&op),
                    Exec::Plain {
                        op: 0,
                        q8_ready: false,
                    },
                )
            }
        })();
        if let Err(e) = r {
            self.error = Some(e);
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        self.rec.flush(&self.st)
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        format!("cuda-{}", self.st.dev().name())
    }

    fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }

    fn alloc(&mut self, rows: usize, cols: usize) -> BufId {
        let data = match self.st.dev().alloc_zeros::<f32>((rows * cols).max(1)) {
            Ok(d) => d,
            Err(e) => {
                self.error.get_or_insert(e.to_string());
                // A one-float buffer keeps the id valid; every use of it fails its size check.
                match self.st.dev().alloc_zeros::<f32>(1) {
                    Ok(d) => d,
                    Err(e) => panic!("CUDA allocation of one float failed: {e}"),
                }
            }
        };
        self.st.bufs.push(Buf { rows, cols, data });
        BufId((self.st.bufs.len() - 1) as u32)
    }

    fn alloc_kv_cache(&mut self, spec: &KvCacheSpec) {
        if self.error.is_some() {
            return;
        }
        let r = self.flush().and_then(|()| self.st.alloc_kv(spec));
        if let Err(e) = r {
            self.error = Some(e);
        }
    }

    fn embed(&mut self, table: WeightId, tokens: &[u32], out: BufId) {
        if self.error.is_some() {
            return;
        }
        // The ids go to the device now (before any recorded op that could read them runs).
        if self.rec.ops_embed || tokens.len() != 1 {
            if let Err(e) = self.flush() {
                self.error = Some(e);
                return;
            }
        }
        let r = self.st.write_ids(tokens);
        if let Err(e) = r {
            self.error = Some(e);
            return;
        }
        self.submit(
            Op::Embed {
                table,
                out,
                n: tokens.len(),
            },
            0,
        );
    }

    fn rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, out: BufId, n: usize) {
        self.submit(Op::RmsNorm { x, w, eps, out, n }, 0);
    }

    fn layer_norm(
        &mut self,
        x: BufId,
        w: WeightId,
        b: Option<WeightId>,
        eps: f32,
        out: BufId,
        n: usize,
    ) {
        self.submit(
            Op::LayerNorm {
                x,
                w,
                b,
                eps,
                out,
                n,
            },
            0,
        );
    }

    fn head_rms_norm(&mut self, x: BufId, w: WeightId, eps: f32, head_dim: usize, n: usize) {
        self.submit(
            Op::HeadRmsNorm {
                x,
                w,
                eps,
                head_dim,
                n,
            },
            0,
        );
    }

    fn matmul(&mut self, x: BufId, outs: &[(WeightId, BufId)], n: usize) {
        if n == 0 {
            return;
        }
        self.submit(
            Op::Matmul {
                x,
                outs: outs.to_vec(),
                n,
            },
            0,
        );
        // Each LoRA term of a product's weight, in the set's order: `out += s·B·(A·x)`.
        let lora: Vec<Op> = outs
            .iter()
            .flat_map(|&(wid, out)| {
                self.st.lora.terms_of(wid).map(move |t| Op::Lora {
                    x,
                    out,
                    slot: t.slot,
                    scale: t.scale,
                    n,
                })
            })
            .collect();
        for op in lora {
            self.submit(op, 0);
        }
    }

    fn add_bias(&mut self, x: BufId, b: WeightId, n: usize) {
        self.submit(Op::AddBias { x, b, n }, 0);
    }

    fn add(&mut self, dst: BufId, src: BufId, n: usize) {
        self.submit(Op::Add { dst, src, n }, 0);
    }

    fn scale(&mut self, x: BufId, s: f32, n: usize) {
        self.submit(Op::Scale { x, s, n }, 0);
    }

    fn rope(
        &mut self,
        x: BufId,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        n: usize,
        p: &RopeParams,
    ) {
        if self.error.is_some() {
            return;
        }
        match self.st.rope_table(p, pos0 + n) {
            Ok(table) => self.submit(
                Op::Rope {
                    x,
                    n_heads,
                    head_dim,
                    n,
                    table,
                },
                pos0,
            ),
            Err(e) => self.error = Some(e),
        }
    }

    fn attention(
        &mut self,
        layer: usize,
        q: BufId,
        k: BufId,
        v: BufId,
        pos0: usize,
        n: usize,
        p: &AttnParams,
        out: BufId,
    ) {
        if !p.causal {
            // An encoder's sequence in one call from position 0 sees exactly its own rows: the
            // packed attention of one sequence (the cache is not written; nothing reads it).
            if pos0 != 0 {
                self.error.get_or_insert_with(|| {
                    "bidirectional attention after position 0 is not on CUDA".into()
                });
                return;
            }
            let rows = u32::try_from(n).unwrap_or(u32::MAX);
            return self.attention_packed(q, k, v, &[0, rows], p, out);
        }
        let n_ctx = self.st.kv_spec.map_or(pos0 + n, |s| s.n_ctx);
        let max_kv_len = (pos0 + n)
            .next_multiple_of(ATTENTION_CHUNK)
            .min(n_ctx.max(1));
        self.submit(
            Op::Attention {
                layer,
                q,
                k,
                v,
                n,
                p: *p,
                out,
                max_kv_len,
            },
            pos0,
        );
    }

    fn swiglu(&mut self, gate: BufId, up: BufId, n: usize) {
        self.submit(
            Op::Glu {
                gate,
                up,
                n,
                act: GluActivation::Silu,
            },
            0,
        );
    }

    fn geglu(&mut self, gate: BufId, up: BufId, n: usize) {
        self.submit(
            Op::Glu {
                gate,
                up,
                n,
                act: GluActivation::GeluTanh,
            },
            0,
        );
    }

    fn gelu(&mut self, x: BufId, n: usize) {
        self.submit(Op::Gelu { x, n }, 0);
    }

    fn attention_packed(
        &mut self,
        q: BufId,
        k: BufId,
        v: BufId,
        seqs: &[u32],
        p: &AttnParams,
        out: BufId,
    ) {
        if self.error.is_some() {
            return;
        }
        match self.st.write_seqs(seqs) {
            Ok(n_seq) => self.submit(
                Op::AttentionPacked {
                    q,
                    k,
                    v,
                    n_seq,
                    n: seqs.last().map_or(0, |&n| n as usize),
                    p: *p,
                    out,
                },
                0,
            ),
            Err(e) => self.error = Some(e),
        }
    }

    fn pool(&mut self, x: BufId, seqs: &[u32], kind: PoolKind, out: BufId) {
        if self.error.is_some() {
            return;
        }
        match self.st.write_seqs(seqs) {
            Ok(n_seq) => self.submit(
                Op::Pool {
                    x,
                    n_seq,
                    rows: seqs.last().map_or(0, |&n| n as usize),
                    kind,
                    out,
                },
                0,
            ),
            Err(e) => self.error = Some(e),
        }
    }

    fn set_lora(&mut self, terms: &[super::LoraTerm]) {
        // The recorded ops name the old set's slots: run them first.
        let r = self.flush().and_then(|()| self.st.set_lora(terms));
        if let Err(e) = r {
            self.error.get_or_insert(e);
        }
    }

    fn gelu_erf(&mut self, x: BufId, n: usize) {
        self.submit(Op::GeluErf { x, n }, 0);
    }

    fn copy_cols(
        &mut self,
        src: BufId,
        src_col: usize,
        dst: BufId,
        dst_col: usize,
        width: usize,
        n: usize,
    ) {
        self.submit(
            Op::CopyCols {
                src,
                src_col,
                dst,
                dst_col,
                width,
                n,
            },
            0,
        );
    }

    fn copy_row(&mut self, src: BufId, src_row: usize, dst: BufId, dst_row: usize) {
        self.submit(
            Op::CopyRow {
                src,
                src_row,
                dst,
                dst_row,
            },
            0,
        );
    }

    fn read(&mut self, buf: BufId, row0: usize, out: &mut [f32]) {
        if self.error.is_none() {
            if let Err(e) = self.flush() {
                self.error = Some(e);
            }
        }
        if self.error.is_some() {
            out.fill(f32::NAN);
            return;
        }
        let r = (|| {
            let v = self.st.view(buf, row0 * self.st.cols(buf), out.len())?;
            let host: Vec<f32> = self.st.dev().download(&v).map_err(|e| e.to_string())?;
            out.copy_from_slice(&host);
            Ok::<(), String>(())
        })();
        if let Err(e) = r {
            out.fill(f32::NAN);
            self.error = Some(e);
        }
    }

    fn argmax(&mut self, buf: BufId, row: usize, cols: usize) -> u32 {
        self.submit(Op::Argmax { buf, row, cols }, 0);
        if self.error.is_none() {
            if let Err(e) = self.flush() {
                self.error = Some(e);
            }
        }
        if self.error.is_some() {
            return 0;
        }
        let r = (|| {
            let out = self.st.argmax_out.as_ref().ok_or("no argmax buffer")?;
            let host = self.st.dev().download(out).map_err(|e| e.to_string())?;
            Ok::<u32, String>(host.first().map_or(0, |&i| u32::try_from(i).unwrap_or(0)))
        })();
        match r {
            // The kernel reports `cols` when no value is larger than -inf (all NaN or -inf):
            // token 0, like the host argmax.
            Ok(id) if (id as usize) < cols => id,
            Ok(_) => 0,
            Err(e) => {
                self.error = Some(e);
                0
            }
        }
    }
}
