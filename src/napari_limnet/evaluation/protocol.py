"""The simulated-click protocol of interactive segmentation, in 3D (pure numpy/scipy).

Slices are taken along axis 0 of the zyx array. Every click is placed from the *reference* and the
method's *own* current result, so each method gets its own click sequence from the same rules:

* round 1: a positive click on the slice with the largest cross-section of the object, at the maximum
  of its in-plane distance transform (the point farthest from the boundary);
* round k > 1: on the slice with the most erroneous voxels (false negatives + false positives), at the
  distance-transform maximum of the largest connected error region; positive for a false-negative
  region, negative for a false-positive one.

Distance transforms are in millimetres (in-plane spacing) and treat the slice border as boundary, so a
click never lands on the edge of the image when a more central point exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

NOC_CAP = 20
DICE_AT = (1, 3, 5, 10)
NOC_AT = (0.85, 0.90)


@dataclass(frozen=True)
class SimClick:
    """One simulated click: a zyx voxel index and its sign."""

    point: tuple[int, int, int]
    positive: bool


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two boolean volumes; two empty masks agree perfectly."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def boundary_distance(region: np.ndarray, spacing_yx=(1.0, 1.0)) -> np.ndarray:
    """Each pixel's distance (mm) to the boundary of a 2D region, the image border counting as boundary;
    0 outside the region."""
    padded = np.pad(np.asarray(region, dtype=bool), 1)
    return ndimage.distance_transform_edt(padded, sampling=spacing_yx)[1:-1, 1:-1]


def interior_point(region: np.ndarray, spacing_yx=(1.0, 1.0)) -> tuple[int, int]:
    """The pixel of a 2D region farthest from its boundary (first in scan order on ties)."""
    dist = boundary_distance(region, spacing_yx)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(y), int(x)


def first_click(ref: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> SimClick:
    """Round 1: positive click inside the object's largest cross-section along axis 0."""
    ref = np.asarray(ref, dtype=bool)
    if not ref.any():
        raise ValueError("the reference object is empty: there is nothing to click on")
    z = int(np.argmax(ref.reshape(ref.shape[0], -1).sum(axis=1)))
    y, x = interior_point(ref[z], spacing[1:])
    return SimClick((z, y, x), True)


def next_click(pred: np.ndarray, ref: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> SimClick | None:
    """Round k > 1: correct the largest error region of the worst slice; None when nothing is wrong."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    errors = pred != ref
    per_slice = errors.reshape(errors.shape[0], -1).sum(axis=1)
    if not per_slice.any():
        return None
    z = int(np.argmax(per_slice))
    region, positive = largest_error_region(pred[z], ref[z])
    y, x = interior_point(region, spacing[1:])
    return SimClick((z, y, x), positive)


def largest_error_region(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """The largest connected false-negative or false-positive region of a 2D slice and whether it is a
    false negative (a positive correction); None when the slice is exact."""
    best_size, best_region, best_positive = 0, None, True
    # False negatives first, so that on a size tie the positive (object-adding) correction wins.
    for positive, wrong in ((True, ref & ~pred), (False, pred & ~ref)):
        labels, count = ndimage.label(wrong)
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        k = int(np.argmax(sizes))
        if sizes[k] > best_size:
            best_size, best_region, best_positive = int(sizes[k]), labels == k + 1, positive
    return None if best_region is None else (best_region, best_positive)


def noc(dices, threshold: float, cap: int = NOC_CAP) -> int:
    """Number of clicks to reach ``threshold`` Dice, or ``cap`` when it is never reached within the
    first ``cap`` clicks (runs shorter than ``cap`` therefore count as failures, never as successes)."""
    for k, value in enumerate(dices[:cap], start=1):
        if value >= threshold:
            return k
    return cap


def object_metrics(dices) -> dict[str, float]:
    """Dice@k (for the k that were run; ``dices[k-1]`` is the Dice after k clicks) and NoC@85/90."""
    metrics = {f"dice@{k}": float(dices[k - 1]) for k in DICE_AT if k <= len(dices)}
    metrics.update({f"noc@{round(t * 100)}": noc(dices, t) for t in NOC_AT})
    return metrics
