"""Noise keyed by global coordinates: Philox-4x32-10 against a plain-Python reference and
its published known-answer vectors, the same draws however rows are chunked or sharded,
and standard normal statistics."""

from __future__ import annotations

import math
import random

import pytest
import torch

from lazydp_bench.dp.noise import global_keyed as gk
from lazydp_bench.runtime.verify import ks_normal

MASK = 0xFFFFFFFF


def philox_reference(ctr: tuple[int, ...], key: int) -> tuple[int, ...]:
    """Philox-4x32-10 with Python ints (Salmon et al., Random123's philox4x32)."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key & MASK, key >> 32
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & MASK, (k1 + 0xBB67AE85) & MASK
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK, (p0 >> 32) ^ c3 ^ k1, p0 & MASK
    return c0, c1, c2, c3


def _words(ctr, key):
    out = gk.philox4x32(tuple(torch.tensor([c], dtype=torch.int64) for c in ctr), key)
    return tuple(int(w) for w in out)


@pytest.mark.parametrize(
    ("ctr", "key", "expected"),
    [  # Random123's kat_vectors for philox4x32_10
        ((0, 0, 0, 0), 0, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((MASK,) * 4, (MASK << 32) | MASK, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0x299F31D0 << 32) | 0xA4093822,
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(ctr, key, expected):
    assert _words(ctr, key) == expected
    assert philox_reference(ctr, key) == expected


def test_philox_matches_reference_on_random_inputs():
    rng = random.Random(5)
    for _ in range(50):
        ctr = tuple(rng.getrandbits(32) for _ in range(4))
        key = rng.getrandbits(64)
        assert _words(ctr, key) == philox_reference(ctr, key)


def test_log_and_sincos_polynomials_are_accurate():
    u = torch.linspace(2.0**-33, 1 - 2.0**-33, 100_001, dtype=torch.float64)
    assert ((gk._log(u) - u.log()).abs() / u.log().abs()).max() < 1e-14
    phi = torch.linspace(-math.pi / 4, math.pi / 4, 10_001, dtype=torch.float64)
    sin, cos = gk._sin_cos(phi)
    assert (sin - phi.sin()).abs().max() < 1e-15 and (cos - phi.cos()).abs().max() < 1e-15


def test_draws_depend_on_global_coordinates_only(monkeypatch):
    """Whole range, a shard's range, chosen rows, small chunks: the same bits per element."""
    key, cols = 0xDEADBEEF12345678, 5
    whole = gk.range_normals(0, 60 * cols, key, torch.device("cpu")).view(60, cols)
    shard = gk.range_normals(17 * cols, 20 * cols, key, torch.device("cpu")).view(20, cols)
    assert torch.equal(shard, whole[17:37])
    rows = torch.tensor([59, 3, 0, 41, 17])
    assert torch.equal(gk.row_normals(rows, cols, key), whole[rows])
    monkeypatch.setattr(gk, "GROUP_CHUNK", 3)  # many passes, edges inside groups
    assert torch.equal(gk.range_normals(7, 200, key, torch.device("cpu")), whole.view(-1)[7:207])
    assert torch.equal(gk.row_normals(rows, cols, key), whole[rows])
    other = gk.range_normals(0, 60 * cols, key + 1, torch.device("cpu"))
    assert (other != whole.view(-1)).float().mean() > 0.99  # another key, other draws


def test_add_noise_per_row_std_and_unit_mode():
    key = 99
    target = torch.zeros((6, 4), dtype=torch.float32)
    std = torch.tensor([0.0, 1.0, -2.0, 0.5, 3.0, 1.0], dtype=torch.float64)
    gk.add_range_noise(target, 10, std, key)
    z = gk.range_normals(40, 24, key, torch.device("cpu")).view(6, 4)
    assert torch.equal(target, (z * std.view(-1, 1)).float())
    table = torch.ones((12, 4), dtype=torch.float64)
    gk.add_row_noise(table, torch.tensor([2, 5]), torch.tensor([11, 14]), std[:2], key, unit=True)
    expected = torch.ones((12, 4), dtype=torch.float64)
    expected[5] += 1.0
    assert torch.equal(table, expected)


def test_normals_are_standard_normal():
    n = 1 << 17
    z = gk.range_normals(12345, n, 2024, torch.device("cpu"))
    ks = ks_normal(z)
    assert ks < 1.95 / math.sqrt(n)  # KS at alpha = 0.001
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs((z**4).mean().item() - 3) < 5 * math.sqrt(96 / n)  # kurtosis of a normal
    pairs = z.view(-1, 2)  # the two normals of one Box-Muller pair are uncorrelated
    assert abs((pairs[:, 0] * pairs[:, 1]).mean().item()) < 5 / math.sqrt(n / 2)
