"""An independent, dense, autograd-only DLRM used as the brute-force reference in tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clone_params(session):
    """Leaf copies of the table and of every MLP weight/bias, requiring grad."""
    table = session.model.table.detach().clone().requires_grad_(True)
    mlp = [p.detach().clone().requires_grad_(True) for p in session.model.params]
    return table, mlp


def ref_losses(session, table, mlp, batch) -> torch.Tensor:
    """Per-example losses, recomputed from scratch with plain autograd ops."""
    wl = session.model.workload
    b, t, pooling = batch.rows.shape
    pooled = F.embedding_bag(batch.rows.reshape(b * t, pooling), table, mode="sum").view(b, t, -1)
    relus = [layer.relu for layer in session.model.layers]
    n_bottom = len(wl.bottom_mlp)
    x = batch.dense
    for i in range(n_bottom):
        x = x @ mlp[2 * i].T + mlp[2 * i + 1]
        x = torch.relu(x) if relus[i] else x
    feats = torch.cat([x.unsqueeze(1), pooled], 1)
    pairs = [(feats[:, i] * feats[:, j]).sum(-1) for i in range(t + 1) for j in range(i)]
    h = torch.cat([x, torch.stack(pairs, 1)], 1)
    for i in range(n_bottom, len(relus)):
        h = h @ mlp[2 * i].T + mlp[2 * i + 1]
        h = torch.relu(h) if relus[i] else h
    logit = h.squeeze(1)
    if wl.loss == "mse":
        return (torch.sigmoid(logit) - batch.labels) ** 2
    return F.binary_cross_entropy_with_logits(logit, batch.labels, reduction="none")


def per_example_clipped_sum(session, batch, clip_norm):
    """Brute force: autograd on each example alone, clip its whole gradient, sum."""
    table, mlp = clone_params(session)
    losses = ref_losses(session, table, mlp, batch)
    sum_table = torch.zeros_like(table)
    sum_mlp = [torch.zeros_like(p) for p in mlp]
    norms = []
    for i in range(losses.shape[0]):
        grads = torch.autograd.grad(losses[i], [table, *mlp], retain_graph=True)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        norms.append(norm)
        c = torch.clamp(clip_norm / (norm + 1e-6), max=1.0)
        sum_table += c * grads[0]
        for acc, g in zip(sum_mlp, grads[1:], strict=True):
            acc += c * g
    return sum_table, torch.cat([g.reshape(-1) for g in sum_mlp]), torch.stack(norms)
