#!/usr/bin/env bash
# Makes tests/golden/qwen2-tiny-q8_0-yarn.jsonl: llama.cpp's greedy path and top-8 logits
# (16 tokens, the 8 prompts of the other fixtures' goldens) on the YaRN fixture, which the
# example `yarn_fixture` writes from tests/fixtures/qwen2-tiny-q8_0.gguf (rope.scaling.type =
# yarn, factor 4, original context 64). The parity test writes the same file and checks
# tinyrt against this golden.
# Needs llama_ref (../shared/reference/build-llamacpp.sh; LLAMA_REF overrides its path).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LLAMA_REF=${LLAMA_REF:-$HOME/.cache/tinyrt-ref/bin/llama_ref}
[ -x "$LLAMA_REF" ] || { echo "error: $LLAMA_REF is missing (run ../shared/reference/build-llamacpp.sh)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo run -q -p tinyrt-tests --example yarn_fixture --profile ci -- "$work/yarn.gguf"
out=$ROOT/tests/golden/qwen2-tiny-q8_0-yarn.jsonl
python3 - "$LLAMA_REF" "$work/yarn.gguf" "$ROOT/tests/golden/qwen2-tiny-q8_0.jsonl" "$out.tmp" <<'PY'
import json, subprocess, sys
ref, model, prompts_from, out = sys.argv[1:5]
with open(out, "w", encoding="utf-8") as f:
    for line in open(prompts_from, encoding="utf-8"):
        row = json.loads(line)
        r = subprocess.run([ref, "gen", model, "16"], input=row["prompt"].encode(),
                           capture_output=True, check=True)
        d = json.loads(r.stdout.decode("utf-8", errors="replace"))
        d = {"prompt_file": row["prompt_file"], "prompt": row["prompt"], **d}
        f.write(json.dumps(d, ensure_ascii=False) + "\n")
PY
mv "$out.tmp" "$out"
echo "wrote $out" >&2
