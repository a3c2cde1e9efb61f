"""Simulated user clicks for training: the first click inside the object (near, not always at, its
most interior point) and corrections on the largest error region of the model's own prediction."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..evaluation.protocol import boundary_distance, interior_point, largest_error_region


def interior_click(rng: np.random.Generator | None, region: np.ndarray, spacing) -> tuple[int, int]:
    """A pixel deep inside ``region``: the distance maximum when ``rng`` is None, else a random pixel
    whose depth is at least a random fraction of the maximum (users do not click the exact centre)."""
    if rng is None:
        return interior_point(region, spacing)
    dist = boundary_distance(region, spacing)
    floor = dist.max() * (rng.uniform(0.75, 1.0) if rng.random() < 0.5 else rng.uniform(0.2, 0.75))
    ys, xs = np.nonzero(dist >= floor)
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


def error_click(rng, pred: np.ndarray, ref: np.ndarray, spacing):
    """The correction a user makes: inside the largest false-negative or false-positive region.
    Returns ((y, x), positive) or None when the prediction is already exact."""
    found = largest_error_region(pred, ref)
    if found is None:
        return None
    region, positive = found
    return interior_click(rng, region, spacing), positive


def perturb_mask(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """A plausible wrong mask (too big, too small, shifted, cut, or a neighbour's): what a propagated
    or earlier result looks like, for prompting with a previous mask and for the quality head."""
    choice = rng.integers(5)
    it = int(rng.integers(1, 4))
    if choice == 0:
        return ndimage.binary_dilation(mask, iterations=it)
    if choice == 1:
        return ndimage.binary_erosion(mask, iterations=it)
    if choice == 2:
        return np.roll(mask, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))
    if choice == 3:
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            return mask
        cut = mask.copy()
        if rng.random() < 0.5:
            cut[: int(rng.integers(ys.min(), ys.max() + 1))] = False
        else:
            cut[:, int(rng.integers(xs.min(), xs.max() + 1)):] = False
        return cut
    blob = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 3) > rng.uniform(0.05, 0.2)
    return mask ^ (blob & ndimage.binary_dilation(mask, iterations=4))
