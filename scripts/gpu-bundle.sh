#!/usr/bin/env bash
# Builds, on this (CPU-only) machine, everything the GPU check runs, into gpu-bundle/
# (git-ignored; carried to the GPU machine, which has no Rust toolchain):
#   gpu-bundle/gpu        cuda/tests/gpu/main.rs   every kernel against its CPU reference
#   gpu-bundle/gpu_bench  cuda/tests/gpu_bench.rs  bandwidth and kernel throughput
#   gpu-bundle/nvrtc      cuda/tests/nvrtc.rs      compile + ptxas register report
#   gpu-bundle/lora_cuda.xz  tests/tests/lora_cuda.rs LoRA on CUDA against the CPU backend
#                         (xz-compressed: 3.2 MB -> 1 MB; gpu-check.sh unpacks it)
#   gpu-bundle/lora       its oracle: the tiny Llama base and two adapters (from
#                         ../shared/oracles/lora)
#   gpu-bundle/tinyrt     the CLI, when it has a `--device cuda` path
#   gpu-bundle/fixtures   the q8_0/q4_0 tiny fixtures and their llama.cpp goldens (step 5 of
#                         gpu-check.sh), so that tests/fixtures need not travel, and the tiny
#                         BERT/DistilBERT classifiers of models/ (the encoder step)
# Then run scripts/gpu-check.sh on the GPU machine. Total must stay under 64 MiB.
# CLI_PROFILE=ci builds the CLI without LTO (faster here; default: release).
set -euo pipefail
cd "$(dirname "$0")/.."
out=gpu-bundle
rm -rf "$out"
mkdir -p "$out"

echo "== building the CUDA test binaries (profile ci)"
cargo test -p tinyrt-cuda --features cuda --profile ci --no-run --message-format=json-render-diagnostics \
    > "$out/.cargo-test.json"
cargo test -p tinyrt-tests --features cuda --profile ci --test lora_cuda --no-run \
    --message-format=json-render-diagnostics >> "$out/.cargo-test.json"
python3 - "$out" <<'PY'
import json, shutil, sys, os
out = sys.argv[1]
wanted = {"gpu", "gpu_bench", "nvrtc", "lora_cuda"}
found = set()
for line in open(os.path.join(out, ".cargo-test.json")):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    name = m["target"]["name"]
    if name in wanted and "test" in m["target"]["kind"]:
        shutil.copy2(m["executable"], os.path.join(out, name))
        found.add(name)
missing = wanted - found
if missing:
    sys.exit(f"test binaries not found: {sorted(missing)}")
PY
rm -f "$out/.cargo-test.json"

cli_profile="${CLI_PROFILE:-release}"
if grep -q '^cuda *=' cli/Cargo.toml && grep -rq -- 'cuda' cli/src 2>/dev/null; then
    echo "== building the CLI with CUDA (profile $cli_profile)"
    cargo build -p tinyrt-cli --features cuda --profile "$cli_profile"
    dir="$cli_profile"
    [ "$cli_profile" = dev ] && dir=debug
    cp "target/$dir/tinyrt" "$out/tinyrt"
else
    echo "== the CLI has no CUDA path yet: not bundled"
fi

strip "$out"/* 2>/dev/null || true
# The LoRA test binary travels compressed (the bundle is near its limit); Python's lzma, as
# gpu-check.sh uses it to unpack.
python3 -c 'import lzma, sys; open(sys.argv[1] + ".xz", "wb").write(lzma.compress(open(sys.argv[1], "rb").read(), preset=9))' "$out/lora_cuda"
rm "$out/lora_cuda"

echo "== fixtures and goldens for the end-to-end check"
mkdir -p "$out/fixtures"
for f in tests/fixtures/*-q8_0.gguf tests/fixtures/*-q4_0.gguf; do
    g="tests/golden/$(basename "${f%.gguf}").jsonl"
    [ -e "$f" ] && [ -e "$g" ] || continue
    cp "$f" "$g" "$out/fixtures/"
done
# The tiny encoder classifiers (9 MB each) for the encoder step, when models/ has them.
for f in models/bert-tiny-cls-f32.gguf models/distilbert-tiny-cls-f32.gguf; do
    if [ -e "$f" ]; then cp -L "$f" "$out/fixtures/"; fi
done
# The LoRA oracle files tests/tests/lora_cuda.rs reads (TINYRT_LORA_ORACLE in gpu-check.sh).
lora_src=../shared/oracles/lora
if [ -e "$lora_src/llama-lora-tiny-f32.gguf" ]; then
    mkdir -p "$out/lora/gguf"
    cp "$lora_src/llama-lora-tiny-f32.gguf" "$out/lora/"
    cp "$lora_src/gguf/a-qv-r8-f32.gguf" "$lora_src/gguf/b-all-r16-f16.gguf" "$out/lora/gguf/"
else
    echo "== no LoRA oracle at $lora_src: the CUDA LoRA test will skip"
fi
{
    echo "commit: $(git rev-parse HEAD)$(git diff --quiet || echo ' (dirty)')"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$out/MANIFEST"
du -ab "$out" | sort -n | tail -8
total=$(du -sb "$out" | cut -f1)
limit=$((64 * 1024 * 1024))
if [ "$total" -gt "$limit" ]; then
    echo "gpu-bundle is $total bytes, over the 64 MiB that can travel" >&2
    exit 1
fi
echo "gpu-bundle: $total bytes, ready (carry gpu-bundle, run scripts/gpu-check.sh)"
