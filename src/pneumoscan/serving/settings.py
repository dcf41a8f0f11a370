"""Server settings: command-line options > environment variables (``PNEUMOSCAN_*``) > defaults.

Built by :func:`pneumoscan.serving.app.create_app` (never at import time), so tests and the CLI can pass their own
values and importing the module has no side effects.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pneumoscan.data.io import DEFAULT_MAX_PIXELS
from pneumoscan.models.precision import Precision


class ServeSettings(BaseSettings):
    """Everything the server needs to know; each field can be set with ``PNEUMOSCAN_<FIELD>`` (e.g.
    ``PNEUMOSCAN_API_KEY``, ``PNEUMOSCAN_MAX_UPLOAD_MB``).

    Attributes:
        checkpoint: ``.pt`` checkpoint or ``.onnx`` export; None serves the model shipped with the package.
        backend: "torch" (Grad-CAM heatmaps available) or "onnx" (no PyTorch needed; no heatmaps).
        device: torch device ("auto", "cpu", "cuda[:N]"); ignored by the onnx backend.
        precision: torch autocast (one of :data:`pneumoscan.models.precision.PRECISIONS`); ignored by the onnx backend.
        population: the operating point labels are given at (None: the model's default population); a request may
            name another with ``population=``.
        host: address uvicorn binds; loopback by default so nothing is exposed by accident.
        port: TCP port.
        api_key: when set, every ``/v1`` request needs header ``X-API-Key`` with this value.
        max_upload_mb: largest accepted file, per file (answer 413 beyond).
        max_pixels: largest decoded image (width × height), the decompression-bomb guard (answer 413 beyond).
        max_files: most files in one request (answer 413 beyond).
        batch_size: most images run through the network at once (requests arriving together are batched).
        max_concurrent_uploads: most requests with a body in flight at once (503 with ``Retry-After`` beyond);
            each may spool up to ``max_request_bytes`` to disk while it is parsed, so this bounds disk and memory.
        decode_concurrency: images decoded at the same time; bounds memory (a 50 M-pixel image needs ~350 MB while
            decoding) and keeps decoding from starving inference of CPU.
    """

    model_config = SettingsConfigDict(env_prefix="PNEUMOSCAN_", extra="ignore", frozen=True)

    checkpoint: Path | None = None
    backend: Literal["torch", "onnx"] = "torch"
    device: str = "auto"
    precision: Precision = "auto"
    population: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: SecretStr | None = None
    max_upload_mb: float = Field(default=50.0, gt=0, le=4096)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    max_files: int = Field(default=16, ge=1, le=1000)
    batch_size: int = Field(default=16, ge=1, le=1024)
    decode_concurrency: int = Field(default=2, ge=1, le=64)
    max_concurrent_uploads: int = Field(default=16, ge=1, le=10_000)

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        """``PNEUMOSCAN_API_KEY=`` (empty) means no key, not a key that is the empty string."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_request_bytes(self) -> int:
        """Largest request body accepted before parsing: every file at its limit plus room for the form framing."""
        return self.max_files * self.max_upload_bytes + 1024 * 1024

    @property
    def auth_required(self) -> bool:
        return self.api_key is not None

    @property
    def host_is_loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any address in 127.0.0.0/8 or ::1."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
