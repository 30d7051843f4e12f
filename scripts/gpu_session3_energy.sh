#!/usr/bin/env bash
# Third session, H100: graph-replayed steps long enough for the NVML energy counter
# (600 steps: >= ~1 s even at 1.5 ms/step), for the headline J/step and Fig. 12 on gpu.
set -u
source "$(dirname "$0")/device_env.sh"
RUN="$B run --iterations 600 --warmup 5 --no-breakdown --placement gpu --out $R"
for size in 96MB 9.6GB 48GB; do
  step $RUN --algo sgd,dpsgd-f,lazydp --table-size $size
done
for batch in 1024 4096; do
  step $RUN --algo sgd,lazydp --table-size 48GB --batch-size $batch
done
step $RUN --algo lazydp --clipping bookkeeping --table-size 48GB
