#!/usr/bin/env bash
# Fourth session, call D (H100): where hybrid SGD's heavy step-time tail comes from.
# The same 96 MB hybrid runs with the default OpenMP wait policy (threads spin after a
# parallel region, competing with the update's thread pool), with OMP_WAIT_POLICY=PASSIVE,
# and with half the host threads. Records go to $OUT/omp (not reference points).
set -u
source "$(dirname "$0")/device_env.sh"
HYB="$B run --placement hybrid --no-breakdown --table-size 96MB --iterations 100 --warmup 5"
step $HYB --algo sgd,lazydp --out $OUT/omp/default
OMP_WAIT_POLICY=PASSIVE step $HYB --algo sgd,lazydp --out $OUT/omp/passive
step $HYB --algo sgd,lazydp --host-threads 8 --out $OUT/omp/threads8
OMP_WAIT_POLICY=PASSIVE step $HYB --algo sgd,lazydp --table-size 9.6GB --out $OUT/omp/passive
for d in default passive threads8; do
  echo "## $d"; python3 scripts/summarize_runs.py $OUT/omp/$d/runs.jsonl
  python3 - "$OUT/omp/$d/runs.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    raw = sorted(r["timing"]["step_ms_raw"])
    n = len(raw)
    q = [round(raw[int(p * (n - 1))], 1) for p in (0, 0.1, 0.25, 0.5, 0.75, 0.9, 1)]
    print(r["config"]["algo"], r["config"]["table_size"], "min/p10/p25/p50/p75/p90/max", q)
PY
done
