"""The host CPU's rated power, and host energy estimated from it where no counter is readable.

Where RAPL cannot be read (the virtual machines these runs use expose no powercap files),
host energy over the measured steps is estimated, and labelled as such, the way
CodeCarbon does without a power counter (mlco2/codecarbon, `codecarbon/external/hardware.py`,
`CPU._get_power_from_cpu_load` in `tracking_mode="process"`)::

    power = TDP x CPU time used / wall time / CPU count

that is, the CPU's rated power (thermal design power) times its utilisation, linear, with
no idle term. Here the CPU time is the whole machine's busy time from /proc/stat (every
process: host noise threads, the data loader, the driver), stolen time left out, so

    energy = rated W x busy CPU-seconds / logical CPUs.

An idle CPU draws power too; this estimate leaves that out (CodeCarbon's machine mode
adds a floor of 10 % of TDP), so it is the energy the run's busy time costs at rated
power, a bound on neither side: real draw under load varies with clock and vector width.

The rated power comes from `--cpu-tdp WATTS` (used as given: the rated power of the CPUs
this machine has; on a virtual machine its share of the socket's) or from `TDP_TABLE`
by /proc/cpuinfo's model name. A table TDP is per socket and is scaled by the share of
a socket's cores this machine has: its logical CPUs over threads per core (/proc/cpuinfo
`siblings` / `cpu cores`, as the machine reports them) over the socket's cores. A
16-vCPU virtual machine that reports 2 threads per core on a 56-core, 350 W socket gets
8/56 of 350 W = 50 W; a two-socket machine of that CPU gets 2 x 350 W. CodeCarbon
multiplies its registry TDP by the physical package count instead, which charges a VM
the whole socket.

An unknown model and no `--cpu-tdp` give no estimate: the fields stay None and a reason
says what to pass. CodeCarbon would assume 4 W per thread (`DEFAULT_POWER_PER_CORE`) or
85 W (`POWER_CONSTANT`); a figure built on such a guess would look measured, so none is
made here. Virtual machines often report a generic model name ("Intel(R) Xeon(R)
Processor") with no SKU; the reason then quotes its family and model numbers.
"""

from __future__ import annotations

import math
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from lazydp_bench.errors import BenchError

CPUINFO = Path("/proc/cpuinfo")
CPU_ESTIMATE = "estimate (TDP x utilisation)"  # a record's cpu_source for an estimate


@dataclass(frozen=True)
class RatedCpu:
    """One CPU model's rated power per socket (vendor TDP) and cores per socket."""

    name: str
    tdp_w: float
    cores: int


# Vendor TDPs (base power) per socket, from the vendors' product pages: the host CPUs of
# common GPU servers and a few desktop and laptop parts. Add a row to support a CPU.
TDP_TABLE: tuple[RatedCpu, ...] = (
    RatedCpu("Intel Xeon Platinum 8480+", 350, 56),  # Sapphire Rapids: DGX H100 / H200
    RatedCpu("Intel Xeon Platinum 8470", 350, 52),
    RatedCpu("Intel Xeon Platinum 8468", 350, 48),
    RatedCpu("Intel Xeon Platinum 8462Y+", 300, 32),
    RatedCpu("Intel Xeon Platinum 8592+", 350, 64),  # Emerald Rapids
    RatedCpu("Intel Xeon Platinum 8380", 270, 40),  # Ice Lake
    RatedCpu("Intel Xeon Platinum 8358", 250, 32),
    RatedCpu("Intel Xeon Gold 6338", 205, 32),
    RatedCpu("Intel Xeon Platinum 8275CL", 240, 24),  # Cascade Lake (AWS)
    RatedCpu("AMD EPYC 9654", 360, 96),  # Genoa
    RatedCpu("AMD EPYC 9554", 360, 64),
    RatedCpu("AMD EPYC 9474F", 360, 48),
    RatedCpu("AMD EPYC 7763", 280, 64),  # Milan
    RatedCpu("AMD EPYC 7742", 225, 64),  # Rome: DGX A100
    RatedCpu("Intel Core i9-13900K", 125, 24),
    RatedCpu("Intel Core i7-1165G7", 28, 4),
    RatedCpu("AMD Ryzen 9 7950X", 170, 16),
    RatedCpu("AMD Ryzen 7 5800X", 105, 8),
)

# marks and words that vary between spellings of one model: "(R)", "CPU", "@ 2.00GHz",
# "96-Core Processor", "13th Gen"
_NOISE = re.compile(
    r"\((r|tm)\)|@\s*[\d.]+\s*ghz|\b\d+-core\b|\b\d+(st|nd|rd|th) gen\b|\bcpu\b|\bprocessor\b"
)


def _tokens(name: str) -> list[str]:
    return _NOISE.sub(" ", name.lower()).split()


def lookup(model: str | None) -> RatedCpu | None:
    """The table row whose name's words appear, in order and adjacent, among the model
    name's (marks like (R), clock speeds and core counts ignored); None if none does."""
    if not model:
        return None
    words = _tokens(model)
    for row in TDP_TABLE:
        key = _tokens(row.name)
        if any(words[i : i + len(key)] == key for i in range(len(words) - len(key) + 1)):
            return row
    return None


@dataclass(frozen=True)
class HostCpu:
    """What /proc/cpuinfo says about this machine's CPUs."""

    model: str | None
    logical_cpus: int
    threads_per_core: float  # siblings / cpu cores; 1 where cpuinfo does not say
    family_model: str | None = None  # "family 6 model 143": names a generation without a SKU

    @property
    def cores(self) -> float:
        return self.logical_cpus / self.threads_per_core


def _field(block: str, name: str) -> str | None:
    match = re.search(rf"^{name}\s*:\s*(.*)$", block, re.MULTILINE)
    return match.group(1).strip() if match else None


def parse_cpuinfo(text: str) -> HostCpu:
    """The model, logical CPU count and threads per core of a /proc/cpuinfo text."""
    blocks = [b for b in text.split("\n\n") if _field(b, "processor") is not None]
    first = blocks[0] if blocks else text
    siblings, cores = _field(first, "siblings"), _field(first, "cpu cores")
    tpc = int(siblings) / int(cores) if siblings and cores and int(cores) > 0 else 1.0
    family, model = _field(first, "cpu family"), _field(first, "model")
    return HostCpu(
        model=_field(first, "model name"),
        logical_cpus=len(blocks) or os.cpu_count() or 1,
        threads_per_core=max(1.0, tpc),
        family_model=f"family {family} model {model}" if family and model else None,
    )


def read_host_cpu(path: Path = CPUINFO) -> HostCpu:
    """This machine's CPUs (/proc/cpuinfo; elsewhere the platform's name, no topology)."""
    try:
        return parse_cpuinfo(path.read_text())
    except OSError:
        return HostCpu(platform.processor() or None, os.cpu_count() or 1, 1.0)


@dataclass(frozen=True)
class RatedPower:
    """The rated power the host estimate uses: watts for this machine's CPUs, where they
    came from ("table: <model>" or "--cpu-tdp"), the share of the table's socket TDP it is
    (None when stated), and the logical CPUs busy time is counted over."""

    watts: float
    source: str
    share: float | None
    logical_cpus: int

    def joules(self, busy_cpu_s: float) -> float:
        """Rated power x utilisation x window = watts x busy CPU-seconds / CPUs."""
        return self.watts * busy_cpu_s / self.logical_cpus


def check_cpu_tdp(watts: float | None) -> None:
    """`--cpu-tdp` is a finite positive number of watts (BenchError otherwise)."""
    if watts is not None and not (math.isfinite(watts) and watts > 0):
        raise BenchError(f"--cpu-tdp must be a positive number of watts, got {watts}")


def rated_power(stated_w: float | None, host: HostCpu) -> RatedPower | str:
    """`--cpu-tdp` as given, else the table's TDP scaled to this machine's share of the
    socket's cores; else the reason there is none."""
    if stated_w is not None:
        check_cpu_tdp(stated_w)
        return RatedPower(stated_w, "--cpu-tdp", None, host.logical_cpus)
    row = lookup(host.model)
    if row is None:
        known = f", {host.family_model}" if host.family_model else ""
        return (
            f"host CPU {host.model or 'of unknown model'!r}{known} is not in the TDP table "
            "(a virtual machine may hide its SKU); give --cpu-tdp WATTS for a host estimate"
        )
    share = host.cores / row.cores
    return RatedPower(row.tdp_w * share, f"table: {row.name}", share, host.logical_cpus)
