"""How busy the host's CPUs were, and how much time the hypervisor took from them (steal),
over the measured steps.

Hybrid steps spend most of their time in host threads, and on a shared virtual machine
the same run can be 1.5-3x slower in one process than in the next (in the sixth H100
session the dense flush of one 96 GB run took 43 s, of another 16 s). A record that says
how much CPU time was stolen while it was measured lets a reader tell a slow host from a
slow method. Read from /proc/stat (Linux); None elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

_STAT = Path("/proc/stat")
# /proc/stat "cpu" fields: user nice system idle iowait irq softirq steal guest guest_nice
_IDLE, _IOWAIT, _STEAL = 3, 4, 7


def cpu_times() -> list[int] | None:
    """The aggregate jiffies of the `cpu` line (guest time is already in user)."""
    try:
        first = _STAT.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not first or first[0] != "cpu":
        return None
    return [int(x) for x in first[1:9]]


def cpu_share(start: list[int] | None, end: list[int] | None) -> dict | None:
    """Busy and stolen shares (%) of all CPU time between two `cpu_times()` samples."""
    if start is None or end is None:
        return None
    delta = [b - a for a, b in zip(start, end, strict=True)]
    total = sum(delta)
    if total <= 0:
        return None
    idle = delta[_IDLE] + delta[_IOWAIT]
    return {
        "busy_pct": 100.0 * (total - idle - delta[_STEAL]) / total,
        "steal_pct": 100.0 * delta[_STEAL] / total,
    }


def busy_cpu_seconds(start: list[int] | None, end: list[int] | None) -> float | None:
    """CPU-seconds the machine's CPUs were busy between two `cpu_times()` samples (all
    processes; idle, iowait and stolen time left out); None without samples or when the
    clock did not tick between them (unknown, not zero)."""
    if start is None or end is None:
        return None
    delta = [b - a for a, b in zip(start, end, strict=True)]
    if sum(delta) <= 0:
        return None
    busy = sum(delta) - delta[_IDLE] - delta[_IOWAIT] - delta[_STEAL]
    return busy / os.sysconf("SC_CLK_TCK")
