"""Keys for every random draw, and the one place that says how noise streams are keyed.

A noise stream is fixed by (run seed, step, stream, ...) hashed to a 64-bit key by
`derive_seed`, plus the chunk a draw falls in:
- host engines (`noise/host_threaded.py`, `noise/torch_chunked.py` on the CPU): one torch
  mt19937 per chunk whose whole 19968-bit state comes from numpy's `SeedSequence` over
  (key, chunk) (`keyed_cpu_generator`). torch's own `manual_seed` keeps only the low 32
  bits of a seed, so two keys that agree there would draw the same noise;
- the Triton kernels (`noise/triton_fused.py`): Philox-4x32-10 with the 64-bit key as its
  key and (element group, launch chunk) in its 128-bit counter; the compiled host engine
  (`noise/host_philox.py`) draws the same stream (same key, counters and layout);
- torch on CUDA (`noise/torch_chunked.py`): the CUDA generator's Philox, seeded with the
  whole 64-bit key (it keeps all 64 bits) and advanced by torch's offset per draw.
Keys are unsigned 64-bit Python ints; device memory holds them as int64 with the same bits
(`as_int64`), which the kernels read back as their unsigned key.
"""

from __future__ import annotations

import numpy as np
import torch

MASK64 = (1 << 64) - 1
_MT_WORDS = 624  # mt19937's state: 624 32-bit words
_MT_STATE_AT = 24  # byte offset of the words in torch's CPU generator state (8 bytes each)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def derive_seed(*parts: int) -> int:
    """A 64-bit key from (run seed, step, stream, chunk, ...): reproducible, decorrelated,
    and different for tuples of different lengths (the length is hashed first)."""
    h = _splitmix64(len(parts))
    for p in parts:
        h = _splitmix64(h ^ (int(p) & MASK64))
    return h


def _splitmix64_array(x: np.ndarray) -> np.ndarray:
    """`_splitmix64` on a uint64 array (numpy's uint64 arithmetic wraps mod 2**64)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def derive_seeds(*parts: int | np.ndarray) -> np.ndarray:
    """`derive_seed` over arrays of parts (broadcast), as uint64: the keys of many steps in
    one pass, equal to `derive_seed` element by element."""
    words = [
        p.astype(np.uint64) if isinstance(p, np.ndarray) else np.uint64(int(p) & MASK64)
        for p in parts
    ]
    shape = np.broadcast_shapes(*(np.shape(w) for w in words))
    h = _splitmix64_array(np.full(shape, len(parts), dtype=np.uint64))
    for w in words:
        h = _splitmix64_array(h ^ w)
    return h


def as_int64(key: int) -> int:
    """The int64 with the same 64 bits as the unsigned `key` (for int64 device tensors)."""
    key &= MASK64
    return key - (1 << 64) if key >= 1 << 63 else key


def keyed_cpu_generator(*key: int) -> torch.Generator:
    """A torch CPU generator keyed by every bit of `key` (any number of 64-bit ints).

    torch's CPU generator is mt19937 and `manual_seed` fills its state from 32 bits. Here
    numpy's SeedSequence hashes the whole key into a 128-bit PCG64DXSM state whose first
    312 outputs are the 624 state words, written through `set_state`, so torch's
    vectorized normal_ still draws the samples. (SeedSequence.generate_state(624) alone
    costs ~50 us with the GIL held, once per 16 MiB chunk: too slow for 16 threads.)"""
    # Two 32-bit words per key word, plus the word count: SeedSequence reads each int (even
    # of a uint64 array) as variable-width 32-bit words and ignores trailing zeros, so
    # (7, 1) and (7 + 2**32,), or (7,) and (7, 0), would otherwise be the same key.
    words64 = [int(k) & MASK64 for k in key] + [len(key)]
    seq = np.random.SeedSequence(np.array(words64, dtype=np.uint64).view(np.uint32))
    words = np.random.PCG64DXSM(seq).random_raw(_MT_WORDS // 2).view(np.uint32)
    gen = torch.Generator()
    state = gen.get_state().numpy().copy()
    header = np.frombuffer(state[:_MT_STATE_AT].tobytes(), dtype=np.uint32).copy()
    header[0:2] = words[0:2]  # the initial seed (reported only)
    header[2:4] = 1  # left = 1, seeded = 1: the next draw twists the new state first
    header[4:6] = 0  # next = 0
    state[:_MT_STATE_AT] = header.view(np.uint8)
    end = _MT_STATE_AT + 8 * _MT_WORDS
    state[_MT_STATE_AT:end] = words.astype(np.uint64).view(np.uint8)
    gen.set_state(torch.from_numpy(state))
    return gen
