"""Host reads of a sharded step, counted without CUDA: every tensor-to-host read
(`.tolist()`, `.item()`, `.cpu()`, `int(t)`, ...) by a patched method, and every op whose
output size depends on the data (unique, bincount, nonzero, boolean indexing: each
reads a size back from a GPU) by a dispatch mode. A request (ids to owners, with every
size the step's exchanges need) reads the host once; lookup, push, apply and the noise
read it never; a whole step reads it once, on 1 rank and on each of 2 gloo ranks."""

from __future__ import annotations

import collections
import contextlib
import functools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lazydp_bench.runtime.distributed import Rank, spawn
from lazydp_bench.runtime.sharded_session import ShardedSession
from tests.distributed.test_sharded import SMALL_TABLES, spec

HOST_READS = ("tolist", "item", "cpu", "numpy", "__int__", "__float__", "__bool__", "__index__")
DATA_SIZED = {
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "bincount",
    "nonzero",
    "masked_select",
    "_local_scalar_dense",
}
TABLE_CALLS = ("request", "lookup", "push", "apply", "dense_noise", "owed_noise")


class Reads:
    """Host reads and data-sized ops, by the table call they happen in ("step": outside)."""

    def __init__(self) -> None:
        self.calls: collections.Counter = collections.Counter()
        self.reads: collections.Counter = collections.Counter()
        self.sized: collections.Counter = collections.Counter()
        self.inside: list[str] = []

    def where(self) -> str:
        return self.inside[-1] if self.inside else "step"

    def labelled(self, name: str, fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            self.calls[name] += 1
            self.inside.append(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self.inside.pop()

        return call


class _SizedOps(TorchDispatchMode):
    def __init__(self, reads: Reads) -> None:
        super().__init__()
        self.log = reads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        masks = [
            t
            for a in args
            if isinstance(a, (list, tuple))
            for t in a
            if isinstance(t, torch.Tensor) and t.dtype == torch.bool
        ]
        if name in DATA_SIZED or (name.startswith("index") and masks):
            self.log.sized[self.log.where()] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counting(session: ShardedSession):
    """Reads of everything run inside, attributed to the table's calls."""
    log = Reads()
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def hook(name, original):
        def read(tensor, *args, **kwargs):
            log.reads[log.where()] += 1
            return original(tensor, *args, **kwargs)

        return read

    for name, original in saved.items():
        setattr(torch.Tensor, name, hook(name, original))
    for name in TABLE_CALLS:
        setattr(session.table, name, log.labelled(name, getattr(session.table, name)))
    try:
        with _SizedOps(log):
            yield log
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)
        for name in TABLE_CALLS:
            delattr(session.table, name)


CASES = [("lazydp", "gaussian"), ("dpsgd-f", "gaussian"), ("sgd", "off")]


def count_steps(me: Rank, groups: int) -> list[dict]:
    """Per case: the calls and reads of steps 1 and 2 (step 0 also sends batch 0's ids),
    and the trained (table, MLP parameters) after the flush."""
    out = []
    for algo, mode in CASES:
        session = ShardedSession(spec(algo, mode, groups, rows=SMALL_TABLES), me)
        session.step(0)
        with counting(session) as log:
            session.step(1)
            session.step(2)
        session.finalize()
        trained = session.gather()
        out.append({"calls": log.calls, "reads": log.reads, "sized": log.sized, "out": trained})
    return out


def _worker(me: Rank, out: str) -> None:
    got = count_steps(me, 2 * me.world)  # two example groups per rank
    gathered = [None] * me.world
    torch.distributed.all_gather_object(gathered, got)
    if me.rank == 0:
        torch.save(gathered, out)


def _check(per_case: list[dict]) -> None:
    for (algo, _), got in zip(CASES, per_case, strict=True):
        calls, reads, sized = got["calls"], got["reads"], got["sized"]
        assert calls["request"] == 2 and calls["push"] == 2 and calls["apply"] == 2, algo
        assert dict(reads) == {"request": 2}, (algo, dict(reads))  # one per step
        assert not sized, (algo, dict(sized))


@pytest.mark.parametrize("groups", [1, 3])
def test_one_rank_step_reads_the_host_once(groups):
    _check(count_steps(Rank(0, 1, torch.device("cpu")), groups))


def test_each_of_two_ranks_reads_the_host_once_per_step(tmp_path):
    """...with two example groups per rank, whose results equal one rank's bit for bit."""
    out = str(tmp_path / "reads.pt")
    spawn(_worker, 2, out)
    alone = count_steps(Rank(0, 1, torch.device("cpu")), 4)
    for rank in torch.load(out, weights_only=False):
        _check(rank)
        for got, ref in zip(rank, alone, strict=True):
            assert all(map(torch.equal, got["out"], ref["out"]))


def test_the_counters_see_reads_and_data_sized_ops():
    """The hooks themselves: a read, a unique and a boolean mask are each counted."""
    session = ShardedSession(spec("sgd", "off", 1), Rank(0, 1, torch.device("cpu")))
    with counting(session) as log:
        t = torch.tensor([3, 1, 3])
        t.tolist()
        torch.unique(t)
        _ = t[t > 1]
    assert log.reads == {"step": 1} and log.sized == {"step": 2}
