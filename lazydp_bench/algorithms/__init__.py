"""Training algorithms, registered by name (`--algo` choices come from the registry)."""

from lazydp_bench.algorithms import dpsgd, eana, lazydp, opacus_peer, sgd  # noqa: F401  (registers them)
from lazydp_bench.algorithms.base import AlgoContext, Algorithm
from lazydp_bench.algorithms.registry import ALGORITHMS, get_algorithm, register

__all__ = ["ALGORITHMS", "AlgoContext", "Algorithm", "get_algorithm", "register"]

# registered after the paper's algorithms, so --algo and error messages list those first
from lazydp_bench.algorithms import adafest  # noqa: F401
