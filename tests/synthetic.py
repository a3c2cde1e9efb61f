"""Synthetic volumes for tests that must run without the shared data."""

from __future__ import annotations

import numpy as np


def ellipsoid_volume(shape=(24, 64, 64), centre=None, radii=(8, 14, 18), seed=0):
    """A bright ellipsoid in noise: (image float32, reference mask bool)."""
    rng = np.random.default_rng(seed)
    centre = centre or tuple(s / 2 for s in shape)
    grid = np.indices(shape, dtype=np.float32)
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
    image = (inside * 100 + rng.normal(20, 8, shape)).astype(np.float32)
    return image, inside
