"""The GPU-helped host-table engines (`streamed`: noise down, added by host threads;
`roundtrip`: rows up, noised, back) on a CPU `via` (the same windows, buffers and slots as
on a GPU, without streams): noise equal to one direct draw whatever the chunking and
threads, every row noised once, bounded buffers, and DP-SGD(F) and LazyDP's flush exact
with them."""

from __future__ import annotations

import time

import pytest
import torch

from lazydp_bench.dp.noise.base import DenseNoiseEngine
from lazydp_bench.dp.noise.round_trip import RoundTripEngine
from lazydp_bench.dp.noise.streamed import DEPTH, StreamedEngine
from lazydp_bench.dp.seeds import keyed_cpu_generator
from lazydp_bench.measure.host_memory import host_peak_bytes, reset_host_peak
from lazydp_bench.measure.profiling import NULL_TIMER
from tests.conftest import tiny_session

CPU = torch.device("cpu")
ENGINES = [StreamedEngine, RoundTripEngine]


class BlockDrawer:
    """A CPU `WindowDrawer` with the fused kernel's contract: noise is a function of (key,
    launch, row) only, drawn per block of `align` rows (one generator each), and windows
    must start on a block of their launch and stay inside it (checked, as the kernel does)."""

    def __init__(self, align: int = 3, launch: int = 40) -> None:
        self.align, self.launch = align, launch

    def launch_rows(self, cols: int) -> int:
        return self.launch

    def align_rows(self, cols: int) -> int:
        return self.align

    def draw_window(self, out, std, seed, *, first_row: int, unit: bool = False) -> None:
        launch, local = divmod(first_row, self.launch)
        rows, cols = out.shape
        if local % self.align or local + rows > self.launch:
            raise ValueError(f"window at row {first_row} is not aligned")
        per_row = isinstance(std, torch.Tensor) and std.dim() == 1
        scale = std.view(-1, 1) if per_row else std
        if unit:
            out.copy_(torch.ones_like(out) * scale)
            return
        for b in range(local // self.align, -(-(local + rows) // self.align)):
            gen = keyed_cpu_generator(seed, launch, b)
            z = torch.randn((self.align, cols), generator=gen, dtype=out.dtype)
            lo, hi = max(b * self.align, local), min((b + 1) * self.align, local + rows)
            out[lo - local : hi - local] = z[lo - b * self.align : hi - b * self.align]
        out.mul_(abs(scale) if not per_row else scale.abs())

    def describe(self, device):
        return {"engine": "block", "rng": "mt19937 per block", "key_bits": "64"}


class DirectEngine(DenseNoiseEngine):
    """The drawer applied to the whole table launch by launch, no pipeline: the reference."""

    def __init__(self, drawer: BlockDrawer, chunk_bytes: int = 4096) -> None:
        super().__init__(chunk_bytes, 1)  # LazyDP's flush keys its chunks by this bound
        self.drawer = drawer

    def _add_gaussian(self, target, std, seed, timer) -> None:
        rows = target.shape[0]
        for start in range(0, rows, self.drawer.launch):
            stop = min(rows, start + self.drawer.launch)
            noise = torch.empty_like(target[start:stop])
            part = std[start:stop] if isinstance(std, torch.Tensor) and std.dim() else std
            self.drawer.draw_window(noise, part, seed, first_row=start)
            target[start:stop] += noise

    def describe(self, device):
        return {}


def _streamed(
    chunk_bytes: int, threads: int, drawer: BlockDrawer | None = None, kind=StreamedEngine
):
    return kind(chunk_bytes, threads, drawer=drawer or BlockDrawer(), via=CPU)


@pytest.mark.parametrize(("rows", "cols", "chunk"), [(100, 8, 4096), (97, 5, 4096), (7, 3, 8192)])
def test_windows_cover_every_row_once_aligned_within_launches(rows, cols, chunk):
    engine = _streamed(chunk, 2)
    windows = engine.windows(rows, cols, 8)
    covered = [r for start, stop in windows for r in range(start, stop)]
    assert covered == list(range(rows))
    for start, stop in windows:
        assert (start % 40) % 3 == 0  # aligned within its launch
        assert start // 40 == (stop - 1) // 40  # never across a launch
        assert (stop - start) * cols * 8 <= max(chunk, 3 * cols * 8)


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize("per_row", [False, True])
def test_noise_equals_one_direct_draw_for_any_chunking_and_threads(per_row, kind):
    """Chunk sizes and thread counts change only the pipeline, never a single number."""
    table = torch.randn(130, 16, dtype=torch.float64)
    std = torch.rand(130, dtype=torch.float64) + 0.5 if per_row else 0.7
    want = table.clone()
    DirectEngine(BlockDrawer()).add_noise(want, std, 2**63 + 11, NULL_TIMER)
    for chunk, threads in ((4096, 1), (4096, 3), (16 * 8 * 7, 2), (2**20, 4)):
        got = table.clone()
        _streamed(chunk, threads, kind=kind).add_noise(got, std, 2**63 + 11, NULL_TIMER)
        assert torch.equal(got, want), (chunk, threads)


@pytest.mark.parametrize("kind", ENGINES)
def test_unit_mode_gives_every_row_its_std_exactly_once(kind):
    table = torch.zeros(101, 4, dtype=torch.float64)
    std = torch.arange(101, dtype=torch.float64) * 0.25
    _streamed(4096, 3, kind=kind).add_noise(table, std, 5, NULL_TIMER, unit=True)
    assert torch.equal(table, std.view(-1, 1).expand(101, 4))


def test_noise_is_standard_normal_times_std():
    """Mean 0 and std sigma over 400k draws: tolerances 5 standard errors."""
    table = torch.zeros(25_000, 16, dtype=torch.float32)
    _streamed(64 * 1024, 2, BlockDrawer(align=64, launch=6400)).add_noise(
        table, 2.0, 123, NULL_TIMER
    )
    z = table.double().flatten() / 2.0
    n = z.numel()
    assert abs(z.mean().item()) < 5 / n**0.5
    assert abs(z.std().item() - 1) < 5 * (0.5 / n) ** 0.5
    assert abs(((z**4).mean() - 3).item()) < 5 * (96 / n) ** 0.5  # kurtosis of a normal


@pytest.mark.parametrize("kind", ENGINES)
def test_buffers_are_bounded_by_the_chunk_not_the_table(kind):
    """No table-sized temporary: two sets of DEPTH buffers of at most one chunk,
    and the process's peak grows by about that, not by the table (256 MiB here)."""
    rows, cols, chunk = 2**19, 128, 2**20
    table = torch.zeros(rows, cols, dtype=torch.float32)
    engine = _streamed(chunk, 2, BlockDrawer(align=64, launch=2**16), kind=kind)
    scope = reset_host_peak()
    before = host_peak_bytes()
    engine.add_noise(table, 1.0, 9, NULL_TIMER)
    ((drawn, landed),) = engine._buffers.values()
    assert len(drawn) == len(landed) == DEPTH
    assert all(b.numel() * b.element_size() <= chunk for b in drawn + landed)
    if scope == "run":
        assert host_peak_bytes() - before < 64 * 2**20
    assert bool((table != 0).any(dim=1).all())  # every row was noised


def _dpsgd(engine_for_host: DenseNoiseEngine, noise_mode: str):
    session = tiny_session("dpsgd-f", noise_mode=noise_mode)
    session.engines.cpu = engine_for_host
    for t in range(4):
        session.step(t, NULL_TIMER)
    return session.model.table.clone(), session.model.flat_params.clone()


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize("noise_mode", ["unit", "gaussian"])
def test_dpsgd_with_streamed_noise_equals_the_direct_engine(noise_mode, kind):
    """DP-SGD(F) on the tiny fp64 workload: the table's noise through the pipeline gives
    bit for bit the model the same draws give added directly (unit noise: every row gets
    its lr sigma C / B each step)."""
    drawer = BlockDrawer()
    want = _dpsgd(DirectEngine(drawer), noise_mode)
    got = _dpsgd(_streamed(4096, 3, drawer, kind=kind), noise_mode)
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize("algo", ["lazydp", "lazydp-noans"])
@pytest.mark.parametrize("noise_mode", ["unit", "gaussian"])
def test_lazydp_flush_through_the_pipeline_equals_the_direct_engine(algo, noise_mode, kind):
    """LazyDP's final flush hands the engine one call per chunk (its own key and per-row
    std; without aggregation one call per pending step, on the same rows); pipelined
    across calls, the model is bit for bit the direct engine's."""
    models = []
    for engine in (DirectEngine(BlockDrawer()), _streamed(4096, 3, kind=kind)):
        session = tiny_session(algo, noise_mode=noise_mode, chunk_bytes=4096)
        session.engines.cpu = engine
        for t in range(4):
            session.step(t, NULL_TIMER)
        session.algo.flush()
        assert bool((session.algo.history == 4).all())
        models.append(session.model.table.clone())
    assert torch.equal(models[0], models[1])


@pytest.mark.parametrize("kind", ENGINES)
def test_overlapping_calls_never_add_to_one_row_at_once(kind):
    """Calls on the same rows (lazydp-noans: one per pending step) once ran their adds
    concurrently and lost some; every element must get every call's std."""
    engine = _streamed(63 * 4096 * 8, 4, BlockDrawer(align=3, launch=120), kind=kind)
    for _ in range(5):  # a lost add is a race: give it many chances
        table = torch.zeros(120, 4096, dtype=torch.float64)  # two windows per call
        calls = [(0, 120, 1.0, k) for k in range(30)]
        engine.add_noise_calls(table, calls, NULL_TIMER, unit=True)
        assert torch.equal(table, torch.full_like(table, 30.0))


@pytest.mark.parametrize("kind", ENGINES)
def test_unit_mode_keeps_the_sign_of_the_std(kind):
    table = torch.zeros(50, 3, dtype=torch.float64)
    _streamed(4096, 2, kind=kind).add_noise(table, -0.5, 1, NULL_TIMER, unit=True)
    assert torch.equal(table, torch.full_like(table, -0.5))


def test_a_failed_window_leaves_no_add_running():
    """An error in one window's draw surfaces after every started add has finished."""

    class Failing(BlockDrawer):
        def draw_window(self, out, std, seed, *, first_row, unit=False):
            if first_row >= 6:
                raise RuntimeError("draw failed")
            super().draw_window(out, std, seed, first_row=first_row, unit=unit)

    class SlowPool:
        """Each add starts 0.2 s late: they are still running when a later draw fails."""

        def __init__(self, pool) -> None:
            self.pool = pool

        def submit(self, fn, *args):
            return self.pool.submit(lambda: (time.sleep(0.2), fn(*args)))

    class SlowAdds(StreamedEngine):
        def _executor(self):
            return SlowPool(super()._executor())

    engine = SlowAdds(3 * 4 * 8, 2, drawer=Failing(), via=CPU)
    table = torch.zeros(40, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="draw failed"):
        engine.add_noise(table, 1.0, 1, NULL_TIMER, unit=True)
    assert torch.equal(table[:6], torch.ones(6, 4, dtype=torch.float64))


def test_roundtrip_noises_the_table_exactly_as_streamed():
    """Both engines draw each window with the same drawer and key and add it in the
    table's dtype: the same table bit for bit (scalar and per-row std, several calls)."""
    table = torch.randn(230, 12, dtype=torch.float32)
    std = torch.rand(230) + 0.2
    tables = []
    for kind in ENGINES:
        got = table.clone()
        engine = _streamed(12 * 4 * 9, 2, BlockDrawer(align=3, launch=60), kind=kind)
        engine.add_noise(got, 0.3, 2**62 + 1, NULL_TIMER)
        calls = [(0, 100, std[:100], 5), (100, 230, std[100:], 6), (50, 150, 0.1, 7)]
        engine.add_noise_calls(got, calls, NULL_TIMER)
        tables.append(got)
    assert torch.equal(tables[0], tables[1])
    assert not torch.equal(tables[0], table)
