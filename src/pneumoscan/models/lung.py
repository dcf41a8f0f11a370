"""Lung-field segmentation network: a small U-Net (needs PyTorch).

The network is deliberately small (about 0.5 M parameters, 128×128 input): its job is to find the two lung fields
well enough to crop to them, to dim what lies outside them and to say how much of a Grad-CAM heatmap falls inside
them — not to delineate the pleura to the pixel. It is a plain U-Net (Ronneberger et al., MICCAI 2015) trained in
this project on the NLM Montgomery and Shenzhen lung masks (Jaeger et al. 2014; Shenzhen masks by Stirenko et al.
2018, CC BY-NC-SA 4.0): see ``pneumoscan segment train`` and :mod:`pneumoscan.training.segment`.

Running it on images (PyTorch or the ONNX export, so that an ONNX-only deployment crops without PyTorch) is
:class:`pneumoscan.inference.lungs.LungSegmenter`; what a lung map is used for (bounding box, crop, dimming, heatmap
share) is the torch-free :mod:`pneumoscan.data.lungs`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

LUNG_MODEL_NAME = "lung_unet"
LUNG_FORMAT = "pneumoscan-lung-1"  # the ``format`` key of a lung checkpoint / weights file
DEFAULT_LUNG_PREPROCESS = PreprocessConfig(image_size=128, mean=0.5, std=0.25)


@dataclass(frozen=True)
class LungNetConfig:
    """Architecture of :class:`LungUNet`.

    Attributes:
        base: channels of the first level; level ``i`` has ``base * 2**i``.
        depth: number of down-sampling steps (the input side must be divisible by ``2**depth``).
    """

    base: int = 16
    depth: int = 3

    def __post_init__(self) -> None:
        if not 4 <= self.base <= 128 or not 1 <= self.depth <= 6:
            raise ConfigError(f"lung network: base must be 4..128 and depth 1..6, got {self.base}, {self.depth}")

    def to_dict(self) -> dict[str, int]:
        return {"base": self.base, "depth": self.depth}


def build_lung_unet(config: LungNetConfig | None = None) -> Any:
    """Create an untrained :class:`LungUNet` (imports torch)."""
    from torch import nn

    cfg = config or LungNetConfig()

    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )

    class LungUNet(nn.Module):
        """U-Net: (N, 1, S, S) normalised grey images → (N, 1, S, S) lung logits."""

        def __init__(self) -> None:
            super().__init__()
            chans = [cfg.base * 2 ** i for i in range(cfg.depth + 1)]
            self.config = cfg
            self.down = nn.ModuleList([block(1, chans[0])] + [block(chans[i], chans[i + 1])
                                                               for i in range(cfg.depth)])
            self.pool = nn.MaxPool2d(2)
            self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                                     for i in reversed(range(cfg.depth))])
            self.merge = nn.ModuleList([block(2 * chans[i], chans[i]) for i in reversed(range(cfg.depth))])
            self.head = nn.Conv2d(chans[0], 1, 1)

        def forward(self, image: Any) -> Any:
            skips = []
            x = image
            for i, stage in enumerate(self.down):
                x = stage(x if i == 0 else self.pool(x))
                skips.append(x)
            skips.pop()
            for up, merge in zip(self.up, self.merge, strict=True):
                x = up(x)
                x = merge(_cat(x, skips.pop()))
            return self.head(x)

    return LungUNet()


def _cat(a: Any, b: Any) -> Any:
    import torch

    return torch.cat([a, b], dim=1)


# -- weights files -------------------------------------------------------------------------------------------------
def lung_state(model: Any, preprocess: PreprocessConfig, **extra: Any) -> dict[str, Any]:
    """A plain-data dict (loadable with ``weights_only=True``) that rebuilds ``model``."""
    return {"format": LUNG_FORMAT, "model": {"name": LUNG_MODEL_NAME, **model.config.to_dict()},
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "preprocess": preprocess.to_dict(), **extra}


def load_lung_state(path: str | Path) -> dict[str, Any]:
    """Read a lung checkpoint or shipped weights file safely; :class:`CheckpointError` if it is not one."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: lung model not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable lung model ({str(err).splitlines()[0][:200]})") from err
    if not isinstance(state, dict) or state.get("format") != LUNG_FORMAT:
        raise CheckpointError(f"{path}: not a pneumoscan lung model (format {LUNG_FORMAT} expected)")
    return state


def model_from_state(state: dict[str, Any]) -> Any:
    """Rebuild the network of a lung state dict, in eval mode."""
    info = state["model"]
    model = build_lung_unet(LungNetConfig(base=int(info["base"]), depth=int(info["depth"])))
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"lung weights do not fit the recorded architecture: {str(err).splitlines()[0]}") \
            from err
    return model.eval()
