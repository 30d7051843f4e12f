"""Privacy accounting through Opacus' accountants (the ecosystem's standard).

sigma is either given (`--noise-multiplier`) or derived from a target (epsilon, delta)
with the RDP accountant; every DP record stores what the configuration spends over a
full training run (`epochs` over `dataset_size` at sample rate batch/dataset_size) under
both RDP and PRV.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache

from lazydp_bench.config import PrivacyConfig
from lazydp_bench.errors import BenchError


@dataclass(frozen=True)
class PrivacyPlan:
    clip_norm: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    epsilon_rdp: float | None
    epsilon_prv: float | None
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=delta))


def plan_privacy(cfg: PrivacyConfig, batch_size: int) -> PrivacyPlan:
    sample_rate = min(1.0, batch_size / cfg.dataset_size)
    steps = max(1, math.ceil(cfg.epochs * cfg.dataset_size / batch_size))
    if cfg.noise_multiplier is not None:
        sigma, source = cfg.noise_multiplier, "given"
    else:
        sigma = derive_noise_multiplier(cfg.epsilon, cfg.delta, sample_rate, steps)
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
        noise_source=source,
        accountant_note=note,
    )
