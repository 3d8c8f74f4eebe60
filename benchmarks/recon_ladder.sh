#!/usr/bin/env bash
# The ladder from Haim et al.'s reconstruction regime to DSV's (docs/reconstruction.md), one rung
# (one change) at a time, on the CPU.  Usage:
#   [OUT=results/recon-ladder] [MNIST_ROOT=../shared/datasets/mnist] [ONLY=regex] bash benchmarks/recon_ladder.sh digits|mnist
# Then: python benchmarks/recon_table.py results/recon-ladder > results/recon-ladder/ladder.md
set -euo pipefail
which=${1:?digits or mnist}
out=${OUT:-results/recon-ladder}
mnist=${MNIST_ROOT:-../shared/datasets/mnist}
only=${ONLY:-.}   # a regex of the rung folders to (re)run, e.g. ONLY='digits-[34]'
run() {   # one rung (benchmarks/reconstruct.py ARGS...), skipped unless its --out folder matches $only
  local args=("$@") k
  for ((k = 0; k < ${#args[@]} - 1; k++)); do
    if [ "${args[k]}" = --out ] && [[ "${args[k+1]}" =~ $only ]]; then python benchmarks/reconstruct.py "$@"; return; fi
  done
}
# rung 1's one-change variants: DSV's settings, one at a time, inside Haim et al.'s loop
variants=(--variant "relu-backward:activation=relu" --variant "classifier-only:params=classifier"
          --variant "adam-std1:optimizer=adam,alpha_x=0.001,init_std=1,momentum=0"
          --variant "remove-negative:dual=remove" --variant "no-momentum:momentum=0,lambda_momentum=0"
          --variant "dsvg-defaults:base=dsvg")
wd=(--weight-decay 5e-3 --train-lr 0.05)
fit=(--variant "lambda-fit:lambda_scale=fit")
if [ "$which" = mnist ]; then
  run --case mnist-binary --data-root "$mnist" --out "$out/mnist-1-binary-mlp" "${variants[@]}"
  run --case mnist-multiclass --data-root "$mnist" --per-class 10 --heldout-per-class 100 --engine dsvg \
      --out "$out/mnist-2a-multiclass-mlp" --variant "lambda-fit:lambda_scale=fit"
  run --case mnist-multiclass --data-root "$mnist" --per-class 10 --heldout-per-class 100 --engine dsvg \
      --out "$out/mnist-2b-multiclass-mlp-wd" "${wd[@]}" "${fit[@]}"
else
  run --case digits-binary --data-root data --out "$out/digits-1-binary-mlp" --heldout-per-class 100 "${variants[@]}"
  run --case digits-multiclass --data-root data --per-class 50 --heldout-per-class 30 --engine dsvg \
      --out "$out/digits-2a-multiclass-mlp" --variant "lambda-fit:lambda_scale=fit"
  run --case digits-multiclass --data-root data --per-class 50 --heldout-per-class 30 --engine dsvg \
      --out "$out/digits-2b-multiclass-mlp-wd" "${wd[@]}" "${fit[@]}"
  run --case digits-multiclass --data-root data --per-class 50 --heldout-per-class 30 --engine dsvg --model convnet_dsv \
      --retrain-ipc 1,10 --out "$out/digits-3-convnet-dsv-subset" "${wd[@]}" "${fit[@]}"
  run --case digits-multiclass --data-root data --per-class 0 --heldout-per-class 30 --engine dsvg --model convnet_dsv \
      --retrain-ipc 1,10 --out "$out/digits-4a-convnet-dsv-full-gd" "${wd[@]}"
  run --case digits-multiclass --data-root data --per-class 0 --heldout-per-class 30 --engine dsvg --model convnet_dsv \
      --retrain-ipc 1,10 --theta dsv --out "$out/digits-4b-convnet-dsv-full-dsv-theta"
  run --case digits-multiclass --data-root data --per-class 0 --heldout-per-class 30 --engine dsvg --model convnet_dsv \
      --retrain-ipc 1,10 --theta dsv-polished --out "$out/digits-4c-convnet-dsv-full-polished"
fi
