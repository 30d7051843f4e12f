"""The command's entry point: process-wide defaults first, then the CLI.

Hybrid and host steps run the tool's own thread pools (row updates, host noise) right
after OpenMP-parallel torch ops (the table lookup). OpenMP's default spin-wait keeps its
threads on the cores those pools need: with passive waiting, hybrid SGD steps measured
faster at every table size on the H100 machine (results/2026-11-23-h100/NOTES.md).
OpenMP reads OMP_WAIT_POLICY when torch loads it, so the default is set here, before
anything imports torch, and not on import of the package (importing a library must not
change the process's environment). A value the user set is kept, sweep workers inherit
it, and every record says which ran (`env.omp_wait_policy`).
"""

from __future__ import annotations

import os


def set_process_defaults() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless the user set it; call before torch is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    set_process_defaults()
    from lazydp_bench.cli import main as cli_main

    cli_main()
