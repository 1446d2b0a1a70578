#!/usr/bin/env bash
# Behaviour-unchanged check for refactors: records what tinyrt computes, then compares a later
# build with the record bit for bit.
#
#   scripts/check-unchanged.sh record DIR    # before the change (with the old binary)
#   scripts/check-unchanged.sh check DIR     # after it: exit 1 and a diff on any difference
#
# What is recorded (every file under DIR is one case):
#   - `generate --json --top-logits 8 --temp 0` for every model fixture in ../shared/fixtures
#     and both real models in models/, on every ISA the CPU has (TINYRT_ISA=scalar|avx2|avx512),
#     for each prompt of the model's golden file (../shared/golden; the fixtures' set when the
#     model has none): ids, top-8 logits, text and stop reason, with the timing fields removed;
#   - the same with `--requant nf4` (fixtures on every ISA, real models on the best one), and
#     with `-t 1` (real models, best ISA), since thread splits must not change a bit;
#   - `quantize` of the f32 fixtures to every target type and of a q8_0 fixture to q4_0/q4_k,
#     on every ISA: the sha256 of the output file.
# Environment: TINYRT (default target/release/tinyrt), SHARED (default ../shared),
# MODELS (default models/), QUICK=1 (first two prompts only, for a fast look).
set -euo pipefail

mode=${1:-}
dir=${2:-}
case $mode in
  record | check) [ -n "$dir" ] || { sed -n '2,7p' "$0"; exit 2; } ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TINYRT=${TINYRT:-$ROOT/target/release/tinyrt}
SHARED=${SHARED:-$ROOT/../shared}
MODELS=${MODELS:-$ROOT/models}
[ -x "$TINYRT" ] || { echo "error: $TINYRT is missing (cargo build --release, or set TINYRT)" >&2; exit 2; }
[ -d "$SHARED/fixtures" ] || { echo "error: $SHARED/fixtures is missing (set SHARED)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "$mode" = record ]; then
  out=$dir
  mkdir -p "$out"
else
  [ -d "$dir" ] || { echo "error: $dir has no record (run: $0 record $dir with the old binary)" >&2; exit 2; }
  out=$work/now
  mkdir -p "$out"
fi

isas=(scalar)
grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && isas+=(avx2)
grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo && isas+=(avx512)
best=${isas[-1]}

# prompts MODEL_NAME -> writes $work/prompts/<name>/NN-*.txt from the model's golden file
prompts() {
  local name=$1 golden="$SHARED/golden/$1.jsonl"
  [ -f "$golden" ] || golden="$SHARED/golden/llama-tiny-q4_0.jsonl"
  mkdir -p "$work/prompts/$name"
  python3 - "$golden" "$work/prompts/$name" "${QUICK:-0}" <<'PY'
import json, sys
golden, dest, quick = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
rows = [json.loads(l) for l in open(golden, encoding="utf-8") if l.strip()]
for row in rows[:2] if quick else rows:
    with open(f"{dest}/{row['prompt_file']}", "wb") as f:
        f.write(row["prompt"].encode("utf-8"))
PY
}

# normalize FILE: drop the fields that measure time, keep everything computed
normalize() {
  python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items()
                if not any(s in k for s in ("time", "_ms", "_s", "per_second", "tps", "rss"))}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v
json.dump(strip(d), sys.stdout, sort_keys=True)
print()
PY
}

cases=0
# gen CASE MODEL N ISA EXTRA...
gen() {
  local case=$1 model=$2 n=$3 isa=$4 name p
  shift 4
  name=$(basename "$model" .gguf | tr 'A-Z.' 'a-z-')
  [ -d "$work/prompts/$name" ] || prompts "$name"
  for p in "$work/prompts/$name"/*.txt; do
    local key="gen.$name.$(basename "$p" .txt).$case.$isa"
    if TINYRT_ISA=$isa "$TINYRT" generate "$model" --file "$p" -n "$n" --temp 0 --json \
      --top-logits 8 "$@" > "$work/raw.json" 2> "$work/err"; then
      normalize "$work/raw.json" > "$out/$key"
    else
      echo "exit $?: $(tail -1 "$work/err")" > "$out/$key"
    fi
    cases=$((cases + 1))
  done
}

fixtures=()
for f in "$SHARED"/fixtures/*.gguf; do
  case $(basename "$f") in ggml-vocab-*) continue ;; esac
  fixtures+=("$f")
done
real=()
for f in "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODELS/gemma-3-270m-q4_k_m.gguf"; do
  if [ -f "$f" ]; then real+=("$f"); else echo "warning: $f is missing (scripts/fetch-models.sh)" >&2; fi
done

echo "ISAs: ${isas[*]}; ${#fixtures[@]} fixtures, ${#real[@]} real models" >&2
for isa in "${isas[@]}"; do
  for m in "${fixtures[@]}"; do
    echo "[$isa] $(basename "$m")" >&2
    gen plain "$m" 16 "$isa"
    gen nf4 "$m" 16 "$isa" --requant nf4
  done
  for m in "${real[@]}"; do
    echo "[$isa] $(basename "$m")" >&2
    gen plain "$m" 32 "$isa"
  done
done
for m in "${real[@]}"; do
  echo "[$best] $(basename "$m") nf4, -t 1" >&2
  gen nf4 "$m" 32 "$best" --requant nf4
  gen t1 "$m" 32 "$best" -t 1
done

types=(f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q4_k_m q5_k q5_k_m q6_k iq4_nl)
for isa in "${isas[@]}"; do
  echo "[$isa] quantize" >&2
  for src in phi2-tiny-f32 stablelm-tiny-f32; do
    for t in "${types[@]}"; do
      key="quant.$src.$t.$isa"
      if TINYRT_ISA=$isa "$TINYRT" quantize "$SHARED/fixtures/$src.gguf" "$work/q.gguf" "$t" \
        > /dev/null 2> "$work/err"; then
        sha256sum < "$work/q.gguf" | cut -d' ' -f1 > "$out/$key"
      else
        echo "exit $?: $(tail -1 "$work/err")" > "$out/$key"
      fi
      rm -f "$work/q.gguf"
      cases=$((cases + 1))
    done
  done
  for t in q4_0 q4_k; do
    key="quant.llama-tiny-q8_0.$t.$isa"
    TINYRT_ISA=$isa "$TINYRT" quantize "$SHARED/fixtures/llama-tiny-q8_0.gguf" "$work/q.gguf" "$t" \
      > /dev/null 2> "$work/err" && sha256sum < "$work/q.gguf" | cut -d' ' -f1 > "$out/$key" \
      || echo "exit: $(tail -1 "$work/err")" > "$out/$key"
    rm -f "$work/q.gguf"
    cases=$((cases + 1))
  done
done

if [ "$mode" = record ]; then
  echo "recorded $cases cases in $dir" >&2
  exit 0
fi
changed=0
for f in "$out"/*; do
  key=$(basename "$f")
  if [ ! -f "$dir/$key" ]; then
    echo "new case (not in the record): $key" >> "$work/diff"; changed=$((changed + 1))
  elif ! cmp -s "$f" "$dir/$key"; then
    { echo "== $key"; diff "$dir/$key" "$f" | head -c 600; echo; } >> "$work/diff"
    changed=$((changed + 1))
  fi
done
if [ "${QUICK:-0}" != 1 ]; then
  for f in "$dir"/*; do
    [ -f "$out/$(basename "$f")" ] || { echo "missing case: $(basename "$f")" >> "$work/diff"; changed=$((changed + 1)); }
  done
fi
if [ "$changed" = 0 ]; then
  echo "unchanged: $cases cases bit-identical to $dir" >&2
else
  echo "CHANGED: $changed case(s) differ from $dir:" >&2
  head -c 4000 "$work/diff" >&2
  exit 1
fi
