"""Precision names and the autocast context: the one table of ``precision`` values.

Torch-free at import (``torch`` is imported inside :func:`amp_dtype` and :func:`autocast`), so the CLI and the server
settings can list the choices in an install without PyTorch.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Literal, Protocol, get_args

if TYPE_CHECKING:
    import torch

#: A ``precision`` argument: ``auto`` (chosen by hardware) or an autocast setting.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
#: Every ``precision`` value, ``auto`` first (argparse ``choices``, validation).
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: Resolved precision name -> the ``torch`` dtype attribute autocast runs in (None: no autocast, fp32).
AMP_DTYPE_NAMES: dict[str, str | None] = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
#: The resolved names (``Hardware.precision``, ``calibration_precision``): every precision but ``auto``.
RESOLVED_PRECISIONS: tuple[str, ...] = tuple(AMP_DTYPE_NAMES)


class _Autocastable(Protocol):
    """What :func:`autocast` needs of :class:`pneumoscan.models.hardware.Hardware`."""

    @property
    def device_type(self) -> str: ...

    @property
    def amp_dtype(self) -> torch.dtype | None: ...


def amp_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision name (None for fp32)."""
    import torch

    attr = AMP_DTYPE_NAMES[precision]
    return None if attr is None else getattr(torch, attr)


def precision_name(dtype: torch.dtype | None) -> str:
    """The resolved precision name of an autocast dtype (None -> ``fp32``)."""
    for name in RESOLVED_PRECISIONS:
        if amp_dtype(name) == dtype:
            return name
    raise KeyError(dtype)


def autocast(hw: _Autocastable) -> contextlib.AbstractContextManager[None]:
    """Autocast context for the resolved precision (a no-op for fp32)."""
    if hw.amp_dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=hw.device_type, dtype=hw.amp_dtype)
