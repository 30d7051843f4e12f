"""Process groups for sharded runs: launch, the collectives a sharded step uses, teardown.

One process per GPU (NCCL) or, on a machine without one, per CPU process (gloo: what the
tests run). `spawn` starts the processes itself (torch.multiprocessing, rendezvous
through a file); under `torchrun` (`torch.distributed.run`) the launcher's environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) is used instead (`from_launcher`).
NCCL's and symmetric memory's settings come from the machine: nothing here reads, sets
or overrides an NCCL_* or TORCH_SYMM_MEM_* variable.

`Comm` wraps the collectives so each one is timed as the `comm` stage. A world of one
needs no process group: its collectives are copies, so the one-process reference of a
sharded run goes through the same code as every rank of a larger one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lazydp_bench.errors import BenchError
from lazydp_bench.measure.profiling import NULL_TIMER, StageTimer
from lazydp_bench.measure.stages import Stage
from lazydp_bench.runtime.gpus import launcher_world, under_launcher


@dataclass(frozen=True)
class Rank:
    """This process's place in the world and the device it computes on."""

    rank: int
    world: int
    device: torch.device

    @property
    def backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"


def rank_device(local_rank: int, use_cuda: bool) -> torch.device:
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def from_launcher(use_cuda: bool) -> Rank:
    """Join the process group torchrun set up (env:// rendezvous)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = rank_device(int(os.environ["LOCAL_RANK"]), use_cuda)
    me = Rank(rank, world, device)
    _init_group(me, "env://")
    return me


def _init_group(me: Rank, init_method: str) -> None:
    if me.device.type == "cuda":
        torch.cuda.set_device(me.device)
    if me.world > 1 and not dist.is_initialized():
        dist.init_process_group(
            me.backend, init_method=init_method, rank=me.rank, world_size=me.world
        )


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _worker(rank: int, world: int, use_cuda: bool, store: str, fn: Callable, args: tuple) -> None:
    me = Rank(rank, world, rank_device(rank, use_cuda))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # the ranks share the host
    _init_group(me, f"file://{store}")
    try:
        fn(me, *args)
        # every rank is done before any tears its group down: a gloo rank destroyed while a
        # peer's last collective is still in flight aborted (SIGABRT) on the CI machine
        dist.barrier()
    finally:
        shutdown()


def spawn(fn: Callable[..., Any], world: int, *args: Any, use_cuda: bool = False) -> None:
    """Run fn(Rank, *args) in `world` fresh processes (rank r on GPU r with `use_cuda`) and
    wait for all; a failing rank raises here. A world of one runs in this process."""
    if world == 1:
        me = Rank(0, 1, rank_device(0, use_cuda))
        if use_cuda:
            torch.cuda.set_device(me.device)
        fn(me, *args)
        return
    if under_launcher():  # torchrun started the ranks: this process is one of them
        if launcher_world() != world:
            raise BenchError(f"torchrun started {launcher_world()} ranks, the run asks for {world}")
        me = from_launcher(use_cuda)
        fn(me, *args)
        return
    with tempfile.TemporaryDirectory(prefix="lazydp-rdzv-") as tmp:
        store = os.path.join(tmp, "store")
        mp.start_processes(
            _worker,
            args=(world, use_cuda, store, fn, args),
            nprocs=world,
            join=True,
            start_method="spawn",
        )


class Comm:
    """The collectives of a sharded step, each timed as `Stage.COMM`."""

    def __init__(self, me: Rank) -> None:
        self.me = me

    @property
    def world(self) -> int:
        return self.me.world

    def exchange_counts(self, send: torch.Tensor, timer: StageTimer = NULL_TIMER) -> torch.Tensor:
        """send[r] (a [world, ...] tensor of counts) goes to rank r; row r of the result
        came from rank r. On the device, no host read: the caller reads what it needs
        of both in one `host_ints`."""
        if self.world == 1:
            return send
        recv = torch.empty_like(send)
        with timer.stage(Stage.COMM):
            dist.all_to_all_single(recv, send.contiguous())
        return recv

    def host_ints(self, sizes: torch.Tensor) -> list[int]:
        """The one device-to-host read of an exchange: all-to-all splits are host lists,
        so a variable-size exchange reads its sizes (sent and received, in one tensor)."""
        return sizes.tolist()

    def all_to_all(
        self,
        send: torch.Tensor,
        send_counts: list[int],
        recv_counts: list[int],
        timer: StageTimer = NULL_TIMER,
    ) -> torch.Tensor:
        """Rows send[sum(send_counts[:r]) ...] go to rank r; what comes back is ordered by
        source rank (rank 0's rows first)."""
        if self.world == 1:
            return send
        recv = torch.empty(
            (sum(recv_counts), *send.shape[1:]), dtype=send.dtype, device=send.device
        )
        with timer.stage(Stage.COMM):
            dist.all_to_all_single(
                recv,
                send.contiguous(),
                output_split_sizes=recv_counts,
                input_split_sizes=send_counts,
            )
        return recv

    def all_gather(
        self, tensor: torch.Tensor, timer: StageTimer = NULL_TIMER
    ) -> list[torch.Tensor]:
        """Every rank's `tensor` (same shape everywhere), in rank order."""
        if self.world == 1:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        with timer.stage(Stage.COMM):
            dist.all_gather(parts, tensor.contiguous())
        return parts

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()
