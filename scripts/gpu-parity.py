#!/usr/bin/env python3
"""Greedy parity of `tinyrt generate --json` against a golden file or against another device.

The rule is tests/tests/parity.rs's (see tests/golden/README.md): walk each prompt's steps
while both greedy paths agree; for every id in both top-8 lists, |dlogit| <= MAX and the mean
over the file <= MEAN; the paths may part only where the reference's margin (top1 - top2) is
below DIVERGE.

  gpu-parity.py --tinyrt BIN --model M --device cuda --golden G.jsonl --tol quant
  gpu-parity.py --tinyrt BIN --model M --device cuda --reference-device cpu --tol real -n 16

Prints one line per file; exits 1 when the rule fails, 2 when a run fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

TOLERANCES = {  # name: (MAX, MEAN, DIVERGE), as in tests/tests/parity.rs
    "real": (1.5, 0.4, 1.0),
    "f32": (0.02, 0.005, 0.02),
    "quant": (0.15, 0.04, 0.1),
}

# Prompts for device-against-device runs (no golden file).
PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "def fibonacci(n):\n",
    "In 1969, the first humans",
]


def generate(args, device, prompt, n):
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(prompt.encode("utf-8"))
        path = f.name
    try:
        cmd = [args.tinyrt, "generate", args.model, "--file", path, "-n", str(n),
               "--temp", "0", "--json", "--top-logits", "8", "--device", device]
        r = subprocess.run(cmd, capture_output=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f"{os.path.basename(args.model)} [{device}]: run took over {args.timeout} s")
        sys.exit(2)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        err = r.stderr.decode("utf-8", "replace").strip().splitlines()
        print(f"{os.path.basename(args.model)} [{device}]: run failed (exit {r.returncode}): "
              f"{err[-1] if err else ''}")
        sys.exit(2)
    return json.loads(r.stdout)


def compare(ref, ours, tol, label, stats):
    """Applies the rule to one prompt; returns an error message or None."""
    mx, _, diverge = tol
    if ref["prompt_ids"] != ours["prompt_ids"]:
        return f"{label}: prompt ids differ"
    for i, (rs, os_) in enumerate(zip(ref["steps"], ours["steps"])):
        stats["steps"] += 1
        ours_top = {int(t[0]): float(t[1]) for t in os_["top"]}
        for rid, rl in rs["top"]:
            rid = int(rid)
            if rid in ours_top:
                d = abs(ours_top[rid] - float(rl))
                stats["compared"] += 1
                stats["sum"] += d
                stats["max"] = max(stats["max"], d)
                if d > mx:
                    return f"{label} step {i}: id {rid} logit {ours_top[rid]} vs {rl} (|d| {d:.4f} > {mx})"
        if i >= len(ref["gen_ids"]) or i >= len(ours["gen_ids"]):
            break
        if ours["gen_ids"][i] != ref["gen_ids"][i]:
            margin = float(rs["top"][0][1]) - float(rs["top"][1][1])
            if margin >= diverge:
                return (f"{label} step {i}: greedy picks {ours['gen_ids'][i]}, reference "
                        f"{ref['gen_ids'][i]} with margin {margin:.4f} >= {diverge}")
            stats["parted"] += 1
            break
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tinyrt", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--golden")
    p.add_argument("--reference-device")
    p.add_argument("--tol", choices=sorted(TOLERANCES), default="quant")
    p.add_argument("-n", type=int, default=16)
    p.add_argument("--timeout", type=int, default=120)
    args = p.parse_args()
    tol = TOLERANCES[args.tol]
    stats = {"steps": 0, "compared": 0, "sum": 0.0, "max": 0.0, "parted": 0}
    name = os.path.basename(args.model)
    if args.golden:
        refs = [json.loads(l) for l in open(args.golden, encoding="utf-8") if l.strip()]
        against = os.path.basename(args.golden)
    elif args.reference_device:
        refs = [generate(args, args.reference_device, t, args.n) for t in PROMPTS]
        for r, t in zip(refs, PROMPTS):
            r["prompt"] = t
        against = f"--device {args.reference_device}"
    else:
        sys.exit("give --golden or --reference-device")
    for k, ref in enumerate(refs):
        ours = generate(args, args.device, ref["prompt"], len(ref["steps"]))
        err = compare(ref, ours, tol, f"{name} [{args.device}] prompt {k + 1}", stats)
        if err:
            print(f"FAIL {err}")
            sys.exit(1)
    mean = stats["sum"] / max(stats["compared"], 1)
    ok = mean <= tol[1]
    print(f"{'ok  ' if ok else 'FAIL'} {name} [{args.device}] vs {against}: {len(refs)} prompts, "
          f"{stats['steps']} steps, {stats['compared']} logits, max |d| {stats['max']:.4f} "
          f"(<= {tol[0]}), mean {mean:.4f} (<= {tol[1]}), parted {stats['parted']}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
