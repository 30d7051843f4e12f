#!/usr/bin/env bash
# Regenerate the paper's experiments on a GPU machine, then the figures.
#
#   OUT=results/<date>-<gpu> bash scripts/reproduce_paper.sh PART [PART...]
#
# Parts are sized for one 10-minute window on the H100 machine; every sweep uses --resume,
# so re-running a part that was cut off continues where it stopped. Placements follow the
# paper (hybrid: tables in host RAM) plus gpu up to the largest size the card holds.
#   roofline  bench noise on the GPU and the host (Fig. 6)
#   small     Fig. 3/5 grid at 96MB..9.6GB in gpu and hybrid, plus lazydp, dpsgd-bk, eana
#   gpu-max   sgd, dpsgd-f, lazydp at the largest GPU-resident size (GPU_MAX, default 48GB)
#   graphs    end-to-end gpu step times (CUDA-graph replays, 600 steps: long enough for
#             the energy counter): 96MB/9.6GB/GPU_MAX, LazyDP-BK, and Fig. 10/11/12's
#             batch sizes at GPU_MAX
#   torch     Fig. 5 with the torch noise engine (fig5-torch): gpu 96MB/9.6GB, hybrid
#             96MB/960MB
#   h200      on nvidia-h200 (139 GiB): the 96GB model in GPU memory, Fig. 10/11/12
#   sens-gpu  Fig. 13(b-d) and 14 at 9.6GB on the GPU (graph replays)
#   large     Fig. 10/11/12 and 14 at 96GB hybrid, batch 1024/2048/4096 (--max-seconds 40)
#   sens      Fig. 13(b) pooling and 13(d) locality at 9.6GB hybrid; 13(c) RMC1-3 hybrid
#   big       Fig. 13(a) 24/48/96/192GB hybrid (192GB needs ~180 GiB of host RAM)
#   plot      all figures into $OUT/figures
# Without an installed package it runs from the checkout (PYTHONPATH), as on the device.
set -u
: "${OUT:?set OUT to the results folder}"
export PYTHONPATH="${PYTHONPATH:-}:$(cd "$(dirname "$0")/.." && pwd)"
B="python3 -m lazydp_bench"
GPU_MAX="${GPU_MAX:-48GB}"
sweep() { $B sweep --resume --out "$OUT" "$@"; }
for part in "$@"; do
  case "$part" in
    roofline)
      $B bench noise --placement gpu --size 8GiB --out "$OUT"
      $B bench noise --placement cpu --size 8GiB --repeats 3 --out "$OUT" ;;
    small)
      sweep --algo sgd,dpsgd-b,dpsgd-r,dpsgd-f,dpsgd-bk,lazydp,eana \
        --table-size 96MB,960MB,9.6GB --placement gpu,hybrid
      sweep --algo lazydp --clipping bookkeeping --table-size 96MB,9.6GB --placement gpu ;;
    gpu-max)
      sweep --algo sgd,dpsgd-f,lazydp --table-size "$GPU_MAX" --placement gpu ;;
    graphs)
      sweep --algo sgd,dpsgd-f,lazydp --table-size "96MB,9.6GB,$GPU_MAX" --placement gpu \
        --no-breakdown --iterations 600 --warmup 5
      sweep --algo lazydp --clipping bookkeeping --table-size "96MB,9.6GB,$GPU_MAX" \
        --placement gpu --no-breakdown --iterations 600 --warmup 5
      sweep --preset fig10 --table-size "$GPU_MAX" --placement gpu --no-breakdown \
        --iterations 600 --warmup 5 ;;
    torch)
      sweep --algo sgd,dpsgd-f --noise-impl torch --table-size 96MB,9.6GB --placement gpu \
        --warmup 1 --iterations 5
      sweep --algo sgd,dpsgd-f --noise-impl torch --table-size 96MB,960MB --placement hybrid \
        --warmup 1 --iterations 5 ;;
    h200)
      sweep --preset fig10 --table-size 96GB --placement gpu --no-breakdown \
        --iterations 600 --warmup 5
      sweep --preset fig10 --table-size 96GB --placement gpu --iterations 20 --warmup 3 ;;
    sens-gpu)
      for fig in fig13b fig13d fig14; do
        sweep --preset $fig --table-size 9.6GB --placement gpu --no-breakdown
      done
      sweep --preset fig13c --table-size 9.6GB --placement gpu --no-breakdown ;;
    large)
      sweep --preset fig10 --placement hybrid --warmup 1 --iterations 5 --max-seconds 40
      sweep --preset fig14 --placement hybrid --warmup 1 --iterations 5 --max-seconds 40 ;;
    sens)
      sweep --preset fig13b --table-size 9.6GB --placement hybrid --max-seconds 30
      sweep --preset fig13d --table-size 9.6GB --placement hybrid --max-seconds 30
      sweep --preset fig13c --placement hybrid --warmup 1 --iterations 5 --max-seconds 40 ;;
    big)
      sweep --preset fig13a --placement hybrid --warmup 1 --iterations 5 --max-seconds 40 ;;
    plot)
      $B plot "$OUT" --out "$OUT/figures" ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
