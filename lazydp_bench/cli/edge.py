"""The CLI's one error edge: a `BenchError` becomes `error: <message>` on stderr and exit
code 2, with no traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console

from lazydp_bench.errors import BenchError

err_console = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except BenchError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """The library's warnings (e.g. skipped malformed records) as one `warning:` line each
    on stderr, not Python's multi-line warning dump."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            for w in caught:
                err_console.print(
                    f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True
                )
