"""Row updates of a host table, `table[rows] += alpha * values`, in compiled C.

Why not torch's `index_add_`: on the CPU it adds one row slice at a time through a
small tensor operation, so its cost is per row, not per byte. Measured on one core of
the 2-core EPYC 9004 VM (50,000 unique sorted rows of 128 float32 into a 1 GiB table,
alpha 0.5): `index_add_` 16.9 ms, `index_put_(accumulate=True)` 16.8 ms, gather + add +
`index_copy_` 31.8 ms, this kernel 3.5 ms (`index_select` of the same rows: 5.1 ms). In
hybrid placement every step applies its coalesced gradient rows this way (and LazyDP
also its queue's noise rows), so the update is on the critical path of SGD and LazyDP
alike.

`host_rows.c` walks the rows of a range, prefetching the rows a few positions ahead, and
adds each value row with a fused multiply-add (`alpha == 1`: a plain add), the rounding
of torch's vectorised CPU kernels (AVX2, AVX-512): results are bitwise those of
`index_add_` (tested). A torch running its scalar kernels (`ATEN_CPU_CAPABILITY=default`)
rounds `alpha * v` separately, so there the update goes to `index_add_`. Rows must be
unique within a range; `SparseOps` splits a coalesced update into disjoint ranges that
threads apply in parallel (ctypes releases the GIL). The library is built at first use
(`lazydp_bench.native`); where no compiler works, `index_add_` runs and `describe()`
says why.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from lazydp_bench.native import NativeBuildError, find_compiler, load

SOURCE = Path(__file__).with_suffix(".c")
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared")
_ARGS = [
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_double,
]
_NAMES = {torch.float32: "rows_add_f32", torch.float64: "rows_add_f64"}
# torch CPU builds whose kernels add without FMA (ATEN_CPU_CAPABILITY=default): the C
# kernel's fused multiply-add would round differently from `index_add_` there
SCALAR_CAPABILITIES = ("DEFAULT",)


@dataclass(frozen=True)
class RowKernels:
    """The loaded library (None where it could not be built, and why)."""

    lib: ctypes.CDLL | None
    reason: str = ""


@functools.cache
def load_row_kernels(compiler: str | None) -> RowKernels:
    """Build (once per machine) and load the library; cached per process."""
    if compiler is None:
        return RowKernels(None, "no C compiler ($CC, gcc or cc) found")
    try:
        lib = load(SOURCE, compiler, FLAGS, name="host_rows")
    except NativeBuildError as err:
        return RowKernels(None, f"building with {compiler} failed ({err})")
    for name in _NAMES.values():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = _ARGS, ctypes.c_int64
    return RowKernels(lib)


class HostRowAdder:
    """`add(table, rows, values, alpha, lo, hi)`: the rows [lo, hi) of a coalesced update
    added to a host table, by the C kernel where it applies, else by `index_add_`."""

    def __init__(self, compiler: str | None = "") -> None:
        """`compiler`: "" finds one, None means none (`index_add_` only)."""
        self.compiler = find_compiler() if compiler == "" else compiler

    def kernels(self) -> RowKernels:
        return load_row_kernels(self.compiler)

    def native(self, table: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> bool:
        """Whether the C kernel can apply this update: torch's CPU kernels use vector FMA
        (so the kernel's rounding is theirs), host tensors, one float dtype, contiguous
        rows of the table and the values, one int64 row id per value row. Anything else
        goes to `index_add_`, which also raises on mismatched shapes."""
        return (
            self.kernels().lib is not None
            and torch.backends.cpu.get_cpu_capability() not in SCALAR_CAPABILITIES
            and table.dtype in _NAMES
            and values.dtype == table.dtype
            and rows.dtype == torch.int64
            and table.dim() == 2
            and rows.dim() == 1
            and values.shape == (rows.numel(), table.shape[1])
            and all(t.device.type == "cpu" and t.is_contiguous() for t in (table, rows, values))
        )

    def add(
        self,
        table: torch.Tensor,
        rows: torch.Tensor,
        values: torch.Tensor,
        alpha: float,
        *,
        lo: int,
        hi: int,
    ) -> None:
        """table[rows[lo:hi]] += alpha * values[lo:hi] (rows unique in the range)."""
        if not 0 <= lo <= hi <= rows.numel():
            raise IndexError(f"rows [{lo}, {hi}) outside an update of {rows.numel()} rows")
        if not self.native(table, rows, values):
            table.index_add_(0, rows[lo:hi], values[lo:hi], alpha=alpha)
            return
        fn = getattr(self.kernels().lib, _NAMES[table.dtype])
        bad = fn(
            table.data_ptr(),
            table.shape[1],
            table.shape[0],
            rows.data_ptr(),
            values.data_ptr(),
            lo,
            hi,
            float(alpha),
        )
        if bad >= 0:
            raise IndexError(f"row {int(rows[bad])} is out of range for {table.shape[0]} rows")

    def describe(self) -> str:
        """What applies host row updates (recorded with the run)."""
        kernels = self.kernels()
        if kernels.lib is None:
            return f"torch index_add_ (host-rows C kernel unavailable: {kernels.reason})"
        return "host-rows C kernel (prefetching fused multiply-add)"
