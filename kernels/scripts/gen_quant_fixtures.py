#!/usr/bin/env python3
"""Dequantization fixtures for kernels/tests/quant.rs, computed by the Python `gguf` package.

For every GGUF weight type tinyrt dequantizes, writes random raw blocks and what
`gguf.quants.dequantize` makes of them:

    kernels/tests/data/dequant/<TYPE>.bin   raw GGUF block bytes
    kernels/tests/data/dequant/<TYPE>.f32   expected values, little-endian f32

Block bytes are uniformly random except the f16 scale fields, which get finite values of
sane magnitude (plus a few edge cases: zero, negative, subnormal, large) so the expected
values are finite and the comparison bit for bit is meaningful.

Usage: pip install gguf numpy && python3 kernels/scripts/gen_quant_fixtures.py
"""

import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "dequant")

# Byte offsets of the f16 scale fields in each block (ggml-common.h).
SCALE_OFFSETS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_NL: [0],
}

EDGE_SCALES = np.array([0.0, -0.0, -1.0, 6.1e-5, 3.0e-6, 100.0, -0.015625], dtype=np.float16)


def sane_scales(rng, n):
    mag = np.exp(rng.uniform(np.log(1e-4), np.log(2.0), n))
    sign = rng.choice([-1.0, 1.0], n)
    s = (mag * sign).astype(np.float16)
    s[: min(n, len(EDGE_SCALES))] = EDGE_SCALES[: min(n, len(EDGE_SCALES))]
    return s


def blocks_for(rng, qtype):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if qtype == T.F16:
        v = rng.standard_normal(256).astype(np.float16)
        v[:4] = np.array([0.0, -0.0, 65504.0, 6e-8], dtype=np.float16)
        return v.view(np.uint8)
    if qtype == T.BF16:
        bits = rng.integers(0, 1 << 16, 256, dtype=np.uint32).astype(np.uint16)
        # Keep exponents below all-ones: no inf or NaN.
        exp = (bits >> 7) & 0xFF
        bits = np.where(exp == 0xFF, bits & 0x807F, bits).astype(np.uint16)
        return bits.view(np.uint8)
    n_blocks = 64 if block_size == 32 else 16
    raw = rng.integers(0, 256, (n_blocks, type_size), dtype=np.uint16).astype(np.uint8)
    for off in SCALE_OFFSETS[qtype]:
        s = sane_scales(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
        raw[:, off : off + 2] = s
    return raw.reshape(-1)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261128)
    types = [T.F16, T.BF16] + list(SCALE_OFFSETS)
    for qtype in types:
        raw = blocks_for(rng, qtype)
        expected = gguf.quants.dequantize(raw, qtype).astype("<f4").reshape(-1)
        assert np.all(np.isfinite(expected)), qtype.name
        raw.tofile(os.path.join(OUT, f"{qtype.name}.bin"))
        expected.tofile(os.path.join(OUT, f"{qtype.name}.f32"))
        print(f"{qtype.name}: {raw.size} bytes -> {expected.size} values", file=sys.stderr)


if __name__ == "__main__":
    main()
