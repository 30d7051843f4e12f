"""The run summary quotes LazyDP against the fastest DP-SGD(F) at its point, naming its
engine."""

from __future__ import annotations

import json

from rich.console import Console

from lazydp_bench.records.store import load_records
from lazydp_bench.report.tables import summary_table
from tests.conftest import ROOT


def _with(rec: dict, algo: str, step_ms: float, engine: str | None) -> dict:
    out = json.loads(json.dumps(rec))
    out["config"]["algo"] = algo
    out["timing"]["step_median_ms"] = step_ms
    out["noise"] = {"impl": "x", "table": {"engine": engine}} if engine else None
    return out


def test_speedup_is_against_the_fastest_dpsgd_f_with_its_engine():
    base = next(
        r
        for r in load_records([ROOT / "tests" / "data" / "h100_records.jsonl"])
        if r.get("kind") == "run" and r.get("status") == "ok"
    )
    records = [
        _with(base, "dpsgd-f", 250.0, "streamed (draw on cuda)"),
        _with(base, "dpsgd-f", 1000.0, "host-threaded (16 threads)"),  # later, slower
        _with(base, "lazydp", 10.0, "streamed (draw on cuda)"),
    ]
    console = Console(width=200, record=True)
    console.print(summary_table(records))
    text = console.export_text()
    lazydp_line = next(line for line in text.splitlines() if "lazydp" in line)
    assert "25.0x [streamed]" in lazydp_line
