"""Row-wise layout arithmetic against brute force, example groups, and shard init."""

from __future__ import annotations

import itertools

import pytest
import torch

from lazydp_bench.model.init import init_rows, init_table
from lazydp_bench.placement.sharding import RowWiseLayout, example_groups

LAYOUTS = [
    ((40, 7, 300, 120), 1),
    ((40, 7, 300, 120), 2),
    ((40, 7, 300, 120), 3),
    ((2, 1, 11, 5), 4),  # tables smaller than the world: some ranks hold none of their rows
    ((1,), 3),
    ((9, 10, 8), 5),
]


def brute_force(table_rows: tuple[int, ...], world: int) -> dict[int, tuple[int, int]]:
    """global row -> (owner, local) by walking every table, rank by rank, row by row:
    block = ceil(rows / world), and each rank stacks its block of every table in order."""
    owner_of: dict[int, int] = {}
    starts = [sum(table_rows[:t]) for t in range(len(table_rows))]
    for start, n in zip(starts, table_rows, strict=True):
        block = -(-n // world)
        for r in range(n):
            owner_of[start + r] = r // block
    result = {}
    for rank in range(world):
        mine = sorted(g for g, o in owner_of.items() if o == rank)
        result.update({g: (rank, local) for local, g in enumerate(mine)})
    return result


@pytest.mark.parametrize(("table_rows", "world"), LAYOUTS)
def test_locate_matches_brute_force(table_rows, world):
    layout = RowWiseLayout(table_rows, world)
    expected = brute_force(table_rows, world)
    rows = torch.arange(layout.total_rows)
    owner, local = layout.locate(rows)
    assert [(int(o), int(lo)) for o, lo in zip(owner, local, strict=True)] == [
        expected[g] for g in range(layout.total_rows)
    ]


@pytest.mark.parametrize(("table_rows", "world"), LAYOUTS)
def test_shards_partition_the_rows(table_rows, world):
    layout = RowWiseLayout(table_rows, world)
    expected = brute_force(table_rows, world)
    seen = []
    for rank in range(world):
        rows = layout.global_rows(rank)
        assert rows.numel() == layout.shard_rows(rank)
        assert [expected[int(g)] for g in rows] == [(rank, i) for i in range(rows.numel())]
        runs = layout.global_runs(rank)
        from_runs = [g for _, first, n in runs for g in range(first, first + n)]
        assert from_runs == rows.tolist()
        assert [local for local, _, _ in runs] == [
            sum(n for _, _, n in runs[:i]) for i in range(len(runs))
        ]
        seen += rows.tolist()
    assert sorted(seen) == list(range(layout.total_rows))
    assert layout.max_shard_rows() == max(layout.shard_rows(r) for r in range(world))


def test_small_table_leaves_ranks_without_its_rows():
    layout = RowWiseLayout((2, 9), 4)
    assert [layout.span(r, 0) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert [layout.shard_rows(r) for r in range(4)] == [4, 4, 3, 0]  # rank 3 holds nothing


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="world size"):
        RowWiseLayout((3,), 0)
    with pytest.raises(ValueError, match="at least one row"):
        RowWiseLayout((3, 0), 2)


@pytest.mark.parametrize(("batch", "groups"), [(8, 1), (8, 3), (6, 6), (7, 2)])
def test_example_groups(batch, groups):
    bounds = example_groups(batch, groups)
    sizes = [hi - lo for lo, hi in bounds]
    assert len(bounds) == groups and bounds[0][0] == 0 and bounds[-1][1] == batch
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError):
        example_groups(groups - 1, groups)


def test_init_rows_equals_the_host_table(monkeypatch):
    import lazydp_bench.model.init as init

    monkeypatch.setattr(init, "_CHUNK_ELEMS", 64)  # many chunks, shard edges inside them
    rows = (40, 7, 300, 120)
    table, _ = init_table(rows, 8, torch.device("cpu"), torch.float32, 3, 2)
    for lo, hi in [(0, 467), (5, 9), (13, 300), (466, 467), (100, 100)]:
        assert torch.equal(init_rows(rows, 8, lo, hi, dtype=torch.float32, seed=3), table[lo:hi])


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("chunk_elems", [8 * 7, 8 * 64])
def test_shard_init_equals_the_slice_of_the_whole_table(monkeypatch, world, chunk_elems):
    """Every rank's initial rows equal the one-process host table's rows, bit for bit, with
    chunk boundaries (7 or 64 rows) inside shards and shard pieces (3 rows) inside chunks."""
    import lazydp_bench.model.init as init
    from lazydp_bench.placement import sharded
    from lazydp_bench.runtime.distributed import Comm, Rank

    monkeypatch.setattr(init, "_CHUNK_ELEMS", chunk_elems)
    monkeypatch.setattr(sharded, "INIT_PIECE_ELEMS", 8 * 3)
    rows = (41, 7, 301, 2, 119)  # uneven: no table divides by 2 or 3
    table, _ = init_table(rows, 8, torch.device("cpu"), torch.float32, 5, 2)
    layout = RowWiseLayout(rows, world)
    for rank in range(world):
        me = Rank(rank, world, torch.device("cpu"))  # no collective is used: no process group
        shard = sharded.ShardedTable(
            layout, Comm(me), dim=8, dtype=torch.float32, seed=5, history=False
        )
        assert torch.equal(shard.shard, table[layout.global_rows(rank)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_init_rows_of_any_range_equals_the_slice(monkeypatch, dtype):
    """Ranges that start and stop on, before and after chunk boundaries (chunks of 5 rows)."""
    import lazydp_bench.model.init as init

    monkeypatch.setattr(init, "_CHUNK_ELEMS", 5 * 6)
    rows = (13, 4, 29)
    table, _ = init_table(rows, 6, torch.device("cpu"), dtype, 11, 3)
    for lo, hi in [(0, 46), (0, 5), (5, 10), (4, 11), (9, 46), (45, 46), (12, 17), (20, 20)]:
        assert torch.equal(init_rows(rows, 6, lo, hi, dtype=dtype, seed=11), table[lo:hi]), (lo, hi)


@pytest.mark.parametrize(("table_rows", "world"), LAYOUTS)
@pytest.mark.parametrize("size", [1, 4, 7, 1000])
def test_pieces_cut_runs_at_global_multiples(table_rows, world, size):
    from lazydp_bench.placement.sharded import pieces

    layout = RowWiseLayout(table_rows, world)
    for rank in range(world):
        runs = layout.global_runs(rank)
        cut = pieces(runs, size)
        assert [(lo + i, g + i) for lo, g, n in cut for i in range(n)] == [
            (lo + i, g + i) for lo, g, n in runs for i in range(n)
        ]
        assert all(0 < n <= size for _, _, n in cut)
        ends = {g + n for _, g, n in runs}
        assert all((g + n) % size == 0 or g + n in ends for _, g, n in cut)


@pytest.mark.parametrize("spare", [0, 3])
def test_segment_sums_against_brute_force(spare):
    """Sorted unique rows, their counts, and their values summed one by one in arrival
    order (bit for bit), in the exact number of slots or with spare ones (count 0, sum 0)."""
    from lazydp_bench.placement.sharded import segment_sums

    gen = torch.Generator().manual_seed(4)
    rows = torch.randint(0, 9, (40,), generator=gen)
    values = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    uniq_n = len(set(rows.tolist()))
    uniq, sums, counts = segment_sums(rows, values, uniq_n + spare)
    expected = {}
    for r, v in zip(rows.tolist(), values, strict=True):
        expected[r] = v.clone() if r not in expected else expected[r] + v
    keys = sorted(expected)
    assert uniq[:uniq_n].tolist() == keys and counts[uniq_n:].tolist() == [0] * spare
    assert counts[:uniq_n].tolist() == [rows.tolist().count(r) for r in keys]
    assert torch.equal(sums[:uniq_n], torch.stack([expected[r] for r in keys]))
    assert not sums[uniq_n:].any()
