#!/usr/bin/env bash
# Reference sweeps on the lent H100, sizes up to 9.6 GB, gpu and hybrid placements.
# There: OUT=... LAZYDP_BENCH_COMMIT=<sha> bash scripts/gpu_ref_small.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
B="python3 -m lazydp_bench"
R="$OUT/ref"
step() { echo "=== $*"; local t0=$SECONDS; "$@"; echo "=== rc=$? in $((SECONDS - t0)) s"; }
ALGOS=sgd,dpsgd-b,dpsgd-r,dpsgd-f,dpsgd-bk,lazydp,eana
step $B sweep --algo $ALGOS --table-size 96MB,960MB,9.6GB --placement gpu --out "$R"
step $B sweep --algo lazydp --clipping bookkeeping --table-size 96MB,9.6GB --placement gpu --out "$R"
step $B sweep --algo sgd,lazydp --table-size 9.6GB --placement gpu,hybrid --no-breakdown --out "$R"
step $B sweep --algo $ALGOS --table-size 96MB,960MB,9.6GB --placement hybrid --out "$R"
