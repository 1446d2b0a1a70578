#!/usr/bin/env python3
"""Quantization fixtures for kernels/tests/quant.rs, computed by llama.cpp's `llama-quantize`.

Writes an F32 input matrix with rows of varied character (Gaussian, heavy-tailed, uniform,
one-sided, tiny, huge, all zero, constant, sparse outliers) as
`kernels/tests/data/quantize/input.f32` (little-endian f32, 512 columns), wraps it as the only
tensor of a minimal llama-architecture GGUF, runs `llama-quantize --pure` for each type and
stores the quantized tensor bytes as `kernels/tests/data/quantize/<TYPE>.bin`.

Without an importance matrix llama-quantize runs ggml's `quantize_row_*_ref` (IQ4_NL:
`quantize_iq4_nl` with 7 scale tries), so the bytes are those algorithms' output.

Usage: pip install gguf numpy && python3 kernels/scripts/gen_quantize_fixtures.py [LLAMA_QUANTIZE]
(default ~/.cache/tinyrt-ref/bin/llama-quantize).
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "quantize")
COLS = 512
TYPES = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL"]
TENSOR = "blk.0.ffn_down.weight"


def make_input(rng):
    rows = []
    g = lambda: rng.standard_normal(COLS)
    rows += [g() * 0.02 for _ in range(6)]  # typical weight rows
    rows += [rng.standard_t(3, COLS) * 0.05 for _ in range(3)]  # heavy tails
    rows += [rng.uniform(-1, 1, COLS) for _ in range(2)]
    rows.append(np.abs(g()) + 0.5)  # all positive, away from zero
    rows.append(-np.abs(g()) * 3.0)  # all negative
    rows.append(g() * 1e-6)  # tiny
    rows.append(g() * 1e3)  # large
    rows.append(np.zeros(COLS))  # all zero
    rows.append(np.full(COLS, 0.25))  # constant
    r = g() * 0.01
    r[rng.integers(0, COLS, 8)] = rng.choice([-1.0, 1.0], 8) * 2.0  # sparse outliers
    rows.append(r)
    r = g() * 0.1
    r[::32] = 0.0  # zeros in every block
    rows.append(r)
    r = np.round(g() * 4.0)  # small integers: exactly representable grids
    rows.append(r)
    # Blocks mixing zero and non-zero sub-blocks.
    r = g() * 0.5
    r[: COLS // 2] = 0.0
    rows.append(r)
    r = g()
    r[np.arange(COLS) % 64 < 32] = 0.0
    rows.append(r)
    return np.stack(rows).astype(np.float32)


def write_gguf(path, x):
    w = gguf.GGUFWriter(path, "llama")
    n_embd = x.shape[1]
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(x.shape[0])
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)
    # ffn_down is (n_embd rows, n_ff columns) in ggml order: numpy shape (rows, cols).
    w.add_tensor(TENSOR, x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    quantize = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/tinyrt-ref/bin/llama-quantize")
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)
    x = make_input(rng)
    x.astype("<f4").tofile(os.path.join(OUT, "input.f32"))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "f32.gguf")
        write_gguf(src, x)
        for ty in TYPES:
            dst = os.path.join(tmp, f"{ty}.gguf")
            subprocess.run([quantize, "--pure", src, dst, ty, "1"], check=True, capture_output=True)
            reader = gguf.GGUFReader(dst)
            (t,) = [t for t in reader.tensors if t.name == TENSOR]
            assert t.tensor_type.name == ty, (ty, t.tensor_type.name)
            data = np.asarray(t.data).view(np.uint8).reshape(-1)
            data.tofile(os.path.join(OUT, f"{ty}.bin"))
            print(f"{ty}: {data.size} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
