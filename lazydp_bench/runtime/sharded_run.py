"""Train a sharded run over N processes and bring back its final weights (for `verify
--gpus N` and the tests: the N-rank result must equal the one-rank result bit for bit)."""

from __future__ import annotations

import os
import tempfile

import torch

from lazydp_bench.runtime.distributed import Rank, spawn
from lazydp_bench.runtime.gpus import is_lead
from lazydp_bench.runtime.sharded_session import ShardedSession, ShardedSpec


def train_rank(
    me: Rank, specs: list[ShardedSpec], steps: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's part of each run: `steps` steps, the finalize (LazyDP's flush), then the
    gathered (table, MLP parameters) on the host."""
    results = []
    for spec in specs:
        session = ShardedSession(spec, me)
        for t in range(steps):
            session.step(t)
        session.finalize()
        table, params = session.gather()
        results.append((table.cpu(), params.cpu()))
    return results


def _train_worker(me: Rank, specs: list[ShardedSpec], steps: int, out: str) -> None:
    results = train_rank(me, specs, steps)
    if me.rank == 0:
        torch.save(results, out)


def train_sharded(
    specs: list[ShardedSpec], steps: int, world: int, *, use_cuda: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(final table, final MLP parameters) of each spec after `steps` steps (and LazyDP's
    flush) on `world` ranks; one process launch for all specs. Under torchrun only rank 0
    gets them (None elsewhere)."""
    with tempfile.TemporaryDirectory(prefix="lazydp-sharded-") as tmp:
        out = os.path.join(tmp, "result.pt")
        spawn(_train_worker, world, specs, steps, out, use_cuda=use_cuda)
        return torch.load(out) if is_lead() or world == 1 else None
