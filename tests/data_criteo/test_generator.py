"""The Criteo generator: the exact format, a round trip through the reader, id statistics
that follow the Zipf law it samples, seeded bytes, and an all-or-nothing write."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest

from lazydp_bench.data import criteo_gen as gen
from lazydp_bench.data.criteo import parse_block, scan
from lazydp_bench.data.criteo_gen import GenSpec, make_criteo
from lazydp_bench.errors import BenchError
from tests.data_criteo.helpers import config

LINE = re.compile(r"[01](\t-?\d*){13}(\t(?:[0-9a-f]{8})?){26}")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """20,000 generated lines, as text and as the reader parses them."""
    path = tmp_path_factory.mktemp("gen") / "train.txt"
    summary = make_criteo(path, GenSpec(lines=20_000, seed=3))
    return path, summary, path.read_text()


def test_every_line_has_the_exact_criteo_format(sample):
    _, summary, text = sample
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 20_001  # newline-terminated
    assert all(LINE.fullmatch(x) for x in lines[:-1])
    fields = np.array([x.split("\t") for x in lines[:-1]])
    dense, cats = fields[:, 1:14], fields[:, 14:]
    assert (dense == "").mean(axis=0)[0] == pytest.approx(0.45, abs=0.02)  # I1 often empty
    assert (cats == "").mean(axis=0)[21] == pytest.approx(0.76, abs=0.02)  # C22 mostly empty
    assert (np.char.startswith(dense[:, 1], "-")).mean() == pytest.approx(0.08, abs=0.01)
    assert 0.22 < summary.label_rate < 0.30  # Criteo's ~25 % clicks


def test_the_reader_reads_what_the_generator_writes(sample):
    path, summary, text = sample
    data = scan(config(path), need_lines=None)
    assert (data.good_lines, data.bad_lines) == (20_000, 0)
    block = np.frombuffer(text.encode(), dtype=np.uint8)
    parsed = parse_block(block, 1)
    fields = [x.split("\t") for x in text.splitlines()]
    assert parsed.labels.tolist() == [int(f[0]) for f in fields]
    assert parsed.dense.tolist() == [[int(v or 0) for v in f[1:14]] for f in fields]
    assert parsed.ids.tolist() == [[int(v or "0", 16) for v in f[14:]] for f in fields]
    assert int(parsed.labels.sum()) == summary.clicks


@pytest.mark.parametrize("alpha", [0.6, 1.05])
def test_id_frequencies_follow_the_zipf_law(tmp_path, alpha):
    """Each of a table's 10 likeliest ranks appears within 4 binomial standard errors of
    its probability, and the exponent fitted to the top 20 ranks is within 0.1 of alpha."""
    path = tmp_path / "z.txt"
    make_criteo(path, GenSpec(lines=30_000, seed=11, alpha=alpha))
    parsed = parse_block(np.fromfile(path, dtype=np.uint8), 1)
    text_ids = np.array([x.split("\t")[14:] for x in path.read_text().splitlines()])
    for table in (0, 1, 6):  # C1 (1460 rows), C2 (583), C7 (12517)
        present = text_ids[:, table] != ""
        ranks = gen.id_ranks(table, parsed.ids[present, table])
        n = len(ranks)
        rows = gen.KAGGLE_ROWS[table]
        assert ranks.max() < rows
        freq = np.bincount(ranks.astype(np.int64), minlength=rows) / n
        p = gen.zipf_probabilities(rows, alpha, 20)
        err = np.sqrt(p * (1 - p) / n)
        assert np.all(np.abs(freq[:10] - p[:10]) < 4 * err[:10]), (table, freq[:10], p[:10])
        k = np.arange(20)
        slope = np.polyfit(np.log(k + 1.5), np.log(np.maximum(freq[:20], 1e-9)), 1)[0]
        assert -slope == pytest.approx(alpha, abs=0.1), table


def test_same_seed_same_bytes_and_gzip_holds_the_same_lines(tmp_path):
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt.gz"
    make_criteo(a, GenSpec(lines=3000, seed=5))
    make_criteo(b, GenSpec(lines=3000, seed=6))
    make_criteo(c, GenSpec(lines=3000, seed=5, gzip=True))
    assert a.read_bytes() != b.read_bytes()
    assert gzip.decompress(c.read_bytes()) == a.read_bytes()
    again = tmp_path / "again.txt"
    make_criteo(again, GenSpec(lines=3000, seed=5))
    assert again.read_bytes() == a.read_bytes()


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    out = tmp_path / "train.txt"
    out.write_text("the previous file\n")

    def crash(done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_criteo(out, GenSpec(lines=gen.CHUNK_LINES + 10), crash)
    assert out.read_text() == "the previous file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["train.txt"]  # no temporary file


def test_encoding_matches_python_formatting():
    rng = np.random.default_rng(0)
    n = 500
    dense = rng.integers(-3, 2**31 - 1, (n, 13)) // rng.integers(1, 10**9, (n, 13))
    dense[:5, 0] = [0, -1, 99_999, 100_000, 2**31 - 1]
    dense_missing = rng.random((n, 13)) < 0.3
    ids = rng.integers(0, 2**32, (n, 26))
    cat_missing = rng.random((n, 26)) < 0.3
    labels = rng.integers(0, 2, n)
    text = gen.encode_lines(
        gen.TextTables.build(), labels, dense, dense_missing, ids, cat_missing
    ).decode()
    want = "".join(
        "\t".join(
            [
                str(labels[i]),
                *("" if dense_missing[i, j] else str(dense[i, j]) for j in range(13)),
                *("" if cat_missing[i, j] else f"{ids[i, j]:08x}" for j in range(26)),
            ]
        )
        + "\n"
        for i in range(n)
    )
    assert text == want


def test_bad_generator_input_is_refused(tmp_path):
    with pytest.raises(BenchError, match="--lines must be positive"):
        GenSpec(lines=0)
    with pytest.raises(BenchError, match="is a directory"):
        make_criteo(tmp_path, GenSpec(lines=1))
