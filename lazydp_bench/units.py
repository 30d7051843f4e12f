"""Byte-size parsing and formatting ("96MB" = 96e6 bytes, "96GiB" = 96 * 2**30 bytes)."""

from __future__ import annotations

import math
import re

from lazydp_bench.errors import BenchError

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse a byte size with a decimal (KB/MB/GB/TB) or binary (KiB/MiB/GiB/TiB) unit."""
    match = _SIZE_RE.match(text)
    if not match:
        raise BenchError(f"cannot parse size {text!r} (examples: 96MB, 9.6GB, 96GiB)")
    number, unit = float(match.group(1)), match.group(2).upper()
    if unit not in _UNITS:
        valid = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
        raise BenchError(f"unknown size unit {match.group(2)!r} in {text!r} (valid: {valid})")
    if not math.isfinite(number * _UNITS[unit]):
        raise BenchError(f"size {text!r} is not a finite number of bytes")
    size = round(number * _UNITS[unit])
    if size <= 0:
        raise BenchError(f"size must be positive, got {text!r}")
    return size


def format_bytes(n: float | None) -> str:
    """Format a byte count with a decimal unit, 3 significant digits ("9.60 GB")."""
    if n is None:
        return "-"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
