"""The training-stage ids used by the timer, the records, the tables and the plots.

Names follow the LazyDP paper's figures (Fig. 3 and Fig. 5): one enum so that a stage
is spelled the same way everywhere.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    DATA = "data"
    FORWARD = "forward"
    BACKWARD_PER_EXAMPLE = "backward_per_example"
    BACKWARD_PER_BATCH = "backward_per_batch"
    MODEL_UPDATE = "model_update"
    GRAD_COALESCE = "grad_coalesce"
    NOISE_SAMPLING = "noise_sampling"
    NOISY_GRAD = "noisy_grad"
    PARAM_UPDATE = "param_update"
    LAZYDP_OVERHEAD = "lazydp_overhead"
    NOISY_UPDATE_FUSED = "noisy_update_fused"
    SELECTION = "selection"  # DP-FEST / DP-AdaFEST's row selection (not a paper stage)
    COMM = "comm"  # collectives of a sharded run: all-to-all, all-gather (not a paper stage)
    OTHER = "other"


LABELS: dict[Stage, str] = {
    Stage.DATA: "Data generation",
    Stage.FORWARD: "Forward",
    Stage.BACKWARD_PER_EXAMPLE: "Backward (per-example)",
    Stage.BACKWARD_PER_BATCH: "Backward (per-batch)",
    Stage.MODEL_UPDATE: "Model update",
    Stage.GRAD_COALESCE: "Gradient coalesce",
    Stage.NOISE_SAMPLING: "Noise sampling",
    Stage.NOISY_GRAD: "Noisy gradient generation",
    Stage.PARAM_UPDATE: "Model parameter update",
    Stage.LAZYDP_OVERHEAD: "LazyDP overhead",
    Stage.NOISY_UPDATE_FUSED: "Noisy update (fused)",
    Stage.SELECTION: "Row selection",
    Stage.COMM: "Communication",
    Stage.OTHER: "Other",
}

_UPDATE_CHILDREN = (
    Stage.GRAD_COALESCE,
    Stage.NOISE_SAMPLING,
    Stage.NOISY_GRAD,
    Stage.PARAM_UPDATE,
    Stage.LAZYDP_OVERHEAD,
    Stage.NOISY_UPDATE_FUSED,
    Stage.SELECTION,
)
PARENT: dict[Stage, Stage | None] = {
    s: (Stage.MODEL_UPDATE if s in _UPDATE_CHILDREN else None) for s in Stage
}
UPDATE_CHILDREN: tuple[Stage, ...] = _UPDATE_CHILDREN
