"""Our DLRM (`dlrm.py`) as plain `nn.Module`s, for a library that needs modules: Opacus.

Same architecture, interaction and loss as `DLRM`, one embedding module per table. Every
parameter is an alias of our model's storage: each table's weight is a row slice of the
fused table, each Linear's weight and bias a view into the flat MLP buffer. The modules
therefore add no second copy of the model, start from our weights, and an update through
them is an update of our model (so a test compares both models' tensors directly).

Embeddings are per-table `nn.EmbeddingBag(mode="sum")` fed (index, offsets) (`bags=True`,
the form Opacus' hooks mode has a per-sample gradient for), or per-table `nn.Embedding`
whose [B, L, D] output is summed over the bag (`bags=False`, the only embedding Opacus'
ghost clipping supports).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lazydp_bench.model.dlrm import DLRM, LinearLayer

LOSS_REDUCTIONS = ("none", "mean", "sum")


class PerExampleLoss(nn.Module):
    """Our per-example loss (`dlrm._loss`) as a criterion with a `reduction` attribute,
    which Opacus' ghost-clipping loss wrapper switches to "none" to get per-example
    losses."""

    def __init__(self, kind: str, reduction: str = "mean") -> None:
        super().__init__()
        self.kind = kind
        self.reduction = reduction

    def forward(self, logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.kind == "mse":
            loss = (torch.sigmoid(logit) - labels) ** 2
        else:
            loss = F.binary_cross_entropy_with_logits(logit, labels, reduction="none")
        if self.reduction == "none":
            return loss
        return loss.mean() if self.reduction == "mean" else loss.sum()


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """An nn.Linear whose parameters alias `weight` and `bias` (built on the meta device,
    so its own initial weights are never allocated)."""
    out_f, in_f = weight.shape
    layer = nn.Linear(in_f, out_f, device="meta", dtype=weight.dtype)
    layer.weight = nn.Parameter(weight.detach())
    layer.bias = nn.Parameter(bias.detach())
    return layer


def _mlp(layers: list[LinearLayer]) -> nn.Sequential:
    """Linear layers aliasing `layers`, each followed by a ReLU where ours has one."""
    modules: list[nn.Module] = []
    for layer in layers:
        modules.append(_linear(layer.weight, layer.bias))
        if layer.relu:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def _table(weight: torch.Tensor, bags: bool) -> nn.Module:
    """One table's embedding module over `weight` (a row slice of the fused table)."""
    if bags:
        return nn.EmbeddingBag.from_pretrained(weight.detach(), freeze=False, mode="sum")
    return nn.Embedding.from_pretrained(weight.detach(), freeze=False)


class TorchDLRM(nn.Module):
    """`model` as modules whose parameters alias its storage (see the module docstring).

    `forward(dense, rows)` takes a `Batch`'s dense features [B, F] and global rows
    [B, T, L] and returns the logits [B]. Index constants are plain attributes, not
    buffers: Opacus refuses modules that hold buffers."""

    def __init__(self, model: DLRM, *, bags: bool) -> None:
        super().__init__()
        wl = model.workload
        self.bags = bags
        sizes = torch.tensor(wl.rows)
        starts = (torch.cumsum(sizes, 0) - sizes).tolist()
        self.tables = nn.ModuleList(
            _table(model.table[s : s + n], bags) for s, n in zip(starts, wl.rows, strict=True)
        )
        self.bottom = _mlp(model.layers[: model.num_bottom])
        self.top = _mlp(model.layers[model.num_bottom :])
        device = model.table.device
        self.starts = torch.tensor(starts, device=device).view(1, -1, 1)
        n = wl.num_tables + 1
        li, lj = torch.tril_indices(n, n, -1)
        self.pairs = (li * n + lj).to(device)

    def forward(self, dense: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)
        local = (rows - self.starts).transpose(0, 1).contiguous()  # [T, B, L]
        pooled = [self._pool(table, bags) for table, bags in zip(self.tables, local, strict=True)]
        features = torch.stack([x, *pooled], dim=1)
        gram = torch.bmm(features, features.transpose(1, 2))
        dots = gram.flatten(1).index_select(1, self.pairs)
        return self.top(torch.cat([x, dots], dim=1)).squeeze(1)

    def _pool(self, table: nn.Module, bags: torch.Tensor) -> torch.Tensor:
        """Sum-pooled bags [B, D] of one table from its local rows [B, L] (contiguous:
        Opacus' embedding norm sampler views them)."""
        if not self.bags:
            return table(bags).sum(dim=1)
        b, pooling = bags.shape
        offsets = torch.arange(0, b * pooling, pooling, device=bags.device)
        return table(bags.reshape(-1), offsets)
