#!/usr/bin/env bash
# Compare tinyrt with llama.cpp on the same models, interleaved (A B A B ...) so that the
# host's changing load hits both alike. Prints a Markdown table: per model and test (pp, tg),
# the median tokens/s of each over all runs and the median of the per-round ratios, tinyrt's
# peak RSS and time to first token (16-token prompt, from the start of the command, median over
# rounds), and for decode the bandwidth bound: the -t threads' memory read bandwidth, measured
# by tinyrt in every round, divided by the weight bytes one token reads; both runtimes' decode
# speed is shown as a fraction of that bound (median over rounds).
#
# Usage: scripts/bench-vs-llamacpp.sh [-p 512] [-n 128] [-t 2] [-r 3] [-k ROUNDS] [-B] MODEL.gguf...
#   -B: skip the bandwidth probe (it reads a 1 GiB buffer once per round)
# Environment: TINYRT (default: target/release/tinyrt), LLAMA_BENCH (default:
# ~/.cache/tinyrt-ref/bin/llama-bench). Needs python3 (to read the JSON).
set -euo pipefail

P=512 N=128 T=2 R=3 ROUNDS=2 BW=--read-bandwidth
while getopts "p:n:t:r:k:Bh" opt; do
  case $opt in
    p) P=$OPTARG ;; n) N=$OPTARG ;; t) T=$OPTARG ;; r) R=$OPTARG ;; k) ROUNDS=$OPTARG ;;
    B) BW= ;;
    *) sed -n '2,15p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "error: no model given (see $0 -h)" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TINYRT=${TINYRT:-$ROOT/target/release/tinyrt}
LLAMA_BENCH=${LLAMA_BENCH:-$HOME/.cache/tinyrt-ref/bin/llama-bench}
for tool in "$TINYRT" "$LLAMA_BENCH"; do
  [ -x "$tool" ] || { echo "error: $tool is missing (build it or set TINYRT / LLAMA_BENCH)" >&2; exit 2; }
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for model in "$@"; do
  [ -f "$model" ] || { echo "error: $model does not exist" >&2; exit 2; }
  for round in $(seq 1 "$ROUNDS"); do
    echo "[$(basename "$model")] round $round/$ROUNDS: tinyrt" >&2
    "$TINYRT" bench "$model" -p "$P" -n "$N" -t "$T" -r "$R" $BW --json > "$WORK/a.$round.json"
    echo "[$(basename "$model")] round $round/$ROUNDS: llama-bench" >&2
    "$LLAMA_BENCH" -m "$model" -p "$P" -n "$N" -t "$T" -r "$R" -o json 2>/dev/null > "$WORK/b.$round.json"
  done
  python3 - "$WORK" "$ROUNDS" "$model" <<'PY'
import json, os, statistics, sys
work, rounds, model = sys.argv[1], int(sys.argv[2]), os.path.basename(sys.argv[3])
def ours(r):
    d = json.load(open(f"{work}/a.{r}.json"))
    return {k: d[k]["runs"] for k in ("pp", "tg") if d.get(k)}, d.get("rss_bytes"), d
def theirs(r):
    out = {}
    for t in json.load(open(f"{work}/b.{r}.json")):
        key = "pp" if t["n_gen"] == 0 else "tg" if t["n_prompt"] == 0 else None
        if key:
            out[key] = t["samples_ts"]
    return out
a = [ours(r) for r in range(1, rounds + 1)]
b = [theirs(r) for r in range(1, rounds + 1)]
rss = max((x[1] or 0) for x in a)
ttfts = [x[2]["ttft_ms"] for x in a if x[2].get("ttft_ms") is not None]
ttft = f"{statistics.median(ttfts):.0f} ms" if ttfts else "-"
for test in ("pp", "tg"):
    if test not in a[0][0] or test not in b[0]:
        continue
    ta = [v for x in a for v in x[0][test]]
    tb = [v for x in b for v in x[test]]
    ratios = [statistics.median(x[0][test]) / statistics.median(y[test]) for x, y in zip(a, b)]
    bound = "-"
    if test == "tg":
        # Per round: bound = read bandwidth / bytes per token; fractions of it for both.
        rows = [(x[2]["read_gbps"] * 1e9 / x[2]["decode_bytes_per_token"],
                 statistics.median(x[0][test]), statistics.median(y[test]))
                for x, y in zip(a, b) if x[2].get("read_gbps") and x[2].get("decode_bytes_per_token")]
        if rows:
            gbps = statistics.median(x[2]["read_gbps"] for x in a if x[2].get("read_gbps"))
            bound = (f"{statistics.median(r[0] for r in rows):.1f} t/s at {gbps:.1f} GB/s: "
                     f"{statistics.median(r[1] / r[0] for r in rows):.0%} / "
                     f"{statistics.median(r[2] / r[0] for r in rows):.0%}")
    print(f"| {model} | {test} | {statistics.median(ta):.2f} | {statistics.median(tb):.2f} "
          f"| {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | {rss / 2**20:.0f} MiB "
          f"| {ttft if test == 'pp' else '-'} | {bound} |")
PY
done | { echo "| model | test | tinyrt t/s | llama.cpp t/s | ratio (range over rounds) | tinyrt peak RSS | tinyrt TTFT (16 tok) | decode bound (tinyrt / llama.cpp of it) |"; echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"; cat; }
echo "(-p $P -n $N -t $T, $R runs per round, $ROUNDS interleaved rounds; $(date -u +%Y-%m-%dT%H:%MZ))"
