"""Where a gpu-placement step's GPU time goes: torch.profiler over eager steps (the same
kernels a graph replays), per algorithm: kernels per step, GPU busy ms per step, and the
top kernels, then each private case's kernels against SGD's (what DP and LazyDP add).
Usage: PYTHONPATH=$PWD python3 scripts/diagnostics/gpu_kernel_profile.py [SIZE [TOP]]"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from lazydp_bench.config import PrivacyConfig, RunConfig
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.runtime.trainer import build_session, plan_run

CASES = [
    ("sgd", None),
    ("lazydp", "bookkeeping"),
    ("dpsgd-f", "bookkeeping"),
    ("lazydp", None),
    ("dpsgd-f", None),
]
STEPS = 10


def profile_case(algo: str, clipping: str | None, size: str, top: int) -> dict[str, tuple]:
    """Prints the case's top kernels; returns {kernel: (launches/step, ms/step)}."""
    cfg = RunConfig(
        algo=algo,
        table_size=size,
        placement="gpu",
        clipping=clipping,
        breakdown=False,
        privacy=PrivacyConfig(noise_multiplier=1.0),
        iterations=STEPS,
        warmup=5,
    )
    session = build_session(plan_run(cfg))
    for t in range(5):
        session.step(t, NULL_TIMER)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for t in range(5, 5 + STEPS):
            session.step(t, NULL_TIMER)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    kernels = sum(e.count for e in events)
    busy = sum(e.device_time_total for e in events) / 1e3 / STEPS
    print(
        f"## {algo}{'[' + clipping + ']' if clipping else ''} {size}: "
        f"{kernels / STEPS:.0f} GPU ops/step, {busy:.3f} ms GPU busy/step"
    )
    events.sort(key=lambda e: -e.device_time_total)
    for e in events[:top]:
        ms, per_step = e.device_time_total / 1e3 / STEPS, e.count / STEPS
        print(f"  {ms:7.3f} ms  x{per_step:5.1f}  {e.key[:90]}")
    return {e.key: (e.count / STEPS, e.device_time_total / 1e3 / STEPS) for e in events}


def print_diff(name: str, case: dict[str, tuple], base: dict[str, tuple]) -> None:
    """Kernels whose launches or time per step differ from SGD's by > 1 us."""
    rows = []
    for key in set(case) | set(base):
        (n1, t1), (n0, t0) = case.get(key, (0, 0.0)), base.get(key, (0, 0.0))
        if n1 != n0 or abs(t1 - t0) > 1e-3:
            rows.append((t1 - t0, n1 - n0, key))
    rows.sort(key=lambda r: -abs(r[0]))
    total = sum(r[0] for r in rows)
    print(f"## {name} - sgd: {total:+.3f} ms/step")
    for dt, dn, key in rows:
        print(f"  {dt:+7.3f} ms  {dn:+5.1f}/step  {key[:200]}")


if __name__ == "__main__":
    size = sys.argv[1] if len(sys.argv) > 1 else "96MB"
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 14
    found = {}
    for algo, clipping in CASES:
        found[(algo, clipping)] = profile_case(algo, clipping, size, top)
    for (algo, clipping), case in found.items():
        if algo != "sgd":
            print_diff(f"{algo}[{clipping or 'default'}]", case, found[("sgd", None)])
