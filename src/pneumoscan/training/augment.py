"""Batch augmentation on tensors, with its own random generator.

All geometric augmentations (rotation, zoom / random resized crop, translation, horizontal flip) are composed into
one affine matrix per image and applied with a single ``grid_sample`` over the batch; brightness and contrast are
per-image affine intensity changes. The acquisition augmentations (gamma, blur, noise, JPEG quality, resolution loss,
burned-in text; :class:`~pneumoscan.training.config.AugmentConfig`) imitate other scanners and sites and follow.
Doing it per batch in the training process is several times cheaper on a 2-core CPU than per-image PIL transforms in
DataLoader workers, and the generator's state goes into the checkpoint, so a resumed run draws exactly the
augmentations an uninterrupted one would.
"""

from __future__ import annotations

import io
import math

import numpy as np
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
        if cfg.acquisition:
            images = self._acquisition(images)
        return images

    # -- scanner / site imitation ------------------------------------------------------------------------------
    def _chosen(self, n: int, probability: float) -> list[int]:
        return torch.nonzero(torch.rand(n, generator=self.generator) < probability).flatten().tolist()

    def _acquisition(self, images: torch.Tensor) -> torch.Tensor:
        """Burned-in text, then the imaging chain: resolution loss, blur, JPEG, gamma, noise (each per image)."""
        cfg = self.config
        n = images.shape[0]
        images = images.clone()
        if cfg.text > 0:
            for i in self._chosen(n, cfg.text):
                images[i, 0] = self._burn_text(images[i, 0])
        if cfg.downscale > 0:
            side = images.shape[-1]
            for i in self._chosen(n, 0.5):
                f = float(self._uniform(1, 1 - cfg.downscale, 1.0))
                small = max(8, round(side * f))
                if small < side:
                    down = F.interpolate(images[i:i + 1], size=(small, small), mode="bilinear", antialias=True,
                                         align_corners=False)
                    images[i:i + 1] = F.interpolate(down, size=images.shape[-2:], mode="bilinear",
                                                    align_corners=False)
        if cfg.blur > 0:
            for i in self._chosen(n, 0.5):
                sigma = float(self._uniform(1, 0.0, cfg.blur))
                if sigma >= 0.2:
                    images[i:i + 1] = _gaussian_blur(images[i:i + 1], sigma)
        if cfg.jpeg > 0:
            for i in self._chosen(n, cfg.jpeg):
                quality = int(torch.randint(20, 91, (1,), generator=self.generator))
                images[i, 0] = _jpeg(images[i, 0], quality)
        if cfg.gamma > 0:
            chosen = self._chosen(n, 0.5)
            if chosen:
                g = torch.exp(self._uniform(len(chosen), -cfg.gamma, cfg.gamma)).view(-1, 1, 1, 1).to(images.device)
                images[chosen] = images[chosen].clamp(1e-6, 1.0) ** g
        if cfg.noise > 0:
            chosen = self._chosen(n, 0.5)
            if chosen:
                std = self._uniform(len(chosen), 0.0, cfg.noise).view(-1, 1, 1, 1).to(images.device)
                noise = torch.randn(images[chosen].shape, generator=self.generator).to(images.device)
                images[chosen] = images[chosen] + noise * std
        return images.clamp_(0, 1)

    def _burn_text(self, image: torch.Tensor) -> torch.Tensor:
        """A marker like those printed on films (side markers, "PORTABLE", dates) at a random place and brightness."""
        from PIL import Image, ImageDraw

        h, w = image.shape
        words = _MARKERS[int(torch.randint(len(_MARKERS), (1,), generator=self.generator))]
        size = max(8, int(h * float(self._uniform(1, 0.05, 0.12))))
        font = _font(size)
        canvas = Image.fromarray(np.rint(image.detach().cpu().numpy() * 255).astype(np.uint8), mode="L")
        draw = ImageDraw.Draw(canvas)
        x = int(float(self._uniform(1, 0.02, 0.7)) * w)
        y = int(float(self._uniform(1, 0.02, 0.85)) * h)
        level = int(float(self._uniform(1, 180, 255)))
        draw.text((x, y), words, fill=level, font=font)
        return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).to(image.device)


_MARKERS = ("PORTABLE", "AP", "PA", "L", "R", "SUPINE", "ERECT", "AP PORTABLE", "12/03/2019", "UPRIGHT", "SEMI-ERECT")


def _font(size: int) -> object:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, AttributeError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (1, 1, H, W) tensor with reflect padding."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    out = F.pad(image, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1))
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, k.view(1, 1, -1, 1))


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Re-encode a (H, W) image in [0, 1] as JPEG at ``quality`` and decode it again."""
    from PIL import Image

    arr = np.rint(image.detach().cpu().numpy() * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    back = np.asarray(Image.open(buf).convert("L"), dtype=np.float32) / 255.0
    return torch.from_numpy(back).to(image.device)
