"""models.precision (the one table of precision names, torch-free at import) and models.hardware (device and
autocast choice)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pneumoscan.errors import ConfigError
from pneumoscan.models import hardware
from pneumoscan.models.hardware import Hardware, resolve_hardware
from pneumoscan.models.precision import (
    AMP_DTYPE_NAMES,
    PRECISIONS,
    RESOLVED_PRECISIONS,
    amp_dtype,
    autocast,
    precision_name,
)


def test_the_table() -> None:
    assert PRECISIONS == ("auto", "fp32", "bf16", "fp16")
    assert RESOLVED_PRECISIONS == ("fp32", "bf16", "fp16") == tuple(AMP_DTYPE_NAMES)
    assert (amp_dtype("fp32"), amp_dtype("bf16"), amp_dtype("fp16")) == (None, torch.bfloat16, torch.float16)
    for name in RESOLVED_PRECISIONS:
        assert precision_name(amp_dtype(name)) == name
    with pytest.raises(KeyError):
        precision_name(torch.float64)


def test_precision_module_imports_no_torch() -> None:
    code = "import sys, pneumoscan.models.precision as p; assert p.PRECISIONS; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_autocast_is_a_no_op_in_fp32_and_runs_bf16_on_the_cpu() -> None:
    a = torch.rand(4, 4)
    with autocast(Hardware("cpu", None, False, "cpu fp32")):
        assert (a @ a).dtype == torch.float32
    with autocast(Hardware("cpu", torch.bfloat16, False, "cpu bf16")):
        assert (a @ a).dtype == torch.bfloat16


def test_resolve_hardware_explicit_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_hardware("cpu", "fp32").precision == "fp32"
    assert resolve_hardware("cpu", "bf16").amp_dtype is torch.bfloat16
    hw = resolve_hardware("cpu", "fp32")
    assert hw.device == "cpu" and hw.device_type == "cpu" and hw.description.endswith(", fp32")
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    assert resolve_hardware("cpu", "auto").precision == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert resolve_hardware("cpu", "auto").precision == "fp32"


def test_resolve_hardware_refusals() -> None:
    with pytest.raises(ConfigError, match=r"^unknown precision 'fp8'; choose from auto, fp32, bf16, fp16$"):
        resolve_hardware("cpu", "fp8")
    with pytest.raises(ConfigError, match="fp16 autocast is only supported on CUDA"):
        resolve_hardware("cpu", "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is available"):
            resolve_hardware("cuda", "fp32")
