"""Augmentation of a block of consecutive slices (one volume, one object): the same geometry and
intensity transform on every slice, so that a propagation sequence stays a coherent volume.

Intensity augmentation is strong on purpose: the network meets CT, other MRI contrasts and microscopy
that it never saw, and ``crop_image`` normalisation removes only the linear part of the difference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F


def geometry(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, spacing):
    """Flips, 90-degree turns, then a random rotation + zoom (p=0.5). image, mask: N x H x W.
    Returns the transformed block and the in-plane spacing (swapped by odd turns, jittered)."""
    sy, sx = spacing
    k = int(rng.integers(4))
    image, mask = np.rot90(image, k, axes=(1, 2)), np.rot90(mask, k, axes=(1, 2))
    if k % 2:
        sy, sx = sx, sy
    if rng.random() < 0.5:
        image, mask = image[:, :, ::-1], mask[:, :, ::-1]
    if rng.random() < 0.5:
        angle = rng.uniform(-math.pi / 6, math.pi / 6)
        zoom = math.exp(rng.uniform(-0.35, 0.35))
        theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0]],
                             dtype=torch.float32) / zoom
        img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[:, None]
        msk = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[:, None]
        grid = F.affine_grid(theta[None].expand(img.shape[0], -1, -1), list(img.shape), align_corners=False)
        image = F.grid_sample(img, grid, padding_mode="border", align_corners=False)[:, 0].numpy()
        mask = F.grid_sample(msk, grid, padding_mode="zeros", align_corners=False)[:, 0].numpy() > 0.5
    # Anisotropic pixels stretch the window the engine cuts: train on that too.
    jitter = np.exp(rng.uniform(-0.2, 0.2, size=2))
    spacing = (sy * jitter[0], sx * jitter[1])
    return np.ascontiguousarray(image), np.ascontiguousarray(mask, dtype=bool), spacing


def intensity(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """image: N x H x W float in [0, 1] -> augmented float32 (range free: the crops renormalise)."""
    x = np.clip(image.astype(np.float32), 0, 1)
    n, h, w = x.shape
    if rng.random() < 0.3:  # windowing, as a CT viewer would: clip to a random intensity band
        lo, hi = np.sort(rng.uniform(0, 1, size=2))
        if hi - lo > 0.15:
            x = np.clip((x - lo) / (hi - lo), 0, 1)
    x = x ** math.exp(rng.uniform(-0.8, 0.8))
    if rng.random() < 0.25:
        x = 1 - x
    if rng.random() < 0.2:  # non-monotonic remapping: tissues swap brightness order
        knots = rng.uniform(0, 1, size=5)
        x = np.interp(x, np.linspace(0, 1, 5), knots).astype(np.float32)
    if rng.random() < 0.5:
        low = rng.standard_normal((3, 3)).astype(np.float32) * rng.uniform(0.1, 0.5)
        field = ndimage.zoom(low, (h / 3, w / 3), order=3, grid_mode=True, mode="nearest")[:h, :w]
        x = x * np.exp(field)[None]
    if rng.random() < 0.3:
        x = ndimage.gaussian_filter(x, (0, *(rng.uniform(0.5, 1.5),) * 2))
    if rng.random() < 0.6:
        sigma = rng.uniform(0.01, 0.12) * (float(np.ptp(x)) + 1e-3)
        x = x + rng.standard_normal(x.shape).astype(np.float32) * sigma
    return x.astype(np.float32)
