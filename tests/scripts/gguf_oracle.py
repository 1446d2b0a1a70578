#!/usr/bin/env python3
"""Oracle for tinyrt's GGUF reader: dumps what the Python `gguf` package (ggml's reference
reader, `pip install gguf`; 0.19.0 was used) sees in each file, as JSON.

Usage (from the repository root):
    python3 tests/scripts/gguf_oracle.py > tests/data/gguf_oracle.json

`tests/tests/gguf.rs` and `cli/tests/cli.rs` compare tinyrt's reader and `tinyrt info --json`
with this output. Arrays are summarised (length, first and last elements, a checksum) to keep
the file small; string checksums are FNV-1a 64 over each string's UTF-8 bytes followed by 0xFF.
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FILES = [
    "models/SmolLM2-135M-Instruct.Q4_1.gguf",
    "models/gemma-3-270m-q4_k_m.gguf",
] + sorted("tests/fixtures/" + f for f in os.listdir(os.path.join(ROOT, "tests/fixtures")) if f.endswith(".gguf"))

TYPE_NAMES = {
    GGUFValueType.UINT8: "u8", GGUFValueType.INT8: "i8", GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16", GGUFValueType.UINT32: "u32", GGUFValueType.INT32: "i32",
    GGUFValueType.FLOAT32: "f32", GGUFValueType.BOOL: "bool", GGUFValueType.STRING: "string",
    GGUFValueType.UINT64: "u64", GGUFValueType.INT64: "i64", GGUFValueType.FLOAT64: "f64",
}


def fnv1a64_strings(strings):
    h = 0xcbf29ce484222325
    for s in strings:
        for b in s.encode("utf-8") + b"\xff":
            h ^= b
            h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def scalar(v, t):
    if t == GGUFValueType.BOOL:
        return bool(v)
    if t in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return float(v)
    return int(v)


def field_json(field):
    t = field.types[0]
    if t == GGUFValueType.ARRAY:
        et = field.types[1]
        if et == GGUFValueType.STRING:
            items = [str(bytes(field.parts[i]), "utf-8") for i in field.data]
            out = {"checksum": str(fnv1a64_strings(items))}
        else:
            items = [scalar(field.parts[i][0], et) for i in field.data]
            out = {"sum": float(np.sum(np.array(items, dtype=np.float64)))}
        out.update({"type": "array", "element_type": TYPE_NAMES[et], "len": len(items),
                    "first": items[:3], "last": items[-1] if items else None})
        return out
    if t == GGUFValueType.STRING:
        return {"type": "string", "value": str(bytes(field.parts[-1]), "utf-8")}
    return {"type": TYPE_NAMES[t], "value": scalar(field.parts[-1][0], t)}


def dump(path):
    r = GGUFReader(path)
    fields = [(k, f) for k, f in r.fields.items() if not k.startswith("GGUF.")]
    tensors = [{
        "name": t.name,
        "type": t.tensor_type.name,
        "shape": [int(d) for d in t.shape],
        "offset": int(t.data_offset),
        "size": int(t.n_bytes),
    } for t in r.tensors]
    types = {}
    for t in tensors:
        types[t["type"]] = types.get(t["type"], 0) + 1
    return {
        "version": int(r.fields["GGUF.version"].parts[-1][0]),
        "file_size": os.path.getsize(path),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        # JSON objects have no order for every reader: the file order is listed separately.
        "metadata_keys": [k for k, _ in fields],
        "metadata": {k: field_json(f) for k, f in fields},
        "tensor_count": len(tensors),
        "tensor_types": types,
        "parameter_count": int(sum(int(t.n_elements) for t in r.tensors)),
        "tensors": tensors,
    }


def main():
    out = {}
    for rel in FILES:
        path = os.path.join(ROOT, rel)
        if not os.path.exists(path):
            print(f"skipping missing {rel}", file=sys.stderr)
            continue
        out[os.path.basename(rel)] = dump(path)
    json.dump(out, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
