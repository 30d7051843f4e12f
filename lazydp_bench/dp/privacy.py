"""Privacy accounting through Opacus' accountants (the ecosystem's standard).

sigma is either given (`--noise-multiplier`) or derived from a target (epsilon, delta)
with the RDP accountant; every DP record stores what the configuration spends over a
full training run (`epochs` over `dataset_size` at sample rate batch/dataset_size) under
both RDP and PRV.

Cost is bounded whatever the batch: RDP's epsilon over `steps` compositions at a fixed
sample rate is a closed form over its orders (Opacus multiplies per-step RDP by `steps`).
PRV discretizes the composed privacy loss on a mesh whose size grows as sqrt(steps) /
eps_error (Gopi et al.), so at a small batch (millions of steps) it took minutes and
gigabytes. Its eps_error therefore grows as sqrt(steps / PRV_REF_STEPS) past that many
steps (the mesh stays the size it has at batch 2048 on Criteo Kaggle), and the record
states the error (`epsilon_prv_error`): `epsilon_prv` stays an upper bound, looser by at
most that much.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache

from lazydp_bench.config import PrivacyConfig
from lazydp_bench.errors import BenchError

PRV_EPS_ERROR = 0.01  # Opacus' default
PRV_REF_STEPS = 25_000  # past this many steps the PRV mesh stops growing (see above)


def prv_eps_error(steps: int) -> float:
    """PRV's epsilon error for `steps` compositions: bounded work, stated looseness."""
    return PRV_EPS_ERROR * max(1.0, math.sqrt(steps / PRV_REF_STEPS))


@dataclass(frozen=True)
class PrivacyPlan:
    clip_norm: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    epsilon_rdp: float | None
    epsilon_prv: float | None
    epsilon_prv_error: float  # epsilon_prv is an upper bound within this of PRV's estimate
    noise_source: str  # "given" | "derived from target epsilon (rdp)"
    accountant_note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _opacus_accountants():
    try:
        from opacus.accountants import PRVAccountant, RDPAccountant
        from opacus.accountants.utils import get_noise_multiplier
    except ImportError as exc:  # pragma: no cover - opacus is a dependency
        raise BenchError(
            "opacus is needed for privacy accounting (pip install opacus), "
            f"or pass --noise-multiplier: {exc}"
        ) from exc
    return RDPAccountant, PRVAccountant, get_noise_multiplier


@lru_cache(maxsize=64)
def derive_noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    _, _, get_noise_multiplier = _opacus_accountants()
    with warnings.catch_warnings():  # opacus warns when the optimal RDP order is at an edge
        warnings.simplefilter("ignore")
        return float(
            get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant="rdp",
            )
        )


@lru_cache(maxsize=64)
def spent_epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str
) -> float:
    if noise_multiplier == 0:
        return math.inf
    rdp_cls, prv_cls, _ = _opacus_accountants()
    acc = rdp_cls() if accountant == "rdp" else prv_cls()
    acc.history = [(noise_multiplier, sample_rate, steps)]
    extra = {"eps_error": prv_eps_error(steps)} if accountant == "prv" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=delta, **extra))


def plan_privacy(cfg: PrivacyConfig, batch_size: int) -> PrivacyPlan:
    sample_rate = min(1.0, batch_size / cfg.dataset_size)
    steps = max(1, math.ceil(cfg.epochs * cfg.dataset_size / batch_size))
    if cfg.noise_multiplier is not None:
        sigma, source = cfg.noise_multiplier, "given"
    else:
        try:
            sigma = derive_noise_multiplier(cfg.target_epsilon, cfg.delta, sample_rate, steps)
        except ValueError as exc:  # Opacus: "The privacy budget is too low."
            raise BenchError(
                f"no noise multiplier reaches epsilon {cfg.target_epsilon} at delta "
                f"{cfg.delta} over {steps} steps ({exc})"
            ) from None
        source = "derived from target epsilon (rdp)"
    eps = {}
    note = None
    for name in ("rdp", "prv"):
        try:
            eps[name] = spent_epsilon(sigma, sample_rate, steps, cfg.delta, name)
        except Exception as exc:  # an accountant's numerical failure must not kill a run
            eps[name] = None
            note = f"{name} accountant failed: {exc}"
    return PrivacyPlan(
        clip_norm=cfg.clip_norm,
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        steps=steps,
        delta=cfg.delta,
        epsilon_rdp=eps["rdp"],
        epsilon_prv=eps["prv"],
        epsilon_prv_error=prv_eps_error(steps),
        noise_source=source,
        accountant_note=note,
    )
