#!/usr/bin/env bash
# Cross-builds tinyrt's kernel and tiny-fixture parity tests for aarch64-unknown-linux-gnu and
# runs them under qemu-user for three CPU models, so that every ARM tier and every fallback
# runs here (issue #27):
#   -cpu max          NEON + dotprod (+ i8mm, SVE): the neon and neon-dotprod tables
#   -cpu cortex-a76   NEON + dotprod
#   -cpu cortex-a53   NEON only: neon-dotprod is refused, the neon table runs
# Needs Debian's Rust with the aarch64 standard library, the cross linker and qemu-user; it
# installs nothing (it says what to install). Usage:
#   scripts/test-aarch64.sh            # the CI subset (below), every CPU model
#   AARCH64_CPUS="max" scripts/test-aarch64.sh
#   AARCH64_FULL=1 scripts/test-aarch64.sh   # every kernel test binary, full proptest counts
#   scripts/test-aarch64.sh --check    # exit 0 when the tools are installed, else 2 and the list
# The CI subset: the kernels crate's unit tests (the table checks among them), the dot products of every format
# against the scalar reference (tests/dot.rs, PROPTEST_CASES=${PROPTEST_CASES:-16}), the GEMM
# bits of every GEMM type on every ISA (tests/gemm_bits.rs), and the llama.cpp goldens of the
# tiny fixtures (tests/parity.rs `tiny`: phi2, stablelm, llama, qwen2, qwen3) under
# ${AARCH64_PARITY_CPUS:-max cortex-a53}: under `max` on every ISA it has (scalar, neon,
# neon-dotprod), under `cortex-a53` on neon only (TINYRT_ISA=neon: the table a CPU without
# dotprod gets). cortex-a76 runs the same code as max (both have dotprod), so it runs the
# kernel subset only. Under qemu the parity tests are slow (minutes per CPU model).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/cargo ] || missing+=(cargo-web)
[ -x /usr/bin/rustc ] || missing+=(rustc-web)
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu/lib ] || missing+=(libstd-rust-web-dev:arm64)
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
# The arm64 C library the binaries load (not libc6-arm64-cross: its 2.36-8cross1 hangs in
# pthread_create under Debian 12's qemu-user 7.2).
[ -e /lib/ld-linux-aarch64.so.1 ] || missing+=(libc6:arm64)
if [ ${#missing[@]} -gt 0 ]; then
    echo "test-aarch64: missing packages: ${missing[*]}" >&2
    echo "  install with: dpkg --add-architecture arm64 && apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 2
fi
# `--check`: only whether the tools are here.
[ "${1:-}" = --check ] && exit 0

TARGET=aarch64-unknown-linux-gnu
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_DIR="${AARCH64_TARGET_DIR:-$PWD/target/aarch64}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /"
CARGO=(nice -n 10 /usr/bin/cargo)
PROFILE=(--profile ci --target "$TARGET")
export PROPTEST_CASES="${PROPTEST_CASES:-16}"

if [ "${AARCH64_FULL:-0}" = 1 ]; then
    unset PROPTEST_CASES
    KERNELS=(-p tinyrt-kernels)
else
    KERNELS=(-p tinyrt-kernels --lib --test dot --test gemm_bits)
fi
PARITY=(-p tinyrt-tests --test parity)

"${CARGO[@]}" test "${PROFILE[@]}" "${KERNELS[@]}" --no-run
"${CARGO[@]}" test "${PROFILE[@]}" "${PARITY[@]}" --no-run

for cpu in ${AARCH64_CPUS:-max cortex-a76 cortex-a53}; do
    echo "== qemu-aarch64 -cpu $cpu" >&2
    start=$SECONDS
    QEMU_CPU=$cpu "${CARGO[@]}" test "${PROFILE[@]}" "${KERNELS[@]}"
    echo "== -cpu $cpu kernels: $((SECONDS - start)) s" >&2
done
for cpu in ${AARCH64_PARITY_CPUS:-max cortex-a53}; do
    echo "== qemu-aarch64 -cpu $cpu: parity" >&2
    start=$SECONDS
    isa=""
    [ "$cpu" = cortex-a53 ] && isa=neon
    QEMU_CPU=$cpu TINYRT_ISA=$isa "${CARGO[@]}" test "${PROFILE[@]}" "${PARITY[@]}" -- tiny
    echo "== -cpu $cpu parity: $((SECONDS - start)) s" >&2
done
