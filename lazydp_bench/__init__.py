"""lazydp-bench: what differential privacy costs for embedding-heavy recommendation models."""

import os

# Hybrid and host steps run the tool's own thread pools (row updates, host noise) right
# after OpenMP-parallel torch ops (the table lookup). OpenMP's default spin-wait keeps its
# threads on the cores those pools need: with passive waiting, hybrid SGD steps measured
# faster at every table size on the H100 machine (results/2026-11-23-h100/NOTES.md,
# session 5). OpenMP reads this when torch loads it, so it is set here, before any torch
# import of the package; a value the user set is kept, and every record says which ran.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
