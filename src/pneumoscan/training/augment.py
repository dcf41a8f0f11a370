"""Batch augmentation on tensors, with its own random generator.

All geometric augmentations (rotation, zoom / random resized crop, translation, horizontal flip) are composed into
one affine matrix per image and applied with a single ``grid_sample`` over the batch; brightness and contrast are
per-image affine intensity changes. Doing it per batch in the training process is several times cheaper on a 2-core
CPU than per-image PIL transforms in DataLoader workers, and the generator's state goes into the checkpoint, so a
resumed run draws exactly the augmentations an uninterrupted one would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pneumoscan.training.config import AugmentConfig


class BatchAugment:
    """Random augmentation of a (N, 1, H, W) float batch in [0, 1] (before mean/std normalisation)."""

    def __init__(self, config: AugmentConfig, generator: torch.Generator) -> None:
        self.config = config
        self.generator = generator

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) * (high - low) + low

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        n = images.shape[0]
        geometric = cfg.rotation > 0 or cfg.zoom > 0 or cfg.translate > 0 or cfg.hflip > 0
        if geometric:
            angle = self._uniform(n, -cfg.rotation, cfg.rotation) * (math.pi / 180)
            scale = self._uniform(n, 1 - cfg.zoom, 1.0)  # crop side as a fraction: < 1 zooms in
            flip = torch.where(torch.rand(n, generator=self.generator) < cfg.hflip, -1.0, 1.0)
            tx = self._uniform(n, -cfg.translate, cfg.translate) * 2
            ty = self._uniform(n, -cfg.translate, cfg.translate) * 2
            cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
            theta = torch.stack([
                torch.stack([cos * flip, -sin, tx], dim=1),
                torch.stack([sin * flip, cos, ty], dim=1),
            ], dim=1).to(images.device, images.dtype)
            grid = F.affine_grid(theta, list(images.shape), align_corners=False)
            images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if cfg.brightness > 0 or cfg.contrast > 0:
            b = self._uniform(n, -cfg.brightness, cfg.brightness).view(n, 1, 1, 1).to(images.device)
            c = self._uniform(n, 1 - cfg.contrast, 1 + cfg.contrast).view(n, 1, 1, 1).to(images.device)
            mean = images.mean(dim=(1, 2, 3), keepdim=True)
            images = ((images - mean) * c + mean + b).clamp_(0, 1)
        return images
