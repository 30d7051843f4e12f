"""One sweep point in its own process: `python -m lazydp_bench.sweep.worker IN.json OUT.json`.

IN holds {"config": RunConfig dict, "privacy": PrivacyPlan dict | null}; OUT receives the
finished record, written to a temporary name and renamed, so the parent sees either a
whole record or none. An OOM, CUDA fault or hang stays inside this process.

The worker dies with its sweep: first thing, it asks the kernel for SIGTERM when its
parent exits (Linux PR_SET_PDEATHSIG), then checks that its parent is still the sweep
that started it (the sweep passes its pid in LAZYDP_SWEEP_PARENT), which catches a sweep
that died before the request took effect. On SIGTERM it removes the point's temporary
folder, which a dead parent can no longer clean, and dies of the signal, so a sweep that
is still alive records `killed (signal 15: SIGTERM)`. This is done here rather than in a
`preexec_fn` of the sweep's Popen: a preexec_fn forces a plain fork, and a Ctrl-C that
lands in the fork's hooks is swallowed, leaving the sweep running.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import sys
from pathlib import Path

PARENT_ENV = "LAZYDP_SWEEP_PARENT"  # the pid of the sweep that started this worker
PR_SET_PDEATHSIG = 1


def _on_term(folder: Path):
    def handler(signum: int, _frame) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # die of the signal itself: the exit names it

    return handler


def die_with_parent(parent: int | None) -> None:
    """SIGTERM when the parent exits; SIGTERM now if it already has (the worker was
    adopted by init or a subreaper, so its parent is no longer `parent`)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _on_term(Path(argv[0]).parent))
    parent = os.environ.get(PARENT_ENV)
    die_with_parent(int(parent) if parent else None)
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
