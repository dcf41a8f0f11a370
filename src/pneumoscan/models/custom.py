"""A small CNN designed for one-channel chest X-rays.

Why this shape: radiographs are grey and the findings (consolidation, interstitial opacity) are low-frequency
textures spread over large regions, so the network does not need full-resolution early layers. A stride-2 stem
(measured 4–5× faster on this project's CPU than two full-resolution 3×3 convolutions, see ../shared/MACHINE_PERF.md),
four stages of two 3×3 conv-BN-ReLU layers with max-pooling, global average pooling, dropout and one logit.
About 1.2 M parameters: it trains from scratch in minutes on a laptop CPU.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class XRayCNN(nn.Module):
    """Custom CNN for 1-channel X-rays; ``features`` is the Grad-CAM target (last conv stage).

    ``num_classes=0`` gives an encoder that returns the pooled features (as timm models do), used by self-supervised
    pre-training.
    """

    def __init__(self, in_chans: int = 1, num_classes: int = 1, width: int = 32, drop_rate: float = 0.3) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, w, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
        )
        self.features = nn.Sequential(
            _block(w, w), nn.MaxPool2d(2),
            _block(w, 2 * w), nn.MaxPool2d(2),
            _block(2 * w, 4 * w), nn.MaxPool2d(2),
            _block(4 * w, 8 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.num_features = 8 * w
        self.classifier: nn.Module = nn.Linear(8 * w, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def get_classifier(self) -> nn.Module:
        """The head (timm's interface, so training code treats every architecture alike)."""
        return self.classifier

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(self.stem(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.pool(self.forward_features(images)).flatten(1)
        return self.classifier(self.drop(feats))
