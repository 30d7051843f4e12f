#!/usr/bin/env bash
# Sixth session, call B (H100): the host table advised to use transparent huge pages
# (THP is in `madvise` mode there). before = the previous commit's tree in .whl/before
# (queue noise before the lookup, no advice), after = this tree. The host phase probe at
# 9.6 GB, then 9.6 GB and 96 GB hybrid graph step times in alternating processes.
# Usage: BEFORE_COMMIT=<sha> bash scripts/gpu_session6_b.sh
# BUG (kept as the record of what ran): `before` sets PYTHONPATH, but `python3 -m` run from
# the repository root puts the root first on sys.path, so the CLI "before" runs imported
# this checkout's package: they ran e975a3a, and their records were relabeled when saved
# (results/2026-11-23-h100/session6/). The probe (`python3 scripts/...`) did honour
# PYTHONPATH. gpu_session6_d.sh runs each tree from its own directory instead.
set -u
source "$(dirname "$0")/device_env.sh"
BEFORE_PATH=/tmp/site:$PWD/.whl/before
before() { PYTHONPATH=$BEFORE_PATH LAZYDP_BENCH_COMMIT=$BEFORE_COMMIT "$@"; }
grep -i huge /proc/meminfo
step before python3 scripts/probe_hybrid_phases.py 9.6GB sgd,lazydp 40
step python3 scripts/probe_hybrid_phases.py 9.6GB sgd,lazydp 40
HYB="$B run --placement hybrid --no-breakdown --warmup 5"
for rep in 1 2; do
  step before $HYB --table-size 9.6GB --algo sgd,lazydp --iterations 60 --out $OUT/before
  step $HYB --table-size 9.6GB --algo sgd,lazydp --iterations 60 --out $R
done
step before $HYB --table-size 96GB --algo sgd,lazydp --iterations 40 --out $OUT/before
step $HYB --table-size 96GB --algo sgd,lazydp --iterations 40 --out $R
for d in before ref; do echo "## $d"; python3 scripts/summarize_runs.py $OUT/$d/runs.jsonl; done
