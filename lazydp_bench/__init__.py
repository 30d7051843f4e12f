"""lazydp-bench: what differential privacy costs for embedding-heavy recommendation models.

Importing the package has no side effects; `lazydp_bench.launch` sets the command's
process-wide defaults.
"""

__version__ = "0.1.0"
