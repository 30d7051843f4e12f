#!/usr/bin/env bash
# Fill-in reference runs on the lent H100: the largest GPU-resident size tried (48 GB) and
# the hybrid points re-measured after the hybrid coalescing change.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
B="python3 -m lazydp_bench"
R="$OUT/ref"
step() { echo "=== $*"; local t0=$SECONDS; "$@"; echo "=== rc=$? in $((SECONDS - t0)) s"; }
step $B sweep --algo sgd,dpsgd-f,lazydp --table-size 48GB --placement gpu --out "$R"
step $B sweep --algo lazydp --clipping bookkeeping --table-size 48GB --placement gpu --out "$R"
step $B sweep --algo sgd,dpsgd-b,dpsgd-r,dpsgd-f,dpsgd-bk,lazydp,eana --table-size 96MB --placement hybrid --out "$R"
step $B sweep --algo dpsgd-b,dpsgd-r,dpsgd-bk --table-size 960MB,9.6GB --placement hybrid --out "$R"
