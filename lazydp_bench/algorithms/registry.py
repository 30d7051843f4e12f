"""Name -> Algorithm class. Duplicate or unknown names raise (as Opacus' accountant registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from lazydp_bench.errors import BenchError

if TYPE_CHECKING:
    from lazydp_bench.algorithms.base import Algorithm

ALGORITHMS: dict[str, type[Algorithm]] = {}
A = TypeVar("A", bound="type[Algorithm]")


def register(cls: A) -> A:
    if cls.name in ALGORITHMS:
        raise ValueError(f"algorithm {cls.name!r} registered twice")
    ALGORITHMS[cls.name] = cls
    return cls


def get_algorithm(name: str) -> type[Algorithm]:
    if name not in ALGORITHMS:
        raise BenchError(f"unknown algorithm {name!r} (valid: {', '.join(ALGORITHMS)})")
    return ALGORITHMS[name]
