#!/usr/bin/env bash
# Runs ON the GPU machine, from the repository root, with gpu-bundle/ (scripts/gpu-bundle.sh)
# carried along. Every step runs whatever happened before; each is reported, and a Markdown
# summary ends the output. Budget: under 5 minutes when things work (step limits add up to
# about 6.5 minutes in the worst case).
#   1. nvidia-smi summary
#   2. gpu-bundle/gpu: every kernel against its CPU reference (TINYRT_REQUIRE_GPU=1)
#   3. gpu-bundle/nvrtc: compile + ptxas register report with the machine's own toolchain
#   4. gpu-bundle/gpu_bench: copy bandwidth, matvec GB/s at TinyLlama / SmolLM2 shapes, graph
#   5. with gpu-bundle/tinyrt (CLI with --device cuda): logits vs CPU on the fixtures, bench
# Full logs of every step go to $OUT/gpu-check/ (the device tool brings $OUT back, at most 8
# files; /tmp otherwise); the console shows the essentials of each step and a summary table.
# Device tool call: run(command="scripts/gpu-check.sh", carry=["gpu-bundle"], timeout_s=360).
set -uo pipefail
cd "$(dirname "$0")/.."
export B=gpu-bundle
export LOGS="${OUT:-/tmp}/gpu-check"
mkdir -p "$LOGS"
chmod +x "$B"/* 2>/dev/null
SUMMARY=()

# step NAME LOGFILE FILTER TIMEOUT_S CMD...: runs CMD with a time limit, logs everything, shows
# what FILTER (a command given the log's path) keeps, and records the result.
step() {
    local name=$1 log="$LOGS/$2.log" filter=$3 limit=$4 start rc status
    shift 4
    echo
    echo "=================== $name (log: $log)"
    start=$(date +%s)
    if declare -F "$1" >/dev/null; then
        # A shell function: timeout runs programs only, so run it in a child bash.
        export -f "$1"
        timeout --kill-after=10 "$limit" bash -c "$1" >"$log" 2>&1
    else
        timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    fi
    rc=$?
    $filter "$log"
    case $rc in
        0) status=ok ;;
        124 | 137) status="TIMEOUT (${limit}s)" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    SUMMARY+=("| $name | $status | $(($(date +%s) - start)) s |")
    echo "=================== $name: $status"
}
show_all() { cat "$1"; }
show_tail() { tail -n 15 "$1"; }
# Test harness output: failing tests with their messages, and the result line.
show_tests() {
    grep -E -A4 '^---- |panicked at' "$1" | head -n 120
    grep -E '^test result|SKIPPED' "$1"
}
show_table() {
    grep -E -A3 'panicked at' "$1"
    grep -E '^\||^device:|test result' "$1"
}

# The driver library and the machine's NVRTC, which cudarc loads by name at run time (the
# loader reads LD_LIBRARY_PATH once at start, so set it before running the binaries).
add_lib_dir() { export LD_LIBRARY_PATH="$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; }
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64; do
        [ -e "$d/libcuda.so.1" ] && add_lib_dir "$d" && echo "libcuda: $d" && break
    done
fi
nvrtc_dir=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
    /usr/local/cuda-13*/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu \
    "$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null)"; do
    if [ -n "$d" ] && ls "$d"/libnvrtc.so* >/dev/null 2>&1; then
        nvrtc_dir=$d
        add_lib_dir "$d"
        echo "NVRTC: $(ls "$d"/libnvrtc.so* | head -3 | tr '\n' ' ')"
        break
    fi
done
[ -n "$nvrtc_dir" ] || echo "NVRTC: not found in the usual places; relying on the loader's default path"
for d in /usr/local/cuda/bin /usr/local/cuda-13*/bin; do
    [ -x "$d/ptxas" ] && export PATH="$d:$PATH" && break
done

info() {
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.memory,power.limit \
        --format=csv || nvidia-smi
    command -v nvcc >/dev/null && nvcc --version | tail -2
    cat "$B/MANIFEST" 2>/dev/null
    ls -la "$B"
}
step "nvidia-smi" nvidia-smi show_all 30 info

# A kernel that faults poisons the (shared) CUDA context for every later test of the process:
# run each failed test again alone, so that only the culprit fails.
rerun_failed() {
    local t n=0 bad=0
    for t in $(sed -n '/^failures:$/,/^test result/p' "$LOGS/gpu-tests.log" | grep -E '^    [a-z_0-9]+$'); do
        n=$((n + 1))
        # (Not under $LOGS: at most 8 files come back from the device machine.)
        if TINYRT_REQUIRE_GPU=1 timeout 30 "$B/gpu" --exact "$t" >"/tmp/alone-$t.log" 2>&1; then
            echo "| $t | passes alone (failed with the others: a fault elsewhere poisoned the context) |"
        else
            bad=$((bad + 1))
            echo "| $t | FAILS alone: $(grep -A1 'panicked at' "/tmp/alone-$t.log" | tail -1 | cut -c1-300) |"
        fi
    done
    echo "$bad of $n failed tests fail alone"
    [ "$bad" -eq 0 ]
}

if [ -x "$B/gpu" ]; then
    step "kernel tests (gpu.rs)" gpu-tests show_tests 100 env TINYRT_REQUIRE_GPU=1 "$B/gpu" --test-threads=4
    if grep -q '^failures:$' "$LOGS/gpu-tests.log"; then
        step "failed kernel tests, each alone" rerun show_all 60 rerun_failed
    fi
else
    SUMMARY+=("| kernel tests (gpu.rs) | MISSING $B/gpu | - |")
fi

if [ -x "$B/nvrtc" ]; then
    step "NVRTC + ptxas registers (nvrtc.rs)" nvrtc show_tail 45 "$B/nvrtc" --nocapture
fi

if [ -x "$B/gpu_bench" ]; then
    step "bandwidth + kernel bench (gpu_bench.rs)" bench show_table 100 env TINYRT_REQUIRE_GPU=1 "$B/gpu_bench" --ignored --nocapture
else
    SUMMARY+=("| bench | MISSING $B/gpu_bench | - |")
fi

# End to end, when the CLI has a CUDA path: greedy ids and top logits, CUDA vs CPU.
e2e() {
    local ok=0 n=0 f
    for f in tests/fixtures/*.gguf; do
        [ -e "$f" ] || continue
        n=$((n + 1))
        "$B/tinyrt" generate "$f" -p "Once upon a time" -n 16 --temp 0 --json --top-logits 8 --device cpu \
            >/tmp/cpu.json 2>/tmp/cpu.err || { echo "$f: cpu run failed: $(tail -1 /tmp/cpu.err)"; continue; }
        "$B/tinyrt" generate "$f" -p "Once upon a time" -n 16 --temp 0 --json --top-logits 8 --device cuda \
            >/tmp/cuda.json 2>/tmp/cuda.err || { echo "$f: cuda run failed: $(tail -1 /tmp/cuda.err)"; continue; }
        if python3 - /tmp/cpu.json /tmp/cuda.json "$f" <<'PY'; then ok=$((ok + 1)); fi
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
name = sys.argv[3]
worst = 0.0
for sa, sb in zip(a["steps"], b["steps"]):
    ta = {i: l for i, l in sa["top"]}
    for i, l in sb["top"]:
        if i in ta:
            worst = max(worst, abs(ta[i] - l))
same = a["gen_ids"] == b["gen_ids"]
print(f"{name}: ids {'equal' if same else 'DIFFER'}; max |logit diff| over shared top-8 = {worst:.4f}")
sys.exit(0 if same else 1)
PY
    done
    echo "fixtures matching: $ok / $n"
    [ "$n" -gt 0 ] && [ "$ok" -eq "$n" ]
}
bench_cli() {
    local f
    for f in tests/fixtures/*.gguf; do
        [ -e "$f" ] || continue
        "$B/tinyrt" bench "$f" -p 128 -n 64 -r 2 --device cuda || return 1
        break
    done
}
if [ -x "$B/tinyrt" ] && "$B/tinyrt" generate --help 2>&1 | grep -q -- '--device'; then
    step "end to end: CUDA vs CPU logits on fixtures" e2e show_all 45 e2e
    step "tinyrt bench --device cuda" cli-bench show_all 45 bench_cli
else
    SUMMARY+=("| end to end | skipped: no CLI with --device cuda in $B | - |")
fi

echo
echo "## GPU check summary"
echo
echo "| step | result | time |"
echo "| --- | --- | --- |"
printf '%s\n' "${SUMMARY[@]}"
