"""One sweep point in its own process: `python -m lazydp_bench.sweep.worker IN.json OUT.json`.

IN holds {"config": RunConfig dict, "privacy": PrivacyPlan dict | null}; OUT receives the
finished record, written to a temporary name and renamed, so the parent sees either a
whole record or none. An OOM, CUDA fault or hang stays inside this process.

The worker dies with its sweep: the parent asks the kernel for SIGTERM when it exits
(`runner.die_with_parent`, even when it was killed), and the worker then removes the
point's temporary folder, which the parent can no longer clean, and exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path


def _orphaned(folder: Path):
    def handler(signum: int, _frame) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        os._exit(128 + signum)

    return handler


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _orphaned(Path(argv[0]).parent))
    from lazydp_bench.config import RunConfig
    from lazydp_bench.dp.privacy import PrivacyPlan
    from lazydp_bench.runtime.sharded_trainer import execute_point, plan_point

    spec = json.loads(Path(argv[0]).read_text())
    config = RunConfig.from_dict(spec["config"])
    privacy = PrivacyPlan(**spec["privacy"]) if spec.get("privacy") else None
    record = execute_point(plan_point(config, privacy=privacy))
    out = Path(argv[1])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
