#!/usr/bin/env bash
# Fifth session, call C (H100): reference hybrid records with graph-captured steps and the
# package's OMP_WAIT_POLICY=PASSIVE default. SGD and LazyDP run in alternating processes
# (four pairs at 96 MB, three at 9.6 GB) because this host's step times drift between
# runs; one pair at 96 GB.
set -u
source "$(dirname "$0")/device_env.sh"
HYB="$B run --placement hybrid --no-breakdown --warmup 5 --out $R"
for rep in 1 2 3 4; do
  for algo in sgd lazydp; do step $HYB --table-size 96MB --algo $algo --iterations 60; done
done
for rep in 1 2 3; do
  for algo in sgd lazydp; do step $HYB --table-size 9.6GB --algo $algo --iterations 60; done
done
step $HYB --table-size 96GB --algo sgd,lazydp --iterations 40
python3 scripts/summarize_runs.py $R/runs.jsonl
