//! The op recorder's vocabulary and the fusion planner: a decode step is recorded as [`Op`]s
//! and planned into [`Exec`] steps, fusing where the kernels allow.

use tinyrt_cuda::GluActivation;

use crate::backend::{AttnParams, BufId, PoolKind, WeightId};

/// One recorded operation of a decode step: buffer and weight handles and shapes, never a
/// position or a token id (those live in device memory), so the same step replays as a graph.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Op {
    Embed {
        table: WeightId,
        out: BufId,
        n: usize,
    },
    RmsNorm {
        x: BufId,
        w: WeightId,
        eps: f32,
        out: BufId,
        n: usize,
    },
    LayerNorm {
        x: BufId,
        w: WeightId,
        b: Option<WeightId>,
        eps: f32,
        out: BufId,
        n: usize,
    },
    HeadRmsNorm {
        x: BufId,
        w: WeightId,
        eps: f32,
        head_dim: usize,
        n: usize,
    },
    Matmul {
        x: BufId,
        outs: Vec<(WeightId, BufId)>,
        n: usize,
    },
    AddBias {
        x: BufId,
        b: WeightId,
        n: usize,
    },
    Add {
        dst: BufId,
        src: BufId,
        n: usize,
    },
    Scale {
        x: BufId,
        s: f32,
        n: usize,
    },
    Rope {
        x: BufId,
        n_heads: usize,
        head_dim: usize,
        n: usize,
        /// Index into the backend's RoPE tables.
        table: usize,
    },
    Attention {
        layer: usize,
        q: BufId,
        k: BufId,
        v: BufId,
        n: usize,
        p: AttnParams,
        out: BufId,
        /// An upper bound of `pos0 + n`, rounded up to a whole KV split so that consecutive
        /// decode steps record the same operation.
        max_kv_len: usize,
    },
    Glu {
        gate: BufId,
        up: BufId,
        n: usize,
        act: GluActivation,
    },
    Gelu {
        x: BufId,
        n: usize,
    },
    GeluErf {
        x: BufId,
        n: usize,
    },
    /// Bidirectional attention of `n_seq` packed sequences of `n` rows in all, their
    /// boundaries in the device's sequence buffer (`DeviceState::write_seqs`). Never recorded:
    /// it runs when submitted, before the boundaries can change.
    AttentionPacked {
        q: BufId,
        k: BufId,
        v: BufId,
        n_seq: usize,
        n: usize,
        p: AttnParams,
        out: BufId,
    },
    /// `out` row i = the pooling of sequence i of the `rows` rows of `x` (boundaries as
    /// `AttentionPacked`'s; never recorded either).
    Pool {
        x: BufId,
        n_seq: usize,
        rows: usize,
        kind: PoolKind,
        out: BufId,
    },
    CopyCols {
        src: BufId,
        src_col: usize,
        dst: BufId,
        dst_col: usize,
        width: usize,
        n: usize,
    },
    CopyRow {
        src: BufId,
        src_row: usize,
        dst: BufId,
        dst_row: usize,
    },
    Argmax {
        buf: BufId,
        row: usize,
        cols: usize,
    },
    /// `out[t] += scale · B·(A·x[t])` with the pair in the session's LoRA slot `slot`
    /// (recorded right after the `Matmul` of `out`'s weight, once per term). A changed set
    /// bumps `DeviceState::alloc_gen`, so a graph holding the old slots is not replayed.
    Lora {
        x: BufId,
        out: BufId,
        slot: usize,
        scale: f32,
        n: usize,
    },
}

impl Op {
    /// Rows the op processes (`CopyRow` and `Argmax`: one).
    pub(super) fn n(&self) -> usize {
        match *self {
            Op::Embed { n, .. }
            | Op::RmsNorm { n, .. }
            | Op::LayerNorm { n, .. }
            | Op::HeadRmsNorm { n, .. }
            | Op::Matmul { n, .. }
            | Op::AddBias { n, .. }
            | Op::Add { n, .. }
            | Op::Scale { n, .. }
            | Op::Rope { n, .. }
            | Op::Attention { n, .. }
            | Op::Glu { n, .. }
            | Op::Gelu { n, .. }
            | Op::GeluErf { n, .. }
            | Op::AttentionPacked { n, .. }
            | Op::CopyCols { n, .. }
            | Op::Lora { n, .. } => n,
            Op::Pool { n_seq, .. } => n_seq,
            Op::CopyRow { .. } | Op::Argmax { .. } => 1,
        }
    }
}

/// How one recorded op (or a run of them) is executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Exec {
    /// The op by itself; a matmul quantizes its input first unless `q8_ready`.
    Plain { op: usize, q8_ready: bool },
    /// RMSNorm writing the f32 row and its Q8_1 copy (`rms_norm_f32_q8_1`) for the matmul after it.
    NormQ8 { op: usize },
    /// A gate/up matmul and the GLU after it as one `matvec_glu_*` launch (`up` is not written).
    Glu {
        matmul: usize,
        glu: usize,
        q8_ready: bool,
    },
    /// A single-product matmul and the residual add after it as one matrix-vector launch that
    /// accumulates into the residual (the product's own output buffer is not written: the
    /// planner checks that the step overwrites it before reading it).
    MatmulAdd {
        matmul: usize,
        add: usize,
        q8_ready: bool,
    },
    /// RoPE of Q, RoPE of K and the attention's KV-cache write as one `rope_kv_store_*`
    /// launch, then the attention (the f32 K rows stay unrotated; only the cache is read).
    RopeKvAttention {
        rope_q: usize,
        rope_k: usize,
        attn: usize,
        /// The attention also writes its output as Q8_1 for the matmul after it.
        q8_out: bool,
    },
    /// An attention (KV store included) whose output is also written as Q8_1 for the matmul
    /// after it (`attention_q8_1`: the combine pass quantizes).
    AttentionQ8 { op: usize },
}

/// What the planner needs to know about the weights.
pub(super) trait FusionInfo {
    /// The input width of a matmul's products when all of them take a Q8_1 input, else `None`.
    fn q8_cols(&self, outs: &[(WeightId, BufId)]) -> Option<usize>;
    /// Whether a gate/up pair has a fused `matvec_glu_*` kernel (same quantized type and shape).
    fn glu_pair(&self, gate: WeightId, up: WeightId) -> bool;
    /// Columns of a buffer.
    fn buf_cols(&self, b: BufId) -> usize;
    /// Rows of a weight matrix (`None`: a vector).
    fn matrix_rows(&self, w: WeightId) -> Option<usize>;
}

/// Whether `op` reads or writes buffer `b`.
fn touches(op: &Op, b: BufId) -> bool {
    match op {
        Op::Embed { out, .. } => *out == b,
        Op::RmsNorm { x, out, .. } | Op::LayerNorm { x, out, .. } => *x == b || *out == b,
        Op::HeadRmsNorm { x, .. }
        | Op::AddBias { x, .. }
        | Op::Scale { x, .. }
        | Op::Rope { x, .. }
        | Op::Gelu { x, .. }
        | Op::GeluErf { x, .. } => *x == b,
        Op::Matmul { x, outs, .. } => *x == b || outs.iter().any(|(_, o)| *o == b),
        Op::Add { dst, src, .. } => *dst == b || *src == b,
        Op::Attention { q, k, v, out, .. } | Op::AttentionPacked { q, k, v, out, .. } => {
            [*q, *k, *v, *out].contains(&b)
        }
        Op::Pool { x, out, .. } => *x == b || *out == b,
        Op::Glu { gate, up, .. } => *gate == b || *up == b,
        Op::CopyCols { src, dst, .. } | Op::CopyRow { src, dst, .. } => *src == b || *dst == b,
        Op::Argmax { buf, .. } => *buf == b,
        Op::Lora { x, out, .. } => *x == b || *out == b,
    }
}

/// Whether the first of `ops` that touches `b` overwrites it without reading it (a matmul
/// output), so that skipping an earlier write of `b` cannot be observed.
fn overwritten_before_read(ops: &[Op], b: BufId) -> bool {
    match ops.iter().find(|op| touches(op, b)) {
        Some(Op::Matmul { x, outs, .. }) => *x != b && outs.iter().any(|(_, o)| *o == b),
        _ => false,
    }
}

/// Plans the execution of recorded single-token ops, fusing where the kernels allow:
/// RMSNorm + Q8_1 quantization (when the next op is a matmul of the normalised rows), gate/up
/// matmul + SwiGLU/GeGLU, and RoPE(Q) + RoPE(K) + KV-cache write before attention. A LoRA op
/// after a matmul keeps it from fusing with the op after it (the GLU or the residual add must
/// see the adapted output) but not from sharing the Q8_1 input with the next matmul.
pub(super) fn plan(ops: &[Op], info: &dyn FusionInfo, fuse: bool) -> Vec<Exec> {
    let mut plan = Vec::with_capacity(ops.len());
    let mut q8_of: Option<BufId> = None;
    // The output of the attention at `at` when the op after it is a matmul that can take it
    // as Q8_1 written by the attention's combine pass (whole 32-blocks per head).
    let attn_q8 = |at: usize| -> Option<BufId> {
        let Some(Op::Attention { out, n: 1, p, .. }) = ops.get(at) else {
            return None;
        };
        let width = info.buf_cols(*out);
        let feeds = matches!(ops.get(at + 1), Some(Op::Matmul { x, outs, n: 1 })
            if x == out && info.q8_cols(outs) == Some(width));
        (fuse
            && feeds
            && width == p.n_head * p.head_dim_v
            && p.head_dim_v.is_multiple_of(32)
            && width.is_multiple_of(32))
        .then_some(*out)
    };
    let mut i = 0;
    while i < ops.len() {
        let next = ops.get(i + 1);
        let ready = |x: BufId, q8_of: Option<BufId>| fuse && q8_of == Some(x);
        match &ops[i] {
            Op::RmsNorm { out, n: 1, .. } if fuse => {
                let feeds_matmul = matches!(next, Some(Op::Matmul { x, outs, n: 1 })
                    if x == out && info.q8_cols(outs) == Some(info.buf_cols(*out)));
                if feeds_matmul && info.buf_cols(*out).is_multiple_of(32) {
                    plan.push(Exec::NormQ8 { op: i });
                    q8_of = Some(*out);
                } else {
                    plan.push(Exec::Plain {
                        op: i,
                        q8_ready: false,
                    });
                    q8_of = None;
                }
                i += 1;
            }
            Op::Matmul { x, outs, n: 1 } => {
                let q8_ready = ready(*x, q8_of);
                let glu = matches!(
                    (outs.as_slice(), next),
                    ([(wg, g), (wu, u)], Some(Op::Glu { gate, up, n: 1, .. }))
                        if fuse && g == gate && u == up && info.glu_pair(*wg, *wu)
                );
                let residual = matches!(
                    (outs.as_slice(), next),
                    ([(w, o)], Some(Op::Add { dst, src, n: 1 }))
                        if fuse
                            && src == o
                            && dst != x
                            && dst != o
                            && info.matrix_rows(*w) == Some(info.buf_cols(*dst))
                            && info.buf_cols(*dst) == info.buf_cols(*o)
                            && overwritten_before_read(&ops[i + 2..], *o)
                );
                if glu {
                    plan.push(Exec::Glu {
                        matmul: i,
                        glu: i + 1,
                        q8_ready,
                    });
                    i += 2;
                } else if residual {
                    plan.push(Exec::MatmulAdd {
                        matmul: i,
                        add: i + 1,
                        q8_ready,
                    });
                    i += 2;
                } else {
                    plan.push(Exec::Plain { op: i, q8_ready });
                    i += 1;
                }
                // The matmul left its whole input row quantized in the Q8_1 buffer (when its
                // products read all of it).
                q8_of = (info.q8_cols(outs) == Some(info.buf_cols(*x))).then_some(*x);
            }
            Op::Rope {
                x: xq,
                n_heads: hq,
                head_dim: dq,
                n: 1,
                table: tq,
            } if fuse => {
                let fused = match (next, ops.get(i + 2)) {
                    (
                        Some(Op::Rope {
                            x: xk,
                            n_heads: hk,
                            head_dim: dk,
                            n: 1,
                            table: tk,
                        }),
                        Some(Op::Attention { q, k, n: 1, p, .. }),
                    ) => {
                        q == xq
                            && k == xk
                            && tq == tk
                            && dq == dk
                            && *dq == p.head_dim_k
                            && p.head_dim_k == p.head_dim_v
                            && *hq == p.n_head
                            && *hk == p.n_head_kv
                    }
                    _ => false,
                };
                if fused {
                    let q8_out = attn_q8(i + 2);
                    plan.push(Exec::RopeKvAttention {
                        rope_q: i,
                        rope_k: i + 1,
                        attn: i + 2,
                        q8_out: q8_out.is_some(),
                    });
                    q8_of = q8_out;
                    i += 3;
                } else {
                    plan.push(Exec::Plain {
                        op: i,
                        q8_ready: false,
                    });
                    q8_of = None;
                    i += 1;
                }
            }
            Op::Lora { out, .. } => {
                // Reads f32 rows only: the Q8_1 copy stays valid unless it is `out`'s.
                plan.push(Exec::Plain {
                    op: i,
                    q8_ready: false,
                });
                q8_of = q8_of.filter(|b| b != out);
                i += 1;
            }
            Op::Attention { .. } if attn_q8(i).is_some() => {
                plan.push(Exec::AttentionQ8 { op: i });
                q8_of = attn_q8(i);
                i += 1;
            }
            _ => {
                plan.push(Exec::Plain {
                    op: i,
                    q8_ready: false,
                });
                q8_of = None;
                i += 1;
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights 0..10 are quantized with 64 columns (10..: F16); pairs of quantized weights fuse.
    struct Mock;

    impl FusionInfo for Mock {
        fn q8_cols(&self, outs: &[(WeightId, BufId)]) -> Option<usize> {
            outs.iter().all(|(w, _)| w.0 < 10).then_some(64)
        }
        fn glu_pair(&self, gate: WeightId, up: WeightId) -> bool {
            gate.0 < 10 && up.0 < 10
        }
        fn buf_cols(&self, _b: BufId) -> usize {
            64
        }
        fn matrix_rows(&self, _w: WeightId) -> Option<usize> {
            Some(64)
        }
    }

    const X: BufId = BufId(0);
    const XN: BufId = BufId(1);
    const OUT: BufId = BufId(2);
    const Q: BufId = BufId(3);
    const K: BufId = BufId(4);
    const V: BufId = BufId(5);
    const ATT: BufId = BufId(6);
    const GATE: BufId = BufId(7);
    const UP: BufId = BufId(8);
    const XO: BufId = BufId(9);
    const LOGITS: BufId = BufId(10);

    /// 2 query heads of 32 on 1 KV head: 64 columns, like every buffer of the mock.
    fn attn_params() -> AttnParams {
        AttnParams {
            n_head: 2,
            n_head_kv: 1,
            head_dim_k: 32,
            head_dim_v: 32,
            scale: 0.25,
            window: None,
            causal: true,
        }
    }

    fn rope(x: BufId, n_heads: usize) -> Op {
        Op::Rope {
            x,
            n_heads,
            head_dim: 32,
            n: 1,
            table: 0,
        }
    }

    fn norm(x: BufId, out: BufId) -> Op {
        Op::RmsNorm {
            x,
            w: WeightId(20),
            eps: 1e-5,
            out,
            n: 1,
        }
    }

    fn matmul(x: BufId, outs: &[(u32, BufId)]) -> Op {
        Op::Matmul {
            x,
            outs: outs.iter().map(|&(w, b)| (WeightId(w), b)).collect(),
            n: 1,
        }
    }

    /// One llama decode step as the architecture issues it.
    fn llama_step(glu_weights: (u32, u32)) -> Vec<Op> {
        vec![
            Op::Embed {
                table: WeightId(30),
                out: X,
                n: 1,
            },
            norm(X, XN),
            matmul(XN, &[(0, Q), (1, K), (2, V)]),
            rope(Q, 2),
            rope(K, 1),
            Op::Attention {
                layer: 0,
                q: Q,
                k: K,
                v: V,
                n: 1,
                p: attn_params(),
                out: ATT,
                max_kv_len: 256,
            },
            matmul(ATT, &[(3, OUT)]),
            Op::Add {
                dst: X,
                src: OUT,
                n: 1,
            },
            norm(X, XN),
            matmul(XN, &[(glu_weights.0, GATE), (glu_weights.1, UP)]),
            Op::Glu {
                gate: GATE,
                up: UP,
                n: 1,
                act: GluActivation::Silu,
            },
            matmul(GATE, &[(6, OUT)]),
            Op::Add {
                dst: X,
                src: OUT,
                n: 1,
            },
            Op::CopyRow {
                src: X,
                src_row: 0,
                dst: XO,
                dst_row: 0,
            },
            norm(XO, XO),
            matmul(XO, &[(7, LOGITS)]),
            Op::Argmax {
                buf: LOGITS,
                row: 0,
                cols: 64,
            },
        ]
    }

    fn plain(op: usize, q8_ready: bool) -> Exec {
        Exec::Plain { op, q8_ready }
    }

    #[test]
    fn a_decode_step_fuses_norm_quantize_glu_and_rope_kv_write() {
        let ops = llama_step((4, 5));
        let want = vec![
            plain(0, false),
            Exec::NormQ8 { op: 1 },
            plain(2, true),
            // The attention's combine pass also quantizes its output for the wo matmul.
            Exec::RopeKvAttention {
                rope_q: 3,
                rope_k: 4,
                attn: 5,
                q8_out: true,
            },
            // The next write of OUT is the FFN's down projection: the residual add fuses.
            Exec::MatmulAdd {
                matmul: 6,
                add: 7,
                q8_ready: true,
            },
            Exec::NormQ8 { op: 8 },
            Exec::Glu {
                matmul: 9,
                glu: 10,
                q8_ready: true,
            },
            // Nothing after the last layer's down projection overwrites OUT: no fusion.
            plain(11, false),
            plain(12, false),
            plain(13, false),
            Exec::NormQ8 { op: 14 },
            plain(15, true),
            plain(16, false),
        ];
        assert_eq!(plan(&ops, &Mock, true), want);
    }

    #[test]
    fn without_fusion_every_op_runs_by_itself() {
        let ops = llama_step((4, 5));
        let want: Vec<Exec> = (0..ops.len()).map(|i| plain(i, false)).collect();
        assert_eq!(plan(&ops, &Mock, false), want);
    }

    #[test]
    fn ops_between_the_fusable_ones_keep_them_apart() {
        // F16 gate/up weights: no fused GLU kernel, and the norm cannot feed a Q8_1 input.
        let ops = llama_step((11, 12));
        let p = plan(&ops, &Mock, true);
        // (plan[4] is the fused wo + residual add of ops 6 and 7.)
        assert_eq!(p[5], plain(8, false));
        assert_eq!(p[6], plain(9, false));
        assert_eq!(p[7], plain(10, false));
        // Phi-2 scales Q between RoPE and attention: the ropes run by themselves.
        let ops = vec![
            rope(Q, 2),
            rope(K, 1),
            Op::Scale { x: Q, s: 0.5, n: 1 },
            Op::Attention {
                layer: 0,
                q: Q,
                k: K,
                v: V,
                n: 1,
                p: attn_params(),
                out: ATT,
                max_kv_len: 256,
            },
        ];
        let want: Vec<Exec> = (0..4).map(|i| plain(i, false)).collect();
        assert_eq!(plan(&ops, &Mock, true), want);
        // A residual add whose addend is read before it is overwritten (Gemma-3's post-norm
        // reads OUT) does not fuse.
        let add = Op::Add {
            dst: X,
            src: OUT,
            n: 1,
        };
        let ops = vec![
            matmul(ATT, &[(3, OUT)]),
            add.clone(),
            norm(OUT, OUT),
            matmul(GATE, &[(6, OUT)]),
        ];
        assert_eq!(
            plan(&ops, &Mock, true)[..2],
            [plain(0, false), plain(1, false)]
        );
        let ops = vec![matmul(ATT, &[(3, OUT)]), add, matmul(GATE, &[(6, OUT)])];
        assert_eq!(
            plan(&ops, &Mock, true)[0],
            Exec::MatmulAdd {
                matmul: 0,
                add: 1,
                q8_ready: false
            }
        );
        // An attention whose output feeds a quantized matmul quantizes it in its combine pass.
        let ops = vec![
            Op::Attention {
                layer: 0,
                q: Q,
                k: K,
                v: V,
                n: 1,
                p: attn_params(),
                out: ATT,
                max_kv_len: 256,
            },
            matmul(ATT, &[(3, OUT)]),
        ];
        assert_eq!(
            plan(&ops, &Mock, true),
            vec![Exec::AttentionQ8 { op: 0 }, plain(1, true)]
        );
        // A norm whose output is not the next matmul's input is not quantized.
        let ops = vec![norm(X, XN), matmul(X, &[(0, Q)])];
        assert_eq!(
            plan(&ops, &Mock, true),
            vec![plain(0, false), plain(1, false)]
        );
    }

    fn lora(x: BufId, out: BufId, slot: usize) -> Op {
        Op::Lora {
            x,
            out,
            slot,
            scale: 2.0,
            n: 1,
        }
    }

    #[test]
    fn lora_ops_stop_output_fusions_but_keep_the_shared_q8_1_input() {
        // LoRA on every projection: q and v after Q/K/V, wo, gate and up, down.
        let mut ops = llama_step((4, 5));
        ops.insert(3, lora(XN, Q, 0));
        ops.insert(4, lora(XN, V, 1));
        ops.insert(9, lora(ATT, OUT, 2));
        ops.insert(13, lora(XN, GATE, 3));
        ops.insert(14, lora(XN, UP, 4));
        ops.insert(17, lora(GATE, OUT, 5));
        let want = vec![
            plain(0, false),
            Exec::NormQ8 { op: 1 },
            plain(2, true),
            plain(3, false),
            plain(4, false),
            Exec::RopeKvAttention {
                rope_q: 5,
                rope_k: 6,
                attn: 7,
                q8_out: true,
            },
            // wo: its LoRA term comes between it and the residual add.
            plain(8, true),
            plain(9, false),
            plain(10, false),
            Exec::NormQ8 { op: 11 },
            // gate/up: the GLU must see the adapted outputs.
            plain(12, true),
            plain(13, false),
            plain(14, false),
            plain(15, false),
            plain(16, false),
            plain(17, false),
            plain(18, false),
            plain(19, false),
            Exec::NormQ8 { op: 20 },
            plain(21, true),
            plain(22, false),
        ];
        assert_eq!(plan(&ops, &Mock, true), want);
        // A second product of the same input after a LoRA op reuses its Q8_1 copy ...
        let ops = vec![matmul(XN, &[(0, Q)]), lora(XN, Q, 0), matmul(XN, &[(1, K)])];
        assert_eq!(
            plan(&ops, &Mock, true),
            vec![plain(0, false), plain(1, false), plain(2, true)]
        );
        // ... unless the LoRA op wrote that input.
        let ops = vec![matmul(XN, &[(0, Q)]), lora(Q, XN, 0), matmul(XN, &[(1, K)])];
        assert_eq!(
            plan(&ops, &Mock, true),
            vec![plain(0, false), plain(1, false), plain(2, false)]
        );
    }
}
