#!/usr/bin/env bash
# tinyrt serve against llama-server, side by side on the same machine, model and load: for each
# model and each stream count N, start one server with N slots (`--parallel N` / `-np N`, the same
# total -c), run scripts/loadtest.py with N clients for S seconds (streaming chat requests of
# max_tokens each, ignore_eos so every request generates the same count), stop it, then the other
# server; the order alternates with N so that the host's drifting load hits both alike. Prints a
# Markdown table per model: aggregate generated tok/s, the ratio tinyrt / llama-server, TTFT and
# inter-token p50/p99, errors and peak RSS.
#
# Usage: scripts/bench-serve.sh [-s SECONDS] [-n MAX_TOKENS] [-t THREADS] [-c CTX_PER_SLOT]
#                               [-N "1 4 8 16"] MODEL.gguf...
# Environment: TINYRT (default target/release/tinyrt), LLAMA_SERVER (default
# ~/.cache/tinyrt-ref/bin/llama-server, built by scripts/build-llamacpp.sh), OUT (a folder for
# the raw JSON reports; default a temporary one).
# Loopback only; every server is killed when its run ends (and on exit).
set -euo pipefail
S=60 NTOK=64 T=2 CTXS=512 STREAMS="1 4 8 16"
while getopts "s:n:t:c:N:h" opt; do
  case $opt in
    s) S=$OPTARG ;; n) NTOK=$OPTARG ;; t) T=$OPTARG ;; c) CTXS=$OPTARG ;; N) STREAMS=$OPTARG ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "error: give at least one MODEL.gguf (see $0 -h)" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TINYRT=${TINYRT:-$ROOT/target/release/tinyrt}
LLAMA_SERVER=${LLAMA_SERVER:-$HOME/.cache/tinyrt-ref/bin/llama-server}
for tool in "$TINYRT" "$LLAMA_SERVER"; do
  [ -x "$tool" ] || { echo "error: $tool is missing (build it or set TINYRT / LLAMA_SERVER)" >&2; exit 2; }
done
for f in "$@"; do [ -f "$f" ] || { echo "error: $f does not exist" >&2; exit 2; }; done
WORK=$(mktemp -d)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server WHICH MODEL N PORT: starts it in the background (PID), waits for /health 200.
start_server() {
  local which=$1 model=$2 n=$3 port=$4 ctx=$(($5 * $3))
  if [ "$which" = tinyrt ]; then
    "$TINYRT" serve "$model" --port "$port" --parallel "$n" -c "$ctx" -t "$T" 2> "$WORK/server.log" &
  else
    "$LLAMA_SERVER" -m "$model" --host 127.0.0.1 --port "$port" -np "$n" -c "$ctx" -t "$T" -tb "$T" \
      > /dev/null 2> "$WORK/server.log" &
  fi
  PID=$!
  for _ in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$port/health" > /dev/null 2>&1; then return 0; fi
    kill -0 "$PID" 2>/dev/null || { tail -5 "$WORK/server.log" >&2; return 1; }
    sleep 0.2
  done
  echo "error: $which did not become ready in 120 s" >&2
  return 1
}

stop_server() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; }

for model in "$@"; do
  name=$(basename "$model" .gguf)
  i=0
  for n in $STREAMS; do
    order="tinyrt llama-server"; [ $((i % 2)) = 1 ] && order="llama-server tinyrt"
    i=$((i + 1))
    for which in $order; do
      port=$(free_port)
      echo "$name: $which, $n streams, $S s" >&2
      start_server "$which" "$model" "$n" "$port" "$CTXS"
      python3 "$ROOT/scripts/loadtest.py" --url "http://127.0.0.1:$port" --clients "$n" \
        --seconds "$S" --max-tokens "$NTOK" --ignore-eos --pid "$PID" \
        --json "$OUT/$name-$which-$n.json" > /dev/null || echo "warning: $which had errors" >&2
      stop_server
    done
  done
  python3 - "$OUT" "$name" "$STREAMS" <<'PY'
import json, sys
out, name, streams = sys.argv[1], sys.argv[2], sys.argv[3].split()
r = {(w, n): json.load(open(f"{out}/{name}-{w}-{n}.json")) for w in ("tinyrt", "llama-server") for n in streams}
print(f"\n**{name}**\n")
print("| streams | tinyrt tok/s | llama-server tok/s | ratio | TTFT p50 / p99 ms (tinyrt, llama-server) | ITL p50 / p99 ms (tinyrt, llama-server) | errors | peak RSS MiB (tinyrt, llama-server) |")
print("|---|---|---|---|---|---|---|---|")
base = r[("tinyrt", streams[0])]["tok_per_s"]
for n in streams:
    a, b = r[("tinyrt", n)], r[("llama-server", n)]
    ratio = a["tok_per_s"] / b["tok_per_s"] if b["tok_per_s"] else float("nan")
    print(f"| {n} | {a['tok_per_s']} ({a['tok_per_s'] / base:.1f}× 1 stream) | {b['tok_per_s']} | {ratio:.2f} | "
          f"{a['ttft_ms_p50']} / {a['ttft_ms_p99']}, {b['ttft_ms_p50']} / {b['ttft_ms_p99']} | "
          f"{a['itl_ms_p50']} / {a['itl_ms_p99']}, {b['itl_ms_p50']} / {b['itl_ms_p99']} | "
          f"{a['errors']}, {b['errors']} | {a.get('rss_mib_peak')}, {b.get('rss_mib_peak')} |")
PY
done
