#!/usr/bin/env bash
# Issue 4, third session: checks of the fused row-noise and ghost-norm kernels, verify on
# the GPU, then before/after: the kernel profile and graph-replayed steps of the commit
# before the change (extracted to $BEFORE) and of this one, on the same machine.
# Usage (device): BEFORE=.whl/before bash scripts/gpu_perf_issue4_session3.sh
set -u
source "$(dirname "$0")/device_env.sh"
step python3 scripts/gpu_selfcheck.py
step $B verify --device cuda --algo lazydp,eana
step $B verify --device hybrid --algo lazydp
RUN="run --iterations 50 --warmup 5 --no-breakdown"
graphs() {  # $1: tree, $2: results dir, rest: sizes
  local tree=$1 out=$2
  shift 2
  for size in "$@"; do
    (cd "$tree" && step python3 -m lazydp_bench $RUN --out "$out" --placement gpu \
      --algo sgd,dpsgd-f,lazydp --table-size "$size")
    (cd "$tree" && step python3 -m lazydp_bench $RUN --out "$out" --placement gpu \
      --algo lazydp,eana --clipping bookkeeping --table-size "$size")
  done
}
(cd "$BEFORE" && PYTHONPATH=/tmp/site:$PWD step python3 scripts/gpu_kernel_profile.py 96MB)
step python3 scripts/gpu_kernel_profile.py 96MB
(export PYTHONPATH=/tmp/site:$PWD/$BEFORE LAZYDP_BENCH_COMMIT=${BEFORE_COMMIT:-before}
 graphs "$BEFORE" "$OUT/before" 96MB 48GB)
graphs . "$R" 96MB 9.6GB 48GB
