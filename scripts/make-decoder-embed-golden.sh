#!/usr/bin/env bash
# Makes tests/golden/embeddings/decoders.jsonl: llama-embedding's L2-normalised embeddings of decoder
# fixtures with --pooling last and mean (the final hidden states after the output norm,
# pooled), one JSON object per (model, pooling, text). The test tests/tests/embed_decoder.rs
# checks `tinyrt::embed::Embedder` on a decoder against it.
# Needs llama-embedding (../shared/reference/build-llamacpp.sh; LLAMA_EMBEDDING overrides it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LLAMA_EMBEDDING=${LLAMA_EMBEDDING:-$HOME/.cache/tinyrt-ref/bin/llama-embedding}
[ -x "$LLAMA_EMBEDDING" ] || { echo "error: $LLAMA_EMBEDDING is missing (run ../shared/reference/build-llamacpp.sh)" >&2; exit 2; }
out=$ROOT/tests/golden/embeddings/decoders.jsonl
python3 - "$LLAMA_EMBEDDING" "$ROOT/tests/fixtures" "$out.tmp" <<'PY'
import json, subprocess, sys, tempfile, os
tool, fixtures, out = sys.argv[1:4]
texts = ["The capital of France is Paris.", "hello world", "a", "Numbers: 3.14159, 42 and -7; done."]
models = ["phi2-tiny-f32", "stablelm-tiny-f32", "llama-tiny-q8_0", "qwen2-tiny-q8_0", "qwen3-tiny-q8_0"]
with open(out, "w", encoding="utf-8") as f:
    for m in models:
        for pooling in ["last", "mean"]:
            with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as t:
                t.write("\n".join(texts) + "\n")
            data = None
            try:
                # llama-embedding's JSON is now and then broken by its log lines: retry.
                for _ in range(5):
                    r = subprocess.run([tool, "-m", os.path.join(fixtures, m + ".gguf"), "-f", t.name,
                                        "--pooling", pooling, "--embd-normalize", "2",
                                        "--embd-output-format", "json", "-t", "2"],
                                       capture_output=True, check=True)
                    try:
                        data = json.loads(r.stdout)["data"]
                        break
                    except json.JSONDecodeError:
                        pass
            finally:
                os.unlink(t.name)
            if data is None:
                print(f"skipped {m} {pooling}: llama-embedding printed no valid JSON", file=sys.stderr)
                continue
            for text, d in zip(texts, data):
                f.write(json.dumps({"model": m + ".gguf", "pooling": pooling, "text": text,
                                    "embedding": d["embedding"]}) + "\n")
PY
mv "$out.tmp" "$out"
echo "wrote $out" >&2
