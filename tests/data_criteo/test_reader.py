"""The Criteo reader on hand-written lines: parsing (empty fields, hex case, negatives),
both dense transforms, both row mappings, every kind of bad line with its line number,
gzip, folders of day files, the batch source's look-ahead and wrap-around, and parsing in
several threads giving exactly what one thread gives."""

from __future__ import annotations

import gc
import gzip
import math
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from lazydp_bench.config import RunConfig
from lazydp_bench.data import criteo
from lazydp_bench.data.criteo import data_files, iter_chunks, parse_block, scan
from lazydp_bench.errors import BenchError
from lazydp_bench.runtime.trainer import plan_run
from tests.data_criteo.helpers import CPU, config, line, source, varied, write

LINES = [
    line("1", ["5", "-2", "", "0", "12345678901"], ["0000000a", "DEADBEEF", "", "deadBEEF"]),
    line("0", ["", "3", "7"], ["ffffffff", "00000000", "1"]),
]
ROWS = (97,) * 26


def test_fields_parse_with_empty_fields_hex_case_and_negatives():
    block = np.frombuffer("".join(LINES).encode(), dtype=np.uint8)
    parsed = parse_block(block, 1)
    assert parsed.first_bad is None and parsed.lines == 2
    assert parsed.labels.tolist() == [1, 0]
    assert parsed.dense[0, :5].tolist() == [5, -2, 0, 0, 12345678901]
    assert parsed.dense[1, :3].tolist() == [0, 3, 7] and not parsed.dense[:, 5:].any()
    assert parsed.ids[0, :4].tolist() == [10, 0xDEADBEEF, 0, 0xDEADBEEF]
    assert parsed.ids[1, :3].tolist() == [0xFFFFFFFF, 0, 1] and not parsed.ids[:, 4:].any()


@pytest.mark.parametrize("transform", ["dlrm", "torchrec"])
def test_batches_carry_transformed_dense_and_hashed_rows(tmp_path, transform):
    path = write(tmp_path / "train.txt", LINES)
    src = source(config(path, dense_transform=transform), ROWS, batch=2)
    batch = src.advance()
    raw = torch.tensor([[5, -2, 0, 0, 12345678901] + [0] * 8, [0, 3, 7] + [0] * 10])
    if transform == "dlrm":
        want = torch.log1p(raw.clamp(min=0).double())
    else:  # TorchRec: log(x - min + 2), min over all dense values (missing = 0)
        want = torch.log(raw.double() + 2 + 2)
    assert torch.allclose(batch.dense, want)
    assert batch.labels.tolist() == [1.0, 0.0]
    ids = torch.tensor([[10, 0xDEADBEEF, 0, 0xDEADBEEF] + [0] * 22, [0xFFFFFFFF, 0, 1] + [0] * 23])
    offsets = torch.arange(26) * 97
    assert batch.rows.shape == (2, 26, 1)
    assert torch.equal(batch.rows[..., 0], ids % 97 + offsets)
    src.close()


def test_vocab_ranks_ids_by_frequency_and_folds_rare_ones(tmp_path):
    ids = ["0000000c", "0000000a", "0000000b", "0000000a", "0000000b", "0000000a"]
    path = write(tmp_path / "t.txt", [line("0", [], [i]) for i in ids])
    src = source(config(path, categorical="vocab"), (2,) * 26, batch=6)
    rows = src.advance().rows[:, 0, 0].tolist()
    # a: 3 times (rank 0), b: 2 (rank 1), c: 1 (rank 2, folded to 2 mod 2 = 0)
    assert rows == [0, 0, 1, 0, 1, 0]
    src.close()


BAD = {
    "field count": (LINES[0].replace("\t", "", 1), "39 fields, expected 40"),
    "label": (line("2"), "label '2' is not 0 or 1"),
    "dense": (line("0", ["", "1.5"]), "I2 '1.5' is not an integer"),
    "bare minus": (line("0", ["-"]), "I1 '-' is not an integer"),
    "hex": (line("1", [], ["", "", "0000000g"]), "C3 '0000000g' is not a hex id"),
    "long hex": (line("1", [], ["123456789"]), "C1 '123456789' is not a hex id"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_each_bad_line_is_an_error_naming_file_and_line_or_skipped(tmp_path, kind):
    bad, why = BAD[kind]
    path = write(tmp_path / "train.txt", [LINES[0], LINES[1], bad, LINES[0]])
    with pytest.raises(BenchError) as err:
        scan(config(path), need_lines=None)
    assert f"{path}:3: {why}" in str(err.value)
    data = scan(config(path, on_bad_line="skip"), need_lines=None)
    assert (data.good_lines, data.bad_lines, data.lines_scanned) == (3, 1, 4)
    src = source(config(path, on_bad_line="skip"), ROWS, batch=3)
    assert src.advance().labels.tolist() == [1.0, 0.0, 1.0]
    # the batch taken and the look-ahead batch (the data's second pass) each skipped it
    assert src.stats()["skipped_lines"] == 2 and src.stats()["passes"] == 1
    src.close()


def test_a_bad_line_stops_the_run_at_planning(tmp_path):
    """The first pass runs in plan_run: a bad line is refused before anything is built."""

    def one_step(path) -> RunConfig:
        return RunConfig(
            workload="criteo-kaggle",
            table_size="1MB",
            placement="cpu",
            batch_size=2,
            iterations=1,
            warmup=0,
            data=config(path),
        )

    cfg = one_step(write(tmp_path / "day_0", [LINES[0]] * 5 + [line("x")]))
    with pytest.raises(BenchError, match=r"day_0:6: label 'x' is not 0 or 1"):
        plan_run(cfg)
    cfg_ok = one_step(write(tmp_path / "day_1", [LINES[0]] * 5))
    # the run reads (1 step + 1 look-ahead) x 2 lines; the scan validated them
    assert plan_run(cfg_ok).data.good_lines >= 4


def test_shapes_the_data_does_not_fit_are_refused(tmp_path):
    path = write(tmp_path / "t.txt", LINES)
    base = {"table_size": "1MB", "placement": "cpu", "data": config(path)}
    with pytest.raises(BenchError, match=r"Criteo-shaped workload.*'tiny' has"):
        plan_run(RunConfig(workload="tiny", **base))
    with pytest.raises(BenchError, match="--distribution"):
        plan_run(RunConfig(workload="criteo-kaggle", distribution="high", **base))
    with pytest.raises(BenchError, match="fewer than one batch of 128"):
        plan_run(RunConfig(workload="criteo-kaggle", **base))


def test_kaggle_test_layout_is_refused_even_when_skipping(tmp_path):
    test_lines = [line("0")[2:] for _ in range(3)]  # no label: 39 fields
    path = write(tmp_path / "test.txt", test_lines)
    for mode in ("error", "skip"):
        with pytest.raises(BenchError, match=r"test\.txt.*no label.*training needs labelled"):
            scan(config(path, on_bad_line=mode), need_lines=None)


def test_gzip_reads_like_plain(tmp_path):
    lines = [line(str(i % 2), [str(i)], [f"{i:08x}"]) for i in range(1000)]
    plain = scan(config(write(tmp_path / "a.txt", lines)), need_lines=None)
    packed = write(tmp_path / "a.txt.gz", lines, compress=True)
    src = source(config(packed), ROWS, batch=1000)
    batch = src.advance()
    assert plain.good_lines == 1000 and scan(config(packed), need_lines=None).good_lines == 1000
    assert batch.rows[:, 0, 0].tolist() == [i % 97 for i in range(1000)]
    src.close()
    members = tmp_path / "two.gz"  # gzip files concatenated: one stream of lines
    members.write_bytes(packed.read_bytes() + packed.read_bytes())
    assert scan(config(members), need_lines=None).good_lines == 2000


def test_truncated_gzip_names_its_line_or_is_skipped(tmp_path):
    lines = [line("1", [str(i)], [f"{i:08x}"] * 26) for i in range(3000)]
    whole = gzip.compress("".join(lines).encode())
    path = tmp_path / "day_3.gz"
    path.write_bytes(whole[: len(whole) // 2])
    readable = zlib.decompressobj(31).decompress(whole[: len(whole) // 2])
    complete = readable.count(b"\n")
    with pytest.raises(BenchError, match=rf"day_3.gz:{complete + 1}: the gzip stream ends early"):
        scan(config(path), need_lines=None)
    data = scan(config(path, on_bad_line="skip"), need_lines=None)
    assert (data.good_lines, data.bad_lines) == (complete, 1)


def test_a_folder_of_days_reads_in_day_order(tmp_path):
    for day in (0, 1, 2, 10):
        write(tmp_path / f"day_{day}", [line("0", [str(day)], [f"{day:08x}"])] * 3)
    (tmp_path / "notes.md").write_text("not data")
    assert [p.name for p in data_files([tmp_path])] == ["day_0", "day_1", "day_2", "day_10"]
    src = source(config(tmp_path), ROWS, batch=12)
    assert src.advance().rows[:, 0, 0].tolist() == [d for d in (0, 1, 2, 10) for _ in range(3)]
    src.close()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchError, match=r"no day_\* files and no train\.txt"):
        data_files([empty])
    with pytest.raises(BenchError, match="does not exist"):
        data_files([tmp_path / "nope"])


def test_data_in_a_folder_the_user_may_not_enter_is_one_bench_error(tmp_path, monkeypatch):
    def denied(self, *args, **kwargs):  # what Path.is_file raises under a mode-000 folder
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "is_file", denied)
    with pytest.raises(BenchError, match=r"cannot read data .*x/train\.txt: Permission denied"):
        data_files([tmp_path / "x" / "train.txt"])


def test_source_looks_ahead_one_batch_and_wraps_around(tmp_path):
    path = write(tmp_path / "t.txt", [line("0", [], [f"{i:08x}"]) for i in range(5)])
    src = source(config(path), ROWS, batch=2)
    seen = []
    for _ in range(6):
        ahead = src.peek()
        got = src.advance()
        assert got is ahead
        seen += got.rows[:, 0, 0].tolist()
    assert seen == [i % 5 for i in range(12)]  # lines in file order, again from the start
    stats = src.stats()
    assert stats["passes"] >= 2 and stats["lines_used"] == 14  # 7 batches taken
    assert stats["reader_lines_per_s"] > 0
    src.close()
    assert not src._thread.is_alive()


def test_reader_thread_stops_when_the_source_is_dropped(tmp_path):
    path = write(tmp_path / "t.txt", LINES * 50)
    src = source(config(path), ROWS, batch=2)
    thread = src._thread
    del src
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert not [t for t in threading.enumerate() if t is thread]


def test_dense_minimum_is_over_all_lines_for_torchrec(tmp_path):
    path = write(tmp_path / "t.txt", [line("0", ["4"]), line("0", ["", "-3"])])
    data = scan(config(path, dense_transform="torchrec"), need_lines=None)
    assert data.dense_min == -3
    src = source(config(path, dense_transform="torchrec"), ROWS, batch=2)
    assert src.advance().dense[0, 0].item() == pytest.approx(math.log(4 + 3 + 2))
    src.close()


def test_reader_fills_its_queue_before_training_and_refills_in_bursts(tmp_path):
    """The queue is full when the source is built; the reader then rests until the
    trainer has taken it down to half, so parsing does not run beside every step."""
    path = write(tmp_path / "t.txt", LINES * 2000)
    src = source(config(path), ROWS, batch=64)
    try:
        reader = src._producer
        size, low = reader.out.maxsize, reader.low
        assert reader.out.qsize() == size - 1  # full, less the look-ahead batch taken
        made = reader.stats.batches
        for _ in range(size - 1 - low - 1):  # stay above the low mark
            src.advance()
        time.sleep(0.3)
        assert reader.stats.batches == made  # resting
        src.advance()
        src.advance()  # at the low mark: the reader refills
        # Generous: the refill parses ~2 passes of the file, and a loaded 2-core machine
        # can stall a thread for seconds; the loop ends as soon as the queue is full.
        deadline = time.monotonic() + 60
        while reader.out.qsize() < size and time.monotonic() < deadline:
            time.sleep(0.01)
        alive = src._thread.is_alive()
        assert reader.out.qsize() == size, f"reader alive: {alive}, {reader.stats}"
        assert reader.stats.batches > made
    finally:
        src.close()  # also on failure: a resting reader would hold its parse threads


# ---- several parse threads: the same chunks, batches, errors and line numbers ----------

SMALL_BLOCK = 4096  # ~60 lines a block: many blocks from a small file


def _chunks(path, threads: int, on_bad_line: str = "error") -> list:
    chunks = iter_chunks([path], on_bad_line, SMALL_BLOCK, threads=threads)
    return [
        (c.labels.tobytes(), c.dense.tobytes(), c.ids.tobytes(), c.lines, c.skipped) for c in chunks
    ]


def _error(path, threads: int) -> str:
    with pytest.raises(BenchError) as err:
        for _ in iter_chunks([path], "error", SMALL_BLOCK, threads=threads):
            pass
    return str(err.value)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_threaded_parse_gives_the_chunks_of_one_thread(tmp_path, compress):
    bad = {700: line("2"), 1901: line("0", ["1e3"])}
    path = write(tmp_path / "t.txt", varied(3000, bad), compress=compress)
    one = _chunks(path, 1, "skip")
    assert len(one) > 40 and sum(c[3] for c in one) == 3000 and sum(c[4] for c in one) == 2
    for threads in (2, 3, 8):
        assert _chunks(path, threads, "skip") == one


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_threaded_batches_are_byte_identical(tmp_path, monkeypatch, compress):
    monkeypatch.setattr(criteo, "SOURCE_BLOCK_BYTES", SMALL_BLOCK)
    path = write(tmp_path / "t.txt", varied(1500, {999: line("x")}), compress=compress)
    cfg = config(path, on_bad_line="skip", dense_transform="torchrec")
    data = scan(cfg, need_lines=None, threads=1)
    assert scan(cfg, need_lines=None, threads=3).dense_min == data.dense_min < 0
    runs = []
    for threads in (1, 3):
        src = criteo.CriteoBatchSource(
            data, ROWS, batch_size=64, table_device=CPU, mlp_device=CPU,
            dtype=torch.float64, threads=threads,
        )  # fmt: skip
        assert src._producer.threads == threads
        batches = [src.advance() for _ in range(40)]  # 2560 lines: into the second pass
        runs.append((batches, {k: v for k, v in src.stats().items() if "reader" not in k}))
        src.close()
    (first, stats1), (second, stats3) = runs
    assert stats1 == stats3 and stats1["skipped_lines"] == 2 and stats1["passes"] == 1
    for a, b in zip(first, second, strict=True):
        for name in ("dense", "labels", "rows"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and x.shape == y.shape
            assert x.numpy().tobytes() == y.numpy().tobytes()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(
    ("at", "text", "why"),
    [
        (2345, line("0", ["", "x"]), "I2 'x' is not an integer"),
        (2700, line("1")[2:], "39 fields, expected 40"),
    ],
)
def test_threaded_parse_names_the_same_bad_line(tmp_path, compress, at, text, why):
    """A bad line deep in the file (its block parsed beside later ones) is the same error
    with the same line number as with one thread; no line after it is reported."""
    lines = varied(3000, {at: text, at + 200: line("7")})  # a later block
    path = write(tmp_path / "t.txt", lines, compress=compress)
    message = _error(path, 1)
    assert f"{path}:{at}: {why}" in message
    for threads in (2, 4):
        assert _error(path, threads) == message
        data = scan(config(path, on_bad_line="skip"), need_lines=None, threads=threads)
        assert (data.good_lines, data.bad_lines) == (2998, 2)


def test_threaded_parse_reports_a_truncated_gzip_at_the_same_line(tmp_path):
    lines = varied(3000)
    whole = gzip.compress("".join(lines).encode())
    path = tmp_path / "day_0.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    readable = zlib.decompressobj(31).decompress(whole[: len(whole) * 2 // 3])
    complete = readable.count(b"\n")
    message = _error(path, 1)
    assert f"day_0.gz:{complete + 1}: the gzip stream ends early" in message
    assert _error(path, 3) == message
    skip1, skip3 = (_chunks(path, t, "skip") for t in (1, 3))
    assert skip1 == skip3 and skip1[-1][3:] == (1, 1)


def test_blocks_in_flight_are_bounded_and_parsed_in_the_pool(tmp_path, monkeypatch):
    """The reader runs at most AHEAD_PER_THREAD x threads blocks ahead of the consumer,
    however slow the consumer; blocks are parsed by the pool's threads, which end with
    the iteration, also when it is abandoned."""
    path = write(tmp_path / "t.txt", varied(3000))
    read = [0]
    real_read, real_parse = criteo.read_blocks, criteo.parse_block
    parsed_in: set[str] = set()

    def counting_read(*args):
        for item in real_read(*args):
            read[0] += 1
            yield item

    def recording_parse(block, first):
        parsed_in.add(threading.current_thread().name)
        return real_parse(block, first)

    monkeypatch.setattr(criteo, "read_blocks", counting_read)
    monkeypatch.setattr(criteo, "parse_block", recording_parse)
    threads = 3
    bound = criteo.AHEAD_PER_THREAD * threads
    taken = ahead = 0
    for _ in iter_chunks([path], "error", SMALL_BLOCK, threads=threads):
        taken += 1
        ahead = max(ahead, read[0] - taken)
        assert read[0] - taken <= bound
        if taken % 20 == 0:
            time.sleep(0.05)  # a slow consumer: the reader must not run on
    assert taken > 40 and ahead == bound - 1
    assert parsed_in and all(name.startswith("criteo-parse") for name in parsed_in)

    before = set(threading.enumerate())  # another test's reader may hold its own pool
    chunks = iter_chunks([path], "error", SMALL_BLOCK, threads=threads)
    next(chunks)
    started = [t for t in threading.enumerate() if t.name.startswith("criteo-parse")]
    started = [t for t in started if t not in before]
    assert started
    chunks.close()  # abandoned mid-file: the pool is shut down
    assert not [t for t in started if t.is_alive()]


def test_parse_threads_default_to_the_cores_and_must_be_positive():
    assert criteo.parse_threads(None) >= 1 and criteo.parse_threads(5) == 5
    with pytest.raises(BenchError, match="at least 1"):
        criteo.parse_threads(0)
