"""Synthetic volumes: random smooth blobs, shells and thin tubes on textured backgrounds, with
unlabelled distractors, so that the network learns "the thing under the click" and not four anatomies.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .data import LabelledVolume, objects_of


def smooth_noise(rng: np.random.Generator, shape, scale: float) -> np.ndarray:
    """Zero-mean, unit-std smooth noise with features about ``scale`` voxels wide (made at low
    resolution and upsampled, which is much cheaper than filtering at full size)."""
    low = [max(2, int(np.ceil(s / max(scale, 1.0))) + 1) for s in shape]
    field = ndimage.gaussian_filter(rng.standard_normal(low).astype(np.float32), 0.7)
    field = ndimage.zoom(field, [s / n for s, n in zip(shape, low)], order=1, grid_mode=True,
                         mode="grid-constant")[: shape[0], : shape[1], : shape[2]]
    out = np.zeros(shape, np.float32)
    out[: field.shape[0], : field.shape[1], : field.shape[2]] = field
    return (out - out.mean()) / (out.std() + 1e-6)


def _grid(shape, zscale: float):
    zz, yy, xx = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij")
    return zz * zscale, yy, xx


def _blob(rng, shape, grid, zscale) -> np.ndarray:
    """A deformed ellipsoid, randomly oriented in-plane."""
    zz, yy, xx = grid
    radii = rng.uniform(3, max(4.0, min(shape[1:]) / 3), size=3)
    radii[0] = rng.uniform(2, max(3.0, shape[0] * zscale / 2))
    c = [rng.uniform(0.15, 0.85) * (s - 1) for s in shape]
    c[0] *= zscale
    a = rng.uniform(0, np.pi)
    dy, dx = yy - c[1], xx - c[2]
    u, v = np.cos(a) * dy + np.sin(a) * dx, -np.sin(a) * dy + np.cos(a) * dx
    r = np.sqrt(((zz - c[0]) / radii[0]) ** 2 + (u / radii[1]) ** 2 + (v / radii[2]) ** 2)
    wobble = smooth_noise(rng, shape, rng.uniform(4, 16)) * rng.uniform(0, 0.35)
    return r + wobble < 1


def _shell(rng, shape, grid, zscale) -> np.ndarray:
    """A blob's wall (myocardium-like ring in every slice)."""
    inner = _blob(rng, shape, grid, zscale)
    thick = int(rng.integers(2, 5))
    return inner & ~ndimage.binary_erosion(inner, np.ones((1, 3, 3), bool), iterations=thick)


def _tube(rng, shape, zscale) -> np.ndarray:
    """A thin, curved, elongated structure (vessel-like), crossing many slices."""
    n = 200
    steps = rng.standard_normal((n, 3)).cumsum(0)
    steps = ndimage.gaussian_filter1d(steps, 12, axis=0)
    direction = rng.standard_normal(3)
    direction[0] *= 2
    path = steps * rng.uniform(0.3, 1.0) + np.linspace(-1, 1, n)[:, None] * direction * min(shape[1:]) / 2
    path += [(s - 1) / 2 for s in shape]
    path[:, 0] = (path[:, 0] - (shape[0] - 1) / 2) / max(zscale, 1.0) + (shape[0] - 1) / 2
    idx = np.round(path).astype(int)
    keep = np.all((idx >= 0) & (idx < shape), axis=1)
    seed = np.ones(shape, bool)
    seed[tuple(idx[keep].T)] = False
    radius = rng.uniform(1.0, 4.0)
    return ndimage.distance_transform_edt(seed, sampling=(zscale, 1, 1)) <= radius


def synthetic_volume(rng: np.random.Generator, min_voxels: int = 50) -> LabelledVolume:
    """One random volume with 1-5 labelled objects and 0-4 unlabelled distractors."""
    shape = (int(rng.integers(8, 33)), int(rng.integers(48, 129)), int(rng.integers(48, 129)))
    zscale = float(rng.choice([1.0, 1.0, 2.0, 3.0]))
    grid = _grid(shape, zscale)
    bg = rng.uniform(0, 1)
    image = bg + smooth_noise(rng, shape, rng.uniform(2, 20)) * rng.uniform(0.02, 0.2)
    if rng.random() < 0.5:  # a "body" region on an "air" background, as in CT and many MRIs
        body = _blob(rng, shape, grid, zscale) | (rng.random() < 0.5)
        image = np.where(body, image, rng.uniform(0, 1))
    labels = np.zeros(shape, np.uint8)
    n_obj, n_distract = int(rng.integers(1, 6)), int(rng.integers(0, 5))
    makers = (_blob, _blob, _shell, _tube)
    for i in range(n_obj + n_distract):
        kind = makers[int(rng.integers(len(makers)))]
        region = _tube(rng, shape, zscale) if kind is _tube else kind(rng, shape, grid, zscale)
        level = rng.uniform(0, 1)
        if abs(level - bg) < 0.08:  # keep some contrast; low contrast still happens via texture/noise
            level = (bg + 0.3) % 1.0
        texture = smooth_noise(rng, shape, rng.uniform(1, 6)) * rng.uniform(0, 0.12)
        image = np.where(region, level + texture, image)
        labels[region] = i + 1 if i < n_obj else 0
    image = ndimage.gaussian_filter(image, (0, *(rng.uniform(0.3, 1.0),) * 2))  # partial-volume edges
    image = (image - image.min()) / max(float(np.ptp(image)), 1e-6)
    objects = objects_of(labels, min_voxels)
    return LabelledVolume("synthetic", image.astype(np.float32), labels, (zscale, 1.0, 1.0), objects)
