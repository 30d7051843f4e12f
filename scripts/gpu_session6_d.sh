#!/usr/bin/env bash
# Sixth session, call D (H100): before/after, each tree run from its own directory (calls A
# and B ran `python3 -m` from the repository root, which imports the root's package
# whatever PYTHONPATH says, so their "before" runs ran the new code). Trees:
#   before = a804454 (fifth session: queue noise started after the lookup, 4 KiB pages),
#   mid    = 0b51f84 (queue noise before the lookup, 4 KiB pages),
#   after  = this checkout (queue noise before the lookup, host table on huge pages).
# SGD and LazyDP in alternating processes, the three trees in turn.
set -u
source "$(dirname "$0")/device_env.sh"
ROOT=$PWD
HYB="run --placement hybrid --no-breakdown --warmup 5"
in_tree() {  # $1: tree dir, $2: commit label, $3: results dir, rest: run arguments
  local tree=$1 commit=$2 out=$3
  shift 3
  (cd "$tree" && export PYTHONPATH=/tmp/site:$PWD LAZYDP_BENCH_COMMIT=$commit \
    && step python3 -m lazydp_bench $HYB --out "$out" "$@")
}
trees() {  # run arguments, in the three trees
  in_tree "$ROOT/.whl/before" a804454 "$OUT/before" "$@"
  in_tree "$ROOT/.whl/mid" 0b51f84 "$OUT/mid" "$@"
  in_tree "$ROOT" "$LAZYDP_BENCH_COMMIT" "$R" "$@"
}
step python3 scripts/probe_hybrid_phases.py 96MB sgd,lazydp 60
for rep in 1 2; do trees --table-size 96MB --algo sgd,lazydp --iterations 60; done
for rep in 1 2; do trees --table-size 9.6GB --algo sgd,lazydp --iterations 60; done
in_tree "$ROOT/.whl/before" a804454 "$OUT/before" --table-size 96GB --algo sgd,lazydp --iterations 40
in_tree "$ROOT" "$LAZYDP_BENCH_COMMIT" "$R" --table-size 96GB --algo sgd,lazydp --iterations 40
for d in before mid ref; do echo "## $d"; python3 scripts/summarize_runs.py $OUT/$d/runs.jsonl; done
