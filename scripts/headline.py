"""Print the headline table (markdown) of stored records: LazyDP against SGD and against
DP-SGD(F)'s strongest engine and the paper's design, energy per step and LazyDP's flush,
at the paper's point, per machine and placement (`lazydp_bench.report.headline`).

Usage: python3 scripts/headline.py results/2026-12-02-h200/runs.jsonl [more runs.jsonl]
"""

from __future__ import annotations

import sys
from pathlib import Path

from lazydp_bench.errors import BenchError
from lazydp_bench.records.store import load_records
from lazydp_bench.report.headline import headline_rows, markdown


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: python3 scripts/headline.py RUNS.jsonl [RUNS.jsonl ...]", file=sys.stderr)
        return 2
    try:
        records = load_records([Path(p) for p in paths])
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown(headline_rows(records)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
