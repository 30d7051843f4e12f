#!/usr/bin/env bash
# Reference sweeps on the lent H100, sizes up to 9.6 GB, gpu and hybrid placements.
# There: OUT=... LAZYDP_BENCH_COMMIT=<sha> bash scripts/gpu_ref_small.sh
set -u
source "$(dirname "$0")/device_env.sh"
ALGOS=sgd,dpsgd-b,dpsgd-r,dpsgd-f,dpsgd-bk,lazydp,eana
step $B sweep --algo $ALGOS --table-size 96MB,960MB,9.6GB --placement gpu --out "$R"
step $B sweep --algo lazydp --clipping bookkeeping --table-size 96MB,9.6GB --placement gpu --out "$R"
step $B sweep --algo sgd,lazydp --table-size 9.6GB --placement gpu,hybrid --no-breakdown --out "$R"
step $B sweep --algo $ALGOS --table-size 96MB,960MB,9.6GB --placement hybrid --out "$R"
