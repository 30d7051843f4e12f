#!/usr/bin/env bash
# Issue 4 performance work on the lent H100. Checks first (CUDA-graph replay == eager steps
# per algorithm, verify in hybrid placement where LazyDP's noise is drawn on the GPU), then
# before/after step times: eager (--cuda-graph off) vs graph replays on gpu placement, and
# the hybrid points whose "before" records are in results/2026-11-23-h100.
set -u
source "$(dirname "$0")/device_env.sh"
RUN="$B run --iterations 50 --warmup 5 --no-breakdown --out $R"
step python3 scripts/gpu_selfcheck.py
step $B verify --device hybrid --algo lazydp,eana --steps 8
for size in 96MB 9.6GB 48GB; do
  for g in off auto; do
    step $RUN --algo sgd,dpsgd-f,lazydp --table-size $size --placement gpu --cuda-graph $g
    step $RUN --algo lazydp --clipping bookkeeping --table-size $size --placement gpu --cuda-graph $g
  done
done
HYB="$B run --iterations 20 --warmup 3 --placement hybrid --out $R"
for size in 96MB 9.6GB; do
  step $HYB --algo sgd,lazydp --table-size $size
  step $HYB --algo sgd,lazydp --table-size $size --no-breakdown
done
[ "${WITH_96GB:-0}" = 1 ] || exit 0
step $HYB --algo sgd,lazydp --table-size 96GB
step $HYB --algo sgd,lazydp --table-size 96GB --no-breakdown
