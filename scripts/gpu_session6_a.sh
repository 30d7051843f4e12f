#!/usr/bin/env bash
# Sixth session, call A (H100): LazyDP's queue noise drawn before the host lookup, the
# rows batch t does not read added while the host looks batch t up. The self-check, the
# host phase probe (before = the previous commit's tree in .whl/before, after = this
# tree), then hybrid graph step times, before and after in alternating processes.
# Usage: BEFORE_COMMIT=<sha> bash scripts/gpu_session6_a.sh
# BUG (kept as the record of what ran): `before` sets PYTHONPATH, but `python3 -m` run from
# the repository root puts the root first on sys.path, so the CLI "before" runs imported
# this checkout's package: they ran 0b51f84, and their records were relabeled when saved
# (results/2026-11-23-h100/session6/). The probe (`python3 scripts/...`) did honour
# PYTHONPATH. gpu_session6_d.sh runs each tree from its own directory instead.
set -u
source "$(dirname "$0")/device_env.sh"
AFTER_PATH=$PYTHONPATH
BEFORE_PATH=/tmp/site:$PWD/.whl/before
AFTER_COMMIT=$LAZYDP_BENCH_COMMIT
before() { PYTHONPATH=$BEFORE_PATH LAZYDP_BENCH_COMMIT=$BEFORE_COMMIT "$@"; }
echo "THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled) defrag: $(cat /sys/kernel/mm/transparent_hugepage/defrag)"
step python3 scripts/gpu_selfcheck.py
for size in 96MB 9.6GB; do
  step before python3 scripts/probe_hybrid_phases.py $size sgd,lazydp 40
  step python3 scripts/probe_hybrid_phases.py $size sgd,lazydp 40
done
HYB="$B run --placement hybrid --no-breakdown --warmup 5"
for rep in 1 2 3; do
  step before $HYB --table-size 96MB --algo sgd,lazydp --iterations 60 --out $OUT/before
  step $HYB --table-size 96MB --algo sgd,lazydp --iterations 60 --out $R
done
for rep in 1 2; do
  step before $HYB --table-size 9.6GB --algo sgd,lazydp --iterations 60 --out $OUT/before
  step $HYB --table-size 9.6GB --algo sgd,lazydp --iterations 60 --out $R
done
for d in before ref; do echo "## $d"; python3 scripts/summarize_runs.py $OUT/$d/runs.jsonl; done
