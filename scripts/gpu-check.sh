#!/usr/bin/env bash
# Runs ON the GPU machine, from the repository root, with gpu-bundle/ (scripts/gpu-bundle.sh)
# carried along. Every step runs whatever happened before; each is reported, and a Markdown
# summary ends the output. Budget: about 6 minutes when things work (step limits add up to
# about 13 minutes in the worst case; the switch comparisons and the speed runs each start the
# CLI several times, and every start compiles the kernels with NVRTC).
#   1. nvidia-smi summary
#   2. gpu-bundle/gpu: every kernel against its CPU reference (TINYRT_REQUIRE_GPU=1)
#   3. gpu-bundle/nvrtc: compile + ptxas register report with the machine's own toolchain
#   3'. gpu-bundle/lora_cuda.xz: LoRA logits on CUDA against the CPU backend (gpu-bundle/lora)
#   4. gpu-bundle/gpu_bench: copy bandwidth, matvec GB/s at TinyLlama / SmolLM2 shapes, graph
#   5. with gpu-bundle/tinyrt (CLI with --device cuda) and gpu-bundle/fixtures: parity vs the
#      goldens (llama-tiny has Llama-3 rope_freqs), CUDA vs CPU on synth models, the backend's
#      switches (graph on/off, fusions, int8 prefill, f32 KV, device argmax), pp/tg and tg vs
#      the bandwidth roofline
#
# Sending the repository: the device tool refuses more than 64 MiB (tracked files + carried
# gpu-bundle/), and tests/fixtures alone is 81 MiB. gpu-bundle.sh copies the fixtures and
# goldens this check needs into gpu-bundle/fixtures, so leave tests/fixtures out of the send:
#   scripts/gpu-bundle.sh
#   git rm -r -q --cached tests/fixtures && echo 'tests/fixtures/' >> .git/info/exclude
#   (run the device tool: command "scripts/gpu-check.sh", carry ["gpu-bundle"], timeout_s 540)
#   git reset -q && sed -i '\#^tests/fixtures/$#d' .git/info/exclude
# (In a worktree, .git is a file: use "$(git rev-parse --git-common-dir)/info/exclude".)
# Full logs of every step go to $OUT/gpu-check/ (the device tool brings $OUT back, at most 8
# files; /tmp otherwise); the console shows the essentials of each step and a summary table.
# Device tool call: run(command="scripts/gpu-check.sh", carry=["gpu-bundle"], timeout_s=540).
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
        # A shell function: timeout runs programs only, so run it in a child bash, with every
        # function and the variables the functions use.
        export -f $(declare -F | awk '{print $3}')
        export FIX SYNTH
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

# LoRA on CUDA against the CPU backend (tests/tests/lora_cuda.rs), unpacked from its .xz
# with Python's lzma (gpu-bundle.sh packs it so).
unpack_xz() { # IN OUT
    python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.decompress(open(sys.argv[1], "rb").read()))' "$1" "$2" &&
        chmod +x "$2"
}
if [ -e "$B/lora_cuda.xz" ] && unpack_xz "$B/lora_cuda.xz" /tmp/lora_cuda; then
    step "LoRA: CUDA vs CPU logits (lora_cuda.rs)" lora-cuda show_tests 60 \
        env TINYRT_REQUIRE_GPU=1 TINYRT_LORA_ORACLE="$B/lora" /tmp/lora_cuda --nocapture
    grep -E 'max \|CUDA - CPU\||moves the CPU logits' "$LOGS/lora-cuda.log"
else
    SUMMARY+=("| LoRA CUDA vs CPU | MISSING $B/lora_cuda.xz | - |")
fi

if [ -x "$B/gpu_bench" ]; then
    step "bandwidth + kernel bench (gpu_bench.rs)" bench show_table 100 env TINYRT_REQUIRE_GPU=1 "$B/gpu_bench" --ignored --nocapture
else
    SUMMARY+=("| bench | MISSING $B/gpu_bench | - |")
fi

# 5. End to end with the CLI's CUDA backend (runtime/src/backend/cuda/):
#   a. greedy parity, `--device cuda` against llama.cpp's goldens on the q8_0/q4_0 fixtures
#      carried in gpu-bundle/fixtures (scripts/gpu-parity.py, the rule of tests/tests/parity.rs);
#   b. `--device cuda` against `--device cpu` on `tinyrt synth` models (135M, 270M shapes);
#   b'. the backend's switches against its defaults (scripts/gpu-modes.py): graph off must be
#      identical, fusions / int8 prefill / f32 KV within tolerance, device argmax same ids;
#   b''. encoders (scripts' e2e_encoders): `embed` and `classify` on the *bert* fixtures, CUDA
#      against CPU;
#   c. speed on 135M- and TinyLlama-1.1B-shaped Q4_0 synth models: pp and tg, and tg as a
#      fraction of the roofline (weight bytes read per token / copy bandwidth of step 4), with
#      tg without the CUDA graph and pp without the int8 tensor-core prefill for comparison.
FIX="$B/fixtures"
SYNTH=/tmp/tinyrt-synth
e2e_golden() {
    local f g ok=0 n=0
    for f in "$FIX"/*.gguf; do
        [ -e "$f" ] || continue
        g="$FIX/$(basename "${f%.gguf}").jsonl"
        [ -e "$g" ] || continue
        n=$((n + 1))
        python3 scripts/gpu-parity.py --tinyrt "$B/tinyrt" --model "$f" --device cuda \
            --golden "$g" --tol quant --timeout 60 && ok=$((ok + 1))
    done
    echo "fixtures within the parity rule on CUDA: $ok / $n"
    [ "$n" -gt 0 ] && [ "$ok" -eq "$n" ]
}
e2e_synth() {
    local shape rc=0
    mkdir -p "$SYNTH"
    for shape in smollm2-135m gemma3-270m; do
        "$B/tinyrt" synth "$shape" q4_0 "$SYNTH/$shape-q4_0.gguf" --vocab 4096 >/dev/null || { rc=1; continue; }
        python3 scripts/gpu-parity.py --tinyrt "$B/tinyrt" --model "$SYNTH/$shape-q4_0.gguf" \
            --device cuda --reference-device cpu --tol real -n 16 --timeout 120 || rc=1
    done
    return $rc
}
# The backend's switches (graph, fusions, int8 prefill, f32 KV cache, device argmax) against
# the defaults, on llama-tiny (Llama-3 rope_freqs.weight) and the Gemma-3 shape (GeGLU,
# sliding window): scripts/gpu-modes.py.
e2e_modes() {
    local models=("$FIX/llama-tiny-q4_0.gguf")
    [ -e "$SYNTH/gemma3-270m-q4_0.gguf" ] && models+=("$SYNTH/gemma3-270m-q4_0.gguf")
    python3 scripts/gpu-modes.py --tinyrt "$B/tinyrt" "${models[@]/#/--model=}" --timeout 60
}
# Encoders (BERT, DistilBERT) on CUDA against the CPU: `embed` (mean pooling, not normalised)
# and `classify` logits on the *bert* fixtures gpu-bundle.sh carries, several inputs of
# different lengths (the erf GELU, LayerNorm with bias, bidirectional attention, pooling).
e2e_encoders() {
    local f n=0 bad=0 cmd
    printf '%s\n' "hello" "the quick brown fox jumps over the lazy dog" \
        "$(python3 -c 'print(" ".join(["a longer input of many words"] * 40))')" >/tmp/enc-texts.txt
    for f in "$FIX"/*bert*.gguf; do
        [ -e "$f" ] || continue
        for cmd in "embed --pooling mean --normalize none" "classify"; do
            # shellcheck disable=SC2086
            "$B/tinyrt" $cmd "$f" -f /tmp/enc-texts.txt --json --device cpu >/tmp/enc-cpu.json 2>/tmp/enc-cpu.err
            local rc_cpu=$?
            # shellcheck disable=SC2086
            "$B/tinyrt" $cmd "$f" -f /tmp/enc-texts.txt --json --device cuda >/tmp/enc-cuda.json 2>/tmp/enc-cuda.err
            local rc_cuda=$?
            if [ $rc_cpu -ne 0 ]; then
                echo "| $(basename "$f") | ${cmd%% *} | CPU run failed ($rc_cpu): $(tail -1 /tmp/enc-cpu.err) |"
                continue # the CPU path is checked elsewhere; not this step's failure
            fi
            n=$((n + 1))
            if [ $rc_cuda -ne 0 ]; then
                echo "| $(basename "$f") | ${cmd%% *} | CUDA FAILED ($rc_cuda): $(tail -1 /tmp/enc-cuda.err) |"
                bad=$((bad + 1))
                continue
            fi
            python3 - "$(basename "$f")" "${cmd%% *}" /tmp/enc-cpu.json /tmp/enc-cuda.json <<'PY' || bad=$((bad + 1))
import json, sys
name, what, a, b = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
key = "embedding" if what == "embed" else "logits"
worst, scale = 0.0, 0.0
for x, y in zip(a["data"], b["data"]):
    for u, v in zip(x[key], y[key]):
        worst, scale = max(worst, abs(u - v)), max(scale, abs(u))
ok = len(a["data"]) == len(b["data"]) and worst <= 1e-3 * max(scale, 1.0)
print(f"| {name} | {what} | max |CUDA - CPU| {worst:.2e} (max |CPU| {scale:.2f}) | {'ok' if ok else 'MISMATCH'} |")
sys.exit(0 if ok else 1)
PY
        done
    done
    echo "encoder runs on CUDA differing from the CPU: $bad of $n"
    [ "$n" -gt 0 ] && [ "$bad" -eq 0 ]
}
# tok/s of prompt and generation from generate's stats line (stderr); ENV... (e.g.
# TINYRT_CUDA_GRAPH=0) set for the run.
gen_speed() { # MODEL PROMPT_FILE N [ENV...] -> "pp_tokens pp tg_tokens tg"
    env "${@:4}" "$B/tinyrt" generate "$1" --file "$2" -n "$3" --temp 0 -c 2048 --device cuda 2>&1 >/dev/null |
        sed -n 's/.*prompt \([0-9]*\) tokens, \([0-9.]*\) tok\/s | generation \([0-9]*\) tokens, \([0-9.]*\) tok\/s.*/\1 \2 \3 \4/p' | tail -1
}
speed() {
    local bw shape f bytes s rc=0
    mkdir -p "$SYNTH"
    bw=$(grep -E '^\| device-to-device copy' "$LOGS/bench.log" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$5); print $5}')
    echo "copy bandwidth (step 4): ${bw:-unknown} GB/s"
    python3 -c 'print(" ".join(["the quick brown fox jumps over the lazy dog"] * 56))' >/tmp/pp-prompt.txt
    echo "| model | weight MB read/token | pp t/s (tokens) | tg t/s (tokens) | tg roofline t/s | tg / roofline | tg without graph | pp f32 tiles (no int8 mma) |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for shape in smollm2-135m tinyllama-1.1b; do
        f="$SYNTH/$shape-q4_0-v49152.gguf"
        "$B/tinyrt" synth "$shape" q4_0 "$f" --vocab 49152 >/dev/null || { rc=1; continue; }
        # Bytes a decode step reads: the weights, less the token embedding when the output
        # projection is not tied to it (TinyLlama's shape; SmolLM2's is tied). Q4_0: 18 B / 32.
        bytes=$("$B/tinyrt" info --json "$f" | python3 -c '
import json, sys
d, shape = json.load(sys.stdin), sys.argv[1]
emb = d["vocab_size"] * d["embedding_length"] * 18 // 32 if shape == "tinyllama-1.1b" else 0
print(d["weights_bytes"] - emb)' "$shape")
        s=$(gen_speed "$f" /tmp/pp-prompt.txt 128)
        [ -n "$s" ] || { echo "| $shape | - | run failed | | | | | |"; rc=1; continue; }
        s_nograph=$(gen_speed "$f" /tmp/pp-prompt.txt 128 TINYRT_CUDA_GRAPH=0)
        s_nommq=$(gen_speed "$f" /tmp/pp-prompt.txt 16 TINYRT_CUDA_MMQ=0)
        python3 - "$shape" "$bytes" "${bw:-0}" "$s" "$s_nograph" "$s_nommq" <<'PY'
import sys
shape, nbytes, bw = sys.argv[1], int(sys.argv[2]), float(sys.argv[3] or 0)
ppn, pp, tgn, tg = sys.argv[4].split()
field = lambda s, i: (s.split() + ["-"] * 4)[i]
roof = bw * 1e9 / nbytes if bw > 0 else 0
frac = f"{float(tg) / roof:.1%}" if roof else "-"
print(f"| {shape} Q4_0 | {nbytes / 1e6:.0f} | {pp} ({ppn}) | {tg} ({tgn}) | {roof:.0f} | {frac} "
      f"| {field(sys.argv[5], 3)} | {field(sys.argv[6], 1)} |")
PY
        if "$B/tinyrt" bench --help >/dev/null 2>&1; then
            "$B/tinyrt" bench "$f" -p 512 -n 128 -r 2 --device cuda 2>&1 | tail -n 6
        fi
    done
    return $rc
}
if [ -x "$B/tinyrt" ] && "$B/tinyrt" generate --help 2>&1 | grep -q -- '--device'; then
    step "end to end: CUDA vs llama.cpp goldens (fixtures)" e2e-golden show_all 90 e2e_golden
    step "end to end: CUDA vs CPU (synth 135M, 270M)" e2e-synth show_all 90 e2e_synth
    step "CUDA switches: graph, fusions, int8 prefill, f32 KV, device argmax" e2e-modes show_all 120 e2e_modes
    if ls "$FIX"/*bert*.gguf >/dev/null 2>&1; then
        step "encoders: embed + classify, CUDA vs CPU (bert fixtures)" e2e-encoders show_all 90 e2e_encoders
    else
        SUMMARY+=("| encoders | skipped: no *bert*.gguf in $FIX | - |")
    fi
    step "speed: pp/tg and tg vs roofline (synth Q4_0)" speed show_all 150 speed
else
    SUMMARY+=("| end to end | skipped: no CLI with --device cuda in $B | - |")
fi

echo
echo "## GPU check summary"
echo
echo "| step | result | time |"
echo "| --- | --- | --- |"
printf '%s\n' "${SUMMARY[@]}"
