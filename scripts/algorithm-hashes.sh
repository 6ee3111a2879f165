#!/bin/bash
# sha256 of stories260K quantized with every calibrated algorithm (GPTQ, AWQ, AWQ+GPTQ, rotations,
# SmoothQuant, OS+, imatrix-RTN, HQQ, AutoRound, the HF gptq layout): run it for two trees (a built
# worktree, or a `git archive` of an older commit built with build-wasm + tsc) and diff the outputs to
# show a refactoring changed no byte.
#
#   bash scripts/algorithm-hashes.sh [ROOT] > hashes.txt      (ROOT: a built lowbit tree, default this one)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=${1:-$here}
D=$here/data
M=$D/stories260K.gguf
out=$(mktemp -d /tmp/lowbit-hashes.XXXXXX)
trap 'rm -rf "$out"' EXIT
C=(--calib "$D/tinystories-valid-head.txt" --calib-tokens 2048 --calib-ctx 256 --threads 1)
run() {
  local name=$1
  shift
  node --experimental-wasm-relaxed-simd "$root/bin/lowbit.js" quantize "$M" "$out/$name" "$@" >/dev/null 2>"$out/$name.err" || echo "FAIL $name: $(tail -1 "$out/$name.err")"
  rm -f "$out/$name.err"
}
run gptq.safetensors --type int4 --group 32 --algo gptq "${C[@]}"
run gptq.gguf --type q4_0 --algo gptq "${C[@]}"
run awq.safetensors --type int4 --group 32 --asym --algo awq "${C[@]}"
run awq-gptq.safetensors --type int4 --group 32 --algo awq+gptq "${C[@]}"
run rot.gguf --type q4_0 --rotate hadamard "${C[@]}"
run rot-gptq.safetensors --type int4 --group 32 --algo gptq --rotate hadamard "${C[@]}"
run rot-learned.gguf --type q4_0 --rotate learned --rotate-iters 20 "${C[@]}"
run smooth.safetensors --type int4 --group 32 --smooth 0.5 "${C[@]}"
run shift.safetensors --type int4 --group 32 --shift "${C[@]}"
run imatrix-rtn.gguf --type Q4_K_M "${C[@]}"
run hqq.safetensors --type int4 --group 32 --asym --algo hqq --threads 1
run autoround.safetensors --type int4 --group 32 --algo autoround --calib "$D/tinystories-valid-head.txt" --calib-tokens 512 --calib-ctx 256 --threads 1
run gptq-packed.safetensors --type int4 --group 32 --algo gptq --layout gptq --keep-unpackable "${C[@]}"
(cd "$out" && find . -type f | sort | xargs sha256sum)
