"""lazydp-bench: what differential privacy costs for embedding-heavy recommendation models."""

__version__ = "0.1.0"
