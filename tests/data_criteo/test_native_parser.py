"""The compiled Criteo parser against the numpy parser (the reference): the same arrays
(values, dtypes, shapes), bad-line numbers, first-line field count and first bad line's
reason on generated files, hand-written lines of every bad kind, random corruptions and
blocks cut anywhere; its hash mapping and line count against numpy's; and the numpy
fallback, named in the records and by `data speed`, where no compiler works."""

from __future__ import annotations

import platform
import re
import subprocess
import sys

import numpy as np
import pytest

from lazydp_bench.data import criteo, criteo_native
from lazydp_bench.data.criteo import iter_chunks, parse_block, parse_block_numpy, scan
from lazydp_bench.data.criteo_gen import GenSpec, make_criteo
from lazydp_bench.native import find_compiler
from tests.conftest import cli
from tests.data_criteo.helpers import config, line, varied, write

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="needs a C compiler")

GOOD = [
    line("1", ["5", "-2", "", "0", "12345678901", "-0", "007"], ["0000000a", "DEADBEEF", "", "aB"]),
    line("0", ["9999999999999999", "-9999999999999999"], ["ffffffff", "00000000", "1", "F"]),
    line("1", ["1234567890123456", "-12345678"], ["12345678", "9abcdef0", "ABCDEF01"]),
]
BAD = [
    "\n",  # an empty line: 1 field
    "0\t1\n",
    line("0")[:-1] + "\t\n",  # 41 fields
    line("0").replace("\t", "", 1),  # 39 fields
    line("2"),
    line(""),
    line("00"),
    line("a"),
    line("-"),
    line("0", ["1.5"]),
    line("0", ["-"]),
    line("0", ["--1"]),
    line("0", ["1-"]),
    line("0", ["+1"]),
    line("0", [" 1"]),
    line("0", ["0x1"]),
    line("0", ["12345678901234567"]),  # 17 digits
    line("0", ["", "-12345678901234567"]),
    line("0", ["", "", "123456789012345678901234567890"]),  # shown cut at 24 bytes
    line("0", [], ["g"]),
    line("0", [], ["", "123456789"]),
    line("0", [], ["-1"]),
    line("0", [], [" "]),
    line("0", [], ["0x12"]),
    line("0", [], ["", "", "\xff"]),
    line("0", [], ["\x00"]),
    line("1", ["3"], ["abc"]).replace("\n", "\r\n"),  # CRLF: C26 ends in \r
    line("1").replace("\n", "\r\n"),  # an empty C26 then \r
]


def assert_same(block: np.ndarray, first: int) -> criteo.Parsed:
    """Both parsers on one block: every output equal, bit for bit; the C parse returned."""
    c, ref = parse_block(block, first), parse_block_numpy(block, first)
    for field in ("labels", "dense", "ids", "bad_lines"):
        got, want = getattr(c, field), getattr(ref, field)
        assert got.dtype == want.dtype and got.shape == want.shape, field
        assert np.array_equal(got, want), field
    assert (c.lines, c.first_fields, c.first_bad) == (ref.lines, ref.first_fields, ref.first_bad)
    return c


def as_block(text: str | bytes) -> np.ndarray:
    data = text.encode("latin-1") if isinstance(text, str) else text
    return np.frombuffer(data, dtype=np.uint8)


@pytest.fixture(autouse=True)
def compiled():
    assert criteo_native.default_parser().lib is not None, criteo_native.default_parser().reason


def test_good_lines_parse_like_numpy_with_empties_hex_case_and_negatives():
    parsed = assert_same(as_block("".join(GOOD)), 7)
    assert parsed.first_bad is None and parsed.lines == 3 and len(parsed.labels) == 3
    assert parsed.dense[0, :7].tolist() == [5, -2, 0, 0, 12345678901, 0, 7]
    assert parsed.dense[1, :2].tolist() == [9999999999999999, -9999999999999999]
    assert parsed.ids[0, :4].tolist() == [10, 0xDEADBEEF, 0, 0xAB]


@pytest.mark.parametrize("bad", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_each_bad_line_kind_gives_numpys_lines_and_reason(bad):
    """Each bad line alone, after good lines and between them, and as the first line (its
    field count is the block's first_fields)."""
    for lines in ([bad], [GOOD[0], bad], [GOOD[1], bad, GOOD[2], bad]):
        parsed = assert_same(as_block("".join(lines)), 41)
        assert parsed.first_bad is not None and parsed.first_bad.startswith(
            f"{41 + lines.index(bad)}: "
        )


def test_a_mix_of_every_bad_kind_gives_numpys_bad_line_numbers():
    rng = np.random.default_rng(5)
    lines = GOOD * 20 + BAD * 3
    order = rng.permutation(len(lines))
    parsed = assert_same(as_block("".join(lines[i] for i in order)), 1)
    assert len(parsed.bad_lines) == 3 * len(BAD)


def test_a_block_of_mostly_short_bad_lines():
    parsed = assert_same(as_block("\n" * 5000 + "".join(GOOD) + "1\t\n" * 3000), 1)
    assert len(parsed.bad_lines) == 8000 and len(parsed.labels) == 3


def test_random_corruptions_give_numpys_results():
    """Lines with bytes replaced, inserted or deleted from an alphabet of separators,
    digits, hex letters, signs and other bytes, in blocks of 40 lines."""
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b"\t\n\r-+ 0123456789abcdefABCDEFgxG.\x00\xff", dtype=np.uint8)
    base = [np.frombuffer(x.encode(), dtype=np.uint8) for x in varied(40) + GOOD]
    for _ in range(150):
        lines = []
        for i in rng.integers(0, len(base), 40):
            b = base[i].copy()
            for _ in range(rng.integers(0, 3)):
                at, byte = int(rng.integers(0, len(b))), rng.choice(alphabet)
                b = [
                    np.concatenate((b[:at], [byte], b[at + 1 :])),
                    np.concatenate((b[:at], [byte], b[at:])),
                    np.concatenate((b[:at], b[at + 1 :])),
                ][rng.integers(0, 3)].astype(np.uint8)
            lines.append(b)
        assert_same(np.concatenate(lines), int(rng.integers(1, 10**9)))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("native") / "train.txt"
    make_criteo(path, GenSpec(lines=4000, seed=9))
    return path


def test_generated_file_in_blocks_cut_anywhere(generated):
    """Blocks of the generated file cut at random bytes (mid-line: the bytes after a
    block's last newline are not parsed by either), and each parsed as a whole."""
    data = np.fromfile(generated, dtype=np.uint8)
    whole = assert_same(data, 1)
    assert whole.lines == 4000 and whole.first_bad is None
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.integers(0, len(data), 40))
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(data)], strict=True):
        assert_same(data[lo:hi], int(lo))


def test_reading_the_generated_file_gives_numpys_chunks(generated, monkeypatch):
    def chunks(threads):
        out = list(iter_chunks([generated], "error", 64 * 1024 + 13, threads=threads))
        return [(c.labels, c.dense, c.ids, c.lines, c.skipped) for c in out]

    c1, c2 = chunks(1), chunks(2)
    monkeypatch.setattr(criteo, "parse_block", parse_block_numpy)
    ref = chunks(1)
    for got in (c1, c2):
        assert len(got) == len(ref) > 10
        for a, b in zip(got, ref, strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(a[:3], b[:3], strict=True))
            assert a[3:] == b[3:]


def test_hash_rows_and_line_count_match_numpy():
    native = criteo_native.default_parser()
    rng = np.random.default_rng(2)
    for high in (2**32, 2**40):  # ids of 8 hex digits, and larger
        ids = rng.integers(0, high, (3000, 26))
        ids[:3], ids[3:6] = high - 1, 0
        for rows in (
            rng.integers(1, 2**32, 26),
            np.array([1, 2, 3, 2**32 - 1, 2**32, 2**33 + 7] + [10_000_019] * 20),
        ):
            offsets = np.cumsum(rows) - rows
            got = criteo.map_rows(ids, rows, offsets, None)
            assert got.dtype == np.int64 and np.array_equal(got, ids % rows + offsets)
    data = as_block("".join(BAD) + "x\ny")
    assert native.count_lines(data) == len(BAD) + 1
    noise = rng.choice(np.array([9, 10, 48, 255], dtype=np.uint8), 100_003)
    for n in (0, 1, 31, 64, 100_003):
        assert native.count_lines(noise[:n]) == int(np.count_nonzero(noise[:n] == 10))


def _no_compiler(monkeypatch, tmp_path, cc: str | None):
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcc or cc there
    if cc is None:
        monkeypatch.delenv("CC", raising=False)
    else:
        monkeypatch.setenv("CC", cc)


@pytest.mark.parametrize("cc", [None, "/nonexistent/cc"])
def test_without_a_compiler_numpy_reads_the_same_and_says_why(tmp_path, monkeypatch, cc):
    lines = varied(300, bad={7: line("0", ["x"]), 9: "1\t2\n"})
    path = write(tmp_path / "train.txt", lines)
    compiled = [(c.labels, c.dense, c.ids, c.lines, c.skipped) for c in iter_chunks([path], "skip")]
    data = scan(config(path, on_bad_line="skip"), need_lines=None)
    assert data.describe()["parser"] == "c"
    _no_compiler(monkeypatch, tmp_path, cc)
    parser = criteo_native.default_parser()
    assert parser.lib is None
    why = "no C compiler ($CC, gcc or cc) found" if cc is None else f"building with {cc} failed"
    assert why in parser.reason
    assert criteo.parser_name() == f"numpy (C parser unavailable: {parser.reason})"
    fallback = [(c.labels, c.dense, c.ids, c.lines, c.skipped) for c in iter_chunks([path], "skip")]
    assert len(fallback) == len(compiled)
    for a, b in zip(fallback, compiled, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a[:3], b[:3], strict=True))
        assert a[3:] == b[3:] == (300, 2)
    assert scan(config(path, on_bad_line="skip"), need_lines=None).describe()["parser"] == (
        criteo.parser_name()
    )
    with pytest.raises(criteo.BenchError, match=r"train.txt:7: I1 'x' is not an integer"):
        scan(config(path), need_lines=None)


def test_data_speed_names_the_parser(tmp_path, monkeypatch):
    path = write(tmp_path / "t.txt", varied(500))
    res = cli("data", "speed", str(path), "--batch-size", "64", "--threads", "1")
    assert res.returncode == 0, res.stderr
    assert re.search(r"^parser: c$", res.stdout, re.M), res.stdout
    _no_compiler(monkeypatch, tmp_path, None)  # the CLI's process inherits the environment
    res = cli("data", "speed", str(path), "--batch-size", "64", "--threads", "1")
    assert res.returncode == 0, res.stderr
    want = r"^parser: numpy \(C parser unavailable: no C compiler \(\$CC, gcc or cc\) found\)$"
    assert re.search(want, res.stdout, re.M), res.stdout


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_the_reader_process_keeps_freed_memory_for_its_blocks():
    """The reader process's malloc setting (run in a fresh interpreter: it is per process)
    is accepted by glibc: blocks of 2-10 MiB then reuse freed heap memory, so a second
    allocation of a block-sized array faults in no new pages."""
    code = (
        "import resource, numpy as np\n"
        "from lazydp_bench.data.criteo_process import _keep_freed_memory\n"
        "assert _keep_freed_memory()\n"
        "np.ones(8 * 2**20 // 8)\n"  # touched, then freed
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "np.ones(8 * 2**20 // 8)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) < 100  # 0 here; ~500 with glibc's defaults (a fresh mapping)
