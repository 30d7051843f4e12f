#!/usr/bin/env bash
# Sixth session, call C (H100): reference hybrid records of this commit (queue noise
# before the lookup, host table on transparent huge pages), SGD and LazyDP in alternating
# processes because this host's step times drift from process to process (see the flush
# times); LazyDP-BK once per size; gpu placement at 96 MB to check it did not move.
set -u
source "$(dirname "$0")/device_env.sh"
lscpu | grep -iE "numa|socket|model name|^cpu\(s\)"
for n in /sys/devices/system/node/node*; do echo "$n $(grep MemTotal $n/meminfo)"; done
HYB="$B run --placement hybrid --no-breakdown --warmup 5 --out $R"
for rep in 1 2 3; do step $HYB --table-size 96MB --algo sgd,lazydp --iterations 60; done
step $HYB --table-size 96MB --algo lazydp --clipping bookkeeping --iterations 60
for rep in 1 2; do step $HYB --table-size 9.6GB --algo sgd,lazydp --iterations 60; done
step $HYB --table-size 9.6GB --algo lazydp --clipping bookkeeping --iterations 60
for rep in 1 2; do step $HYB --table-size 96GB --algo sgd,lazydp --iterations 40; done
GPU="$B run --placement gpu --no-breakdown --table-size 96MB --iterations 200 --warmup 5"
step $GPU --algo sgd,lazydp --out $OUT/gpu-check
step $GPU --algo lazydp --clipping bookkeeping --out $OUT/gpu-check
for d in ref gpu-check; do echo "## $d"; python3 scripts/summarize_runs.py $OUT/$d/runs.jsonl; done
