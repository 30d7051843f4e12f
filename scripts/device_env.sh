# Sourced by the scripts that run on the lent GPU machine (uninstalled, no network):
# installs the carried wheels (.whl/, e.g. opacus) and defines `B` (the CLI), `R` (the
# results folder under $OUT) and `step` (runs a command and prints its exit code and time).
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
B="python3 -m lazydp_bench"
R="$OUT/ref"
step() { echo "=== $*"; local t0=$SECONDS; "$@"; echo "=== rc=$? in $((SECONDS - t0)) s"; }
