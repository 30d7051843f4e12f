"""Peak host memory (resident set) of one run, not of the whole process.

`getrusage`'s `ru_maxrss` is the process's peak since it started, so a record of the
second run in `run --algo sgd,lazydp` would carry the first run's peak, and planning's
privacy accounting would count as training memory. Linux resets the peak (VmHWM) to the
current resident set when "5" is written to /proc/self/clear_refs; the run's peak is then
VmHWM read at its end. Where that is not possible the process's peak is reported and
the record says so (`host_peak_scope`).
"""

from __future__ import annotations

import resource
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_host_peak() -> str:
    """Start a new peak window; returns the scope the next `host_peak_bytes` covers:
    "run" (reset) or "process" (the kernel does not allow it)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return "process"
    return "run" if _vm_hwm() is not None else "process"


def host_peak_bytes() -> int:
    """Peak resident bytes since the last `reset_host_peak` (or since the process began)."""
    hwm = _vm_hwm()
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _vm_hwm() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
