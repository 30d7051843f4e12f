"""Debug (session 5): does a host wait on an external event recorded inside a CUDA graph
wait for this replay's record; where does lazydp hybrid graph diverge from eager."""

import time

import torch

from lazydp_bench.graph_step import GraphedStep
from lazydp_bench.profiling import NULL_TIMER
from lazydp_bench.trainer import build_session, plan_run

import importlib.util, sys

spec = importlib.util.spec_from_file_location("sc", "scripts/gpu_selfcheck.py")
sc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sc)


def ext_event_test():
    x = torch.zeros(1, device="cuda")
    pinned = torch.zeros(1, pin_memory=True)
    side = torch.cuda.Stream()
    g = torch.cuda.CUDAGraph()
    ev = None
    with torch.cuda.graph(g):
        torch.cuda._sleep(200_000_000)  # ~100+ ms of cycles
        x.add_(1)
        ev = torch.cuda.Event(external=True)
        pinned.copy_(x, non_blocking=True)
        ev.record()
        torch.cuda._sleep(200_000_000)
    torch.cuda.synchronize()
    for i in range(3):
        t0 = time.perf_counter()
        g.replay()
        t1 = time.perf_counter()
        ev.synchronize()
        t2 = time.perf_counter()
        val = float(pinned)
        torch.cuda.synchronize()
        t3 = time.perf_counter()
        print(
            f"ext event: launch {1e3 * (t1 - t0):.2f} ms, wait {1e3 * (t2 - t1):.2f} ms, "
            f"full {1e3 * (t3 - t0):.2f} ms, pinned {val} (x after {float(x)})"
        )


def compare(algo, clipping, sigma):
    cfg = sc._graph_config(algo, clipping, "hybrid")
    from dataclasses import replace

    cfg = replace(cfg, privacy=replace(cfg.privacy, noise_multiplier=sigma))
    plan = plan_run(cfg)
    steps = plan.config.total_steps
    eager = build_session(plan)
    gs = build_session(plan)
    graphed = GraphedStep(gs)
    for t in range(steps):
        eager.step(t, NULL_TIMER)
        if t < plan.config.warmup:
            graphed.warm_step(t, NULL_TIMER)
        else:
            if graphed.graph is None:
                graphed.capture()
            graphed.step(t, NULL_TIMER)
        gs.algo._join_ahead() if hasattr(gs.algo, "_join_ahead") else None
        torch.cuda.synchronize()
        d_t = (eager.model.table - gs.model.table).abs().max().item()
        d_m = (eager.model.flat_params - gs.model.flat_params).abs().max().item()
        h = ""
        if hasattr(gs.algo, "history"):
            h = f" history equal {torch.equal(eager.algo.history, gs.algo.history)}"
        print(f"{algo}[{clipping}] sigma {sigma} step {t}: table {d_t:.1e} mlp {d_m:.1e}{h}")


ext_event_test()
for sigma in (0.0, 1.0):
    compare("lazydp", None, sigma)
compare("sgd", None, 0.0)
