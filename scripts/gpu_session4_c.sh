#!/usr/bin/env bash
# Fourth session, call C (H100): hybrid placement with LazyDP's `ahead` noise update at
# 96 GB (Fig. 10's batch sizes, and book-keeping at 2048), longer hybrid runs at 96 MB and
# 9.6 GB (this host's hybrid SGD steps have a heavy tail), and one per-stage hybrid run.
set -u
source "$(dirname "$0")/device_env.sh"
HYB="$B run --placement hybrid --no-breakdown --out $R"
step $HYB --table-size 96GB --algo sgd,lazydp --iterations 30 --warmup 3
step $HYB --table-size 96GB --algo lazydp --clipping bookkeeping --iterations 30 --warmup 3
for batch in 1024 4096; do
  step $HYB --table-size 96GB --algo sgd,lazydp --batch-size $batch --iterations 20 --warmup 3
done
for size in 96MB 9.6GB; do
  step $HYB --table-size $size --algo sgd,lazydp --iterations 100 --warmup 5
done
step $B run --placement hybrid --table-size 96MB --algo sgd,lazydp --iterations 30 --warmup 3 \
  --out $R
