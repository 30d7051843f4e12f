#!/usr/bin/env bash
# On the H200 (139 GiB): the paper's 96 GB model with its tables in GPU memory. Graph
# replays (end-to-end step) and per-stage runs at batch 1024/2048/4096 (Fig. 10-12),
# LazyDP-BK at 2048. Run with the device tool's kind nvidia-h200.
set -u
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
RUN="$B run --no-breakdown --iterations 50 --warmup 5 --placement gpu --table-size 96GB --out $R"
step $RUN --algo sgd,dpsgd-f,lazydp
step $RUN --algo lazydp --clipping bookkeeping
for batch in 1024 4096; do
  step $RUN --algo sgd,dpsgd-f,lazydp --batch-size $batch
done
BD="$B run --iterations 20 --warmup 3 --placement gpu --table-size 96GB --out $R"
for batch in 2048 1024 4096; do
  step $BD --algo sgd,dpsgd-f,lazydp --batch-size $batch
done
