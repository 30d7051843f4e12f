"""Huge-page advice for the host table: the advised range stays inside the tensor, the
table it is given to initializes exactly as before, and the probes read the
system."""

import sys
from pathlib import Path

import pytest
import torch

from lazydp_bench.model import huge_pages
from lazydp_bench.model.huge_pages import (
    HUGE_PAGE,
    advise_huge_pages,
    huge_page_bytes,
    huge_range,
    thp_mode,
)
from lazydp_bench.model.init import init_table


@pytest.mark.parametrize(
    ("begin", "nbytes", "want"),
    [
        (0, 3 * HUGE_PAGE, (0, 3 * HUGE_PAGE)),
        (1, 3 * HUGE_PAGE, (HUGE_PAGE, 3 * HUGE_PAGE)),  # rounded inwards at both ends
        (HUGE_PAGE - 64, HUGE_PAGE + 128, (HUGE_PAGE, 2 * HUGE_PAGE)),
        (64, HUGE_PAGE, (HUGE_PAGE, 0)),  # no whole huge page inside: empty
    ],
)
def test_huge_range_is_the_whole_huge_pages_inside(begin, nbytes, want):
    start, stop = huge_range(begin, nbytes)
    assert (start, stop if stop > start else 0) == want
    assert start % HUGE_PAGE == 0 and stop % HUGE_PAGE == 0
    if stop > start:
        assert begin <= start and stop <= begin + nbytes


def test_advice_is_given_on_linux_and_skipped_when_there_is_no_whole_huge_page():
    big = torch.empty(4 * HUGE_PAGE // 4, dtype=torch.float32)
    assert advise_huge_pages(big) == (sys.platform.startswith("linux") and thp_mode() is not None)
    assert advise_huge_pages(torch.empty(1000)) is False


def test_advised_table_initializes_like_an_unadvised_one(monkeypatch):
    """The advice happens before the first touch and changes no value."""
    rows, dim = (6000, 10000), 128  # 8.2 MB: a whole 2 MiB page inside wherever it starts
    advised, was_advised = init_table(rows, dim, torch.device("cpu"), torch.float32, 7, 2)
    from lazydp_bench.model import init

    monkeypatch.setattr(init, "advise_huge_pages", lambda _t: False)
    plain, not_advised = init_table(rows, dim, torch.device("cpu"), torch.float32, 7, 2)
    assert was_advised == (sys.platform.startswith("linux") and thp_mode() is not None)
    assert not not_advised
    assert torch.equal(advised, plain)


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("always [madvise] never\n", "madvise"),
        ("[always] madvise never\n", "always"),
        ("always madvise [never]\n", "never"),
        ("garbled\n", None),
        (None, None),  # no such file: a kernel without THP, or not Linux
    ],
)
def test_thp_mode_reads_the_bracketed_choice(tmp_path, monkeypatch, text, mode):
    path = tmp_path / "enabled"
    if text is not None:
        path.write_text(text)
    monkeypatch.setattr(huge_pages, "_THP_MODE", path)
    assert thp_mode() == mode


def test_huge_page_bytes_reads_this_process_rollup():
    got = huge_page_bytes()
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        assert got is None
        return
    assert "AnonHugePages:" in text
    assert got is not None and got >= 0 and got % 1024 == 0
