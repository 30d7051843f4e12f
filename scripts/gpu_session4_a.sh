#!/usr/bin/env bash
# Fourth session, call A (H100): checks of the new fused kernels (clip factors + scaled
# pooled gradient, row scaling, LazyDP's owed-noise/history kernel) and of the hybrid
# `ahead` noise update; then before/after (commit 21a8776 extracted to $BEFORE, run in the
# same call) of graph-replayed gpu steps at 96 MB and the kernel profile.
# Usage (device): BEFORE=.whl/before BEFORE_COMMIT=21a8776 bash scripts/gpu_session4_a.sh
set -u
source "$(dirname "$0")/device_env.sh"
step python3 scripts/gpu_selfcheck.py
step $B verify --device cuda --algo lazydp,eana
step $B verify --device hybrid --algo lazydp
RUN="run --iterations 200 --warmup 5 --no-breakdown --placement gpu"
graphs() {  # $1: tree, $2: results dir, rest: sizes
  local tree=$1 out=$2
  shift 2
  for size in "$@"; do
    (cd "$tree" && step python3 -m lazydp_bench $RUN --out "$out" \
      --algo sgd,dpsgd-f,lazydp --table-size "$size")
    (cd "$tree" && step python3 -m lazydp_bench $RUN --out "$out" \
      --algo lazydp,eana,dpsgd-bk --clipping bookkeeping --table-size "$size")
  done
}
(export PYTHONPATH=/tmp/site:$PWD/$BEFORE LAZYDP_BENCH_COMMIT=${BEFORE_COMMIT:-before}
 graphs "$BEFORE" "$OUT/before" 96MB)
graphs . "$R" 96MB
step python3 scripts/gpu_kernel_profile.py 96MB 45
