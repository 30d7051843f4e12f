"""One line per record (algo, size, placement, batch, graph, step median, key stages), for
reading a device run's log. Usage: python3 scripts/summarize_runs.py RUNS.jsonl [--since N]"""

from __future__ import annotations

import json
import sys

KEYS = ("grad_coalesce", "noise_sampling", "noisy_grad", "param_update", "lazydp_overhead")


def line(rec: dict) -> str:
    c, t = rec["config"], rec.get("timing") or {}
    algo = c["algo"] + (f"[{c['clipping']}]" if c["clipping"] == "bookkeeping" else "")
    head = f"{algo:22s} {c['table_size']!s:>6s} {c['placement']:6s} b{c['batch_size']}"
    if rec["status"] != "ok":
        return f"{head} {rec['status']}: {rec.get('error')}"
    graph = "graph" if t.get("cuda_graph") else ("bd" if c["breakdown"] else "eager")
    stages = {s["name"]: s["median_ms"] for s in rec.get("stages") or []}
    parts = " ".join(f"{k}={stages[k]:.2f}" for k in KEYS if k in stages)
    return f"{head} {graph:5s} step {t['step_median_ms']:9.3f} ms  {parts}"


def main(path: str, since: int = 0) -> None:
    with open(path) as f:
        records = [json.loads(x) for x in f if x.strip()]
    for rec in records[since:]:
        print(line(rec))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
