"""Print the fidelity table (markdown): each paper figure's claim, our number from the
records, and agree / differ by the rule in the row.

Usage: python3 scripts/fidelity.py RESULTS [RESULTS...]
RESULTS: runs.jsonl files or folders holding them (searched recursively, as `plot` does).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lazydp_bench.errors import BenchError
from lazydp_bench.records.store import load_records
from lazydp_bench.report.fidelity import fidelity_rows, markdown


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    try:
        records = load_records([Path(a) for a in argv])
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not records:
        print(f"error: no records in {', '.join(argv)}", file=sys.stderr)
        return 2
    print(markdown(fidelity_rows(records)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
