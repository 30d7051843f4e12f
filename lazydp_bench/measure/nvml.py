"""The one place the tool opens NVML (machine facts, free GPU memory, the energy counter).

NVML reads the driver without creating a CUDA context, which a sweep's parent process must
not create (its workers need the GPU). Opening never raises: it returns the library and
the device's handle, or the reason they are unavailable, for the caller to record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NvmlDevice:
    """pynvml (or a stand-in with its functions, in tests) and one device's handle."""

    lib: Any
    handle: Any


def open_device(index: int = 0, lib: Any = None) -> NvmlDevice | str:
    """GPU `index` through NVML, or why it cannot be read (a one-line reason)."""
    try:
        if lib is None:
            import pynvml as lib
        lib.nvmlInit()  # reference-counted: opening it again costs nothing
        return NvmlDevice(lib, lib.nvmlDeviceGetHandleByIndex(index))
    except ImportError:
        return "pynvml (nvidia-ml-py) is not installed"
    except Exception as exc:  # NVMLError_*: no driver, no such GPU
        return f"NVML unavailable: {exc}"
