#!/usr/bin/env bash
# Constrained against unconstrained decode speed, tinyrt and llama.cpp side by side in the same
# run, interleaved (tinyrt plain, tinyrt schema, llama.cpp plain, llama.cpp schema; then again)
# so that the host's changing load hits all four alike. Greedy decoding of one prompt under one
# JSON schema (default tests/data/schemas/01-user-profile.json); the unconstrained runs decode a
# fixed -n tokens with the end-of-generation token ignored, the constrained ones until the value
# is complete (at most -n). Decode tokens/s: tinyrt's `generate` stderr line (generated tokens
# after the first / their time), llama.cpp's `llama-completion` "eval time" line (the same
# count). Prints a Markdown table: per model, the median tokens/s over rounds of each run and
# the constrained speed as a fraction of the unconstrained one, per runtime.
#
# Usage: scripts/bench-structured.sh [-n 128] [-t 2] [-k ROUNDS] [-s SCHEMA] MODEL.gguf...
# Environment: TINYRT (default: target/release/tinyrt), LLAMA_COMPLETION (default:
# ~/.cache/tinyrt-ref/bin/llama-completion). Needs python3.
set -euo pipefail

N=128 T=2 ROUNDS=3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCHEMA=$ROOT/tests/data/schemas/01-user-profile.json
while getopts "n:t:k:s:h" opt; do
  case $opt in
    n) N=$OPTARG ;; t) T=$OPTARG ;; k) ROUNDS=$OPTARG ;; s) SCHEMA=$OPTARG ;;
    *) sed -n '2,15p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "error: no model given (see $0 -h)" >&2; exit 2; }
TINYRT=${TINYRT:-$ROOT/target/release/tinyrt}
LLAMA=${LLAMA_COMPLETION:-$HOME/.cache/tinyrt-ref/bin/llama-completion}
for tool in "$TINYRT" "$LLAMA"; do
  [ -x "$tool" ] || { echo "error: $tool is missing (build it or set TINYRT / LLAMA_COMPLETION)" >&2; exit 2; }
done
[ -f "$SCHEMA" ] || { echo "error: $SCHEMA does not exist" >&2; exit 2; }
PROMPT="A JSON object (user profile):"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

tinyrt_tps() { # args...: the decode tok/s of tinyrt generate's stderr line
  "$TINYRT" generate "$@" -p "$PROMPT" -n "$N" -t "$T" --temp 0 --json > "$WORK/out.json" 2> "$WORK/err.txt"
  sed -n 's/.*generation \([0-9]*\) tokens, \([0-9.]*\) tok\/s.*/\1 \2/p' "$WORK/err.txt"
}
llama_tps() { # args...: the decode tok/s of llama-completion's "eval time" line
  "$LLAMA" "$@" -p "$PROMPT" -n "$N" -t "$T" --temp 0 -no-cnv --no-warmup --no-display-prompt \
    > "$WORK/out.txt" 2> "$WORK/err.txt" < /dev/null
  grep -E '^\S*\s*eval time|[^t] eval time' "$WORK/err.txt" | grep -v prompt | tail -1 \
    | sed -n 's/.*\/ *\([0-9]*\) runs.*, *\([0-9.]*\) tokens per second.*/\1 \2/p'
}

printf 'model\tround\trun\ttokens\ttps\n' > "$WORK/times.tsv"
for model in "$@"; do
  [ -f "$model" ] || { echo "error: $model does not exist" >&2; exit 2; }
  name=$(basename "$model")
  for round in $(seq 1 "$ROUNDS"); do
    echo "[$name] round $round/$ROUNDS" >&2
    printf '%s\t%s\ttinyrt\t%s\n' "$name" "$round" "$(tinyrt_tps "$model" --ignore-eos | tr ' ' '\t')" >> "$WORK/times.tsv"
    printf '%s\t%s\ttinyrt-schema\t%s\n' "$name" "$round" "$(tinyrt_tps "$model" --json-schema "$SCHEMA" | tr ' ' '\t')" >> "$WORK/times.tsv"
    printf '%s\t%s\tllama.cpp\t%s\n' "$name" "$round" "$(llama_tps -m "$model" --ignore-eos | tr ' ' '\t')" >> "$WORK/times.tsv"
    printf '%s\t%s\tllama.cpp-schema\t%s\n' "$name" "$round" "$(llama_tps -m "$model" -jf "$SCHEMA" | tr ' ' '\t')" >> "$WORK/times.tsv"
  done
done
python3 - "$WORK/times.tsv" "$ROUNDS" "$T" "$(basename "$SCHEMA")" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
rounds, threads, schema = sys.argv[2], sys.argv[3], sys.argv[4]
print(f"Greedy decode, {threads} threads, schema {schema}, median of {rounds} interleaved rounds "
      "(tokens/s; tokens decoded in brackets):\n")
print("| model | tinyrt | tinyrt + schema | fraction | llama.cpp | llama.cpp + schema | fraction |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for model in dict.fromkeys(r["model"] for r in rows):
    def med(run):
        rs = [r for r in rows if r["model"] == model and r["run"] == run and r["tps"]]
        if not rs:
            return None, "-"
        tps = statistics.median(float(r["tps"]) for r in rs)
        toks = statistics.median(int(r["tokens"]) for r in rs)
        return tps, f"{tps:.1f} [{toks:.0f}]"
    a, sa = med("tinyrt"); b, sb = med("tinyrt-schema")
    c, sc = med("llama.cpp"); d, sd = med("llama.cpp-schema")
    fa = f"{b / a:.0%}" if a and b else "-"
    fc = f"{d / c:.0%}" if c and d else "-"
    print(f"| {model} | {sa} | {sb} | {fa} | {sc} | {sd} | {fc} |")
PY
