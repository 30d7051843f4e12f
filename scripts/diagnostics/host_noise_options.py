"""Times every host (CPU) noise option on this machine: `x += std * z` over a float32 target.

One command, one table: each option's G samples/s at each thread count, next to the host
memory bound (an in-place add `x += c` by the same threads reads and writes every element
once, as the noise pass must; and a threaded copy of 1 GiB, read + write), and a JSON file.

Options:
- host-philox: the compiled C engine (`lazydp_bench/dp/noise/host_philox.py`), Philox
  drawn and added in one pass, per block size (Philox groups drawn at a time: SUB lanes x 4
  normals); every block size draws the same numbers (checked here, bit for bit);
- host-threaded: the current host engine (torch mt19937 normal_ in 1 MiB pieces + add);
- numpy ziggurat: NumPy's float32 standard_normal (Philox bit generator) + add, 16 MiB
  tasks, 256 KiB pieces;
- torch.compile: the same Philox + Box-Muller + add in pure torch (int64 arithmetic),
  compiled by inductor's C++ backend (OpenMP at the largest thread count only, where it is
  timed; its compile time is reported, and its largest difference from host-philox's
  draws: the same words, but float32 u = c / 2**32 rounds to 1 near the top, so normals
  near 0 differ by up to ~3e-4; a speed probe, not an engine).

Passes with fewer than 4 threads run over the first quarter of the target (they are bound
by arithmetic, not memory, and would otherwise take most of the time).

Run on the 16-core GPU host (about 1.5 minutes with a 4 GiB target):
  PYTHONPATH=$PWD python3 scripts/diagnostics/host_noise_options.py --out host_noise.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from lazydp_bench.dp.noise.host_philox import PROGRAM, HostPhiloxEngine
from lazydp_bench.dp.noise.host_threaded import HostThreadedEngine
from lazydp_bench.measure.env import machine_info
from lazydp_bench.measure.hybrid_bound import host_copy_rate
from lazydp_bench.measure.profiling import NULL_TIMER

COLS = 1024
STD = 1e-3
TASK = 1 << 22  # elements per NumPy task (16 MiB of fp32)
PIECE = 1 << 16  # NumPy's piece: 256 KiB, in L2 between draw and add
BLOCKS = (128, 64, 256, 1024)  # host-philox lanes per block; the first is the default
KEY = (0xDEADBEEF << 32) | 12345
M32 = 0xFFFFFFFF

Pass = Callable[[torch.Tensor, int], None]  # (target [rows, COLS], threads)


def timed_rate(run: Pass, target: torch.Tensor, threads: int, repeats: int) -> float:
    """Best G samples/s of `repeats` passes over the target (its first quarter below 4
    threads), after one on 1/16 of it."""
    if threads < 4:
        target = target[: max(1, target.shape[0] // 4)]
    run(target[: max(1, target.shape[0] // 16)], threads)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(target, threads)
        best = max(best, target.numel() / (time.perf_counter() - t0) / 1e9)
    return best


def engine_pass(make: Callable[[int], object]) -> Pass:
    engines: dict[int, object] = {}

    def run(target: torch.Tensor, threads: int) -> None:
        if threads not in engines:
            engines[threads] = make(threads)
            engines[threads].prepare(target)
        engines[threads].add_noise(target, STD, KEY, NULL_TIMER)

    return run


def in_tasks(work: Callable[[np.ndarray, int], None]) -> Pass:
    """`work(slice, task)` over 16 MiB tasks of the flat target, `threads` at a time."""

    def run(target: torch.Tensor, threads: int) -> None:
        flat = target.view(-1).numpy()
        tasks = range(-(-flat.size // TASK))
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda t: work(flat[t * TASK : (t + 1) * TASK], t), tasks))

    return run


def numpy_ziggurat(part: np.ndarray, task: int) -> None:
    gen = np.random.Generator(np.random.Philox(np.random.SeedSequence([KEY, task])))
    z = np.empty(PIECE, np.float32)
    for s in range(0, part.size, PIECE):
        n = min(PIECE, part.size - s)
        gen.standard_normal(dtype=np.float32, out=z[:n])
        z[:n] *= np.float32(STD)
        part[s : s + n] += z[:n]


def add_only(part: np.ndarray, task: int) -> None:
    np.add(part, np.float32(1e-9), out=part)


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of a * m for a < 2**32 in int64, without overflowing it."""
    t = a * (m & 0xFFFF)
    u = a * (m >> 16) + (t >> 16)
    return u >> 16, ((u & 0xFFFF) << 16) | (t & 0xFFFF)


def torch_philox_add(w, group0, chunk, k0, k1, std) -> None:
    """w [programs, 4, 1024] += std * z: host-philox's stream in pure torch (float32 sin
    and cos of the whole angle rather than of the bit-reduced quadrant)."""
    c0 = group0 + torch.arange(w.shape[0] * 1024, dtype=torch.int64).view(-1, 1024)
    c1, c2, c3 = torch.zeros_like(c0) + chunk, torch.zeros_like(c0), torch.zeros_like(c0)
    a, b = k0, k1
    for _ in range(10):
        hb, lb = _mulhilo(c2, 0xCD9E8D57)
        ha, la = _mulhilo(c0, 0xD2511F53)
        c0, c1, c2, c3 = hb ^ c1 ^ a, lb, ha ^ c3 ^ b, la
        a, b = (a + 0x9E3779B9) & M32, (b + 0xBB67AE85) & M32
    zs = []
    for x, y in ((c0, c1), (c2, c3)):
        r = torch.sqrt(-2.0 * torch.log(x.to(torch.float32) * 2.0**-32 + 2.0**-33))
        theta = (y.to(torch.float32) * 2.0**-32 + 2.0**-33) * 6.283185307179586 - 0.78539816
        zs += [r * torch.cos(theta), r * torch.sin(theta)]
    w.add_(torch.stack(zs, dim=1) * std)


def compiled_pass(threads: int) -> tuple[Pass, float]:
    """torch.compile of `torch_philox_add` with `threads` OpenMP threads (inductor fixes
    the count when it compiles), called on 64 Mi-element pieces; and its compile time."""
    torch.set_num_threads(threads)
    fn = torch.compile(torch_philox_add, dynamic=False)
    piece = (1 << 26) // PROGRAM
    k0, k1 = torch.tensor(KEY & M32), torch.tensor(KEY >> 32)
    chunk, std = torch.tensor(0), torch.tensor(STD)
    t0 = time.perf_counter()
    fn(torch.zeros(piece, 4, 1024), torch.tensor(0), chunk, k0, k1, std)
    compile_s = time.perf_counter() - t0

    def run(target: torch.Tensor, _threads: int) -> None:
        w = target.view(-1, 4, 1024)
        for p in range(0, w.shape[0] - piece + 1, piece):  # whole pieces: one compiled shape
            fn(w[p : p + piece], torch.tensor(p * 1024), chunk, k0, k1, std)

    return run, compile_s


def check_same_stream(run: Pass, threads: int) -> float:
    """Largest |difference| / max(1, |z|) between an option's draws and host-philox's on a
    64 Mi-element zero target (the same stream; 0 means bit for bit)."""
    got = torch.zeros((1 << 26) // COLS, COLS)
    run(got, threads)
    want = torch.zeros_like(got)
    HostPhiloxEngine(2**28, threads).add_noise(want, STD, KEY, NULL_TIMER)
    return ((got - want).abs() / want.abs().clamp(min=STD)).max().item()


def measure(args) -> dict:
    counts = [int(t) for t in args.threads.split(",")]
    rows = int(args.size_gib * 2**30) // (4 * COLS)
    target = torch.zeros(rows, COLS)
    target.view(-1).numpy()[:] = 0.5  # touch every page before any timing
    result = {
        "machine": {**machine_info(), "cpus": os.cpu_count(), "numpy": np.__version__},
        "target_bytes": target.nbytes,
        "threads": counts,
        "repeats": args.repeats,
        "bound": {"add_g_samples_per_s": {}, "copy_g_samples_per_s": {}},
        "options": [],
    }
    bound = result["bound"]
    for t in counts:
        bound["add_g_samples_per_s"][t] = timed_rate(in_tasks(add_only), target, t, args.repeats)
        copy = host_copy_rate(min(target.nbytes, 2**30), t, repeats=args.repeats)
        bound["copy_g_samples_per_s"][t] = copy / 8 / 1e9

    options: list[tuple[str, Pass]] = []
    for lanes in BLOCKS:
        defines = () if lanes == BLOCKS[0] else (f"SUB={lanes}",)
        name = f"host-philox, {lanes} lanes/block" + (" (default)" if not defines else "")

        def make(t: int, d=defines) -> HostPhiloxEngine:
            return HostPhiloxEngine(2**28, t, defines=d)

        options.append((name, engine_pass(make)))
    options.append(("host-threaded (torch mt19937, current)", engine_pass(_threaded)))
    options.append(("numpy ziggurat (Philox) + add", in_tasks(numpy_ziggurat)))
    for name, run in options:
        rates = {t: timed_rate(run, target, t, args.repeats) for t in counts}
        entry = {"name": name, "g_samples_per_s": rates}
        if name.startswith("host-philox"):
            entry["max_rel_diff_vs_default"] = check_same_stream(run, max(counts))
        result["options"].append(entry)
    if not args.skip_compile:
        result["options"].append(compiled_option(target, max(counts), args.repeats))
    return result


def _threaded(t: int) -> HostThreadedEngine:
    return HostThreadedEngine(2**28, t)


def compiled_option(target: torch.Tensor, threads: int, repeats: int) -> dict:
    entry: dict = {"name": "torch.compile Philox (inductor C++)", "g_samples_per_s": {}}
    if target.numel() % (1 << 28):
        entry["error"] = "needs a target of whole GiB (its pieces are 256 MiB)"
        return entry
    try:
        run, entry["compile_s"] = compiled_pass(threads)
        entry["g_samples_per_s"][threads] = timed_rate(run, target, threads, repeats)
        entry["max_rel_diff_vs_default"] = check_same_stream(run, threads)
    except Exception as err:  # report why it does not work on this torch, keep the table
        entry["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return entry


def table(result: dict) -> str:
    counts = result["threads"]
    m = result["machine"]
    head = f"{'option':<42}" + "".join(f"{str(t) + 't':>8}" for t in counts) + "  notes"
    lines = [
        f"host noise options: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']}, "
        f"target {result['target_bytes'] / 2**30:.1f} GiB fp32, best of {result['repeats']}",
        "G samples/s (bounds: bytes read + written per second / 8)",
        head,
    ]

    def row(name: str, rates: dict, note: str = "") -> str:
        cells = "".join(f"{rates[t]:8.3f}" if t in rates else f"{'-':>8}" for t in counts)
        return f"{name[:42]:<42}{cells}  {note}"

    lines.append(row("bound: in-place add x += c", result["bound"]["add_g_samples_per_s"]))
    lines.append(row("bound: threaded copy (1 GiB)", result["bound"]["copy_g_samples_per_s"]))
    top = max(counts)
    add = result["bound"]["add_g_samples_per_s"][top]
    for opt in result["options"]:
        rate = opt["g_samples_per_s"].get(top)
        notes = [f"{100 * rate / add:.0f} % of add" if rate else "-"]
        if "compile_s" in opt:
            notes.append(f"compile {opt['compile_s']:.0f} s")
        if "max_rel_diff_vs_default" in opt:
            notes.append(f"vs default {opt['max_rel_diff_vs_default']:.1e}")
        if "error" in opt:
            notes.append(opt["error"])
        lines.append(row(opt["name"], opt["g_samples_per_s"], ", ".join(notes)))
    best = max(result["options"], key=lambda o: o["g_samples_per_s"].get(top, 0.0))
    rate = best["g_samples_per_s"].get(top, 0.0)
    lines.append(
        f"fastest at {top} threads: {best['name']}: {rate:.3f} G samples/s "
        f"= {100 * rate / add:.0f} % of the in-place add bound"
    )
    result["fastest"] = {"threads": top, "name": best["name"], "g_samples_per_s": rate}
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=4.0, help="fp32 target size")
    ap.add_argument("--threads", default="1,4,8,16", help="comma-separated thread counts")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes (best is kept)")
    ap.add_argument("--skip-compile", action="store_true", help="leave out torch.compile")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = measure(args)
    print(table(result))
    result["wall_s"] = time.perf_counter() - t0
    print(f"({result['wall_s']:.0f} s) -> {args.out}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
