"""Per-example gradient clipping for the whole DLRM (every Linear weight and bias, and the
embedding bags), in the four ways the paper compares, plus `none` for non-private SGD.

All modes return the same thing: the sum over examples of the clipped per-example
gradients, as a flat MLP gradient and a per-bag gradient of the pooled embeddings (which
the algorithm turns into sparse row gradients). c_i = min(1, C / (||g_i|| + 1e-6)).

- `materialize` (DP-SGD(B)): per-example gradients of every layer are materialized
  ([B, out, in]; the embedding part as per-example coalesced rows), clipped and summed.
- `reweight` (DP-SGD(R)): per-example norms from per-example gradients materialized one
  layer at a time and discarded, then a second backward of sum_i c_i * loss_i.
- `ghost` (DP-SGD(F)): norms without materializing (Linear: ||a_i||^2 ||d_i||^2, bias:
  ||d_i||^2, bag: ||d_i||^2 * sum_r m_r^2), then the reweighted second backward.
- `bookkeeping` (BK): ghost norms, then W-grad = (c * d)^T A per layer from the stored
  activations and output gradients: one backward only.
The first backward computes activation gradients only (no weight gradients): the paper's
"Backward (per-example)" stage; what produces the summed clipped gradient is
"Backward (per-batch)".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lazydp_bench.dp.clip_kernels import (
    add_all_linear_sq_norms,
    clip_factors,
    finish_clip,
    scale_rows_many,
)
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.profiling import StageTimer
from lazydp_bench.measure.stages import Stage
from lazydp_bench.model.dlrm import DLRM, ForwardState
from lazydp_bench.runtime.sparse import coalesce


@dataclass
class ClipResult:
    mlp_grad: torch.Tensor  # [P] flat, sum over examples of clipped per-example gradients
    pooled_grad: torch.Tensor  # [B, T, D] on the MLP device
    sq_norms: torch.Tensor | None  # [B] squared per-example gradient norms before clipping

    @property
    def norms(self) -> torch.Tensor | None:
        """Per-example norms, computed on demand (the step itself does not need them)."""
        return None if self.sq_norms is None else self.sq_norms.sqrt()


ClipFn = Callable[[DLRM, ForwardState, float, StageTimer], ClipResult]
CLIPPING_MODES: dict[str, ClipFn] = {}


def register_clipping(name: str) -> Callable[[ClipFn], ClipFn]:
    def deco(fn: ClipFn) -> ClipFn:
        if name in CLIPPING_MODES:
            raise ValueError(f"clipping mode {name!r} registered twice")
        CLIPPING_MODES[name] = fn
        return fn

    return deco


def get_clipping(name: str) -> ClipFn:
    if name not in CLIPPING_MODES:
        valid = ", ".join(CLIPPING_MODES)
        raise BenchError(f"unknown clipping mode {name!r} (valid: {valid})")
    return CLIPPING_MODES[name]


def flatten(grads: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def bag_sum_sq_multiplicity(rows: torch.Tensor) -> torch.Tensor:
    """sum_r m_r^2 for every bag of rows [B, T, L], where m_r counts row r in the bag.

    Sorting each bag makes duplicates adjacent; a row's k-th occurrence adds 2k+1, and
    sum_{k<m} (2k+1) = m^2. Pooling 1 is always 1.
    """
    if rows.shape[-1] == 1:
        return torch.ones(rows.shape[:2], dtype=torch.int64, device=rows.device)
    ordered = rows.sort(dim=-1).values
    pooling = rows.shape[-1]
    idx = torch.arange(pooling, device=rows.device).expand_as(ordered)
    is_new = torch.ones_like(ordered, dtype=torch.bool)
    is_new[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    run_start = torch.where(is_new, idx, torch.zeros_like(idx)).cummax(dim=-1).values
    return (2 * (idx - run_start) + 1).sum(dim=-1)


@torch.enable_grad()
def _activation_grads(fs: ForwardState, retain: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    grads = torch.autograd.grad(fs.loss.sum(), [*fs.outputs, fs.pooled], retain_graph=retain)
    return list(grads[:-1]), grads[-1]


def _ghost_clip(
    fs: ForwardState,
    deltas: list[torch.Tensor],
    d_pooled: torch.Tensor,
    clip_norm: float,
    scale_pooled: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Ghost norms of every layer and bag -> (squared norms, clip factors, and with
    `scale_pooled` the clipped pooled gradient), in one kernel for the layers plus one."""
    sq = torch.zeros(d_pooled.shape[0], dtype=d_pooled.dtype, device=d_pooled.device)
    add_all_linear_sq_norms(sq, fs.inputs, deltas)
    mult = None  # with pooling 1 every multiplicity is 1
    if fs.rows.shape[-1] > 1:
        mult = bag_sum_sq_multiplicity(fs.rows).to(d_pooled.device, non_blocking=True)
    c, pooled_grad = finish_clip(sq, d_pooled, mult, clip_norm, scale_pooled)
    return sq, c, pooled_grad


def _materialized_embedding_sq_norms(
    rows: torch.Tensor, d_pooled: torch.Tensor, span: int
) -> torch.Tensor:
    """Per-example embedding gradients as coalesced (row, value) pairs, then their norms.

    `span` (the table's row count) makes example * span + row a unique key per example.
    """
    b, t, pooling = rows.shape
    rows = rows.to(d_pooled.device, non_blocking=True)
    example = torch.arange(b, device=rows.device).view(b, 1, 1)
    keys = (example * span + rows).reshape(-1)
    values = d_pooled.unsqueeze(2).expand(b, t, pooling, -1).reshape(-1, d_pooled.shape[-1])
    per_example = coalesce(keys, values)
    sq = torch.zeros(b, dtype=d_pooled.dtype, device=d_pooled.device)
    sq.index_add_(0, per_example.rows // span, per_example.values.square().sum(1))
    return sq


def _sq_norm(per_example: torch.Tensor) -> torch.Tensor:
    """||g_i||^2 of [B, ...] per-example gradients without a squared temporary."""
    return torch.linalg.vector_norm(per_example.flatten(1), dim=1).square()


@torch.enable_grad()
def _reweighted_backward(model: DLRM, fs: ForwardState, c: torch.Tensor) -> tuple:
    grads = torch.autograd.grad((fs.loss * c).sum(), [*model.params, fs.pooled])
    return flatten(grads[:-1]), grads[-1]


@register_clipping("none")
def clip_none(model: DLRM, fs: ForwardState, clip_norm: float, timer: StageTimer) -> ClipResult:
    """Non-private: one backward of the summed loss, no clipping."""
    with timer.stage(Stage.BACKWARD_PER_BATCH):
        grads = torch.autograd.grad(fs.loss.sum(), [*model.params, fs.pooled])
    return ClipResult(flatten(grads[:-1]), grads[-1], None)


@register_clipping("materialize")
@torch.no_grad()  # norms and sums are not differentiated; the graph was built by forward
def clip_materialize(
    model: DLRM, fs: ForwardState, clip_norm: float, timer: StageTimer
) -> ClipResult:
    with timer.stage(Stage.BACKWARD_PER_EXAMPLE):
        deltas, d_pooled = _activation_grads(fs, retain=False)
        per_example = [
            torch.einsum("bo,bi->boi", d, a) for a, d in zip(fs.inputs, deltas, strict=True)
        ]
        sq = _materialized_embedding_sq_norms(fs.rows, d_pooled, model.table.shape[0])
        for g, d in zip(per_example, deltas, strict=True):
            sq += _sq_norm(g) + d.square().sum(1)
        c = clip_factors(sq, clip_norm)
    with timer.stage(Stage.BACKWARD_PER_BATCH):
        mlp_grad = torch.empty_like(model.flat_params)
        for (gw, gb), g, d in zip(model.layer_views(mlp_grad), per_example, deltas, strict=True):
            torch.mv(g.flatten(1).t(), c, out=gw.view(-1))
            torch.mv(d.t(), c, out=gb)
        pooled_grad = d_pooled * c.view(-1, 1, 1)
    return ClipResult(mlp_grad, pooled_grad, sq)


@register_clipping("reweight")
@torch.no_grad()  # norms and sums are not differentiated; the graph was built by forward
def clip_reweight(model: DLRM, fs: ForwardState, clip_norm: float, timer: StageTimer) -> ClipResult:
    with timer.stage(Stage.BACKWARD_PER_EXAMPLE):
        deltas, d_pooled = _activation_grads(fs, retain=True)
        sq = _materialized_embedding_sq_norms(fs.rows, d_pooled, model.table.shape[0])
        for a, d in zip(fs.inputs, deltas, strict=True):
            sq += _sq_norm(torch.einsum("bo,bi->boi", d, a)) + d.square().sum(1)
        c = clip_factors(sq, clip_norm)
    with timer.stage(Stage.BACKWARD_PER_BATCH):
        mlp_grad, pooled_grad = _reweighted_backward(model, fs, c)
    return ClipResult(mlp_grad, pooled_grad, sq)


@register_clipping("ghost")
@torch.no_grad()  # norms and sums are not differentiated; the graph was built by forward
def clip_ghost(model: DLRM, fs: ForwardState, clip_norm: float, timer: StageTimer) -> ClipResult:
    with timer.stage(Stage.BACKWARD_PER_EXAMPLE):
        deltas, d_pooled = _activation_grads(fs, retain=True)
        sq, c, _ = _ghost_clip(fs, deltas, d_pooled, clip_norm, scale_pooled=False)
    with timer.stage(Stage.BACKWARD_PER_BATCH):
        mlp_grad, pooled_grad = _reweighted_backward(model, fs, c)
    return ClipResult(mlp_grad, pooled_grad, sq)


def _clipped_layer_grads(
    views: list[tuple[torch.Tensor, torch.Tensor]],
    inputs: list[torch.Tensor],
    deltas: list[torch.Tensor],
    c: torch.Tensor,
) -> None:
    """gw = sum_i c_i d_i a_i^T, gb = sum_i c_i d_i for every layer. The factors scale the
    narrower of a and d (the scaling pass is what the factors cost), every layer's in one
    launch."""
    scale_a = [a.shape[1] < d.shape[1] for a, d in zip(inputs, deltas, strict=True)]
    narrow = [a if sa else d for a, d, sa in zip(inputs, deltas, scale_a, strict=True)]
    scaled = scale_rows_many(narrow, c)
    for (gw, gb), a, d, sa, x in zip(views, inputs, deltas, scale_a, scaled, strict=True):
        if sa:
            torch.mm(d.t(), x, out=gw)
            torch.mv(d.t(), c, out=gb)
        else:
            torch.mm(x.t(), a, out=gw)
            torch.sum(x, 0, out=gb)


@register_clipping("bookkeeping")
@torch.no_grad()  # norms and sums are not differentiated; the graph was built by forward
def clip_bookkeeping(
    model: DLRM, fs: ForwardState, clip_norm: float, timer: StageTimer
) -> ClipResult:
    with timer.stage(Stage.BACKWARD_PER_EXAMPLE):
        deltas, d_pooled = _activation_grads(fs, retain=False)
        # the clipped pooled gradient comes out of the norm pass (one read of d_pooled)
        sq, c, pooled_grad = _ghost_clip(fs, deltas, d_pooled, clip_norm, scale_pooled=True)
    with timer.stage(Stage.BACKWARD_PER_BATCH):
        mlp_grad = torch.empty_like(model.flat_params)
        _clipped_layer_grads(list(model.layer_views(mlp_grad)), fs.inputs, deltas, c)
    return ClipResult(mlp_grad, pooled_grad, sq)
