#!/usr/bin/env bash
# First look on the lent GPU machine: self-checks, the noise roofline, and a few runs.
# Usage there: OUT=... bash scripts/gpu_smoke.sh   (writes $OUT/log.txt and $OUT/res/runs.jsonl)
set -u
source "$(dirname "$0")/device_env.sh"
R="$OUT/res"
step nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step python3 scripts/gpu_selfcheck.py
step $B info
step $B bench noise --placement gpu --size 8GiB --out "$R"
step $B bench noise --placement host --size 8GiB --repeats 3 --out "$R"
step $B run --workload tiny --table-size full --algo sgd,dpsgd-b,dpsgd-r,dpsgd-f,dpsgd-bk,lazydp,lazydp-noans,eana --placement gpu --noise-multiplier 1 --out "$OUT/tiny"
step $B run --workload tiny --table-size full --algo sgd,dpsgd-f,lazydp,eana --placement hybrid --noise-multiplier 1 --out "$OUT/tiny"
for size in 96MB 9.6GB; do
  step $B run --algo sgd,dpsgd-f,dpsgd-bk,lazydp --table-size $size --placement gpu --out "$R"
done
step $B run --algo sgd,dpsgd-f,lazydp --table-size 960MB --placement hybrid --out "$R"
step $B run --algo sgd --table-size 9.6GB --placement gpu --no-breakdown --out "$R"
