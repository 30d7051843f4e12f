"""The `lazydp-bench` command line: `app.py` (the commands) and `options.py` (the options
`run` and `sweep` share, defined once)."""

from lazydp_bench.cli.app import app, main

__all__ = ["app", "main"]
