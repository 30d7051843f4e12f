"""Huge-page advice for the host table: the advised range stays inside the tensor, the
table it is given to initializes exactly as before, and the probes read the system."""

import sys

import pytest
import torch

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


def test_probes_read_the_system():
    assert thp_mode() in (None, "always", "madvise", "never")
    got = huge_page_bytes()
    assert got is None or got >= 0
