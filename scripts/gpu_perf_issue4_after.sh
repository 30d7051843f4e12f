#!/usr/bin/env bash
# Issue 4, after spreading the padded slots over duplicate rows and sorting 32-bit keys:
# the kernel profile again, the graph == eager checks, gpu graph runs, hybrid runs.
set -u
source "$(dirname "$0")/device_env.sh"
step python3 scripts/gpu_kernel_profile.py 96MB
step python3 scripts/gpu_selfcheck.py
RUN="$B run --iterations 50 --warmup 5 --no-breakdown --out $R"
for size in 96MB 9.6GB 48GB; do
  step $RUN --algo sgd,dpsgd-f,lazydp --table-size $size --placement gpu
  step $RUN --algo lazydp --clipping bookkeeping --table-size $size --placement gpu
done
HYB="$B run --iterations 20 --warmup 3 --placement hybrid --out $R"
for size in 96MB 9.6GB; do
  step $HYB --algo sgd,lazydp --table-size $size
  step $HYB --algo sgd,lazydp --table-size $size --no-breakdown
done
