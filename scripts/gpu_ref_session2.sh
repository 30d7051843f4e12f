#!/usr/bin/env bash
# Session 2 on the lent H100: where the graphed GPU step's time goes, then the 96 GB hybrid
# points after the GPU-side LazyDP noise/merge, and fig10-12's other batch sizes there.
set -u
source "$(dirname "$0")/device_env.sh"
step python3 scripts/gpu_kernel_profile.py 96MB
HYB="$B run --iterations 20 --warmup 3 --placement hybrid --table-size 96GB --out $R"
step $HYB --algo sgd,lazydp
step $HYB --algo sgd,lazydp --no-breakdown
for b in 1024 4096; do
  step $HYB --algo sgd,lazydp --batch-size $b
done
