#!/usr/bin/env bash
# Third session, H100: LazyDP-BK vs SGD graph steps after the last clipping change, the
# hybrid LazyDP/SGD ratio at 96MB/9.6GB (sync wall, no breakdown), DP-SGD(F) at 96 GB
# hybrid batch 1024 (missing from Fig. 10-12), and Fig. 5 with the torch noise engine.
set -u
source "$(dirname "$0")/device_env.sh"
RUN="$B run --iterations 50 --warmup 5 --no-breakdown --out $R --placement gpu"
for size in 96MB 48GB; do
  step $RUN --algo sgd,lazydp --table-size $size
  step $RUN --algo lazydp,eana --clipping bookkeeping --table-size $size
done
HYB="$B run --iterations 20 --warmup 3 --placement hybrid --no-breakdown --out $R"
for size in 96MB 9.6GB; do
  step $HYB --algo sgd,lazydp --table-size $size
done
step $B run --algo dpsgd-f --table-size 96GB --placement hybrid --batch-size 1024 \
  --warmup 1 --iterations 3 --out $R
TORCH="$B run --algo sgd,dpsgd-f --noise-impl torch --warmup 1 --iterations 5 --out $R"
for size in 96MB 9.6GB; do
  step $TORCH --table-size $size --placement gpu
done
for size in 96MB 960MB; do
  step $TORCH --table-size $size --placement hybrid
done
