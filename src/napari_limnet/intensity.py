"""One intensity window for whole volumes, shared by the training cache and the random-walker baseline
(numpy only, so the baseline's evaluation never loads torch).

The network's own input is normalised differently, and must stay so: ``engine.crops.normalise`` maps
each resized crop by *its* 1st/99th percentiles, which is what the weights were trained on (the crop
sees a window, not the volume). This module instead fixes one window for a whole volume: the cache
stores it as uint8 (a quarter of the memory of float32), and the random walker needs one intensity
scale across all slices for its edge weights.
"""

from __future__ import annotations

import numpy as np


def unit_window(volume: np.ndarray) -> np.ndarray:
    """Robust rescale to [0, 1] by the 0.5 and 99.5 percentiles of the finite values (sources ship any
    range); NaN and infinities become the median."""
    data = np.asarray(volume, dtype=np.float32)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise ValueError("the volume has no finite values")
    lo, hi = np.percentile(finite, [0.5, 99.5])
    data = np.where(np.isfinite(data), data, np.median(finite))
    return np.clip((data - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def to_uint8(volume: np.ndarray) -> np.ndarray:
    """``unit_window`` stored as 0..255."""
    return (unit_window(volume) * 255 + 0.5).astype(np.uint8)
