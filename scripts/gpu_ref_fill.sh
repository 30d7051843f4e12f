#!/usr/bin/env bash
# Fill-in reference runs on the lent H100: the largest GPU-resident size tried (48 GB) and
# the hybrid points re-measured after the hybrid coalescing change.
set -u
source "$(dirname "$0")/device_env.sh"
step $B sweep --algo sgd,dpsgd-f,lazydp --table-size 48GB --placement gpu --out "$R"
step $B sweep --algo lazydp --clipping bookkeeping --table-size 48GB --placement gpu --out "$R"
step $B sweep --algo sgd,dpsgd-b,dpsgd-r,dpsgd-f,dpsgd-bk,lazydp,eana --table-size 96MB --placement hybrid --out "$R"
step $B sweep --algo dpsgd-b,dpsgd-r,dpsgd-bk --table-size 960MB,9.6GB --placement hybrid --out "$R"
