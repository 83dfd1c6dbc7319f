"""Differentiable augmentation (Zhao & Bilen 2021, "Dataset condensation with differentiable siamese augmentation").

One random affine warp per image (scale, rotation, translation) through ``affine_grid``/``grid_sample``,
so gradients flow back to synthetic images; no flips (they change what a digit is).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgekd.dataset_distill.config import AugmentSettings


def augment(images: torch.Tensor, settings: AugmentSettings, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images`` [N, C, H, W] each warped by a random affine transform (identity when disabled)."""
    if not settings.enabled or images.dim() != 4:
        return images
    count = images.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(count, generator=generator) * 2 - 1) * limit

    scale = 1 + uniform(settings.scale)
    angle = uniform(math.radians(settings.rotate_degrees))
    shift_x, shift_y = uniform(2 * settings.translate), uniform(2 * settings.translate)  # grid spans [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
