"""Criteo TSV files as training batches: a vectorised parser and a streaming batch source.

Format (Kaggle `train.txt`, Criteo 1TB `day_N`, plain or gzip): one example per line,
`label \\t I1..I13 \\t C1..C26`; the label is 0 or 1, I1..I13 decimal integers (possibly
negative), C1..C26 hex ids of up to 8 digits (either case); an empty field is missing.
Kaggle's `test.txt` (39 fields, no label) is refused: training needs labels.

Why not pandas' CSV reader (pyarrow is not a dependency): it has no vectorised hex
parse, so the 26 categorical columns would go through Python `int(x, 16)` per field, and
it cannot say which line of which file is malformed. Parsing here works on raw byte blocks
of whole lines, with no Python code per line or per field: by compiled C where a C
compiler works (`criteo_native.py`, `criteo_parse.c`: one pass over the bytes, one call
per block), else by numpy (`parse_block_numpy`, also the C parser's reference in the
tests): separators are located with one scan, then each field is read as the
little-endian 8-byte word starting at it and decoded with SWAR arithmetic on whole
columns of words (a byte-class table checks that every byte is a digit or hex digit).
Both give the same arrays, bad lines and messages; `parser_name()` says which runs. A bad
line (wrong field count, a label other than 0/1, a dense field that is not an integer, a
categorical that is not hex, a gzip stream that ends early) is a `BenchError` naming the
file and line, or, with `on_bad_line="skip"`, dropped and counted.

Mapping to the model, as the DLRM reference and TorchRec do: a missing id is id 0 and a
missing dense value 0. Categoricals become rows of each table by `hash` (id modulo the
table's row count, DLRM's `--max-ind-range`) or `vocab` (ids ranked by frequency over
the data in a first pass; ranks at or beyond the table's size fold modulo it). Dense
values become `log(max(x, 0) + 1)` (`dlrm`) or `log(x - min + 2)` with `min` the smallest
value of the data (`torchrec`, its `tsv_to_npys` since pytorch/torchrec#2150; TorchRec
takes the minimum per file and over all 13 columns, here over all files given, so every
day gets the same shift).

Parsing runs in several threads (`threads`, default one per core; a run uses its host
threads). One thread parses ~300k lines/s with numpy (273k on the H200's host) and ~3-4 M
lines/s with C (CPU time on a 2-core EPYC 9004 VM: ~240 ns per ~245-byte line; with the
dense transform and hash mapping ~300 ns in the reader process, which reuses freed
memory, ~600 ns with glibc's defaults), while SGD at batch 2048 on an H200 takes 3.3 M
lines/s. The thread that iterates reads and decompresses blocks in file order
(reading a plain file straight into the block's buffer and counting its lines in C:
~60-100 ns per line; gzip inflation, sequential by nature, is slower than parsing in C),
and a `ThreadPoolExecutor` parses them, the batch source's dense transform and row
mapping included. The C parse is one ctypes call per block and every numpy operation
releases the GIL, so blocks parse in parallel (numpy's ~100 calls per block reached
1.5 M lines/s over 16 threads on the H200's host). Results
are taken in file order, so chunks, batches and the line numbers of errors are exactly
those of one thread; a read error (a truncated gzip) surfaces after every block before
it, as it would in one thread. At most `AHEAD_PER_THREAD` x threads blocks are read and
not yet consumed, which bounds memory.

`plan_data` (called by the run's plan) validates the lines a run will read before it
starts (every line, when a vocabulary or the dense minimum needs a full pass), and
`CriteoBatchSource` then streams them from a background thread through a bounded queue,
never holding the file in memory; with `reader="process"` (the default for batches that
go to a GPU) that thread and its parse threads run in a child process instead
(`criteo_process.py`), so the training process holds no parse threads.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import re
import threading
import time
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lazydp_bench.config import DATA_READERS, DataConfig, RunConfig
from lazydp_bench.data.criteo_native import default_parser
from lazydp_bench.data.synthetic import Batch
from lazydp_bench.errors import BenchError
from lazydp_bench.workloads import Workload

DENSE = 13
CATS = 26
FIELDS = 1 + DENSE + CATS
TEST_FIELDS = FIELDS - 1  # Kaggle test.txt: no label
BLOCK_BYTES = 8 * 2**20  # decompressed bytes parsed at once (~35k lines)
MAX_LINE_BYTES = 64 * 2**10  # a longer "line" is not Criteo data
SOURCE_BLOCK_BYTES = 2 * 2**20  # the batch source's blocks: a first batch sooner
# The reader's queue holds about two blocks of batches (a Criteo line is ~250 bytes): it
# is filled before training and refilled from half, one or two blocks at a time.
QUEUE_LINES = 2 * SOURCE_BLOCK_BYTES // 150
MAX_QUEUE_BATCHES = 256  # tiny batches: a bound on queued tensors
AHEAD_PER_THREAD = 2  # blocks read but not yet consumed: at most this many per parse thread
_GZIP_MAGIC = b"\x1f\x8b"
_TAB, _NL = 9, 10
FIELD_NAMES = ("label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27)))


# ---- files ------------------------------------------------------------------------------


def _day_key(path: Path) -> tuple[int, str]:
    match = re.match(r"day_(\d+)", path.name)
    return (int(match.group(1)) if match else 1 << 30, path.name)


def data_files(paths: Sequence[str | Path]) -> tuple[Path, ...]:
    """The files of `paths` in reading order: a file as given; a folder as its `day_*`
    files (day order) or else its `train.txt` (plain or .gz)."""
    files: list[Path] = []
    for text in paths:
        try:
            files.extend(_files_of(Path(text)))
        except OSError as exc:  # a folder on the way that the user may not enter
            raise BenchError(f"cannot read data {text}: {exc.strerror or exc}") from exc
    return tuple(files)


def _files_of(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BenchError(f"data file {path} does not exist")
    days = sorted((p for p in path.glob("day_*") if p.is_file()), key=_day_key)
    train = [p for p in (path / "train.txt", path / "train.txt.gz") if p.is_file()]
    if not (days or train):
        raise BenchError(f"{path} holds no day_* files and no train.txt")
    return days or train[:1]


class TruncatedGzip(BenchError):
    """A gzip stream that ends before its end marker; `line` is the first line not read
    whole."""

    def __init__(self, path: Path, line: int) -> None:
        super().__init__(f"{path}:{line}: the gzip stream ends early (truncated file)")
        self.path, self.line = path, line

    def __reduce__(self):  # rebuilt from (path, line) when the reader process sends it
        return TruncatedGzip, (self.path, self.line)


class _Truncated(Exception):
    """The gzip stream ended before its end marker."""


class _Carry:
    """The bytes read after the last newline (the start of a line), which go before the
    next bytes read."""

    def __init__(self) -> None:
        self.rest = np.zeros(0, dtype=np.uint8)

    def buffer(self, size: int) -> np.ndarray:
        """A new buffer: the carried bytes, then room for `size` more."""
        buf = np.empty(len(self.rest) + size, dtype=np.uint8)
        buf[: len(self.rest)] = self.rest
        return buf

    def join(self, chunk: bytes) -> np.ndarray:
        """The carried bytes, then `chunk`."""
        new = np.frombuffer(chunk, dtype=np.uint8)
        return np.concatenate((self.rest, new)) if len(self.rest) else new


def _raw_chunks(path: Path, size: int, carry: _Carry) -> Iterator[np.ndarray]:
    """The decompressed bytes of `path` (gzip, possibly multi-member, is detected by its
    magic bytes), each piece after `carry`'s bytes at the time it is read (a plain file is
    read straight into the buffer that holds them: one copy of its bytes, not two); a gzip
    stream that stops early raises `_Truncated` after yielding all it held."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head != _GZIP_MAGIC:
                while True:
                    buf = carry.buffer(size)
                    got = f.readinto(memoryview(buf)[len(carry.rest) :])
                    if not got:
                        return
                    yield buf[: len(buf) - size + got]
            for chunk in _gunzip(f, size, path):
                yield carry.join(chunk)
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _gunzip(f, size: int, path: Path) -> Iterator[bytes]:
    d = zlib.decompressobj(31)
    started = False
    while raw := f.read(size // 4):
        while raw:
            if d.eof:  # the next member of a multi-member file
                if not raw.strip(b"\0"):
                    break
                d, started = zlib.decompressobj(31), False
            try:
                out = d.decompress(raw, size)
            except zlib.error as exc:
                raise BenchError(f"{path}: not a valid gzip stream ({exc})") from None
            started = True
            raw = d.unconsumed_tail or (d.unused_data if d.eof else b"")
            if out:
                yield out
    if started and not d.eof:
        raise _Truncated


def read_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[np.ndarray, int]]:
    """(bytes of whole lines as uint8, number of their first line) through `path`; a last
    line without its newline gets one. A truncated gzip raises `TruncatedGzip` after the
    complete lines before it."""
    line, carry = 1, _Carry()
    try:
        for data in _raw_chunks(path, block_bytes, carry):
            cut = _last_newline(data) + 1
            if cut == 0:
                if len(data) > MAX_LINE_BYTES:
                    raise BenchError(f"{path}:{line}: a line longer than {MAX_LINE_BYTES} bytes")
                carry.rest = data
                continue
            block, carry.rest = data[:cut], data[cut:]
            yield block, line
            line += count_lines(block)
    except _Truncated:
        raise TruncatedGzip(path, line) from None
    if len(carry.rest):
        yield np.concatenate((carry.rest, np.array([_NL], dtype=np.uint8))), line


def _last_newline(data: np.ndarray) -> int:
    """The index of the last newline in `data` (-1: none), searched in windows from the end
    (a line is ~250 bytes: the first window of 4 KiB almost always holds it)."""
    end, width = len(data), 4096
    while end > 0:
        low = max(0, end - width)
        hits = np.flatnonzero(data[low:end] == _NL)
        if len(hits):
            return low + int(hits[-1])
        end, width = low, 2 * width
    return -1


def count_lines(block: np.ndarray) -> int:
    """The newlines in a uint8 block: in C where the parser is built (~3 ns per ~245-byte
    line on a 2-core EPYC VM, against ~58 for numpy's compare and count, which was a
    third of the reading thread's time per line), else numpy."""
    native = default_parser()
    if native.lib is not None and block.flags.c_contiguous:
        return native.count_lines(block)
    return int(np.count_nonzero(block == _NL))


# ---- parsing ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Parsed:
    """The good lines of one block, and where the bad ones are."""

    labels: np.ndarray  # (m,) uint8
    dense: np.ndarray  # (m, 13) int64, missing = 0
    ids: np.ndarray  # (m, 26) int64, missing = 0
    lines: int  # lines in the block, good and bad
    bad_lines: np.ndarray  # (k,) line numbers of the bad lines
    first_fields: int  # how many fields the block's first line has
    first_bad: str | None  # why the first bad line is bad


# Byte classes (bit 0: a decimal digit, bit 1: a hex digit); a field is valid when every
# byte of it has its class bit, checked 8 bytes at a time.
_CLASS = np.zeros(256, dtype=np.uint8)
_CLASS[list(b"0123456789")] = 3
_CLASS[list(b"abcdefABCDEF")] = 2
_DIGIT_BITS = np.uint64(0x0101010101010101)
_HEX_BITS = np.uint64(0x0202020202020202)
_LOW = np.uint64(0x0F0F0F0F0F0F0F0F)
_M16 = np.uint64(0x00FF00FF00FF00FF)
_M32 = np.uint64(0x0000FFFF0000FFFF)
# by byte count n (0..8): the word's first n bytes, and the shift moving them to its top
_FIRST = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)
_TO_TOP = np.array([0 if n == 0 else 8 * (8 - n) for n in range(9)], dtype=np.uint64)
_U = [np.uint64(k) for k in range(65)]


class _Words:
    """A block as overlapping little-endian 8-byte words, one starting at every byte, of
    its bytes and of its bytes' classes (padded, so a word may start at any byte)."""

    def __init__(self, block: np.ndarray) -> None:
        n = len(block)
        self._bytes = np.zeros(n + 16, dtype=np.uint8)
        self._bytes[:n] = block
        self._classes = np.zeros(n + 16, dtype=np.uint8)
        np.take(_CLASS, block, out=self._classes[:n])
        shape, strides = (n + 8,), (1,)
        self.bytes = np.ndarray(shape, "<u8", buffer=self._bytes, strides=strides)
        self.classes = np.ndarray(shape, "<u8", buffer=self._classes, strides=strides)

    def lacks(self, begins: np.ndarray, n: np.ndarray, bits: np.uint64) -> np.ndarray:
        """Whether any of the n (<= 8) bytes from each begin lacks the class `bits`."""
        return (~self.classes[begins] & _FIRST[n] & bits) != 0


def _first_to_top(words: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Each word's first n bytes moved to its top (the most significant end of a number
    written first), zeros below."""
    return (words & _FIRST[n]) << _TO_TOP[n]


def _eight_digits(words: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The decimal value of each word's first n (<= 8) digit bytes (SWAR: digit pairs,
    then pairs of pairs, then halves, one multiply each)."""
    v = _first_to_top(words & _LOW, n)
    v = (v * np.uint64(2561)) >> _U[8]  # 10 * first + second, in every 16-bit lane
    v = ((v & _M16) * np.uint64(6553601)) >> _U[16]  # 100 * first + second pair
    v = ((v & _M32) * np.uint64(42949672960001)) >> _U[32]  # 10^4 * first + second half
    return v.astype(np.int64)


def _parse_ints(words: _Words, begins, lengths) -> tuple[np.ndarray, np.ndarray]:
    """Decimal ints of the fields (empty: 0), and which are not ints of at most 16 digits."""
    neg = (lengths > 0) & ((words.bytes[begins] & np.uint64(0xFF)) == ord("-"))
    start = begins + neg
    n = lengths - neg
    low_n, high_n = np.minimum(n, 8), np.clip(n - 8, 0, 8)
    low_at = start + high_n
    bad = ((lengths > 0) & ((n == 0) | (n > 16))) | words.lacks(low_at, low_n, _DIGIT_BITS)
    value = _eight_digits(words.bytes[low_at], low_n)
    if (n > 8).any():  # rare: the leading digits of a long value
        bad |= words.lacks(start, high_n, _DIGIT_BITS)
        value += _eight_digits(words.bytes[start], high_n) * 10**8
    return np.where(neg, -value, value), bad


def _parse_hex(words: _Words, begins, lengths) -> tuple[np.ndarray, np.ndarray]:
    """Hex ids of up to 8 digits (empty: 0), and which are not. A byte's nibble is its
    low 4 bits, plus 9 for a letter (bit 6 set); nibbles then merge in pairs (SWAR)."""
    n = np.minimum(lengths, 8)
    bad = (lengths > 8) | words.lacks(begins, n, _HEX_BITS)
    w = words.bytes[begins]
    nib = _first_to_top((w & _LOW) + ((w >> _U[6]) & _DIGIT_BITS) * _U[9], n)
    v = ((nib & _M16) << _U[4]) | ((nib >> _U[8]) & _M16)  # the id's bytes
    v = ((v & _M32) << _U[8]) | ((v >> _U[16]) & _M32)  # its 16-bit halves
    v = ((v & np.uint64(0xFFFFFFFF)) << _U[16]) | (v >> _U[32])
    return v.astype(np.int64), bad


def _any_per_row(flags: np.ndarray) -> np.ndarray:
    """Whether each row of a C-ordered (m, 40) bool array has a True: its 40 bytes ORed as
    five words (7x faster than `any(axis=1)`, whose short rows make many small loops)."""
    words = flags.view(np.uint64)
    out = words[:, 0] | words[:, 1]
    for k in range(2, words.shape[1]):
        out |= words[:, k]
    return out != 0


def parse_block(block: np.ndarray, first_line: int) -> Parsed:
    """Parse a block of whole lines (each ending in a newline) with the compiled parser
    (`criteo_native.py`), or with numpy where it cannot be built; both give the same
    arrays, bad lines and reasons."""
    native = default_parser()
    if native.lib is None:
        return parse_block_numpy(block, first_line)
    raw = native.parse(block)
    first_bad = None
    if raw.bad_line >= 0:
        first_bad = _bad_reason(
            block,
            first_line + raw.bad_line,
            fields=raw.bad_fields,
            col=raw.bad_col,
            start=raw.bad_start,
            size=raw.bad_size,
        )
    return Parsed(
        labels=raw.labels,
        dense=raw.dense,
        ids=raw.ids,
        lines=raw.lines,
        bad_lines=raw.bad + first_line,
        first_fields=raw.first_fields,
        first_bad=first_bad,
    )


def parser_name() -> str:
    """The parser `parse_block` uses here: "c", or "numpy (why the C one is not built)"."""
    return default_parser().name


def parse_block_numpy(block: np.ndarray, first_line: int) -> Parsed:
    """Parse a block of whole lines (each ending in a newline) with numpy: the fallback
    where no C compiler works, and the reference the C parser is tested against."""
    seps = np.flatnonzero((block == _TAB) | (block == _NL))
    at = np.flatnonzero(block[seps] == _NL)  # each line's newline among the separators
    newlines = seps[at]
    fields = np.diff(at, prepend=-1)
    ok = fields == FIELDS
    ends = seps[at[ok, None] - FIELDS + 1 + np.arange(FIELDS)]
    starts = np.concatenate(([0], newlines[:-1] + 1))[ok]
    begins = np.concatenate((starts[:, None], ends[:, :-1] + 1), axis=1)
    lengths = ends - begins
    words = _Words(block)
    label_byte = block[begins[:, 0]]
    label_bad = (lengths[:, 0] != 1) | ((label_byte != ord("0")) & (label_byte != ord("1")))
    dense, dense_bad = _parse_ints(words, begins[:, 1 : 1 + DENSE], lengths[:, 1 : 1 + DENSE])
    ids, ids_bad = _parse_hex(words, begins[:, 1 + DENSE :], lengths[:, 1 + DENSE :])
    field_bad = np.concatenate((label_bad[:, None], dense_bad, ids_bad), axis=1)
    good_of_ok = ~_any_per_row(field_bad)
    good = ok.copy()
    good[ok] = good_of_ok
    numbers = first_line + np.arange(len(newlines))
    first_bad = None
    if not good.all():
        first_bad = _why(block, numbers, fields, ok, good, begins, lengths, field_bad)
    return Parsed(
        labels=(label_byte[good_of_ok] - ord("0")).astype(np.uint8),
        dense=dense[good_of_ok],
        ids=ids[good_of_ok],
        lines=len(newlines),
        bad_lines=numbers[~good],
        first_fields=int(fields[0]) if len(fields) else FIELDS,
        first_bad=first_bad,
    )


def _why(block, numbers, fields, ok, good, begins, lengths, field_bad) -> str:
    """'line N: reason' for the block's first bad line (Python work for one line)."""
    i = int(np.flatnonzero(~good)[0])
    if not ok[i]:
        return _bad_reason(block, int(numbers[i]), fields=int(fields[i]), col=-1, start=0, size=0)
    row = int(np.count_nonzero(ok[:i]))
    col = int(np.argmax(field_bad[row]))
    start, size = int(begins[row, col]), int(lengths[row, col])
    return _bad_reason(block, int(numbers[i]), fields=FIELDS, col=col, start=start, size=size)


def _bad_reason(block, number: int, *, fields: int, col: int, start: int, size: int) -> str:
    """'N: reason' for bad line N: its field count when it is not FIELDS (col -1), else its
    first bad field, column `col`, at block[start:start + size]."""
    if col < 0:
        return f"{number}: {fields} fields, expected {FIELDS} (label, I1-I13, C1-C26)"
    text = bytes(block[start : start + min(size, 24)]).decode("latin-1")
    text += "..." if size > 24 else ""
    kind = (
        "is not 0 or 1"
        if col == 0
        else "is not an integer"
        if col <= DENSE
        else "is not a hex id of up to 8 digits"
    )
    return f"{number}: {FIELD_NAMES[col]} {text!r} {kind}"


# ---- reading files as chunks of good lines ---------------------------------------------


@dataclass(frozen=True, eq=False)
class Chunk:
    labels: np.ndarray
    dense: np.ndarray
    ids: np.ndarray
    lines: int  # lines read, good and bad
    skipped: int  # bad lines among them
    features: object = None  # `iter_chunks(features=f)`: f(labels, dense, ids), or None


def parse_threads(threads: int | None) -> int:
    """Parse threads: `threads`, or by default one per core."""
    if threads is None:
        return os.cpu_count() or 1
    if threads < 1:
        raise BenchError(f"parse threads must be at least 1, got {threads}")
    return threads


def _file_blocks(files: Sequence[Path], block_bytes: int) -> Iterator[tuple]:
    """(path, block, first line) through every file in order; a truncated gzip file ends
    its blocks with (path, None, the TruncatedGzip) and reading goes on with the next."""
    for path in files:
        try:
            for block, first in read_blocks(path, block_bytes):
                yield path, block, first
        except TruncatedGzip as exc:
            yield path, None, exc


def _in_order(items: Iterable, work: Callable, threads: int) -> Iterator:
    """`work(item)` for each item, in the items' order, computed by `threads` threads
    while this one reads the next items. At most AHEAD_PER_THREAD x threads items are read
    and not yet handed on; an error reading items is raised after every result before it
    (as reading and working in turn would)."""
    if threads == 1:
        for item in items:
            yield work(item)
        return
    reader = iter(items)
    depth = AHEAD_PER_THREAD * threads
    pending: deque[Future] = deque()
    pool: ThreadPoolExecutor | None = None
    error: BaseException | None = None
    done = False
    try:
        while True:
            while not done and len(pending) < depth:
                try:
                    item = next(reader)
                except StopIteration:
                    done = True
                    break
                except Exception as exc:  # raised once the items before it are handed on
                    error, done = exc, True
                    break
                if pool is None:
                    pool = ThreadPoolExecutor(threads, thread_name_prefix="criteo-parse")
                pending.append(pool.submit(work, item))
            if not pending:
                break
            yield pending.popleft().result()
        if error is not None:
            raise error
    finally:
        for future in pending:
            future.cancel()
        if pool is not None:
            pool.shutdown(wait=True)
        if hasattr(reader, "close"):
            reader.close()


def _parse_item(item: tuple, features: Callable | None) -> tuple:
    """A parse thread's work: one block parsed (and its good lines' `features`)."""
    path, block, first = item
    if block is None:  # a truncated gzip file: `first` is its TruncatedGzip
        return path, first, None, None
    parsed = parse_block(block, first)
    extra = None
    if features is not None and len(parsed.labels):
        extra = features(parsed.labels, parsed.dense, parsed.ids)
    return path, parsed, first, extra


def iter_chunks(
    files: Sequence[Path],
    on_bad_line: str,
    block_bytes: int = BLOCK_BYTES,
    *,
    threads: int | None = None,
    features: Callable[[np.ndarray, np.ndarray, np.ndarray], object] | None = None,
) -> Iterator[Chunk]:
    """Each block of each file parsed, in file order; bad lines raise (`error`) or are
    dropped and counted (`skip`); a file in the test.txt layout is refused either way.
    `threads` threads parse blocks (default: one per core) while this one reads them;
    `features`, given, maps each block's good lines in the parse threads (Chunk.features;
    None for a block without good lines)."""
    default_parser()  # built (or found wanting) here, before parse threads need it
    work = lambda item: _parse_item(item, features)  # noqa: E731
    blocks = _file_blocks(files, block_bytes)
    with closing(_in_order(blocks, work, parse_threads(threads))) as parsed_blocks:
        for path, parsed, first, extra in parsed_blocks:
            if isinstance(parsed, TruncatedGzip):
                if on_bad_line == "error":
                    raise parsed
                empty = np.zeros((0, DENSE), dtype=np.int64)
                yield Chunk(np.zeros(0, np.uint8), empty, np.zeros((0, CATS), np.int64), 1, 1)
                continue
            if first == 1 and parsed.first_fields == TEST_FIELDS:
                raise BenchError(
                    f"{path} has {TEST_FIELDS} fields per line, the layout of Kaggle's "
                    "test.txt (no label): training needs labelled lines (label, I1-I13, "
                    "C1-C26)"
                )
            if parsed.first_bad is not None and on_bad_line == "error":
                raise BenchError(f"{path}:{parsed.first_bad} (--on-bad-line skip skips bad lines)")
            skipped = len(parsed.bad_lines)
            yield Chunk(parsed.labels, parsed.dense, parsed.ids, parsed.lines, skipped, extra)


# ---- first pass: validation, vocabulary, dense minimum ---------------------------------


class _VocabCounter:
    """Per-table id counts over chunks, merged every few chunks to bound memory."""

    def __init__(self) -> None:
        self._parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(CATS)]

    def add(self, ids: np.ndarray) -> None:
        for t in range(CATS):
            self._parts[t].append(np.unique(ids[:, t], return_counts=True))
            if len(self._parts[t]) >= 16:
                self._parts[t] = [self._merge(t)]

    def _merge(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        keys = np.concatenate([k for k, _ in self._parts[t]])
        counts = np.concatenate([c for _, c in self._parts[t]])
        uniq, inverse = np.unique(keys, return_inverse=True)
        return uniq, np.bincount(inverse, weights=counts).astype(np.int64)

    def vocab(self) -> Vocab:
        keys, ranks = [], []
        for t in range(CATS):
            uniq, counts = self._merge(t) if self._parts[t] else (np.zeros(0, np.int64),) * 2
            order = np.lexsort((uniq, -counts))  # most frequent first, ties by id
            rank = np.empty(len(uniq), dtype=np.int64)
            rank[order] = np.arange(len(uniq))
            keys.append(uniq)
            ranks.append(rank)
        return Vocab(tuple(keys), tuple(ranks))


@dataclass(frozen=True, eq=False)
class Vocab:
    """Per table: the ids seen (sorted) and each one's frequency rank (0 = most frequent)."""

    keys: tuple[np.ndarray, ...]
    ranks: tuple[np.ndarray, ...]

    def rank(self, t: int, ids: np.ndarray) -> np.ndarray:
        """Ranks of `ids` in table t; an id never seen ranks after every seen one."""
        keys = self.keys[t]
        if len(keys) == 0:
            return np.zeros(len(ids), dtype=np.int64)
        at = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
        return np.where(keys[at] == ids, self.ranks[t][at], len(keys) + ids)


@dataclass(frozen=True, eq=False)
class CriteoData:
    """The files of a run and what the first pass over them established."""

    config: DataConfig
    files: tuple[Path, ...]
    lines_scanned: int  # lines the pass read, good and bad
    good_lines: int
    bad_lines: int
    complete: bool  # the pass read every file to its end
    dense_min: int  # smallest dense value (missing = 0) of the lines read
    vocab: Vocab | None

    def describe(self) -> dict:
        """The pass's facts for a record, and the parser (`parser_name`)."""
        return {
            "files": [str(p) for p in self.files],
            "scan_lines": self.lines_scanned,
            "scan_bad_lines": self.bad_lines,
            "scan_complete": self.complete,
            "dense_min": self.dense_min if self.config.dense_transform == "torchrec" else None,
            "parser": parser_name(),
        }


def scan(
    config: DataConfig,
    *,
    need_lines: int | None,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> CriteoData:
    """Read the data until `need_lines` good lines (None: to the end), validating every
    line read; build the vocabulary (`vocab`) and the dense minimum on the way. `threads`
    parse threads (default: one per core)."""
    files = data_files(config.paths)
    counter = _VocabCounter() if config.categorical == "vocab" else None
    lines = good = bad = 0
    low = 0
    complete = True
    for chunk in iter_chunks(files, config.on_bad_line, threads=threads):
        lines, good, bad = lines + chunk.lines, good + len(chunk.labels), bad + chunk.skipped
        if len(chunk.labels):
            low = min(low, int(chunk.dense.min()))
        if counter is not None:
            counter.add(chunk.ids)
        if progress is not None:
            progress(lines)
        if need_lines is not None and good >= need_lines:
            complete = False
            break
    return CriteoData(
        config=config,
        files=files,
        lines_scanned=lines,
        good_lines=good,
        bad_lines=bad,
        complete=complete,
        dense_min=low,
        vocab=counter.vocab() if counter is not None else None,
    )


def _check_shape(config: RunConfig, workload: Workload, pooling: int) -> None:
    """Criteo lines feed a model of 26 one-hot tables and 13 dense features."""
    if (workload.num_tables, workload.dense_features) != (CATS, DENSE):
        raise BenchError(
            "--data criteo needs a Criteo-shaped workload (26 tables, 13 dense features, "
            f"e.g. criteo-kaggle); {workload.name!r} has {workload.num_tables} tables and "
            f"{workload.dense_features} dense features"
        )
    if pooling != 1:
        raise BenchError(
            f"--data criteo has one id per table per example: --pooling 1, not {pooling}"
        )
    if config.distribution != "uniform":
        raise BenchError("--distribution draws synthetic rows; --data reads them: give one")


def plan_data(
    config: RunConfig,
    workload: Workload,
    *,
    batch_size: int,
    pooling: int,
    reuse: CriteoData | None = None,
) -> CriteoData | None:
    """The first pass over a run's data files (None for synthetic data). It validates
    every line the run reads (its batches and the one batch of look-ahead; all lines when
    the vocabulary or the dense minimum needs them), so a bad line stops the run before it
    starts. `reuse`, a pass over the same files that covers this run, is kept. It parses
    with the run's host threads (`--host-threads`, default one per core)."""
    if config.data is None:
        return None
    _check_shape(config, workload, pooling)
    cfg = config.data
    full = cfg.categorical == "vocab" or cfg.dense_transform == "torchrec"
    need = None if full else (config.total_steps + 1) * batch_size
    covers = reuse is not None and reuse.config == cfg
    if covers and (reuse.complete or (need is not None and reuse.good_lines >= need)):
        data = reuse
    else:
        data = scan(cfg, need_lines=need, threads=config.host_threads)
    if data.good_lines < batch_size:
        raise BenchError(
            f"{', '.join(map(str, data.files))}: {data.good_lines} usable line(s), fewer than "
            f"one batch of {batch_size}"
        )
    return data


# ---- features: dense transform and row mapping ------------------------------------------


def transform_dense(raw: np.ndarray, mode: str, dense_min: int) -> np.ndarray:
    """float32 dense features from raw ints (missing already 0)."""
    x = raw.astype(np.float64)
    if mode == "dlrm":
        return np.log1p(np.maximum(x, 0.0)).astype(np.float32)
    return np.log(x - dense_min + 2.0).astype(np.float32)


def map_rows(
    ids: np.ndarray, table_rows: np.ndarray, offsets: np.ndarray, vocab: Vocab | None
) -> np.ndarray:
    """Global rows of the fused table: each table's offset plus the id's local row (ids
    are a parse's, never negative). The hash mapping runs in C where the parser is built
    (one pass; numpy's int64 modulo and add took ~115 ns per line on a 2-core EPYC VM)."""
    if vocab is None:
        native = default_parser()
        if native.lib is not None:
            return native.hash_rows(ids, table_rows, offsets)
        local = ids % table_rows
    else:
        local = np.stack([vocab.rank(t, ids[:, t]) for t in range(CATS)], axis=1) % table_rows
    return local + offsets


# ---- the batch source --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _HostBatch:
    dense: torch.Tensor  # (B, 13) float32
    labels: torch.Tensor  # (B,) float32
    rows: torch.Tensor  # (B, 26) int64
    skipped: int  # bad lines skipped since the previous batch
    passes: int  # completed passes over the data before this batch's last line


@dataclass(frozen=True, eq=False)
class _Failure:
    error: BaseException


@dataclass
class ReaderStats:
    """What the background reader did (it keeps one queue of batches ahead)."""

    lines: int = 0
    busy_s: float = 0.0
    batches: int = 0


def queue_batches(batch_size: int) -> int:
    """Batches the reader keeps ready (its queue, or its process's ring of slots)."""
    return min(MAX_QUEUE_BATCHES, max(4, -(-QUEUE_LINES // batch_size)))


class _Producer:
    """Runs in the reader thread: chunks -> transformed, mapped batches on the queue. The
    reader thread reads (and decompresses) blocks; `threads` parse threads parse them and
    compute their features; the reader cuts the results, in file order, into batches.

    It fills the queue, then rests until the trainer has taken half of it (`refill`), so
    its parsing comes in a few bursts instead of competing with every step."""

    def __init__(
        self, data: CriteoData, table_rows, batch_size: int, pin: bool, threads: int
    ) -> None:
        rows = np.asarray(table_rows, dtype=np.int64)
        self.data, self.batch_size, self.pin, self.threads = data, batch_size, pin, threads
        self.rows, self.offsets = rows, np.cumsum(rows) - rows
        self.block_bytes = SOURCE_BLOCK_BYTES
        size = queue_batches(batch_size)
        self.out: queue.Queue = queue.Queue(maxsize=size)
        self.low = size // 2  # the trainer wakes the reader when the queue is this short
        self.stop = threading.Event()
        self.refill = threading.Event()
        self.full = threading.Event()  # the queue filled up once (the source's prefill)
        self.resting = False
        self.stats = ReaderStats()

    def run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # handed to the consumer, raised where it reads
            self._put(_Failure(exc))

    def _put(self, item) -> bool:
        """Queue `item`; once the queue is full, rest until the trainer has taken it down
        to `low` (False: stopped)."""
        while not self.stop.is_set():
            if self.resting and self.out.qsize() > self.low:
                self.refill.wait(timeout=0.1)
                continue
            self.resting = False
            try:
                self.out.put_nowait(item)
                return True
            except queue.Full:
                self.resting = True
                self.refill.clear()
                self.full.set()
        return False

    def _features(self, labels, dense, ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A block's good lines as model inputs (runs in the parse threads)."""
        cfg = self.data.config
        dense = transform_dense(dense, cfg.dense_transform, self.data.dense_min)
        rows = map_rows(ids, self.rows, self.offsets, self.data.vocab)
        return dense, labels.astype(np.float32), rows

    def _timed_chunks(self) -> Iterator[Chunk]:
        """One pass's chunks, the reader's busy time (parse included) counted."""
        chunks = iter_chunks(
            self.data.files,
            self.data.config.on_bad_line,
            self.block_bytes,
            threads=self.threads,
            features=self._features,
        )
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            self.stats.busy_s += time.perf_counter() - t0
            if chunk is None:
                return
            yield chunk

    def _cut(self, pending: tuple | None, parts: tuple) -> tuple[list[tuple], tuple]:
        """The whole batches of `pending` lines followed by `parts`, and the lines left
        over. A batch is a tuple (one per part) of the pieces that hold its lines in order:
        one view of `parts`, or, for the batch that spans both, a piece of each. Nothing is
        copied here (concatenating whole blocks cost the reading thread a copy of every
        line; joining the spanning batch, a fresh allocation per block): a batch's pieces
        are copied once, where it is put (`_host_batch`, or a slot of the reader process's
        ring)."""
        b = self.batch_size
        batches, start = [], 0
        if pending is not None and len(pending[0]):
            start = b - len(pending[0])
            if len(parts[0]) < start:
                return [], tuple(np.concatenate(p) for p in zip(pending, parts, strict=True))
            batches.append(tuple((q, p[:start]) for q, p in zip(pending, parts, strict=True)))
        whole = start + (len(parts[0]) - start) // b * b
        batches += [tuple((p[i : i + b],) for p in parts) for i in range(start, whole, b)]
        return batches, tuple(p[whole:] for p in parts)

    def _produce(self) -> None:
        pending: tuple | None = None
        skipped = passes = 0
        while not self.stop.is_set():
            produced = False
            for chunk in self._timed_chunks():
                t0 = time.perf_counter()
                skipped += chunk.skipped
                parts = chunk.features or self._features(chunk.labels, chunk.dense, chunk.ids)
                arrays, pending = self._cut(pending, parts)
                batches = [
                    self._host_batch(a, skipped if i == 0 else 0, passes)
                    for i, a in enumerate(arrays)
                ]
                if batches:
                    skipped = 0
                self.stats.lines += chunk.lines
                self.stats.busy_s += time.perf_counter() - t0
                produced |= bool(batches)
                for batch in batches:
                    if not self._put(batch):
                        return
            if not produced:
                raise BenchError("the data holds fewer usable lines than one batch")
            passes += 1

    def _host_batch(self, pieces: tuple, skipped: int, passes: int) -> _HostBatch:
        dense, labels, rows = (
            torch.from_numpy(np.concatenate(p) if len(p) > 1 else np.ascontiguousarray(p[0]))
            for p in pieces
        )
        if self.pin:
            dense, labels, rows = dense.pin_memory(), labels.pin_memory(), rows.pin_memory()
        self.stats.batches += 1
        return _HostBatch(dense, labels, rows, skipped, passes)


@dataclass
class _Counts:
    lines: int = 0
    skipped: int = 0
    passes: int = 0
    wait_s: float = 0.0
    prefill_s: float = 0.0


def reader_mode(reader: str, devices: Sequence[torch.device], batch_size: int) -> tuple[str, str]:
    """(`thread` or `process`, why) for `reader`: `auto` is `process` when batches go to a
    CUDA device (a thread that launches sub-millisecond GPU steps must not share the GIL
    with parse threads) and `thread` otherwise (CPU steps compete with the parse for cores
    either way, and a child's start, importing torch, would dominate a small run); a
    /dev/shm too small for the ring (or a daemonic process) falls back to threads."""
    if reader not in DATA_READERS:
        raise BenchError(f"reader must be one of {', '.join(DATA_READERS)}, got {reader!r}")
    if reader == "thread" or (reader == "auto" and all(d.type != "cuda" for d in devices)):
        return "thread", "asked" if reader == "thread" else "no CUDA device"
    from lazydp_bench.data.criteo_process import ring_bytes, shm_shortfall

    short = shm_shortfall(ring_bytes(batch_size))
    if multiprocessing.current_process().daemon:
        short = "a daemonic process cannot start a reader process"
    if short is None:
        return "process", "asked" if reader == "process" else "batches go to a CUDA device"
    if reader == "process":
        raise BenchError(f"the reader process cannot start: {short}")
    return "thread", short


class CriteoBatchSource:
    """Batches of Criteo lines in file order, with one batch of look-ahead (`peek`) like
    `SyntheticBatchSource`. A reader works ahead into a bounded queue, with `threads`
    parse threads (default: one per core): in a background thread of this process
    (`reader="thread"`) or in a child process that hands batches over through shared
    memory (`"process"`, `data/criteo_process.py`; `"auto"`: see `reader_mode`). Both give
    the same batches in the same order. The data wraps around to its first line when a
    run needs more than it holds."""

    def __init__(
        self,
        data: CriteoData,
        table_rows: tuple[int, ...],
        *,
        batch_size: int,
        table_device: torch.device,
        mlp_device: torch.device,
        dtype: torch.dtype,
        threads: int | None = None,
        reader: str = "auto",
    ) -> None:
        pin = torch.cuda.is_available() and "cuda" in (table_device.type, mlp_device.type)
        threads = parse_threads(threads)
        mode, self._reader_why = reader_mode(reader, (table_device, mlp_device), batch_size)
        self._data = data
        self._table_device, self._mlp_device, self._dtype = table_device, mlp_device, dtype
        self._counts = _Counts()
        self._producer: _Producer | None = None
        self._thread: threading.Thread | None = None
        self._process = None
        t0 = time.perf_counter()
        if mode == "process":
            self._start_process(table_rows, batch_size, pin, threads)
        else:
            t0 = self._start_thread(table_rows, batch_size, pin, threads)
        self._next = self._take()
        self._counts.prefill_s, self._counts.wait_s = time.perf_counter() - t0, 0.0

    def _start_thread(self, table_rows, batch_size: int, pin: bool, threads: int) -> float:
        """Start the reader thread; wait for its queue's first fill (from the returned
        time)."""
        self._producer = _Producer(self._data, table_rows, batch_size, pin, threads)
        thread = threading.Thread(target=self._producer.run, name="criteo-reader", daemon=True)
        thread.start()
        self._thread = thread
        weakref.finalize(self, self._producer.stop.set)
        t0 = time.perf_counter()
        while not self._producer.full.wait(timeout=0.05) and thread.is_alive():
            pass  # the queue fills before training starts (a failure ends the thread)
        return t0

    def _start_process(self, table_rows, batch_size: int, pin: bool, threads: int) -> None:
        """Start the reader process; wait for its ring's first fill."""
        from lazydp_bench.data.criteo_process import ProcessReader

        self._process = ProcessReader(
            self._data,
            table_rows,
            batch_size=batch_size,
            threads=threads,
            pin=pin,
            block_bytes=SOURCE_BLOCK_BYTES,
        )
        self._process.prefill()

    def _get(self) -> _HostBatch | _Failure | tuple:
        """The reader's next item (the process reader's: its message, unpacked later)."""
        if self._process is not None:
            return self._process.receive()
        item = self._producer.out.get()
        if self._producer.out.qsize() <= self._producer.low:
            self._producer.refill.set()
        return item

    def _take(self) -> Batch:
        t0 = time.perf_counter()
        item = self._get()
        self._counts.wait_s += time.perf_counter() - t0
        if self._process is not None:
            item = self._process.unpack(item)
        if isinstance(item, _Failure):
            raise item.error
        self._counts.skipped += item.skipped
        self._counts.passes = item.passes
        self._counts.lines += len(item.labels) + item.skipped
        return Batch(
            dense=item.dense.to(self._mlp_device, self._dtype, non_blocking=True),
            labels=item.labels.to(self._mlp_device, self._dtype, non_blocking=True),
            rows=item.rows.to(self._table_device, non_blocking=True).unsqueeze(-1),
        )

    def peek(self) -> Batch:
        """The batch the next `advance()` will return (LazyDP's input queue)."""
        return self._next

    def advance(self) -> Batch:
        """Return the next batch and take the one after it from the reader."""
        current, self._next = self._next, self._take()
        return current

    def close(self) -> None:
        """Stop the reader and wait for it (it also stops when the source is collected);
        a reader process is joined and its shared memory freed."""
        if self._process is not None:
            self._process.close()
            return
        self._producer.stop.set()
        self._thread.join(timeout=10)

    def stats(self) -> dict:
        """The record's `data` section: lines taken (the look-ahead batch included), bad
        lines skipped among them, passes over the data, the reader's parse rate, the time
        the trainer waited for it in steps, and the queue's first fill (before steps; a
        reader process's start included, and also given alone), and where the reader ran
        (`thread` or `process`) and why."""
        process = self._process
        reader = process.stats if process is not None else self._producer.stats
        return {
            **self._data.describe(),
            "reader": "thread" if process is None else "process",
            "reader_why": self._reader_why,
            "reader_start_s": None if process is None else process.start_s,
            "lines_used": self._counts.lines,
            "skipped_lines": self._counts.skipped,
            "passes": self._counts.passes,
            "reader_lines_per_s": reader.lines / reader.busy_s if reader.busy_s > 0 else None,
            "reader_wait_s": self._counts.wait_s,
            "reader_prefill_s": self._counts.prefill_s,
        }
