"""Simulated wrong masks for training: what a propagated or earlier result looks like. The simulated
clicks themselves follow the shared rules in ``napari_limnet/clicks.py``."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


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
