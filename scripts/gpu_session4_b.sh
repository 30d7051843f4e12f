#!/usr/bin/env bash
# Fourth session, call B (H100): graph-replayed gpu steps at 9.6 GB and 48 GB after the
# fused kernels (48 GB also for commit 21a8776 at $BEFORE), and hybrid end-to-end steps
# (sync wall, no breakdown) of SGD, LazyDP and LazyDP-BK before/after the `ahead` update.
# Usage (device): BEFORE=.whl/before BEFORE_COMMIT=21a8776 bash scripts/gpu_session4_b.sh
set -u
source "$(dirname "$0")/device_env.sh"
RUN="run --iterations 200 --warmup 5 --no-breakdown --placement gpu"
HYB="run --iterations 30 --warmup 3 --no-breakdown --placement hybrid"
runs() {  # $1: tree, $2: results dir, $3: run options, $4: size, $5: algos, rest: options
  local tree=$1 out=$2 opts=$3 size=$4 algos=$5
  shift 5
  (cd "$tree" && step python3 -m lazydp_bench $opts --out "$out" --table-size "$size" \
    --algo "$algos" "$@")
}
before() { (export PYTHONPATH=/tmp/site:$PWD/$BEFORE LAZYDP_BENCH_COMMIT=${BEFORE_COMMIT:-before}
  runs "$BEFORE" "$OUT/before" "$@"); }
for size in 9.6GB 48GB; do
  runs . "$R" "$RUN" $size sgd,dpsgd-f,lazydp
  runs . "$R" "$RUN" $size lazydp,eana --clipping bookkeeping
done
before "$RUN" 48GB sgd,lazydp
before "$RUN" 48GB lazydp --clipping bookkeeping
for size in 96MB 9.6GB; do
  runs . "$R" "$HYB" $size sgd,lazydp
  runs . "$R" "$HYB" $size lazydp --clipping bookkeeping
done
before "$HYB" 96MB sgd,lazydp
before "$HYB" 96MB lazydp --clipping bookkeeping
