#!/usr/bin/env bash
# Regenerate the paper's experiments (and the ones beyond it) on the H200 machines, then
# the figures and the fidelity table:
#
#   OUT=results/<date>-h200 bash scripts/reproduce_paper.sh PART [PART...]
#   bash scripts/reproduce_paper.sh --list          # the parts, their machine and time
#
# Machines: `nvidia-h200` (one H200, 139 GiB; 16-core host, 128 GiB RAM) runs every part
# but the x2-* ones; `nvidia-h200-x2` (two H200s; 32 cores, 256 GiB RAM) runs the x2-*
# parts. Each part fits one 10-minute window; every sweep uses --resume, so a part cut
# off continues where it stopped when run again (`bench noise`, `data` have no resume:
# run again, they append or rewrite). The x2-* parts write to $OUT/x2/ (plot reads it
# too). The time after each part is its measured wall time on `nvidia-h200` where it ran
# into results/2026-12-02-h200 (rounded up, plus the steps the part gained since), else
# an estimate from the records of results/2026-11-30-h200 and results/2026-12-01-*
# (process start and table init per point, plus warm-up + measured steps).
#
# Repeats: step times of host-resident tables drift between processes on these machines
# (-4 % to +7 % between runs of one configuration), so the hybrid parts are run three
# times: PART:2 and PART:3 write to $OUT/repeat-2/ and $OUT/repeat-3/, and the figures
# pool the repeats of each point (median and IQR of all their steps). `all` runs them.
# Energy: graph-replay parts measure >= 1 s per point (>= 1,500 steps, or --max-seconds),
# the shortest window the NVML counter reads reliably.
# Without an installed package it runs from the checkout (PYTHONPATH), as on the device.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="${PYTHONPATH:-}:$ROOT"
B="${LAZYDP_BENCH:-python3 -m lazydp_bench}"  # the CLI (tests put a recorder here)
CPU_TDP="${CPU_TDP:-87.5}"  # W: the VM's 16-core share of a 350 W, 64-core Xeon (see README)
DATA="${DATA:-/tmp/lazydp-data}"  # generated Criteo files (not results: 70 MB - 1 GB)

# part | machine | minutes (estimate) | what
PARTS="
roofline|h200|3|Fig. 6: bench noise, table in GPU memory (torch, fused), host (torch, fused) and hybrid (fused, streamed, roundtrip)
fig3-gpu|h200|5|Fig. 3/5 stage breakdown, gpu, 96MB..96GB: SGD, DP-SGD(B/R/F/BK), LazyDP, EANA
fig3-hybrid|h200|4|Fig. 3/5 stage breakdown, hybrid, 96MB..9.6GB (repeat 3x)
fig3-hybrid-96gb|h200|4|Fig. 3/5 stage breakdown, hybrid, 96GB (--max-seconds 30; repeat 3x)
fig5-torch|h200|3|Fig. 5 with the torch noise engine (noise sampling and update as separate passes): gpu 96MB..96GB, hybrid 96MB/960MB
fig10-gpu|h200|7|Fig. 10/12/14 end to end, gpu 96GB, batch 1024/2048/4096 (graph replays, 1,500 steps or 20 s): SGD, DP-SGD(F) (fused; and torch, the paper's separate passes, eager: it takes seeds as arguments), LazyDP, LazyDP [bookkeeping], EANA
fig11-gpu|h200|2|Fig. 11 model-update breakdown, gpu 96GB, batch 1024/2048/4096
fig10-hybrid|h200|8|Fig. 10/12/14 end to end, hybrid 96GB (the paper's placement), --cpu-tdp for host energy (repeat 3x)
fig10-hybrid-host|h200|6|Fig. 10 with the paper's design for a host table (hybrid-host: DP-SGD(F)'s noise and LazyDP's bookkeeping on the host's threads), 96GB (repeat 3x)
fig11-hybrid|h200|5|Fig. 11 model-update breakdown, hybrid 96GB (repeat 3x)
fig13a-gpu|h200|4|Fig. 13(a) 24/48/96GB gpu (192GB recorded as skipped: needs more than 139 GiB), and 96MB..9.6GB so every size has graph replays
fig13a-hybrid|h200|5|Fig. 13(a) 24/48/96GB hybrid (192GB recorded as skipped: needs more than 128 GiB of host RAM), and 96MB..9.6GB (repeat 3x)
fig13b-gpu|h200|3|Fig. 13(b) pooling 1/10/20/30, gpu 96GB
fig13d-gpu|h200|2|Fig. 13(d) locality low/medium/high, gpu 96GB
fig13c-gpu|h200|2|Fig. 13(c) RMC1-3 at full size (96 GB each), gpu
fig13b-hybrid|h200|6|Fig. 13(b) pooling, hybrid 96GB (repeat 3x)
fig13d-hybrid|h200|4|Fig. 13(d) locality, hybrid 96GB (repeat 3x)
fig13c-hybrid|h200|5|Fig. 13(c) RMC1-3 full size, hybrid (repeat 3x)
opacus|h200|5|Opacus peer panel (Fig. 3/13a): opacus, opacus-ghost beside SGD, DP-SGD(F), LazyDP, gpu 96MB..48GB (needs opacus installed)
sparse-gpu|h200|4|DP-FEST / DP-AdaFEST beside DP-SGD(F) and LazyDP (preset sparse), gpu 96MB..96GB; DP-SGD(F) and LazyDP also eager, as DP-FEST runs
sparse-hybrid|h200|8|preset sparse, hybrid 96MB..96GB; DP-SGD(F) and LazyDP also eager (repeat 3x)
criteo-profile|h200|2|Criteo access profile of a generated file: data make-criteo (1M lines) + data profile at 96GB
utility-ref|h200|7|Utility (held-out AUC): SGD, DP-SGD(F), LazyDP on generated Criteo data, epsilon 1/3/8, seeds 0/1 (cpu placement, as results/2026-12-01-cpu-utility-tau)
utility-tau-0|h200|8|Utility: DP-AdaFEST at tau 4/2/1/-1, epsilon 1/3/8, seed 0
utility-tau-1|h200|8|Utility: DP-AdaFEST at tau 4/2/1/-1, epsilon 1/3/8, seed 1
x2-gpus|x2|5|Fig. 13(a) 2-GPU series (preset fig13a-x2): SGD, DP-SGD(F), LazyDP at 96GB and 192GB, tables sharded over 2 GPUs
x2-hybrid-192|x2|6|Fig. 13(a) 192GB hybrid on one GPU, --host-mem-limit 256GiB (the x2 host's RAM; MemAvailable starts low and grows)
plot|any|1|every figure into \$OUT/figures (PNG, PDF, CSV), utility from \$OUT/utility; the fidelity table into \$OUT/fidelity.md, the headline table into \$OUT/headline.md
"
REPEATED="fig3-hybrid fig3-hybrid-96gb fig10-hybrid fig10-hybrid-host fig11-hybrid fig13a-hybrid fig13b-hybrid fig13d-hybrid fig13c-hybrid sparse-hybrid"

list_parts() {
  echo "usage: OUT=results/<date>-h200 bash scripts/reproduce_paper.sh PART[:REPEAT] [...]"
  echo
  printf '%-17s %-5s %5s  %s\n' part on min what
  echo "$PARTS" | while IFS='|' read -r name machine minutes what; do
    [ -n "$name" ] && printf '%-17s %-5s %5s  %s\n' "$name" "$machine" "~$minutes" "$what"
  done
  echo
  echo "all      every h200 part, then the repeats 2 and 3 of: $REPEATED, then plot"
  echo "all-x2   every x2 part, then plot"
}

# sweep ARGS...: one resumable sweep into this repeat's folder; a point that hangs is
# ended (a timeout record) well inside the part's window
sweep() { $B sweep --resume --point-timeout "${POINT_TIMEOUT:-300}" --out "$DEST" "$@"; }
# graph replays long enough for the energy counter (>= 1 s) without long DP-SGD runs
GRAPHS="--no-breakdown --iterations 1500 --warmup 5 --max-seconds 20"
# sensitivity points (no energy figure): shorter windows
SENS="--no-breakdown --iterations 300 --warmup 5 --max-seconds 5"
# hybrid: fig. 10/12/14 long enough for the energy counter (SGD's 4 ms steps: 6 s), the
# sensitivity points shorter; DP-SGD(F)'s ~2 s steps stop at --max-seconds either way
HYBRID_GRAPHS="--no-breakdown --iterations 1500 --warmup 3 --max-seconds 8 --cpu-tdp $CPU_TDP"
HYBRID_STEPS="--no-breakdown --iterations 150 --warmup 3 --max-seconds 8 --cpu-tdp $CPU_TDP"
FIG13A_SIZES="96MB,960MB,9.6GB,24GB,48GB,96GB,192GB"
# the x2 parts use the one-GPU host's thread count, so their records match its runs
X2_THREADS=16

# into FILE CMD...: CMD's output into FILE, whole or not at all (a failed command leaves
# FILE as it was and no temporary file behind); FILE gets the umask's mode, not mktemp's 600
into() {
  local file="$1" tmp
  shift
  tmp=$(mktemp "$(dirname "$file")/.$(basename "$file").XXXXXXXX.tmp") || return 1
  if "$@" > "$tmp" && chmod "$(printf '%o' $((0666 & ~0$(umask))))" "$tmp"; then
    mv -f "$tmp" "$file"
  else
    rm -f "$tmp"
    return 1
  fi
}

utility() {  # ALGO-ARGS...: one held-out utility point per epsilon and seed given
  local train="$DATA/utility-train.tsv" heldout="$DATA/utility-heldout.tsv"
  mkdir -p "$DATA"
  [ -s "$train" ] || $B data make-criteo "$train" --lines 300000 --seed 0
  [ -s "$heldout" ] || $B data make-criteo "$heldout" --lines 20000 --seed 1
  $B sweep --resume --out "$OUT/utility" --workload criteo-kaggle --table-size 24MB \
    --placement cpu --batch-size 512 --iterations 500 --warmup 2 --dataset-size 300000 \
    --epochs 1 --data "criteo:$train" --eval-data "criteo:$heldout" --eval-every 100 \
    --no-breakdown "$@"
}

run_part() {  # NAME: one part, into $DEST
  case "$1" in
    roofline)
      $B bench noise --placement gpu --size 8GiB --out "$DEST"
      $B bench noise --placement cpu --size 8GiB --impl torch,fused --repeats 3 --out "$DEST"
      $B bench noise --placement hybrid --size 24GB --repeats 3 --out "$DEST" ;;
    fig3-gpu)
      sweep --preset fig3 --algo sgd,dpsgd-b,dpsgd-r,dpsgd-f,dpsgd-bk,lazydp,eana \
        --placement gpu ;;
    fig3-hybrid)
      sweep --preset fig3 --algo sgd,dpsgd-b,dpsgd-r,dpsgd-f,dpsgd-bk,lazydp,eana \
        --placement hybrid --table-size 96MB,960MB,9.6GB --max-seconds 30 ;;
    fig3-hybrid-96gb)
      sweep --preset fig3 --algo sgd,dpsgd-b,dpsgd-r,dpsgd-f,dpsgd-bk,lazydp,eana \
        --placement hybrid --table-size 96GB --warmup 1 --iterations 5 --max-seconds 30 ;;
    fig5-torch)
      sweep --algo dpsgd-f --noise-impl torch --table-size 96MB,960MB,9.6GB,96GB \
        --placement gpu --warmup 1 --iterations 10
      sweep --algo dpsgd-f --noise-impl torch --table-size 96MB,960MB --placement hybrid \
        --warmup 1 --iterations 5 --max-seconds 30 ;;
    fig10-gpu)
      sweep --preset fig10 --placement gpu $GRAPHS
      sweep --preset fig10 --algo lazydp --clipping bookkeeping --placement gpu $GRAPHS
      sweep --preset fig14 --placement gpu $GRAPHS
      sweep --preset fig10 --algo dpsgd-f --noise-impl torch --placement gpu $GRAPHS ;;
    fig11-gpu)
      sweep --preset fig11 --placement gpu --iterations 20 --warmup 3 ;;
    fig10-hybrid)
      sweep --preset fig10 --placement hybrid $HYBRID_GRAPHS
      sweep --preset fig14 --algo eana --placement hybrid $HYBRID_GRAPHS ;;
    fig10-hybrid-host)
      sweep --preset fig10 --placement hybrid-host $HYBRID_GRAPHS ;;
    fig11-hybrid)
      sweep --preset fig11 --placement hybrid --warmup 1 --iterations 10 --max-seconds 20 ;;
    fig13a-gpu)  # the paper's sizes, and the small ones fig. 3 times stage by stage
      sweep --preset fig13a --placement gpu $GRAPHS --table-size "$FIG13A_SIZES" ;;
    fig13a-hybrid)
      sweep --preset fig13a --placement hybrid $HYBRID_STEPS --table-size "$FIG13A_SIZES" ;;
    fig13b-gpu)
      sweep --preset fig13b --placement gpu $SENS ;;
    fig13d-gpu)
      sweep --preset fig13d --placement gpu $SENS ;;
    fig13c-gpu)
      sweep --preset fig13c --placement gpu $SENS ;;
    fig13b-hybrid)
      sweep --preset fig13b --placement hybrid $HYBRID_STEPS ;;
    fig13d-hybrid)
      sweep --preset fig13d --placement hybrid $HYBRID_STEPS ;;
    fig13c-hybrid)
      sweep --preset fig13c --placement hybrid $HYBRID_STEPS ;;
    opacus)
      sweep --algo opacus-ghost,opacus,dpsgd-f,lazydp,sgd --placement gpu \
        --table-size 96MB,960MB,9.6GB,24GB,48GB --iterations 5 --warmup 2 --point-timeout 60 ;;
    sparse-gpu)  # DP-FEST's data-dependent shapes keep it eager: eager baselines beside it
      sweep --preset sparse --placement gpu --no-breakdown --iterations 200 --warmup 3 \
        --max-seconds 10
      sweep --preset sparse --algo dpsgd-f,lazydp --cuda-graph off --placement gpu \
        --no-breakdown --iterations 200 --warmup 3 --max-seconds 10 ;;
    sparse-hybrid)
      sweep --preset sparse --placement hybrid --no-breakdown --iterations 100 --warmup 3 \
        --max-seconds 8
      sweep --preset sparse --algo dpsgd-f,lazydp --cuda-graph off --placement hybrid \
        --no-breakdown --iterations 100 --warmup 3 --max-seconds 8 ;;
    criteo-profile)
      mkdir -p "$DATA" "$OUT/criteo-profile"
      [ -s "$DATA/criteo-1m.tsv" ] || $B data make-criteo "$DATA/criteo-1m.tsv" --lines 1000000
      $B data profile "$DATA/criteo-1m.tsv" --table-size 96GB --batch-size 2048 \
        --out "$OUT/criteo-profile/profile.json" ;;
    utility-ref)
      for seed in 0 1; do
        utility --algo sgd --lr 0.1 --seed "$seed"
        for eps in 1 3 8; do
          utility --algo dpsgd-f,lazydp --lr 4 --epsilon "$eps" --seed "$seed"
        done
      done ;;
    utility-tau-0 | utility-tau-1)
      for eps in 1 3 8; do
        for tau in 4 2 1 -1; do
          utility --algo dp-adafest --tau "$tau" --lr 4 --epsilon "$eps" --seed "${1##*-}"
        done
      done ;;
    x2-gpus)
      sweep --preset fig13a-x2 --host-threads "$X2_THREADS" --no-breakdown --iterations 200 \
        --warmup 5 --max-seconds 20 ;;
    x2-hybrid-192)
      sweep --preset fig13a --table-size 192GB --placement hybrid --host-mem-limit 256GiB \
        --host-threads "$X2_THREADS" $HYBRID_STEPS ;;
    plot)  # every step runs; the part fails if any of them did
      local runs=() f rc=0
      for f in "$OUT"/runs.jsonl "$OUT"/repeat-*/runs.jsonl "$OUT"/x2/runs.jsonl \
        "$OUT"/x2/repeat-*/runs.jsonl; do
        [ -f "$f" ] && runs+=("$f")
      done
      [ ${#runs[@]} -gt 0 ] || { echo "error: no runs.jsonl under $OUT" >&2; return 1; }
      figures="fig3,fig5,fig5-torch,fig10,fig11,fig12,fig13a,fig13b,fig13c,fig13d"
      figures="$figures,sparse-step,sparse-grad,fig14,noise-roofline"
      $B plot "${runs[@]}" --figure "$figures" --out "$OUT/figures" || rc=1
      if [ -f "$OUT/utility/runs.jsonl" ]; then
        $B plot "$OUT/utility" --figure utility --out "$OUT/figures" || rc=1
      fi
      into "$OUT/fidelity.md" python3 "$ROOT/scripts/fidelity.py" "${runs[@]}" || rc=1
      into "$OUT/headline.md" python3 "$ROOT/scripts/headline.py" "${runs[@]}" || rc=1
      return "$rc" ;;
  esac
}

part_names() {  # MACHINE: the parts of that machine, in order
  echo "$PARTS" | while IFS='|' read -r name machine _; do
    [ "$machine" = "$1" ] && echo "$name"
  done
}

if [ $# -eq 0 ] || [ "$1" = "--list" ] || [ "$1" = "help" ] || [ "$1" = "--help" ]; then
  list_parts
  exit 0
fi
known() {  # ITEM: a part name, with an optional :REPEAT of 2 or more
  local name="${1%%:*}" repeat="${1#*:}"
  [ "$1" = "$name" ] || [[ "$repeat" =~ ^[2-9][0-9]*$ ]] || return 1
  echo "$PARTS" | cut -d'|' -f1 | grep -qx -- "$name"
}
todo=""
for arg in "$@"; do  # check every argument before running anything
  case "$arg" in
    all) todo="$todo $(part_names h200) $(for p in $REPEATED; do echo "$p:2 $p:3"; done) plot" ;;
    all-x2) todo="$todo $(part_names x2) plot" ;;
    *) known "$arg" || { echo "error: unknown part $arg (bash scripts/reproduce_paper.sh --list)" >&2; exit 2; }
       todo="$todo $arg" ;;
  esac
done
[ -n "${OUT:-}" ] || { echo "error: set OUT to the results folder, e.g. OUT=results/<date>-h200" >&2; exit 2; }
status=0
for item in $todo; do
  name="${item%%:*}"
  repeat=1
  [ "$item" != "$name" ] && repeat="${item#*:}"
  DEST="$OUT"
  # the x2 machine's records apart: a resumed H200 sweep would count its skipped
  # 192 GB stub as done and x2-hybrid-192 (another --host-mem-limit) would never run
  [ "${name#x2-}" != "$name" ] && DEST="$OUT/x2"
  [ "$repeat" != 1 ] && DEST="$DEST/repeat-$repeat"
  echo "== part $name (repeat $repeat) -> $DEST" >&2
  ( run_part "$name" ) || status=1
done
exit "$status"
