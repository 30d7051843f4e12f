"""C sources of the package compiled at first use and loaded through ctypes.

A library is built by the C compiler ($CC, else gcc or cc on PATH) once per machine,
source and flags, and cached under $LAZYDP_BENCH_CACHE, else ~/.cache/lazydp_bench (one
folder per library name). The cache key holds the source text, the flags, the compiler's
`--version` text and, because code built with `-march=native` must not run on another
CPU, the CPU's feature flags. A build writes to a temporary name and renames it, so
processes building at once never load a partial file. ctypes releases the GIL for every
call, so threads calling a library run in parallel.

Callers turn a failure (`NativeBuildError`, or no compiler: `find_compiler()` is None)
into a fallback that says why (host-philox: host threads; the Criteo parser: numpy).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path


class NativeBuildError(RuntimeError):
    """A C source could not be compiled or loaded; the message says why in one line."""


def find_compiler() -> str | None:
    """$CC, else gcc or cc on PATH (None: no compiler)."""
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")


def cache_dir(name: str) -> Path:
    """The folder of `name`'s built libraries."""
    root = os.environ.get("LAZYDP_BENCH_CACHE") or Path.home() / ".cache" / "lazydp_bench"
    return Path(root) / name


def cpu_flags() -> str:
    """The CPU's feature flags: -march=native code must not be reused on another CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def build(source: Path, compiler: str, flags: Sequence[str], *, name: str) -> Path:
    """The shared library of `source` built by `compiler` with `flags`, from the cache or
    compiled now. Raises `NativeBuildError` (the compiler's first error line) or the
    `OSError` / `CalledProcessError` of a compiler that does not run."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True)
    digest = hashlib.sha256(
        "\0".join([source.read_text(), *flags, version.stdout, cpu_flags()]).encode()
    ).hexdigest()[:16]
    out = cache_dir(name) / f"{name}-{digest}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        res = subprocess.run(
            [compiler, *flags, str(source), "-o", tmp], capture_output=True, text=True
        )
        if res.returncode != 0:
            lines = res.stderr.strip().splitlines() or ["no message"]
            first = next((x for x in lines if "error" in x), lines[-1])
            raise NativeBuildError(f"{compiler} exited with {res.returncode}: {first}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load(source: Path, compiler: str, flags: Sequence[str], *, name: str) -> ctypes.CDLL:
    """Build (or find in the cache) and load `source`'s library; any failure is a
    `NativeBuildError` saying why in one line."""
    try:
        return ctypes.CDLL(str(build(source, compiler, flags, name=name)))
    except NativeBuildError:
        raise
    except (OSError, subprocess.CalledProcessError) as err:
        raise NativeBuildError(str(err)) from None
