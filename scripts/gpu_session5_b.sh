#!/usr/bin/env bash
# Fifth session, call B (H100): hybrid graph steps are host-bound, and the host phase
# (pool threads adding row updates, the host noise engine) runs right after the
# OpenMP-parallel lookup, whose threads spin-wait by default. Same runs with
# OMP_WAIT_POLICY=PASSIVE (side records, $OUT/passive) and with the default policy
# ($R) at 96 MB, 9.6 GB and 96 GB, interleaved.
set -u
source "$(dirname "$0")/device_env.sh"
HYB="$B run --placement hybrid --no-breakdown --warmup 5"
for rep in 1 2; do
  OMP_WAIT_POLICY=PASSIVE step $HYB --table-size 96MB --algo sgd,lazydp --iterations 100 --out $OUT/passive
  step $HYB --table-size 96MB --algo sgd,lazydp --iterations 100 --out $R
done
OMP_WAIT_POLICY=PASSIVE step $HYB --table-size 96MB --algo dpsgd-f --iterations 30 --out $OUT/passive
OMP_WAIT_POLICY=PASSIVE step $HYB --table-size 9.6GB --algo sgd,lazydp --iterations 100 --out $OUT/passive
step $HYB --table-size 9.6GB --algo sgd,lazydp --iterations 100 --out $R
OMP_WAIT_POLICY=PASSIVE step $HYB --table-size 96GB --algo sgd,lazydp --iterations 50 --out $OUT/passive
step $HYB --table-size 96GB --algo sgd,lazydp --iterations 50 --out $R
for d in ref passive; do echo "## $d"; python3 scripts/summarize_runs.py $OUT/$d/runs.jsonl; done
