"""Classical baseline: a 3D random walker (Grady 2006, scikit-image) seeded by the clicks.

It exists so that the evaluation table shows what the network adds over a method that sees exactly the
same kind of input. Positive clicks seed the object, negative clicks and the in-plane border of the
volume seed the background (structures rarely touch the in-plane edge of a scan, whereas they often run
through all slices, so the first and last slices are not used as background). To keep every click to a
fraction of a second the walker runs on a copy of the volume downsampled to a voxel budget, coarsening
the finest axes first, and its probability map is interpolated back to full resolution.
"""

from __future__ import annotations

import warnings

import numpy as np
from skimage.segmentation import random_walker
from skimage.transform import resize

from ..intensity import unit_window

OBJECT, BACKGROUND = 1, 2


def coarse_shape(shape, spacing, budget: int) -> tuple[int, ...]:
    """Grid of at most ``budget`` voxels, reached by growing the integer factor of the axis with the
    finest effective spacing (the longest axis on ties), so coarse voxels become as isotropic as possible."""
    shape = tuple(int(n) for n in shape)
    factors = [1] * len(shape)

    def grid():
        return tuple(-(-n // f) for n, f in zip(shape, factors, strict=True))

    while np.prod(grid()) > budget:
        axis = min(range(len(shape)), key=lambda a: (spacing[a] * factors[a], -grid()[a]))
        factors[axis] += 1
    return grid()


class RandomWalkerSession:
    """Session-like wrapper: ``click(point, positive)`` returns the full-resolution mask after re-solving
    the walker with every click so far; ``reset()`` forgets the clicks but keeps the prepared volume."""

    def __init__(self, volume: np.ndarray, spacing=(1.0, 1.0, 1.0), *, budget: int = 1 << 16,
                 beta: float = 130.0, seed_radius: int = 1):
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise ValueError(f"the random walker needs a 3D volume, got shape {volume.shape}")
        self.shape = volume.shape
        grid = coarse_shape(volume.shape, spacing, budget)
        self._scale = np.array(grid, dtype=float) / np.array(volume.shape, dtype=float)
        self._spacing = tuple(float(s) / k for s, k in zip(spacing, self._scale, strict=True))
        self._image = resize(unit_window(volume), grid, order=1, anti_aliasing=True, preserve_range=True)
        self._beta = beta
        self._seed_radius = seed_radius
        self.clicks: list[tuple[tuple[int, int, int], bool]] = []
        self.mask = np.zeros(self.shape, dtype=bool)

    def reset(self) -> None:
        self.clicks = []
        self.mask = np.zeros(self.shape, dtype=bool)

    def _seeds(self) -> np.ndarray:
        seeds = np.zeros(self._image.shape, dtype=np.int8)
        seeds[:, [0, -1], :] = BACKGROUND
        seeds[:, :, [0, -1]] = BACKGROUND
        r = self._seed_radius
        for point, positive in self.clicks:  # in click order: a newer click overrides an older one
            c = np.minimum((np.asarray(point) * self._scale).astype(int), np.array(seeds.shape) - 1)
            box = tuple(slice(max(v - r, 0), v + r + 1) for v in c)
            seeds[box] = OBJECT if positive else BACKGROUND
        return seeds

    def click(self, point, positive: bool = True) -> np.ndarray:
        point = tuple(int(v) for v in point)
        if any(not 0 <= v < n for v, n in zip(point, self.shape, strict=True)):
            raise ValueError(f"click {point} is outside the volume of shape {self.shape}")
        self.clicks.append((point, bool(positive)))
        seeds = self._seeds()
        if not (seeds == OBJECT).any():
            self.mask = np.zeros(self.shape, dtype=bool)
            return self.mask
        with warnings.catch_warnings():
            # Tolerance 1e-2 instead of 1e-3 saves a third of the time and changed 2% of the mask's
            # voxels on an ACDC case; probabilities may overshoot [0, 1] slightly, harmless at a 0.5 cut.
            warnings.filterwarnings("ignore", message="The probability range is outside")
            prob = random_walker(self._image, seeds, beta=self._beta, mode="cg_j", tol=1e-2,
                                 spacing=self._spacing, return_full_prob=True)[0]
        self.mask = resize(prob, self.shape, order=1, preserve_range=True) > 0.5
        return self.mask
