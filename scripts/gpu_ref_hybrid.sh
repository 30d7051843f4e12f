#!/usr/bin/env bash
# Reference runs on the lent H100 in the paper's hybrid placement: 96 GB first, then
# 960MB/9.6GB (after the hybrid coalescing change). There: OUT=... bash scripts/gpu_ref_hybrid.sh
set -u
source "$(dirname "$0")/device_env.sh"
step $B sweep --algo sgd,dpsgd-f,lazydp --table-size 96GB --placement hybrid --warmup 1 \
  --iterations 5 --max-seconds 40 --out "$R"
step $B bench noise --placement host --size 4GiB --impl fused --repeats 3 --out "$R"
step $B sweep --algo sgd,dpsgd-f,lazydp,eana --table-size 960MB,9.6GB --placement hybrid --out "$R"
step $B sweep --algo sgd,lazydp --table-size 9.6GB --placement hybrid --no-breakdown --out "$R"
