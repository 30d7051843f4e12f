"""The compiled Criteo parser (`criteo_parse.c`): one pass over a block's bytes per call.

Why hand-written C: pandas' CSV reader has no vectorised hex parse (26 columns of
`int(x, 16)` per line in Python) and cannot name a bad line; pyarrow is not a
dependency; and the numpy parser (`parse_block_numpy` in criteo.py), with
its ~100 whole-array passes per block, parses ~300k lines/s per thread (273k on the
H200's host, 320-490k on a 2-core EPYC 9004 VM) and scales to only ~1.5 M lines/s over
16 threads, each pass taking and giving back the GIL. The C parser reads each byte once
(~0.24 us of CPU per ~245-byte line on that VM, 8-13x faster than numpy; `lazydp-bench
data speed` names and measures the parser that runs), gives the same arrays, bad lines
and reasons as numpy, and holds no GIL while it runs: ctypes releases it for the call.

It is built at first use and cached like the host noise engine's C (`lazydp_bench.native`);
where no compiler works, `load_parser` says why and the reader uses the numpy parser.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lazydp_bench.native import NativeBuildError, find_compiler, load

SOURCE = Path(__file__).with_name("criteo_parse.c")
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared")
INFO_LEN = 9  # criteo_parse's info words
_DENSE, _CATS = 13, 26
_ptr, _i64 = ctypes.c_void_p, ctypes.c_int64


@dataclass(frozen=True, eq=False)
class RawParse:
    """A block as `criteo_parse` returns it: good lines' arrays (the first rows of buffers
    with a row per line), bad lines' indices in the block, and the block's facts (see
    `criteo_parse.c`'s INFO_ words)."""

    labels: np.ndarray  # (m,) uint8
    dense: np.ndarray  # (m, 13) int64
    ids: np.ndarray  # (m, 26) int64
    bad: np.ndarray  # (k,) int64, 0-based line indices
    lines: int
    first_fields: int
    bad_line: int  # the first bad line's index (-1: none)
    bad_fields: int  # its field count
    bad_col: int  # its first bad field (-1: its field count is wrong)
    bad_start: int  # that field's offset in the block
    bad_size: int  # its length in bytes


@dataclass(frozen=True, eq=False)
class NativeParser:
    """The loaded library (None where it could not be built, and why)."""

    lib: ctypes.CDLL | None
    reason: str = ""

    @property
    def name(self) -> str:
        """The parser a reader with this library uses, for records and `data speed`."""
        return "c" if self.lib is not None else f"numpy (C parser unavailable: {self.reason})"

    def parse(self, block: np.ndarray) -> RawParse:
        """Parse a uint8 block of whole lines (bytes after its last newline are ignored).
        The outputs are sized by the block's line count (a vectorised count, ~3 ns a line):
        sizing them for the most good lines its bytes could hold (one per 41) cost more in
        page faults of the larger allocations."""
        block = np.ascontiguousarray(block, dtype=np.uint8)
        cap = self.count_lines(block)
        labels = np.empty(cap, np.uint8)
        dense = np.empty((cap, _DENSE), np.int64)
        ids = np.empty((cap, _CATS), np.int64)
        bad = np.empty(cap, np.int64)
        info = np.empty(INFO_LEN, np.int64)
        status = self.lib.criteo_parse(
            block.ctypes.data, len(block), cap, cap,
            labels.ctypes.data, dense.ctypes.data, ids.ctypes.data, bad.ctypes.data,
            info.ctypes.data,
        )  # fmt: skip
        if status != 0:
            raise RuntimeError("criteo_parse: more lines than the block's newlines")
        lines, good, nbad = (int(x) for x in info[:3])
        return RawParse(
            labels[:good], dense[:good], ids[:good], bad[:nbad], lines, *map(int, info[3:])
        )

    def count_lines(self, block: np.ndarray) -> int:
        """The newlines in a contiguous uint8 block."""
        return int(self.lib.criteo_count_lines(block.ctypes.data, len(block)))

    def hash_rows(self, ids: np.ndarray, table_rows: np.ndarray, offsets: np.ndarray):
        """offsets[t] + ids[:, t] % table_rows[t] (int64 (m, 26); ids >= 0, rows > 0)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        rows = np.ascontiguousarray(table_rows, dtype=np.int64)
        offs = np.ascontiguousarray(offsets, dtype=np.int64)
        out = np.empty(ids.shape, np.int64)
        self.lib.criteo_hash_rows(
            ids.ctypes.data, len(ids), rows.ctypes.data, offs.ctypes.data, out.ctypes.data
        )
        return out


@functools.cache
def load_parser(compiler: str | None) -> NativeParser:
    """Build (once per machine) and load the parser; a `NativeParser` with `lib=None` and
    the reason where that fails. Cached per process."""
    if compiler is None:
        return NativeParser(None, reason="no C compiler ($CC, gcc or cc) found")
    try:
        lib = load(SOURCE, compiler, FLAGS, name="criteo_parse")
    except NativeBuildError as err:
        return NativeParser(None, reason=f"building with {compiler} failed ({err})")
    lib.criteo_parse.argtypes = [_ptr, _i64, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _ptr]
    lib.criteo_parse.restype = ctypes.c_int
    lib.criteo_hash_rows.argtypes = [_ptr, _i64, _ptr, _ptr, _ptr]
    lib.criteo_hash_rows.restype = None
    lib.criteo_count_lines.argtypes = [_ptr, _i64]
    lib.criteo_count_lines.restype = _i64
    return NativeParser(lib)


@functools.cache
def _parser_for(cc: str | None, path: str | None) -> NativeParser:
    return load_parser(find_compiler())


def default_parser() -> NativeParser:
    """The parser for this process's environment ($CC and PATH choose the compiler; looked
    up per call, so a changed environment takes effect, built once per compiler)."""
    return _parser_for(os.environ.get("CC"), os.environ.get("PATH"))
