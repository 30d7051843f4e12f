#!/usr/bin/env bash
# Issue 4, third session, second call: after carrying the input queue's sort to the next
# step's coalescing: checks, the full kernel profile, graph steps at three sizes, and the
# batch-size points (Fig. 10-12) at the largest GPU-resident size, with and without
# the stage breakdown.
set -u
source "$(dirname "$0")/device_env.sh"
step python3 scripts/gpu_selfcheck.py
step python3 scripts/gpu_kernel_profile.py 96MB 40
RUN="$B run --iterations 50 --warmup 5 --no-breakdown --out $R --placement gpu"
for size in 96MB 9.6GB 48GB; do
  step $RUN --algo sgd,dpsgd-f,lazydp --table-size $size
  step $RUN --algo lazydp,eana --clipping bookkeeping --table-size $size
done
for batch in 1024 4096; do
  step $RUN --algo sgd,dpsgd-f,lazydp --table-size 48GB --batch-size $batch
done
BD="$B run --iterations 20 --warmup 3 --out $R --placement gpu --table-size 48GB"
for batch in 1024 2048 4096; do
  step $BD --algo sgd,dpsgd-f,lazydp --batch-size $batch
done
