"""What a sweep shows while it runs. On a terminal: a live display of the finished points
(step time, speedup vs SGD at that point), the current point and progress (points done /
total, ETA), cleared when the sweep ends. Elsewhere (a log file, a pipe): one line per
finished point. Either way the caller prints the full table once at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lazydp_bench.placement.layout import GPU_HEADROOM, MemoryLimits
from lazydp_bench.sweep.runner import Point
from lazydp_bench.units import format_bytes


def point_label(p: Point) -> str:
    c = p.config
    size = c.table_size or "full"
    parts = [c.algo, c.workload, size, c.placement]
    if c.gpus > 1:
        parts.append(f"{c.gpus} ranks")
    if c.batch_size:
        parts.append(f"batch {c.batch_size}")
    if c.pooling:
        parts.append(f"pooling {c.pooling}")
    if c.distribution != "uniform":
        parts.append(c.distribution)
    return " · ".join(parts)


def _group(p: Point) -> tuple:
    c = p.config
    return (c.workload, c.table_size, c.placement, c.batch_size, c.pooling, c.distribution)


class SweepView:
    def __init__(self, points: list[Point], console: Console) -> None:
        self.points = points
        self.console = console
        self.rows: list[tuple[Point, dict | None]] = []
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task("points", total=len(points))
        self.current = ""
        self._live: Live | None = None
        # a log or pipe gets lines: a live display there prints only its last frame,
        # with no newline after the progress bar
        self.lines = not console.is_terminal or console.is_dumb_terminal

    @contextlib.contextmanager
    def live(self) -> Iterator[None]:
        """The live display while the points run (a terminal only), cleared at the end."""
        if self.lines:
            yield
            return
        with Live(
            self._render(), console=self.console, refresh_per_second=2, transient=True
        ) as live:
            self._live = live
            yield
        self._live = None

    def _render(self) -> Group:
        return Group(self.table(last=12), f"now: {self.current}", self.progress)

    def start(self, point: Point, index: int) -> None:
        self.current = point_label(point)
        if self._live:
            self._live.update(self._render())

    def done(self, point: Point, record: dict | None) -> None:
        self.rows.append((point, record))
        self.progress.advance(self.task)
        if self._live:
            self._live.update(self._render())
        if self.lines:
            self.console.print(
                self.line(point, record), markup=False, highlight=False, soft_wrap=True
            )

    def line(self, point: Point, record: dict | None) -> str:
        """One finished point for a log: `[done/total] status: point (detail)`."""
        done = f"[{len(self.rows)}/{len(self.points)}]"
        if record is None:
            return f"{done} resumed (already recorded): {point_label(point)}"
        step = (record.get("timing") or {}).get("step_median_ms")
        error = (record.get("error") or "").strip().splitlines()
        detail = f"{step:.2f} ms/step" if step else (error[0] if error else "")
        text = f"{done} {record['status']}: {point_label(point)}"
        return f"{text} ({detail})" if detail else text

    def table(self, last: int | None = None) -> Table:
        table = Table(title="sweep", title_justify="left")
        for col in ("point", "status", "step ms", "x SGD", "J/step"):
            table.add_column(col, justify="left" if col in ("point", "status") else "right")
        sgd = {
            _group(p): r["timing"]["step_median_ms"]
            for p, r in self.rows
            if r and p.config.algo == "sgd" and r["status"] == "ok"
        }
        rows = self.rows[-last:] if last else self.rows
        for p, r in rows:
            if r is None:
                table.add_row(point_label(p), "resumed (already recorded)", "", "", "")
                continue
            step = (r.get("timing") or {}).get("step_median_ms")
            base = sgd.get(_group(p))
            ratio = f"{step / base:.2f}" if step and base else "-"
            energy = (r.get("energy") or {}).get("gpu_j_per_step")
            table.add_row(
                point_label(p),
                r["status"],
                f"{step:.2f}" if step else "-",
                ratio,
                f"{energy:.3f}" if energy is not None else "-",
            )
        return table


def dry_run_table(points: list[Point], limits: MemoryLimits) -> Table:
    """The planned points: placement, estimated GPU and host need, whether it fits the
    limits (from this machine, or a stated GPU with --gpu-mem), and run or skip."""
    gpu = "none"
    if limits.gpu_bytes is not None:
        gpu = f"{format_bytes(limits.gpu_bytes)} ({GPU_HEADROOM:.0%} of {limits.gpu_source})"
    table = Table(
        title=f"{len(points)} points (limits: GPU {gpu}, "
        f"host {format_bytes(limits.host_bytes)} from {limits.host_source})"
    )
    for col in ("point", "placement", "GPU need", "host need", "fits", "plan"):
        table.add_column(col)
    for p in points:
        if p.plan is not None:
            need = p.plan.needs[p.plan.placement]
            where = p.plan.placement
            if p.config.gpus > 1:  # a sharded point's need is one rank's
                where = f"{where}, per rank of {p.config.gpus}"
            table.add_row(
                point_label(p),
                where,
                format_bytes(need.gpu_bytes),
                format_bytes(need.host_bytes),
                "yes",
                "run",
            )
        else:
            need = p.need or {}
            table.add_row(
                point_label(p),
                str(need.get("placement", "-")),
                format_bytes(need.get("estimate_gpu_bytes")),
                format_bytes(need.get("estimate_host_bytes")),
                "no" if need else "-",
                f"skip: {p.skip_reason}",
            )
    return table
