"""What a scan's numbers mean before anything reads them (numpy only, so the random walker's evaluation
never loads torch).

Most scans carry relative intensities (MRI, microscopy). CT carries Hounsfield units, where soft tissue
(-200 to 300 HU) is a sliver of the range between air (-1000) and bone (up to 3000): stretched
linearly, a parotid or a brainstem is a few grey levels beside bone. A CT is therefore first mapped
through a soft-tissue-weighted curve, in use (``engine.runner``), in the training cache and by the
random walker alike. Whether a volume is CT is read from its values, never set by the user.

The network's input is then normalised per crop (``engine.crops.normalise``, by the crop's own 1st/99th
percentiles: what the weights were trained on). ``unit_window`` instead fixes one window for a whole
volume: the training cache stores it as uint8 (a quarter of the memory of float32), and the random
walker needs one intensity scale across all slices for its edge weights.
"""

from __future__ import annotations

import numpy as np

# Piecewise-linear HU curve: air and lung, soft tissue (most of the output range), bone.
HU_KNOTS = (-1024.0, -200.0, 300.0, 1500.0)
OUT_KNOTS = (0.0, 0.15, 0.85, 1.0)
AIR_HU = (-1100.0, -900.0)
MIN_AIR_SHARE = 0.01  # a CT around a body holds at least this share of air voxels


def is_hounsfield(volume: np.ndarray) -> bool:
    """True for a CT in Hounsfield units: a visible share of voxels at air's value (-1000 HU), which
    no MRI, microscopy or z-scored volume has, and tissue above it."""
    if not np.issubdtype(volume.dtype, np.number) or volume.size == 0:
        return False
    step = max(1, round((volume.size / 2e5) ** (1 / 3)))
    sample = np.asarray(volume[::step, ::step, ::step] if volume.ndim == 3 else volume, dtype=np.float32)
    air = np.mean((sample >= AIR_HU[0]) & (sample <= AIR_HU[1]))
    return bool(air >= MIN_AIR_SHARE and np.nanmax(sample) > 0)


def hounsfield_to_unit(image: np.ndarray) -> np.ndarray:
    """HU -> [0, 1] through the soft-tissue-weighted curve (float32; NaN stays NaN)."""
    return np.interp(image, HU_KNOTS, OUT_KNOTS).astype(np.float32)


def unit_window(volume: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1]: a CT through the HU curve, anything else by the 0.5 and 99.5 percentiles of the
    finite values (sources ship any range); NaN and infinities become the median."""
    data = np.asarray(volume, dtype=np.float32)
    ct = is_hounsfield(data)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        raise ValueError("the volume has no finite values")
    data = np.where(np.isfinite(data), data, np.median(finite))
    if ct:
        return hounsfield_to_unit(data)
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return np.clip((data - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def to_uint8(volume: np.ndarray) -> np.ndarray:
    """``unit_window`` stored as 0..255."""
    return (unit_window(volume) * 255 + 0.5).astype(np.uint8)
