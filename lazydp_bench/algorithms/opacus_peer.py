"""Opacus as a measured peer: its DP-SGD on our DLRM, with its own machinery end to end.

`opacus` runs Opacus' hooks mode (`GradSampleModule` + `DPOptimizer`: per-sample
gradients materialized per layer, per-table `nn.EmbeddingBag`); `opacus-ghost` its ghost
clipping (`GradSampleModuleFastGradientClipping` + `DPOptimizerFastGradientClipping` +
`DPLossFastGradientClipping`, per-table `nn.Embedding` with summed bags: ghost clipping
supports no `nn.EmbeddingBag`). Both are built as `PrivacyEngine.make_private` builds them
for that `grad_sample_mode` (`prepare_module`, `get_optimizer_class`), without its
DataLoader: our batches have a fixed size B, which is Opacus' `expected_batch_size`.

The step is Opacus' own: forward, `loss.backward()` (hooks: per-sample gradients; ghost:
norms, then the reweighted second backward), `optimizer.step()` (hooks: clip; both: dense
Gaussian noise on every parameter, scale by 1/B, plain SGD). With the mean loss and
`loss_reduction="mean"` that is our DP-SGD update exactly:
w <- w - lr_t / B * (sum_i clip(g_i) + N(0, sigma^2 C^2)), c_i = min(1, C / (||g_i|| + 1e-6)).
The modules alias our model's storage (`model/torch_dlrm.py`), so no second copy of the
table exists and our model holds the trained weights.
"""

from __future__ import annotations

import re
import warnings
from typing import ClassVar

import torch

from lazydp_bench.algorithms.base import AlgoContext, Algorithm
from lazydp_bench.algorithms.registry import register
from lazydp_bench.config import RunConfig
from lazydp_bench.data import Batch
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.profiling import StageTimer
from lazydp_bench.measure.stages import Stage
from lazydp_bench.model.torch_dlrm import PerExampleLoss, TorchDLRM

MIN_OPACUS = (1, 6)
INSTALL_HINT = 'pip install -e ".[peers]"'
BACKWARD_HOOK_WARNING = "Full backward hook is firing when gradients are computed with respect"
PLACEMENTS = ("gpu", "cpu")  # the Opacus model lives on one device, with the whole table


def opacus_version() -> str:
    """The installed Opacus' version; BenchError when it is missing or older than 1.6."""
    try:
        import opacus
    except ImportError as exc:
        raise BenchError(f"the Opacus peer needs Opacus >= 1.6 ({INSTALL_HINT})") from exc
    version = str(getattr(opacus, "__version__", "0"))
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if found < MIN_OPACUS:
        raise BenchError(f"the Opacus peer needs Opacus >= 1.6, found {version} ({INSTALL_HINT})")
    return version


class OpacusPeer(Algorithm):
    """Opacus' DP-SGD in one `grad_sample_mode` (see the module docstring)."""

    grad_sample_mode: ClassVar[str]
    bags: ClassVar[bool]  # per-table nn.EmbeddingBag (else nn.Embedding, bags summed)
    graphable = False  # Opacus' hooks and optimizer run Python per step
    own_noise = True  # Opacus' optimizer draws the noise; our engines stay idle

    @classmethod
    def check_run(cls, config: RunConfig, *, placement: str, clipping: str) -> None:
        """Refuse what Opacus cannot run as we measure it: a missing or old Opacus, a
        table and MLPs on different devices, the deterministic unit noise of `verify`
        (Opacus draws its own Gaussian noise), a clipping mode other than its own."""
        opacus_version()
        if placement not in PLACEMENTS:
            raise BenchError(
                f"{cls.name!r} keeps the table and the MLPs on one device: placement "
                f"{placement!r} is not supported (use --placement gpu or cpu)"
            )
        if config.privacy.noise_mode == "unit":
            raise BenchError(
                f"{cls.name!r} draws Opacus' own Gaussian noise: noise mode 'unit' cannot be "
                "emulated (use gaussian or off)"
            )
        if clipping != cls.default_clipping:
            raise BenchError(
                f"{cls.name!r} clips as Opacus' {cls.grad_sample_mode} mode does: --clipping "
                f"{clipping!r} is not supported"
            )

    def __init__(self, ctx: AlgoContext) -> None:
        super().__init__(ctx)
        self.version = opacus_version()
        module = TorchDLRM(ctx.model, bags=self.bags)
        self.module, self.optimizer = self._make_private(module)
        criterion = PerExampleLoss(ctx.model.workload.loss, reduction="mean")
        self.criterion = self._wrap_criterion(criterion)

    def _make_private(self, module: TorchDLRM) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """The wrapped module and DPOptimizer, as `PrivacyEngine.make_private` builds them
        for this mode. Noise off: sigma 0, which Opacus' noise function skips."""
        from opacus.grad_sample.utils import prepare_module
        from opacus.optimizers import get_optimizer_class

        ctx = self.ctx
        extra = {"max_grad_norm": ctx.clip_norm} if self.grad_sample_mode == "ghost" else {}
        wrapped = prepare_module(
            module,
            grad_sample_mode=self.grad_sample_mode,
            batch_first=True,
            loss_reduction="mean",
            **extra,
        )
        sgd = torch.optim.SGD(wrapped.parameters(), lr=ctx.lr.lr(0))
        optimizer_class = get_optimizer_class(
            clipping="flat", distributed=False, grad_sample_mode=self.grad_sample_mode
        )
        generator = torch.Generator(device=ctx.model.mlp_device).manual_seed(ctx.seed)
        optimizer = optimizer_class(
            sgd,
            noise_multiplier=0.0 if ctx.noise_mode == "off" else ctx.noise_multiplier,
            max_grad_norm=ctx.clip_norm,
            expected_batch_size=ctx.batch_size,
            loss_reduction="mean",
            generator=generator,
        )
        return wrapped, optimizer

    def _wrap_criterion(self, criterion: PerExampleLoss) -> torch.nn.Module:
        """The loss as this mode computes it (hooks: the plain mean loss)."""
        return criterion

    # ----- the step -----------------------------------------------------------------
    def prepare(self, t: int, fixed_capacity: bool = False) -> None:
        """Step t's learning rate (our schedule) into Opacus' optimizer."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.ctx.lr.lr(t)

    def run_step(self, batch: Batch, next_batch: Batch, timer: StageTimer) -> None:
        with timer.stage(Stage.FORWARD):
            loss = self.criterion(self.module(batch.dense, batch.rows), batch.labels)
        with timer.stage(Stage.BACKWARD_PER_EXAMPLE), warnings.catch_warnings():
            # the first modules' inputs (features, indices) need no grad: expected, not news
            warnings.filterwarnings("ignore", message=BACKWARD_HOOK_WARNING)
            loss.backward()
        with timer.stage(Stage.MODEL_UPDATE):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def record_extras(self) -> dict[str, dict]:
        return {
            "memory": {"history_table_bytes": None},
            "config": {
                "peer": f"opacus {self.version}",
                "grad_sample_mode": self.grad_sample_mode,
            },
        }


@register
class OpacusHooks(OpacusPeer):
    name = "opacus"
    label = "Opacus(hooks)"
    color = "#8C564B"
    plot_order = 8  # after our algorithms
    summary = "Opacus hooks mode: per-sample gradients materialized, nn.EmbeddingBag, dense noise"
    default_clipping = "materialize"
    grad_sample_mode = "hooks"
    bags = True


@register
class OpacusGhost(OpacusPeer):
    name = "opacus-ghost"
    label = "Opacus(ghost)"
    color = "#17BECF"
    plot_order = 9
    summary = "Opacus ghost clipping: norms + reweighted second backward, nn.Embedding, dense noise"
    default_clipping = "ghost"
    grad_sample_mode = "ghost"
    bags = False

    def _wrap_criterion(self, criterion: PerExampleLoss) -> torch.nn.Module:
        """Opacus' loss wrapper: its `backward()` runs both passes of ghost clipping."""
        from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

        return DPLossFastGradientClipping(self.module, self.optimizer, criterion, "mean")
