#!/usr/bin/env bash
# Issue 7 on the lent H100, graph replays (--no-breakdown) on gpu placement: fig10-12's
# other batch sizes at 48 GB (the largest GPU-resident size tried), fig13b/13d/14 at 9.6 GB,
# fig13c (RMC1-3 scaled to 9.6 GB); then DP-SGD(F) at 96 GB hybrid, batch 4096 and 1024.
set -u
source "$(dirname "$0")/device_env.sh"
GPU="$B run --iterations 20 --warmup 3 --no-breakdown --placement gpu --out $R"
for b in 1024 4096; do step $GPU --algo sgd,dpsgd-f,lazydp --table-size 48GB --batch-size $b; done
for p in 10 20 30; do step $GPU --algo sgd,dpsgd-f,lazydp --table-size 9.6GB --pooling $p; done
for d in low medium high; do
  step $GPU --algo sgd,dpsgd-f,lazydp --table-size 9.6GB --distribution $d
done
for b in 1024 2048 4096; do step $GPU --algo eana,lazydp --table-size 9.6GB --batch-size $b; done
for w in rmc1 rmc2 rmc3; do step $GPU --algo sgd,dpsgd-f,lazydp --workload $w --table-size 9.6GB; done
HYB="$B run --iterations 3 --warmup 1 --placement hybrid --table-size 96GB --out $R"
for b in 4096 1024; do step $HYB --algo dpsgd-f --batch-size $b; done
