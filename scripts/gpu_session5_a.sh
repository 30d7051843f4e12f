#!/usr/bin/env bash
# Fifth session, call A (H100): hybrid steps captured as CUDA graphs. The self-check
# (hybrid graph == eager for sgd, dpsgd-f, lazydp, lazydp-bk, eana), then 96 MB hybrid
# step times with graphs (reference records, $R) and the same runs eager
# (`--cuda-graph off`, the previous behaviour; side records in $OUT/eager), interleaved
# twice because this host's hybrid step times drift between runs; then 9.6 GB once.
set -u
source "$(dirname "$0")/device_env.sh"
step python3 scripts/gpu_selfcheck.py
HYB="$B run --placement hybrid --no-breakdown --table-size 96MB --iterations 100 --warmup 5"
for rep in 1 2; do
  step $HYB --algo sgd,lazydp --out $R
  step $HYB --algo lazydp --clipping bookkeeping --out $R
  step $HYB --algo sgd,lazydp --cuda-graph off --out $OUT/eager
  step $HYB --algo lazydp --clipping bookkeeping --cuda-graph off --out $OUT/eager
done
for size in 9.6GB; do
  step $HYB --table-size $size --algo sgd,lazydp --out $R
  step $HYB --table-size $size --algo lazydp --clipping bookkeeping --out $R
  step $HYB --table-size $size --algo sgd,lazydp --cuda-graph off --out $OUT/eager
done
step $HYB --algo dpsgd-f --iterations 30 --out $R
step $HYB --algo dpsgd-f --iterations 30 --cuda-graph off --out $OUT/eager
GPU="$B run --placement gpu --no-breakdown --table-size 96MB --iterations 200 --warmup 5"
step $GPU --algo sgd,lazydp --out $OUT/gpu-check
step $GPU --algo lazydp --clipping bookkeeping --out $OUT/gpu-check
for d in ref eager gpu-check; do echo "## $d"; python3 scripts/summarize_runs.py $OUT/$d/runs.jsonl; done
