"""Noise keyed by global coordinates: the normal added to element (row, col) of a table
with `cols` columns under a 64-bit key is a function of (key, row * cols + col) alone.

The engines in this package key a draw by its position in the tensor they are handed
(a generator per chunk, or Philox counters by launch offset), so a shard of the table
would draw other numbers than the whole table. Row-wise sharding needs every owner of
a row to draw what one process draws for it, whatever the sharding and chunking:

- uniforms: Philox-4x32-10 (Salmon et al., SC'11) with the key as its 2 x 32-bit key and
  the element group g = element // 4 as its counter (g low word, g high word, 0, 0);
  element 4g + j takes output word j;
- normals: Box-Muller on words (0, 1) and (2, 3), u = (c + 1/2) / 2**32 in (0, 1), the
  angle's quadrant from the top two bits and the rest reduced exactly, as the fused
  Triton kernel does (`triton_fused.py`).

Everything is torch elementwise work on int64 and float64 tensors, so it runs on the CPU
and on CUDA alike and never syncs. Bit-for-bit identity across shardings needs every
element to go through the same correctly rounded operations wherever it sits in a
tensor, so this module uses only +, -, *, /, sqrt, frexp and bit operations, each its
own kernel: `log`, `sin` and `cos` are polynomials here (libm and the vectorized SLEEF
paths that torch takes for a tensor's body and its tail can differ in the last bit), and
no fused multiply-add (`add(alpha=)`, `addcmul`) is used, since a vectorized body may
contract it and a scalar tail may not. The 32 x 32-bit products of Philox are split into
16-bit halves so no int64 product overflows.

On a GPU with Triton, gaussian draws go through one kernel instead
(`_keyed_noise_kernel`): the same Philox words per element (Triton's `tl.philox` is the
same Philox-4x32-10 with the same key and counter words), Box-Muller in float64 with
libdevice's log/sin/cos, so its normals equal the torch path's to ~1e-15, not bit for bit;
every rank of a GPU run uses the kernel, and one kernel computes each element the same
way wherever it sits, so ranks still agree bit for bit with one GPU.

Measured on this module's tests: equal to a plain-Python Philox-4x32-10 (and its
published known-answer vectors), and standard normal by KS and variance tests; the
kernel against the torch path in tests/distributed/test_sharded_gpu.py (GPU only).
"""

from __future__ import annotations

import math

import torch

from lazydp_bench.dp.seeds import MASK64, as_int64

try:  # Triton exists only where CUDA does
    import triton
    import triton.language as tl
    from triton.language.extra.cuda import libdevice

    AVAILABLE = True
except ImportError:  # pragma: no cover - CPU-only machines
    AVAILABLE = False

M0, M1 = 0xD2511F53, 0xCD9E8D57  # Philox-4x32 multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
ROUNDS = 10
MASK32 = 0xFFFFFFFF
GROUP_CHUNK = 1 << 18  # element groups per pass: bounds the int64 temporaries (~2 MiB each)
_LN2 = math.log(2.0)
_SQRT_HALF = math.sqrt(0.5)
_HALF_PI_2_30 = (math.pi / 2) / 2**30
_TWO_M32 = 2.0**-32


def _mulhilo(m: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of m * x for x in [0, 2**32), exact in int64."""
    p_lo = x & 0xFFFF
    p_lo = p_lo * m  # < 2**48
    p_hi = x >> 16
    p_hi = p_hi * m  # < 2**48
    mid = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2**49
    return (p_hi >> 16) + (mid >> 32), mid & MASK32


def philox4x32(
    counter: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], key: int
) -> tuple[torch.Tensor, ...]:
    """Philox-4x32-10 of four uint32 counter words (int64 tensors) under a 64-bit key."""
    c0, c1, c2, c3 = counter
    k0, k1 = key & MASK32, (key >> 32) & MASK32
    for r in range(ROUNDS):
        if r:
            k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
        hi0, lo0 = _mulhilo(M0, c0)
        hi1, lo1 = _mulhilo(M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _uniform(c: torch.Tensor) -> torch.Tensor:
    """u = (c + 1/2) / 2**32 in (0, 1), float64, exact."""
    return (c.to(torch.float64) + 0.5) * _TWO_M32


def _log(u: torch.Tensor) -> torch.Tensor:
    """ln u for u in (0, 1): u = m 2**e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s),
    s = (m - 1) / (m + 1), |s| < 0.172, by its series to s**19 (truncation < 1e-16)."""
    m, e = torch.frexp(u)
    low = m < _SQRT_HALF
    m = torch.where(low, m * 2.0, m)
    e = e.to(torch.float64) - low.to(torch.float64)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = torch.full_like(s, 1.0 / 19.0)
    for k in range(8, -1, -1):
        p = p * s2
        p = p + 1.0 / (2 * k + 1)
    return e * _LN2 + (s * p) * 2.0


def _sin_cos(phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin phi, cos phi) for |phi| <= pi/4 by Taylor series (truncation < 1e-16)."""
    x2 = phi * phi
    sp = torch.full_like(phi, -1.0 / math.factorial(15))
    for k in range(13, 0, -2):
        sp = sp * x2
        sp = sp + (-1.0) ** (k // 2) / math.factorial(k)
    cp = torch.full_like(phi, 1.0 / math.factorial(16))
    for k in range(14, -1, -2):
        cp = cp * x2
        cp = cp + (-1.0) ** (k // 2) / math.factorial(k)
    return phi * sp, cp


def _box_muller(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two standard normals (float64) from two uint32 words: radius from a, angle from b
    (quadrant = its top two bits, phi in (-pi/4, pi/4) from the other thirty)."""
    r = (_log(_uniform(a)) * -2.0).sqrt()
    q = b >> 30
    d = (b & 0x3FFFFFFF) - 0x20000000
    phi = (d.to(torch.float64) + 0.5) * _HALF_PI_2_30
    sin, cos = _sin_cos(phi)
    swap = (q & 1) == 1
    s0 = torch.where(swap, cos, sin)
    c0 = torch.where(swap, sin, cos)
    sin = torch.where(q >= 2, -s0, s0)
    cos = torch.where((q == 1) | (q == 2), -c0, c0)
    return r * cos, r * sin


def group_normals(groups: torch.Tensor, key: int) -> torch.Tensor:
    """[n, 4] float64 standard normals of element groups `groups` (int64, >= 0)."""
    zero = torch.zeros_like(groups)
    words = philox4x32((groups & MASK32, groups >> 32, zero, zero), key & MASK64)
    z0, z1 = _box_muller(words[0], words[1])
    z2, z3 = _box_muller(words[2], words[3])
    return torch.stack([z0, z1, z2, z3], dim=-1)


def range_normals(first: int, count: int, key: int, device: torch.device) -> torch.Tensor:
    """[count] float64 normals of global elements first .. first + count - 1."""
    out = torch.empty(count, dtype=torch.float64, device=device)
    step = 4 * GROUP_CHUNK
    for lo in range(first, first + count, step):
        hi = min(first + count, lo + step)
        g0, g1 = lo >> 2, (hi - 1) >> 2
        groups = torch.arange(g0, g1 + 1, dtype=torch.int64, device=device)
        z = group_normals(groups, key).view(-1)
        out[lo - first : hi - first] = z[lo - 4 * g0 : hi - 4 * g0]
    return out


def row_normals(rows: torch.Tensor, cols: int, key: int) -> torch.Tensor:
    """[len(rows), cols] float64 normals of the given global rows of a `cols`-column table."""
    per = (cols + 3) // 4 + 1  # groups a row can touch
    out = torch.empty((rows.numel(), cols), dtype=torch.float64, device=rows.device)
    step = max(1, GROUP_CHUNK // per)
    lanes = torch.arange(cols, device=rows.device)
    for lo in range(0, rows.numel(), step):
        first = rows[lo : lo + step] * cols
        groups = (first >> 2).unsqueeze(1) + torch.arange(per, device=rows.device)
        z = group_normals(groups, key).view(groups.shape[0], -1)
        out[lo : lo + step] = z.gather(1, (first & 3).unsqueeze(1) + lanes)
    return out


KERNEL_BLOCK = 1024

if AVAILABLE:

    @triton.jit
    def _keyed_noise_kernel(
        w_ptr,
        rows_ptr,
        local_ptr,
        std_ptr,
        key_ptr,
        n_elements,
        cols,
        first_row,
        GATHER: tl.constexpr,  # rows from rows_ptr (written at local_ptr), else first_row + i
        PER_ROW: tl.constexpr,  # std_ptr[slot], else std_ptr[0]
        BLOCK: tl.constexpr,
    ):
        """w[dst] += std * z(global row * cols + col) over a [slots, cols] block: element
        e takes Philox word pair e % 4 // 2 of group e // 4, its cos (even e) or sin."""
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < n_elements
        slot = i // cols
        col = i % cols
        if GATHER:
            row = tl.load(rows_ptr + slot, mask=m, other=0).to(tl.int64)
            dst = tl.load(local_ptr + slot, mask=m, other=0).to(tl.int64) * cols + col
        else:
            row = slot + first_row
            dst = i
        e = row * cols + col
        g = e >> 2
        lane = e & 3
        c0 = (g & 0xFFFFFFFF).to(tl.uint32)
        c1 = (g >> 32).to(tl.uint32)
        zero = c0 * 0
        w0, w1, w2, w3 = tl.philox(tl.load(key_ptr), c0, c1, zero, zero)
        upper = lane >= 2
        a = tl.where(upper, w2, w0).to(tl.float64)
        b = tl.where(upper, w3, w1).to(tl.float64)
        r = tl.sqrt(-2.0 * libdevice.log((a + 0.5) * 2.3283064365386963e-10))
        theta = (b + 0.5) * 1.4629180792671596e-09 - 0.7853981633974483
        z = tl.where((lane & 1) == 1, r * libdevice.sin(theta), r * libdevice.cos(theta))
        if PER_ROW:  # noqa: SIM108 (constexpr branch: one variant compiled)
            s = tl.load(std_ptr + slot, mask=m, other=0.0)
        else:
            s = tl.load(std_ptr)
        w = tl.load(w_ptr + dst, mask=m)
        tl.store(w_ptr + dst, w + (z * s).to(w.dtype), mask=m)


def _use_kernel(target: torch.Tensor, unit: bool) -> bool:
    return AVAILABLE and not unit and target.device.type == "cuda"


def _launch(target, std, key: int, n: int, *, rows=None, local=None, first_row: int = 0):
    """`_keyed_noise_kernel` over n elements of `target` (contiguous); std: a float or a
    per-row tensor, handed over as float64 in device memory (as the key is)."""
    device = target.device
    per_row = isinstance(std, torch.Tensor) and std.dim() == 1
    if per_row:
        std_t = std.to(device, torch.float64)
    else:  # torch.full: a Python number to the device without a blocking copy
        std_t = torch.full((1,), float(std), dtype=torch.float64, device=device)
    key_t = torch.full((1,), as_int64(key), dtype=torch.int64, device=device)
    gather = rows is not None
    _keyed_noise_kernel[(triton.cdiv(n, KERNEL_BLOCK),)](
        target,
        rows if gather else key_t,
        local if gather else key_t,
        std_t.contiguous(),
        key_t,
        n,
        target.shape[1],
        first_row,
        GATHER=gather,
        PER_ROW=per_row,
        BLOCK=KERNEL_BLOCK,
    )


def _scaled(z: torch.Tensor | None, std, rows: int, dtype: torch.dtype) -> torch.Tensor:
    """std * z (z None: unit mode, the draws are all 1), as `dtype`; `std` is a float or
    a per-row [rows] tensor. One multiply, no fused add."""
    if isinstance(std, torch.Tensor):
        std = std.to(torch.float64).view(rows, 1)
    if z is None:
        ones = torch.ones((rows, 1), dtype=torch.float64)
        base = ones * std if isinstance(std, float) else std
        return base.to(dtype)
    return (z * std).to(dtype)


def add_range_noise(
    target: torch.Tensor, first_row: int, std, key: int, *, unit: bool = False
) -> None:
    """target[i] += std * z(first_row + i) for a 2-D target holding consecutive global rows
    from `first_row` (std: float or per-row tensor)."""
    rows, cols = target.shape
    if rows == 0:
        return
    if _use_kernel(target, unit) and target.is_contiguous():
        _launch(target, std, key, rows * cols, first_row=first_row)
        return
    z = None if unit else range_normals(first_row * cols, rows * cols, key, target.device)
    z = None if z is None else z.view(rows, cols)
    noise = _scaled(z, std, rows, target.dtype).to(target.device)
    target.add_(noise.expand(rows, cols) if unit else noise)


def add_row_noise(
    table: torch.Tensor, local: torch.Tensor, rows: torch.Tensor, std, key: int, *, unit: bool
) -> None:
    """table[local[k]] += std[k] * z(rows[k]) (rows: global ids, unique; local: where each
    sits in `table`); slots with std 0 add exact zeros."""
    if rows.numel() == 0:
        return
    cols = table.shape[1]
    if _use_kernel(table, unit):
        _launch(
            table, std, key, rows.numel() * cols, rows=rows.contiguous(), local=local.contiguous()
        )
        return
    z = None if unit else row_normals(rows, cols, key)
    noise = _scaled(z, std, rows.numel(), table.dtype).to(table.device)
    table.index_add_(0, local, noise.expand(rows.numel(), cols).contiguous())
