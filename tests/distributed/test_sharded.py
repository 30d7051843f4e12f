"""Row-wise sharded training on gloo CPU processes: N ranks == 1 rank bit for bit (noise
off, unit noise, real noise; sgd, DP-SGD(F), LazyDP with its flush), the one-rank sharded
step against the single-process trainer, its noise distribution, and the all-to-all."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cache

import pytest
import torch

from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.runtime.distributed import Comm, Rank, spawn
from lazydp_bench.runtime.sharded_run import train_rank
from lazydp_bench.runtime.sharded_session import ShardedSession, ShardedSpec
from lazydp_bench.runtime.trainer import build_session, plan_run
from lazydp_bench.runtime.verify import ks_normal, tiny_config

STEPS = 3
CPU = Rank(0, 1, torch.device("cpu"))
SMALL_TABLES = (1, 2, 4, 30)  # with 3 ranks, rank 2 holds none of the first three tables


@cache
def _plan(algo: str, mode: str, steps: int, kw: tuple):
    return plan_run(tiny_config(algo, steps=steps, noise_mode=mode, **dict(kw)))


def spec(algo: str, mode: str, groups: int, *, rows=None, steps=STEPS, **kw) -> ShardedSpec:
    kw.setdefault("batch_size", 6)
    made = ShardedSpec.from_plan(_plan(algo, mode, steps, tuple(sorted(kw.items()))), groups)
    if rows is not None:  # a workload whose small tables leave some rank without rows
        made = replace(made, workload=replace(made.workload, rows=rows))
    return made


CASES = [
    ("sgd", "off", {}),
    ("dpsgd-f", "off", {}),
    ("dpsgd-f", "unit", {}),
    ("dpsgd-f", "gaussian", {"rows": SMALL_TABLES}),
    ("lazydp", "off", {}),
    ("lazydp", "unit", {"lr_decay": 0.3}),
    ("lazydp", "gaussian", {"lr_decay": 0.3, "rows": SMALL_TABLES}),
]


def one_rank(s: ShardedSpec, steps: int = STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    session = ShardedSession(s, CPU)
    for t in range(steps):
        session.step(t)
    session.finalize()
    return session.gather()


def _ranks(me: Rank, specs: list[ShardedSpec], out: str) -> None:
    """One launch per world: the all-to-all round trip, then every case."""
    trip = _round_trip(me)
    results = train_rank(me, specs, STEPS)
    if me.rank == 0:
        torch.save((trip, results), out)


@pytest.mark.parametrize("world", [2, 3])
def test_n_ranks_equal_one_rank_bitwise(world, tmp_path):
    specs = [spec(algo, mode, world, **kw) for algo, mode, kw in CASES]
    out = str(tmp_path / "result.pt")
    spawn(_ranks, world, specs, out)
    trip, got = torch.load(out)
    assert trip.all(), trip  # every rank: round trip exact, counts and sources right
    clean = {}
    for s, (table, params), (algo, mode, kw) in zip(specs, got, CASES, strict=True):
        ref_table, ref_params = one_rank(s)
        assert torch.equal(table, ref_table), (algo, mode, kw)
        assert torch.equal(params, ref_params), (algo, mode, kw)
        if mode == "off":
            clean[algo] = ref_table
        elif "rows" not in kw:  # the noise is there: the run differs from its noise-off twin
            assert not torch.allclose(ref_table, clean[algo], rtol=0, atol=1e-6)


@pytest.mark.parametrize("algo", ["sgd", "dpsgd-f", "lazydp"])
@pytest.mark.parametrize("mode", ["off", "unit"])
def test_one_rank_equals_single_process_trainer(algo, mode):
    """The sharded step computes what the trainer computes (up to summation order): the
    same init, batches, clipping and update; unit noise makes the noise exact too."""
    kw = {"lr_decay": 0.3, "noise_impl": "torch"}
    plan = plan_run(tiny_config(algo, steps=5, noise_mode=mode, **kw))
    table, params = one_rank(ShardedSpec.from_plan(plan, 2), steps=5)
    ref = build_session(plan)
    for t in range(5):
        ref.step(t, NULL_TIMER)
    ref.algo.finalize()
    assert torch.allclose(table, ref.model.table, rtol=0, atol=1e-12)
    assert torch.allclose(params, ref.model.flat_params.detach(), rtol=0, atol=1e-12)
    assert not torch.equal(table, init_of(plan))  # training moved the table


def init_of(plan) -> torch.Tensor:
    return build_session(plan).model.table


@pytest.mark.parametrize("algo", ["dpsgd-f", "lazydp"])
def test_sharded_noise_is_dpsgd_distributed(algo):
    """(noisy - noise-free) / sd is N(0, 1) per table element after the flush, with
    sd = sqrt(sum_t lr_t^2) sigma C / B (C tiny, sigma huge: the gradients barely move)."""
    kw = {"sigma": 1e6, "clip_norm": 1e-6, "lr_decay": 0.3, "table_size": "x10", "groups": 2}
    groups = kw.pop("groups")
    noisy, _ = one_rank(spec(algo, "gaussian", groups, steps=6, **kw), steps=6)
    clean, _ = one_rank(spec(algo, "off", groups, steps=6, **kw), steps=6)
    lrs = [0.5 / (1 + 0.3 * t) for t in range(6)]
    sd = math.sqrt(sum(lr * lr for lr in lrs)) * 1e6 * 1e-6 / 6
    z = ((noisy - clean) / sd).flatten()
    n = z.numel()
    assert ks_normal(z) < 1.95 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)


def _round_trip(me: Rank) -> torch.Tensor:
    """Each rank's verdicts (all ranks' on rank 0): rows sent to every rank and back are
    unchanged, the counts each rank receives are what the others sent, and each piece
    comes from the rank it should."""
    comm = Comm(me)
    counts = [(me.rank + 2 * r) % 4 for r in range(me.world)]  # includes empty sends
    send = torch.arange(sum(counts) * 3, dtype=torch.float64).view(-1, 3) + 1000 * me.rank
    recv_counts = comm.host_ints(comm.exchange_counts(torch.tensor(counts)))
    recv = comm.all_to_all(send, counts, recv_counts)
    back = comm.all_to_all(recv, recv_counts, counts)
    pieces = recv.split(recv_counts)
    sources = [sorted({int(p[0, 0].item()) // 1000}) if len(p) else [] for p in pieces]
    result = torch.tensor(
        [torch.equal(back, send), recv_counts == [(r + 2 * me.rank) % 4 for r in range(me.world)]]
        + [s in ([], [r]) for r, s in enumerate(sources)]
    )
    return torch.stack(comm.all_gather(result))
