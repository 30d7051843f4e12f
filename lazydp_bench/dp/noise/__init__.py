"""Dense noise engines: `target += std * N(0, 1)` over every element, in bounded chunks.

DP-SGD noises every parameter every step, so for a big table this pass IS the step.
Engines (`--noise-impl`):
- `torch`: chunked `normal_` into a bounded buffer, then an add (the paper's split into
  noise sampling and parameter update);
- `fused`: on a GPU one Triton kernel (Philox normals in registers, one read+write pass);
  on the host a thread pool, one generator per chunk, noise added while hot in cache;
- `host-philox`: on the host, compiled C draws the fused kernel's Philox stream and adds it
  in one pass, threads splitting the programs (`host_philox.py`).
No engine allocates a buffer larger than `chunk_bytes`.
"""

from lazydp_bench.dp.noise.base import DenseNoiseEngine, derive_seed
from lazydp_bench.dp.noise.registry import NOISE_ENGINES, make_engine

__all__ = ["NOISE_ENGINES", "DenseNoiseEngine", "derive_seed", "make_engine"]
