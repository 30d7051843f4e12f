"""lazydp-bench: what differential privacy costs for embedding-heavy recommendation models.

Importing the package has no side effects; `lazydp_bench.launch` sets the command's
process-wide defaults. `load_runs`, `load_stages` and `load_benches` (stored records as
pandas tables, `lazydp_bench.records.tidy`) are imported on first use, so pandas loads
only when they are asked for.
"""

__version__ = "0.1.0"

_TIDY = ("load_runs", "load_stages", "load_benches")
__all__ = ["__version__", *_TIDY]


def __getattr__(name: str):
    if name in _TIDY:
        from lazydp_bench.records import tidy

        return getattr(tidy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_TIDY])
