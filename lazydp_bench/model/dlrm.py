"""DLRM with all embedding tables fused into ONE weight [total_rows, dim].

The pooled embedding outputs are the boundary between the sparse and the dense part:
they are computed without autograd on the table's device, handed to the dense part as a
leaf tensor that requires grad, and the algorithm turns their gradient into sparse row
updates. The table therefore never gets a dense `.grad`, and in `hybrid` placement only
pooled outputs and their gradients cross PCIe.

MLP weights and biases are views into one flat buffer, so the dense update and the dense
noise of every MLP parameter are single passes over one tensor.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lazydp_bench.data import Batch
from lazydp_bench.workloads import Workload


@dataclass(frozen=True)
class LinearLayer:
    weight: torch.Tensor  # [out, in], a view into the flat MLP buffer
    bias: torch.Tensor  # [out]
    relu: bool


@dataclass
class ForwardState:
    """What the backward pass and the clipping modes need from one forward pass."""

    loss: torch.Tensor  # [B] per-example losses (the objective is their sum)
    pooled: torch.Tensor  # [B, T, D] leaf on the MLP device, requires grad
    inputs: list[torch.Tensor]  # input activation of every Linear layer, in order
    outputs: list[torch.Tensor]  # pre-activation output of every Linear layer
    rows: torch.Tensor  # [B, T, L] global rows, table device


class DLRM:
    """Fused embedding table + bottom MLP + dot interaction + top MLP."""

    def __init__(
        self,
        workload: Workload,
        table_device: torch.device,
        mlp_device: torch.device,
        dtype: torch.dtype,
        seed: int,
        table: torch.Tensor,
    ) -> None:
        self.workload = workload
        self.table_device = table_device
        self.mlp_device = mlp_device
        self.dtype = dtype
        self.table = table  # [total_rows, dim], initialized by the caller (init.py)
        gen = torch.Generator(device="cpu").manual_seed(seed + 7)
        self.flat_params, self.layers = _build_mlps(workload, mlp_device, dtype, gen)
        self.num_bottom = len(workload.bottom_mlp)
        n = workload.num_tables + 1
        li, lj = torch.tril_indices(n, n, -1)
        # flat positions of the pairs in an [n, n] block: index_select's backward is a
        # scatter-add; advanced indexing's backward is a sort-based index_put
        self._pairs = (li * n + lj).to(mlp_device)

    def layer_views(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) views of a flat buffer laid out like the MLP parameters."""
        views, pos = [], 0
        for layer in self.layers:
            n_w, n_b = layer.weight.numel(), layer.bias.numel()
            views.append(
                (flat[pos : pos + n_w].view_as(layer.weight), flat[pos + n_w : pos + n_w + n_b])
            )
            pos += n_w + n_b
        return views

    @property
    def params(self) -> list[torch.Tensor]:
        """MLP parameters in flat-buffer order (weight, bias per layer)."""
        return [p for layer in self.layers for p in (layer.weight, layer.bias)]

    def lookup(self, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Sum-pooled bags [B, T, D] in ONE embedding_bag call, on the table's device.
        `out` (e.g. a pinned buffer): written in place; with pooling 1 the gather writes
        straight into it."""
        b, t, pooling = rows.shape
        with torch.no_grad():
            if out is not None and pooling == 1:
                torch.index_select(self.table, 0, rows.view(-1), out=out.view(b * t, -1))
                return out
            pooled = F.embedding_bag(rows.view(b * t, pooling), self.table, mode="sum")
            if out is not None:
                return out.copy_(pooled.view_as(out))
        return pooled.view(b, t, -1)

    def forward(self, batch: Batch, pooled: torch.Tensor | None = None) -> ForwardState:
        """`pooled`: `lookup(batch.rows)` if the caller already did it (on any device)."""
        pooled = self.lookup(batch.rows) if pooled is None else pooled
        pooled = pooled.to(self.mlp_device, non_blocking=True).requires_grad_(True)
        inputs: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        logit = self._logit(batch.dense, pooled, inputs, outputs)
        return ForwardState(
            loss=_loss(self.workload.loss, logit, batch.labels),
            pooled=pooled,
            inputs=inputs,
            outputs=outputs,
            rows=batch.rows,
        )

    def logits(self, batch: Batch) -> torch.Tensor:
        """The model's [B] logits on a batch, without autograd (held-out evaluation)."""
        with torch.no_grad():
            pooled = self.lookup(batch.rows).to(self.mlp_device, non_blocking=True)
            return self._logit(batch.dense, pooled, [], [])

    def _logit(
        self,
        dense: torch.Tensor,
        pooled: torch.Tensor,
        inputs: list[torch.Tensor],
        outputs: list[torch.Tensor],
    ) -> torch.Tensor:
        x = self._mlp(dense, self.layers[: self.num_bottom], inputs, outputs)
        features = torch.cat([x.unsqueeze(1), pooled], dim=1)
        gram = torch.bmm(features, features.transpose(1, 2))
        dots = gram.flatten(1).index_select(1, self._pairs)
        top_in = torch.cat([x, dots], dim=1)
        return self._mlp(top_in, self.layers[self.num_bottom :], inputs, outputs).squeeze(1)

    @staticmethod
    def _mlp(
        x: torch.Tensor,
        layers: list[LinearLayer],
        inputs: list[torch.Tensor],
        outputs: list[torch.Tensor],
    ) -> torch.Tensor:
        for layer in layers:
            inputs.append(x)
            z = F.linear(x, layer.weight, layer.bias)
            outputs.append(z)
            x = torch.relu(z) if layer.relu else z
        return x


def _loss(kind: str, logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if kind == "mse":
        return (torch.sigmoid(logit) - labels) ** 2
    return F.binary_cross_entropy_with_logits(logit, labels, reduction="none")


def _build_mlps(
    wl: Workload, device: torch.device, dtype: torch.dtype, gen: torch.Generator
) -> tuple[torch.Tensor, list[LinearLayer]]:
    """DLRM's init: W ~ N(0, 2/(in+out)), b ~ N(0, 1/out); ReLU everywhere but the logit."""
    shapes: list[tuple[int, int, bool]] = []
    bottom = (wl.dense_features, *wl.bottom_mlp)
    top = (wl.interaction_features, *wl.top_mlp)
    shapes += [(o, i, True) for i, o in itertools.pairwise(bottom)]
    shapes += [(o, i, True) for i, o in itertools.pairwise(top)]
    shapes[-1] = (*shapes[-1][:2], False)
    flat = torch.empty(sum(o * i + o for o, i, _ in shapes), dtype=dtype, device=device)
    layers, pos = [], 0
    for out_f, in_f, relu in shapes:
        w = flat[pos : pos + out_f * in_f].view(out_f, in_f)
        pos += out_f * in_f
        b = flat[pos : pos + out_f]
        pos += out_f
        w.copy_(
            torch.randn(out_f, in_f, generator=gen, dtype=torch.float64)
            * math.sqrt(2 / (in_f + out_f))
        )
        b.copy_(torch.randn(out_f, generator=gen, dtype=torch.float64) * math.sqrt(1 / out_f))
        layers.append(LinearLayer(w.requires_grad_(True), b.requires_grad_(True), relu))
    return flat, layers
