"""The Criteo batch source's reader in a child process (`CriteoBatchSource(reader=
"process")`), so that the training process holds no parse threads.

Why: the thread reader's parse threads and producer thread live in the training process
and contend for the GIL with the thread that launches each step; every numpy call of a
parse gives the GIL up and takes it back, and a thread waiting for it can lose up to the
5 ms switch interval. Measured on one H200 (16-core host), criteo-kaggle at 9.6 GB, gpu
placement, CUDA-graph replays, batch 2048, 16 parse threads: SGD's median step was
1.336 ms on file batches vs 0.624 ms on synthetic ones, while the trainer waited for
batches only 0.13 ms per step.

How: a child process, started with `spawn` (CUDA in the parent must not be forked; the
child never touches CUDA), runs the thread reader's whole pipeline (`_Producer`: read,
decompress, parse in threads, dense transform, row mapping, batching) and writes each
batch into a slot of a ring in shared memory (fixed shape: rows int64 (B, 26), dense
float32 (B, 13), labels float32 (B,)). Per batch one small message (slot, skipped lines,
passes, the reader's line count and busy time) comes over a pipe; the parent copies the
slot into pinned memory (or, without CUDA, a fresh tensor) and sends the slot's index
back. The child fills the ring, then rests until the parent has taken it down to half,
as the thread reader does with its queue. An error (a bad line, a truncated gzip) comes
after the batches before it, so the parent raises it at the same batch, with the same
message, as the thread reader. The child runs `READER_NICE` steps below the parent's
priority, so a training thread that shares a core with its parse threads gets it first.

Shutdown: `close()` (also when the reader is collected) sends a stop message, joins the
child (terminating it after `STOP_S`) and unlinks the shared memory. The child stops by
itself when the parent goes away (its pipe ends) and ignores SIGINT (Ctrl-C reaches the
parent, which stops it); if the parent is killed outright, Python's resource tracker
unlinks the shared memory once the child has exited.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import time
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory

import numpy as np
import torch

from lazydp_bench.data.criteo import (
    CATS,
    DENSE,
    CriteoData,
    _Failure,
    _HostBatch,
    _Producer,
    queue_batches,
)
from lazydp_bench.errors import BenchError

READER_NICE = 5  # the child's priority below the training process's
POLL_S = 0.1  # how often a waiting side checks that the other one is alive
STOP_S = 5.0  # a child still running this long after its stop message is terminated
SLOT_ALIGN = 4096
SHM_DIR = "/dev/shm"
_TORCH_DTYPES = {np.dtype(np.int64): torch.int64, np.dtype(np.float32): torch.float32}


@dataclass(frozen=True)
class SlotLayout:
    """Where a batch's arrays lie in one slot: rows, then dense, then labels."""

    batch_size: int

    @property
    def rows_bytes(self) -> int:
        return self.batch_size * CATS * 8

    @property
    def dense_bytes(self) -> int:
        return self.batch_size * DENSE * 4

    @property
    def used_bytes(self) -> int:
        return self.rows_bytes + self.dense_bytes + self.batch_size * 4

    @property
    def slot_bytes(self) -> int:
        return -(-self.used_bytes // SLOT_ALIGN) * SLOT_ALIGN

    def arrays(self, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, dense, labels) as numpy views of one slot's bytes."""
        a, b = self.rows_bytes, self.rows_bytes + self.dense_bytes
        return (
            slot[:a].view(np.int64).reshape(self.batch_size, CATS),
            slot[a:b].view(np.float32).reshape(self.batch_size, DENSE),
            slot[b : self.used_bytes].view(np.float32),
        )


def ring_bytes(batch_size: int) -> int:
    """Shared memory a process reader of this batch size maps."""
    return queue_batches(batch_size) * SlotLayout(batch_size).slot_bytes


def shm_shortfall(nbytes: int) -> str | None:
    """Why /dev/shm cannot hold `nbytes` more (None: it can, or this system has no such
    folder and shared memory lives elsewhere)."""
    try:
        stat = os.statvfs(SHM_DIR)
    except OSError:
        return None
    free = stat.f_bavail * stat.f_frsize
    if free >= 2 * nbytes:
        return None
    need, have = nbytes / 2**20, free / 2**20
    return f"{SHM_DIR} has {have:.0f} MiB free; the reader's ring needs {need:.0f} MiB (x2)"


@dataclass(frozen=True, eq=False)
class _ChildSpec:
    """What the child needs (pickled once, at its start)."""

    data: CriteoData
    table_rows: tuple[int, ...]
    batch_size: int
    threads: int
    block_bytes: int
    slots: int
    shm_name: str
    parent_pid: int


# ---- the child ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Views:
    parts: tuple[tuple[np.ndarray, ...], ...]  # dense, labels, rows: their pieces (views)
    skipped: int
    passes: int


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (BenchError, TruncatedGzip, OSError do), else an
    exception of its kind's message that does."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        if isinstance(exc, BenchError):
            return BenchError(str(exc))
        return RuntimeError(f"the Criteo reader process failed: {type(exc).__name__}: {exc}")


class _SlotProducer(_Producer):
    """The thread reader's producer, run by the child: batches go into free slots of the
    ring, with a message each, instead of onto a queue."""

    def __init__(self, spec: _ChildSpec, conn: Connection, buf: memoryview) -> None:
        super().__init__(spec.data, spec.table_rows, spec.batch_size, False, spec.threads)
        self.block_bytes, self.conn, self.parent = spec.block_bytes, conn, spec.parent_pid
        layout = SlotLayout(spec.batch_size)
        ring = np.ndarray((spec.slots, layout.slot_bytes), np.uint8, buffer=buf)
        self.slots = [layout.arrays(ring[i]) for i in range(spec.slots)]
        self.free: deque[int] = deque(range(spec.slots))
        self.low = spec.slots // 2

    def release(self) -> None:
        """Drop the views of the shared memory (before it is closed)."""
        self.slots = []

    def _host_batch(self, pieces: tuple, skipped: int, passes: int) -> _Views:
        self.stats.batches += 1
        return _Views(pieces, skipped, passes)

    def _put(self, item) -> bool:
        if isinstance(item, _Failure):
            return self._send(("error", _portable(item.error)))
        slot = self._acquire()
        if slot is None:
            return False
        t0 = time.perf_counter()
        rows, dense, labels = self.slots[slot]
        for out, pieces in zip((dense, labels, rows), item.parts, strict=True):
            at = 0
            for piece in pieces:  # one, or two for a batch that spans two blocks
                out[at : at + len(piece)] = piece
                at += len(piece)
        self.stats.busy_s += time.perf_counter() - t0
        message = ("batch", slot, item.skipped, item.passes, self.stats.lines, self.stats.busy_s)
        return self._send(message)

    def _send(self, message: tuple) -> bool:
        try:
            self.conn.send(message)
            return True
        except OSError:  # the parent is gone
            self.stop.set()
            return False

    def _acquire(self) -> int | None:
        """A free slot; once the ring is full, only after the parent has taken it down to
        `low` (None: stopped)."""
        self._receive(0.0)
        if not self.free:
            self.resting = True
        held = lambda: len(self.slots) - len(self.free)  # noqa: E731
        while not self.stop.is_set() and (not self.free or (self.resting and held() > self.low)):
            self._receive(POLL_S)
        self.resting = False
        return None if self.stop.is_set() else self.free.popleft()

    def _receive(self, timeout: float) -> None:
        """Slots the parent gave back; its stop message (None) or its end stops."""
        try:
            while self.conn.poll(timeout):
                slot = self.conn.recv()
                if slot is None:
                    self.stop.set()
                    return
                self.free.append(slot)
                timeout = 0.0
        except (EOFError, OSError):
            self.stop.set()
        if os.getppid() != self.parent:
            self.stop.set()


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Allocations below this come from (and return to) the heap; glibc's largest dynamic
# threshold on 64-bit systems, so every glibc version accepts it.
KEEP_HEAP_BYTES = 32 * 2**20


def _keep_freed_memory() -> bool:
    """Make glibc's malloc in this process serve the pipeline's block-sized arrays (1-10
    MiB each: a block's bytes, its parsed columns, its features, their temporaries) from
    memory it keeps, instead of mapping fresh pages for each and unmapping them when freed.
    Measured on a 2-core EPYC VM, one thread, CPU time: parse + dense transform + hash
    mapping 1.6-1.7 M lines/s with glibc's defaults, 3.1 M with this (the parse alone
    3.9 M either way); the page faults of fresh mappings were the difference. Only the reader
    process does this: its memory is bounded by the blocks in flight (AHEAD_PER_THREAD x
    threads) and it is gone with the reader. False where the C library has no mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    kept = mallopt(_M_MMAP_THRESHOLD, KEEP_HEAP_BYTES) == 1
    return kept and mallopt(_M_TRIM_THRESHOLD, 2 * KEEP_HEAP_BYTES) == 1


def _child_main(conn: Connection, spec: _ChildSpec) -> None:
    """The child process: produce batches into the ring until stopped or failed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(READER_NICE)  # before any thread starts: its parse threads inherit it
    _keep_freed_memory()
    # Attaching registers the name with the parent's resource tracker again (a no-op: the
    # child shares it); the parent's unlink unregisters it, or the tracker unlinks it once
    # both processes are gone.
    shm = SharedMemory(name=spec.shm_name)
    producer = _SlotProducer(spec, conn, shm.buf)
    try:
        producer.run()
    finally:
        producer.release()
        del producer
        shm.close()
        conn.close()


# ---- the parent --------------------------------------------------------------------------


def _shutdown(owner: int, proc, conn: Connection, shm: SharedMemory) -> None:
    """Stop the child (asked, then terminated, then killed), then unlink the ring; only
    in the process that started it (not in a fork of it exiting)."""
    if os.getpid() != owner:
        return
    with contextlib.suppress(OSError, ValueError):
        conn.send(None)
    proc.join(STOP_S)
    for end in (proc.terminate, proc.kill):
        if proc.exitcode is None:
            end()
            proc.join(STOP_S)
    conn.close()
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()
    with contextlib.suppress(BufferError):  # a view still held: unmapped when it goes
        shm.close()


def _ended(proc) -> BenchError:
    proc.join(POLL_S)
    return BenchError(f"the Criteo reader process ended unexpectedly (exit code {proc.exitcode})")


@dataclass
class ProcessStats:
    """The child's reader stats as of the last batch received."""

    lines: int = 0
    busy_s: float = 0.0
    batches: int = 0


class ProcessReader:
    """The parent's side: starts the child, receives batches in order, copies each slot
    out and gives the slot back."""

    def __init__(
        self,
        data: CriteoData,
        table_rows: tuple[int, ...],
        *,
        batch_size: int,
        threads: int,
        pin: bool,
        block_bytes: int,
    ) -> None:
        self.layout, self.slots, self.pin = SlotLayout(batch_size), queue_batches(batch_size), pin
        self.stats = ProcessStats()
        self.start_s: float | None = None  # spawn to first batch
        self._ready: deque[tuple] = deque()
        ctx = multiprocessing.get_context("spawn")
        shm = SharedMemory(create=True, size=self.slots * self.layout.slot_bytes)
        try:
            conn, child_conn = ctx.Pipe()
            spec = _ChildSpec(
                data, tuple(table_rows), batch_size, threads, block_bytes, self.slots,
                shm.name, os.getpid(),
            )  # fmt: skip
            proc = ctx.Process(
                target=_child_main, args=(child_conn, spec), name="criteo-reader", daemon=True
            )
            self._t0 = time.perf_counter()
            proc.start()
        except BaseException:
            shm.close()
            shm.unlink()
            raise
        child_conn.close()  # the child's end lives in the child only: its exit ends the pipe
        self._proc, self._conn, self._shm = proc, conn, shm
        self._closer = weakref.finalize(self, _shutdown, os.getpid(), proc, conn, shm)

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def shm_name(self) -> str:
        return self._shm.name

    def prefill(self) -> None:
        """Wait until the ring is full (or the child failed): the queue's first fill."""
        while len(self._ready) < self.slots:
            message = self._recv()
            self._ready.append(message)
            if message[0] != "batch":
                break

    def receive(self) -> tuple:
        """The next message, in the child's order (blocks until it comes)."""
        return self._ready.popleft() if self._ready else self._recv()

    def _recv(self) -> tuple:
        if not self._closer.alive:
            return ("error", BenchError("the Criteo reader process was closed"))
        while not self._conn.poll(POLL_S):
            if not self._proc.is_alive() and not self._conn.poll(0):
                return ("error", _ended(self._proc))
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            return ("error", _ended(self._proc))
        if self.start_s is None:
            self.start_s = time.perf_counter() - self._t0
        return message

    def unpack(self, message: tuple) -> _HostBatch | _Failure:
        """A received message as a host batch (its slot copied out and given back) or the
        child's error (the child is then stopped)."""
        if message[0] != "batch":
            self.close()
            return _Failure(message[1])
        _, slot, skipped, passes, lines, busy_s = message
        self.stats.lines, self.stats.busy_s = lines, busy_s
        self.stats.batches += 1
        rows, dense, labels = self._copy(slot)
        with contextlib.suppress(OSError):  # the child is gone: the next receive says so
            self._conn.send(slot)
        return _HostBatch(dense, labels, rows, skipped, passes)

    def _copy(self, slot: int) -> list[torch.Tensor]:
        """One slot's (rows, dense, labels) in memory of this process, pinned for a CUDA
        copy (from the caching host allocator, as the thread reader's pins are). The views of
        the shared memory end with this call, so the ring can be unlinked and closed at
        any time."""
        ring = np.frombuffer(
            self._shm.buf,
            np.uint8,
            count=self.layout.used_bytes,
            offset=slot * self.layout.slot_bytes,
        )
        return [self._owned(a) for a in self.layout.arrays(ring)]

    def _owned(self, array: np.ndarray) -> torch.Tensor:
        """A copy of `array` by numpy: one thread's memcpy (torch's copy of a tensor this
        size fans out to its OpenMP threads; with the cores busy their wake-up cost the
        2-core box up to 30 ms at the 90th percentile, against 13 us for numpy)."""
        out = torch.empty(array.shape, dtype=_TORCH_DTYPES[array.dtype], pin_memory=self.pin)
        np.copyto(out.numpy(), array)
        return out

    def close(self) -> None:
        """Stop the child and free the ring (idempotent)."""
        self._ready.clear()
        self._closer()
