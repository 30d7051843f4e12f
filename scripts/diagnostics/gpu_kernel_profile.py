"""Where a gpu-placement step's GPU time goes: torch.profiler over eager steps (the same
kernels a graph replays), per algorithm: kernels per step, GPU busy ms per step, and the
top kernels.
Usage: PYTHONPATH=$PWD python3 scripts/diagnostics/gpu_kernel_profile.py [SIZE [TOP]]"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from lazydp_bench.config import PrivacyConfig, RunConfig
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.runtime.trainer import build_session, plan_run

CASES = [("sgd", None), ("lazydp", "bookkeeping"), ("lazydp", None), ("dpsgd-f", None)]
STEPS = 10


def profile_case(algo: str, clipping: str | None, size: str, top: int) -> None:
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


if __name__ == "__main__":
    size = sys.argv[1] if len(sys.argv) > 1 else "96MB"
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 14
    for algo, clipping in CASES:
        profile_case(algo, clipping, size, top)
