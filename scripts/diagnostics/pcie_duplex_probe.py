"""PCIe both ways at once, measured several ways (GPU machine only; a diagnostic, no
records).

`bench noise --placement hybrid` bounds the round-trip engine by 2N bytes over the duplex
rate that `hybrid_bound.pcie_rates` measures: one copy of its buffer each way, at once,
between `pin_memory` buffers. Where the engine moves more than that rate, the model is
wrong, not the engine. This prints H2D, D2H and duplex GB/s for:
- `single`: one copy each way (as `pcie_rates`);
- `windows`: the buffer in windows of CHUNK MiB, up on one stream and down on another,
  every window issued at once (the engine keeps DEPTH in flight);
- each of those on `pin_memory` buffers and on `cudaHostRegister`ed pageable memory
  filled by many threads (as the engine's registered table is).

    PYTHONPATH=$PWD python3 scripts/diagnostics/pcie_duplex_probe.py [MiB] [chunk MiB]
"""

from __future__ import annotations

import sys

import torch

from lazydp_bench.measure.hybrid_bound import _fastest_s


def timed(fn, repeats: int = 5) -> float:
    """Fewest wall seconds of `fn` (which synchronizes), after one warm call."""
    fn()
    return _fastest_s(fn, repeats)


def host_buffers(n: int, registered: bool) -> list[torch.Tensor]:
    """Two host buffers of n floats: `pin_memory`, or pageable, touched by torch's threads
    and then registered."""
    if not registered:
        return [torch.empty(n, pin_memory=True) for _ in range(2)]
    out = []
    for _ in range(2):
        t = torch.empty(n)
        t.fill_(1.0)  # pages placed by the threads that first touch them
        err = torch.cuda.cudart().cudaHostRegister(t.data_ptr(), t.numel() * 4, 0)
        assert int(err) == 0, err
        out.append(t)
    return out


def rates(host: list[torch.Tensor], dev: list[torch.Tensor], window: int) -> dict[str, float]:
    """GB/s of H2D, D2H and both at once, copying `window` floats per copy."""
    up, down = torch.cuda.Stream(), torch.cuda.Stream()
    n = host[0].numel()
    cuts = [(lo, min(n, lo + window)) for lo in range(0, n, window)]

    def h2d() -> None:
        with torch.cuda.stream(up):
            for lo, hi in cuts:
                dev[0][lo:hi].copy_(host[0][lo:hi], non_blocking=True)
        torch.cuda.synchronize()

    def d2h() -> None:
        with torch.cuda.stream(down):
            for lo, hi in cuts:
                host[1][lo:hi].copy_(dev[1][lo:hi], non_blocking=True)
        torch.cuda.synchronize()

    def duplex() -> None:
        for lo, hi in cuts:
            with torch.cuda.stream(up):
                dev[0][lo:hi].copy_(host[0][lo:hi], non_blocking=True)
            with torch.cuda.stream(down):
                host[1][lo:hi].copy_(dev[1][lo:hi], non_blocking=True)
        torch.cuda.synchronize()

    nbytes = 4 * n
    return {
        "h2d": nbytes / timed(h2d) / 1e9,
        "d2h": nbytes / timed(d2h) / 1e9,
        "duplex": 2 * nbytes / timed(duplex) / 1e9,
    }


def main(argv: list[str]) -> None:
    """Every (host memory, copy pattern) pair, one line each."""
    mib = int(argv[0]) if argv else 1024
    chunk = int(argv[1]) if len(argv) > 1 else 256
    n = mib * 2**20 // 4
    dev = [torch.empty(n, device="cuda") for _ in range(2)]
    for registered in (False, True):
        host = host_buffers(n, registered)
        for name, window in (("single", n), ("windows", chunk * 2**20 // 4)):
            r = rates(host, dev, window)
            kind = "registered" if registered else "pin_memory"
            print(
                f"{kind:10s} {name:8s} {mib} MiB: h2d {r['h2d']:.1f}  d2h {r['d2h']:.1f}  "
                f"duplex {r['duplex']:.1f} GB/s (both ways together)"
            )
        if registered:
            for t in host:
                torch.cuda.cudart().cudaHostUnregister(t.data_ptr())


if __name__ == "__main__":
    main(sys.argv[1:])
