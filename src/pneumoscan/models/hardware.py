"""Detect what the hardware offers instead of assuming it.

bf16 autocast is a large win on CPUs with bf16 matrix units (AVX512-BF16 / AMX: 2–3× for dense convolutions) and a
loss on CPUs without them, where bf16 is emulated. So ``precision="auto"`` picks bf16 only when the CPU flags say
the units are there, bf16 or fp16 on CUDA, and fp32 otherwise.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pneumoscan.errors import ConfigError
from pneumoscan.models.precision import PRECISIONS, amp_dtype, precision_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hardware:
    """The resolved execution settings.

    Attributes:
        device: torch device string ("cpu", "cuda", "cuda:1").
        amp_dtype: autocast dtype, or None for fp32.
        channels_last: use NHWC memory format (faster for convolutions with oneDNN and cuDNN).
        description: human-readable summary for logs and benchmarks.
    """

    device: str
    amp_dtype: torch.dtype | None
    channels_last: bool
    description: str

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``: the name of the autocast setting (a ``resolve_hardware`` argument)."""
        return precision_name(self.amp_dtype)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty when unavailable, e.g. not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AMX-BF16 or AVX512-BF16)."""
    flags = cpu_flags()
    if flags:
        return bool({"amx_bf16", "avx512_bf16"} & flags)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def active_allocator() -> str:
    """``tcmalloc`` when it is mapped into this process, else ``system malloc`` (read from /proc/self/maps)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system malloc"
    return "tcmalloc" if "libtcmalloc" in maps else "system malloc"


def resolve_hardware(device: str = "auto", precision: str = "auto") -> Hardware:
    """Pick device, autocast dtype and memory format.

    Args:
        device: "auto" (CUDA when available, else CPU), "cpu" or "cuda[:N]".
        precision: one of :data:`~pneumoscan.models.precision.PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available")
    is_cuda = device.startswith("cuda")
    if precision == "auto":
        if is_cuda:
            amp: torch.dtype | None = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            amp = torch.bfloat16 if cpu_has_bf16() else None
    else:
        amp = amp_dtype(precision)
    if amp is torch.float16 and not is_cuda:
        raise ConfigError("fp16 autocast is only supported on CUDA; use bf16 or fp32 on the CPU")
    malloc = ", tcmalloc" if active_allocator() == "tcmalloc" else ""
    cpu = f"CPU ({os.cpu_count()} cores, threads {torch.get_num_threads()}{malloc})"
    name = torch.cuda.get_device_name(device) if is_cuda else cpu
    return Hardware(device, amp, channels_last=True, description=f"{name}, {precision_name(amp)}")
