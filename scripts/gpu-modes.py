#!/usr/bin/env python3
"""The CUDA backend's switches must not change what it computes (beyond their tolerance).

Runs `tinyrt generate MODEL --device cuda --temp 0 --json` with the defaults (CUDA graph,
fusions, int8 tensor-core prefill, f16 KV cache, top-8 logits) and with one switch changed at a
time, and compares each run with the default one:

  graph off       TINYRT_CUDA_GRAPH=0     same launches, no graph: identical logits and ids
  fusions off     TINYRT_CUDA_FUSE=0      f32 tolerance (summation order of the fused GLU)
  int8 prefill off TINYRT_CUDA_MMQ=0      quant tolerance (f32 prefill tiles instead of Q8_1)
  f32 KV cache    --kv-type f32           quant tolerance
  device argmax   --top-logits 0          greedy ids picked on the device: identical ids

The generation is long enough (-n 300) to cross a 256-position attention split, where the
decode graph is captured again, and one prompt is long enough for several prefill tiles.

  gpu-modes.py --tinyrt BIN --model M [--model M2 ...]

Prints a Markdown table; exits 1 when a comparison fails, 2 when a run fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

# One prompt of ~100 tokens: two 64-token prefill tiles, then 300 decode steps (each run
# compiles the kernels again, so runs are few).
PROMPTS = [
    " ".join(["the quick brown fox jumps over the lazy dog"] * 12),
]

# name, extra environment, extra arguments, MAX |dlogit| (None: ids only), ids must be equal
VARIANTS = [
    ("graph off", {"TINYRT_CUDA_GRAPH": "0"}, [], 0.0, True),
    ("fusions off", {"TINYRT_CUDA_FUSE": "0"}, [], 0.02, False),
    ("int8 prefill off", {"TINYRT_CUDA_MMQ": "0"}, [], 0.15, False),
    ("f32 KV cache", {}, ["--kv-type", "f32"], 0.15, False),
    ("device argmax", {}, ["--top-logits", "0"], None, True),
]


def run(args, model, prompt, env_extra, extra):
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(prompt.encode("utf-8"))
        path = f.name
    env = dict(os.environ, **env_extra)
    cmd = [args.tinyrt, "generate", model, "--file", path, "-n", str(args.n), "-c", "1024",
           "--temp", "0", "--json", "--device", args.device, *extra]
    if "--top-logits" not in extra:
        cmd += ["--top-logits", "8"]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, f"took over {args.timeout} s"
    finally:
        os.unlink(path)
    if r.returncode != 0:
        err = r.stderr.decode("utf-8", "replace").strip().splitlines()
        return None, f"exit {r.returncode}: {err[-1] if err else ''}"
    return json.loads(r.stdout), None


def compare(base, other, max_d, ids_equal):
    """(worst |dlogit| over common top ids while the paths agree, ids equal, message or None)."""
    worst = 0.0
    same_ids = base["gen_ids"] == other["gen_ids"]
    if max_d is not None:
        for i, (bs, os_) in enumerate(zip(base["steps"], other["steps"])):
            ours = {int(t[0]): float(t[1]) for t in os_["top"]}
            for rid, rl in bs["top"]:
                if int(rid) in ours:
                    worst = max(worst, abs(ours[int(rid)] - float(rl)))
            if i >= len(base["gen_ids"]) or base["gen_ids"][i] != other["gen_ids"][i]:
                break
        if worst > max_d:
            return worst, same_ids, f"|dlogit| {worst:.4g} > {max_d}"
    if ids_equal and not same_ids:
        n = next((i for i, (a, b) in enumerate(zip(base["gen_ids"], other["gen_ids"])) if a != b),
                 min(len(base["gen_ids"]), len(other["gen_ids"])))
        return worst, same_ids, f"ids differ from step {n}"
    return worst, same_ids, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tinyrt", required=True)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script")
    ap.add_argument("--timeout", type=int, default=120)
    args = ap.parse_args()
    print("| model | variant | worst abs dlogit | ids equal | result |")
    print("| --- | --- | --- | --- | --- |")
    failed = broken = False
    for model in args.model:
        name = os.path.basename(model)
        bases = []
        for p in PROMPTS:
            b, err = run(args, model, p, {}, [])
            if err:
                print(f"| {name} | default | - | - | RUN FAILED: {err} |")
                broken = True
                break
            bases.append(b)
        if len(bases) != len(PROMPTS):
            continue
        for vname, env, extra, max_d, ids_equal in VARIANTS:
            worst, all_same, msg = 0.0, True, None
            for p, b in zip(PROMPTS, bases):
                o, err = run(args, model, p, env, extra)
                if err:
                    msg = f"RUN FAILED: {err}"
                    broken = True
                    break
                w, same, m = compare(b, o, max_d, ids_equal)
                worst, all_same = max(worst, w), all_same and same
                msg = msg or m
            failed |= msg is not None
            shown = "-" if max_d is None else f"{worst:.4g}"
            print(f"| {name} | {vname} | {shown} | {all_same} | {msg or 'ok'} |")
    sys.exit(2 if broken else 1 if failed else 0)


if __name__ == "__main__":
    main()
