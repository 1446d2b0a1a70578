#!/usr/bin/env bash
# LoRA overhead of tinyrt against llama.cpp's, on the same model and adapters, interleaved
# (tinyrt base, tinyrt + adapter, llama.cpp base, llama.cpp + adapter; again each round) so that
# the host's changing load hits all alike. Prints a Markdown table: per runtime and adapter, the
# median prefill and decode tokens/s over the rounds and the median ratio to the same runtime
# without the adapter (the overhead is 1 - ratio).
#
# Usage: scripts/bench-lora.sh [-p 512] [-n 128] [-t 2] [-k ROUNDS] MODEL.gguf ADAPTER.gguf...
# tinyrt: `tinyrt bench -p P -n N -r 3 [--lora A]` (llama-bench's pp/tg method; median of 3).
# llama.cpp: llama-bench has no --lora, so `llama-completion -f PROMPT -n N --ignore-eos --temp 0
# [--lora A]` with a P-token prompt; its own "prompt eval" and "eval" rates.
# Environment: TINYRT (default target/release/tinyrt), LLAMA_COMPLETION (default
# ~/.cache/tinyrt-ref/bin/llama-completion, built by scripts/build-llamacpp.sh).
set -euo pipefail
P=512 N=128 T=2 ROUNDS=3
while getopts "p:n:t:k:h" opt; do
  case $opt in
    p) P=$OPTARG ;; n) N=$OPTARG ;; t) T=$OPTARG ;; k) ROUNDS=$OPTARG ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { echo "error: give MODEL.gguf and at least one ADAPTER.gguf (see $0 -h)" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TINYRT=${TINYRT:-$ROOT/target/release/tinyrt}
LLAMA_COMPLETION=${LLAMA_COMPLETION:-$HOME/.cache/tinyrt-ref/bin/llama-completion}
for tool in "$TINYRT" "$LLAMA_COMPLETION"; do
  [ -x "$tool" ] || { echo "error: $tool is missing (build it or set TINYRT / LLAMA_COMPLETION)" >&2; exit 2; }
done
MODEL=$1; shift
for f in "$MODEL" "$@"; do [ -f "$f" ] || { echo "error: $f does not exist" >&2; exit 2; }; done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# A prompt of about P tokens for llama-completion (tinyrt bench draws random tokens itself):
# P words of a plain sentence, one token each in byte-level BPE vocabularies (SmolLM2: 540
# words gave 540 tokens; llama-completion prints the count it ran).
python3 -c "import sys; w = ('the quick brown fox jumps over the lazy dog ' * 1000).split(); print(' '.join(w[:int(sys.argv[1])]))" "$P" > "$WORK/prompt.txt"
for round in $(seq 1 "$ROUNDS"); do
  for a in none "$@"; do
    lora=(); [ "$a" = none ] || lora=(--lora "$a")
    echo "round $round/$ROUNDS: tinyrt $(basename "$a")" >&2
    "$TINYRT" bench "$MODEL" -p "$P" -n "$N" -r 3 -t "$T" --json "${lora[@]}" > "$WORK/t.json"
    python3 - "$WORK/t.json" "$round" "$(basename "$a")" >> "$WORK/rows.tsv" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}\ttinyrt\t{sys.argv[3]}\t{d['pp']['tps_median']}\t{d['tg']['tps_median']}")
PY
  done
  for a in none "$@"; do
    lora=(); [ "$a" = none ] || lora=(--lora "$a")
    echo "round $round/$ROUNDS: llama.cpp $(basename "$a")" >&2
    "$LLAMA_COMPLETION" -m "$MODEL" -f "$WORK/prompt.txt" -n "$N" -t "$T" --temp 0 -no-cnv --ignore-eos \
      "${lora[@]}" < /dev/null > /dev/null 2> "$WORK/l.err" || { tail -3 "$WORK/l.err" >&2; exit 1; }
    python3 - "$WORK/l.err" "$round" "$(basename "$a")" >> "$WORK/rows.tsv" <<'PY'
import re, sys
t = open(sys.argv[1], errors="replace").read()
pp = re.search(r"prompt eval time =.*?([\d.]+) tokens per second", t).group(1)
tg = re.search(r"\s eval time =.*?([\d.]+) tokens per second", t).group(1)
print(f"{sys.argv[2]}\tllama.cpp\t{sys.argv[3]}\t{pp}\t{tg}")
PY
  done
done
python3 - "$WORK/rows.tsv" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
by = {}
for rnd, tool, a, pp, tg in rows:
    by.setdefault((tool, a), {})[int(rnd)] = (float(pp), float(tg))
print("| runtime | adapter | prefill t/s | decode t/s | prefill ÷ base | decode ÷ base |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
for (tool, a), r in by.items():
    base = by[(tool, "none")]
    pp = statistics.median(v[0] for v in r.values())
    tg = statistics.median(v[1] for v in r.values())
    rp = statistics.median(r[k][0] / base[k][0] for k in r)
    rt = statistics.median(r[k][1] / base[k][1] for k in r)
    print(f"| {tool} | {a} | {pp:.1f} | {tg:.1f} | {rp:.3f} | {rt:.3f} |")
PY
