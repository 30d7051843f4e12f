#!/usr/bin/env bash
# Sixth session, call F (H100): hybrid points the table still took from older code: LazyDP-BK
# at 96 GB, and DP-SGD(F) at 96 MB, 9.6 GB and 96 GB, now with graph-captured steps, the
# host table on huge pages and passive OpenMP waits (its step is seconds of host noise at
# 9.6 GB and up, so few steps).
set -u
source "$(dirname "$0")/device_env.sh"
HYB="$B run --placement hybrid --no-breakdown --out $R"
step $HYB --table-size 96GB --algo lazydp --clipping bookkeeping --iterations 40 --warmup 5
step $HYB --table-size 96MB --algo dpsgd-f --iterations 30 --warmup 5
step $HYB --table-size 9.6GB --algo dpsgd-f --iterations 8 --warmup 2
step $HYB --table-size 96GB --algo dpsgd-f --iterations 3 --warmup 2
python3 scripts/summarize_runs.py $R/runs.jsonl
