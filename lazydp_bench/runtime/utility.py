"""Held-out utility of a `--data` run: log-loss and AUC on lines it never trains on.

The held-out lines are the first `--eval-lines` good lines of `--eval-data` files, which
must not be among the training files (a run reads its training files from the start and
wraps around, so a held-out split inside them could be reached; separate files cannot).
They are parsed once when the run is planned (a bad line stops the run before it starts,
as for the training data) and mapped to rows and features exactly as the training lines
are: the same hash or vocabulary (built on the training data only) and the same dense
transform and minimum.

Evaluation happens between timed steps, never inside one (see `trainer._measure`), with
the energy meter and the host-CPU window paused around it. LazyDP first flushes every
row's owed noise (`LazyDP.flush`, idempotent), so the evaluated model is distributed
exactly as DP-SGD's at that step. The metrics are torchmetrics' `BinaryAUROC` (exact,
no thresholds) and torch's `binary_cross_entropy_with_logits` (mean log-loss), both in
float64.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lazydp_bench.config import EvalConfig
from lazydp_bench.data.criteo import CriteoData, data_files, iter_chunks, map_rows, transform_dense
from lazydp_bench.data.synthetic import Batch
from lazydp_bench.errors import BenchError

EVAL_BATCH = 8192  # examples per evaluation forward pass
INSTALL_HINT = 'pip install -e ".[utility]"'


def require_torchmetrics() -> None:
    """torchmetrics is the `utility` extra: a one-line error naming it when absent."""
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        raise BenchError(f"--eval-data needs torchmetrics: {INSTALL_HINT}") from None


@dataclass(frozen=True, eq=False)
class HeldOut:
    """The parsed held-out lines (raw ids and dense ints, as the reader gives them)."""

    config: EvalConfig
    files: tuple[Path, ...]
    labels: np.ndarray  # (m,) uint8
    dense: np.ndarray  # (m, 13) int64
    ids: np.ndarray  # (m, 26) int64
    lines_read: int  # lines parsed, good and bad (whole blocks: may pass the M-th line)
    skipped: int  # bad lines skipped among them

    def describe(self) -> dict:
        return {
            "eval_files": [str(p) for p in self.files],
            "eval_lines": len(self.labels),
            "eval_lines_read": self.lines_read,
            "eval_skipped_lines": self.skipped,
            "eval_clicks": int(self.labels.sum()),
        }


def load_heldout(config: EvalConfig, data: CriteoData, reuse: HeldOut | None = None) -> HeldOut:
    """The first `config.lines` good lines of the held-out files (all without a bound);
    refused when a held-out file is also a training file or holds no line."""
    require_torchmetrics()
    if reuse is not None and reuse.config == config:
        return reuse
    files = data_files(config.paths)
    training = {p.resolve() for p in data.files}
    shared = [p for p in files if p.resolve() in training]
    if shared:
        raise BenchError(
            f"--eval-data {shared[0]} is also training data: held-out lines must not be"
        )
    labels, dense, ids = [], [], []
    good = lines = skipped = 0
    for chunk in iter_chunks(files, data.config.on_bad_line):
        take = len(chunk.labels)
        if config.lines is not None:
            take = min(take, config.lines - good)
        labels.append(chunk.labels[:take])
        dense.append(chunk.dense[:take])
        ids.append(chunk.ids[:take])
        good, lines, skipped = good + take, lines + chunk.lines, skipped + chunk.skipped
        if config.lines is not None and good >= config.lines:
            break
    if good == 0:
        raise BenchError(f"--eval-data {', '.join(map(str, files))}: no usable line")
    return HeldOut(
        config=config,
        files=files,
        labels=np.concatenate(labels),
        dense=np.concatenate(dense),
        ids=np.concatenate(ids),
        lines_read=lines,
        skipped=skipped,
    )


class Evaluator:
    """The held-out lines as model batches (built once), and their metrics for a model."""

    def __init__(
        self,
        heldout: HeldOut,
        data: CriteoData,
        table_rows: tuple[int, ...],
        *,
        table_device: torch.device,
        mlp_device: torch.device,
        dtype: torch.dtype,
        batch_size: int = EVAL_BATCH,
    ) -> None:
        require_torchmetrics()
        cfg = data.config
        raw = heldout.dense
        if cfg.dense_transform == "torchrec":  # below the training minimum: log of <= 0
            raw = np.maximum(raw, data.dense_min)
        dense = transform_dense(raw, cfg.dense_transform, data.dense_min)
        sizes = np.asarray(table_rows, dtype=np.int64)
        rows = map_rows(heldout.ids, sizes, np.cumsum(sizes) - sizes, data.vocab)
        self.heldout = heldout
        self.labels = torch.from_numpy(heldout.labels.astype(np.float64))
        self.batches = [
            Batch(
                dense=torch.from_numpy(dense[i : i + batch_size]).to(mlp_device, dtype),
                labels=torch.from_numpy(heldout.labels[i : i + batch_size]).to(mlp_device),
                rows=torch.from_numpy(rows[i : i + batch_size]).to(table_device).unsqueeze(-1),
            )
            for i in range(0, len(dense), batch_size)
        ]
        self.points: list[dict] = []

    def logits(self, model) -> torch.Tensor:
        """float64 logits of every held-out line, in order, on the host."""
        return torch.cat([model.logits(b).to("cpu", torch.float64) for b in self.batches])

    def evaluate(self, model, step: int) -> dict:
        """Log-loss and AUC of `model` after `step` training steps (appended to `points`)."""
        from torchmetrics.classification import BinaryAUROC

        t0 = time.perf_counter()
        logits = self.logits(model)
        auc = BinaryAUROC(thresholds=None)(torch.sigmoid(logits), self.labels.long())
        logloss = F.binary_cross_entropy_with_logits(logits, self.labels)
        point = {
            "step": step,
            "logloss": float(logloss),
            "auc": float(auc),
            "eval_s": time.perf_counter() - t0,
        }
        self.points.append(point)
        return point

    def section(self, every: int | None, flushed: bool) -> dict:
        """The record's `utility` section: the held-out lines and each evaluation."""
        last = self.points[-1] if self.points else {}
        return {
            **self.heldout.describe(),
            "eval_every": every,
            "flushed_before_eval": flushed,
            "steps": [p["step"] for p in self.points],
            "logloss": [p["logloss"] for p in self.points],
            "auc": [p["auc"] for p in self.points],
            "eval_s": [p["eval_s"] for p in self.points],
            "final_logloss": last.get("logloss"),
            "final_auc": last.get("auc"),
        }
