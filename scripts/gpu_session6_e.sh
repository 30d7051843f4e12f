#!/usr/bin/env bash
# Sixth session, call E (H100): more reference hybrid records of the final code, now with
# the host CPU's busy and stolen shares over the measured steps in every record, to tell a
# slow host from a slow method (SGD and LazyDP in alternating processes).
set -u
source "$(dirname "$0")/device_env.sh"
HYB="$B run --placement hybrid --no-breakdown --warmup 5 --out $R"
for rep in 1 2 3; do step $HYB --table-size 96MB --algo sgd,lazydp --iterations 60; done
for rep in 1 2; do step $HYB --table-size 9.6GB --algo sgd,lazydp --iterations 60; done
step $HYB --table-size 96GB --algo sgd,lazydp --iterations 40
python3 - "$R/runs.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line); c, t = r["config"], r["timing"]
    cpu = t.get("host_cpu") or {}
    print(f"{c['algo']:8s} {c['table_size']:6s} {t['step_median_ms']:7.2f} ms  busy "
          f"{cpu.get('busy_pct', float('nan')):5.1f}%  steal {cpu.get('steal_pct', float('nan')):5.2f}%"
          f"  flush {t['flush_ms'] or 0:9.0f} ms")
PY
