"""Where a user clicks: the simulated-click rules that the evaluation, the validation during training
and the training steps share (numpy/scipy only), so that all three place the same clicks.

The protocol works on a zyx array, slices along axis 0. Every click is placed from the *reference* and
the method's *own* current result, so each method gets its own click sequence from the same rules:

* round 1: a positive click on the slice with the largest cross-section of the object, at the maximum
  of its in-plane distance transform (the point farthest from the boundary);
* round k > 1: on the slice with the most erroneous voxels (false negatives + false positives), at the
  distance-transform maximum of the largest connected error region; positive for a false-negative
  region, negative for a false-positive one.

Distance transforms are in millimetres (in-plane spacing) and treat the slice border as boundary, so a
click never lands on the edge of the image when a more central point exists. Training draws its clicks
from the same rules with some randomness (``interior_click`` and ``error_click`` with an ``rng``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SimClick:
    """One simulated click: a zyx voxel index and its sign."""

    point: tuple[int, int, int]
    positive: bool


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two boolean arrays (slices or volumes); two empty masks agree perfectly."""
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


def depth_share(region: np.ndarray, point_yx, spacing_yx=(1.0, 1.0)) -> float:
    """How deep a point lies in a 2D region: its ``boundary_distance`` over the greatest one; 0 outside
    the region (and for an empty region)."""
    depth = boundary_distance(region, spacing_yx)
    y, x = point_yx
    return float(depth[y, x] / depth.max()) if depth.max() > 0 else 0.0


def interior_point(region: np.ndarray, spacing_yx=(1.0, 1.0)) -> tuple[int, int]:
    """The pixel of a 2D region farthest from its boundary (first in scan order on ties)."""
    dist = boundary_distance(region, spacing_yx)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(y), int(x)


def interior_click(rng: np.random.Generator | None, region: np.ndarray, spacing_yx) -> tuple[int, int]:
    """A pixel deep inside ``region``: the protocol's ``interior_point`` when ``rng`` is None, else a
    random pixel whose depth is at least a random fraction of the maximum (users do not click the exact
    centre; training sees that spread)."""
    if rng is None:
        return interior_point(region, spacing_yx)
    dist = boundary_distance(region, spacing_yx)
    floor = dist.max() * (rng.uniform(0.75, 1.0) if rng.random() < 0.5 else rng.uniform(0.2, 0.75))
    ys, xs = np.nonzero(dist >= floor)
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


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


def error_click(rng: np.random.Generator | None, pred: np.ndarray, ref: np.ndarray, spacing_yx):
    """The correction a user makes on one slice: inside the largest false-negative or false-positive
    region (``interior_click`` with ``rng``). Returns ((y, x), positive) or None when the slice is exact."""
    found = largest_error_region(pred, ref)
    if found is None:
        return None
    region, positive = found
    return interior_click(rng, region, spacing_yx), positive


def largest_slice(ref: np.ndarray) -> int:
    """The slice (along axis 0) where the object's cross-section is largest: where a user starts."""
    return int(np.argmax(ref.reshape(ref.shape[0], -1).sum(axis=1)))


def first_click(ref: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> SimClick:
    """Round 1: positive click inside the object's largest cross-section along axis 0."""
    ref = np.asarray(ref, dtype=bool)
    if not ref.any():
        raise ValueError("the reference object is empty: there is nothing to click on")
    z = largest_slice(ref)
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
    (y, x), positive = error_click(None, pred[z], ref[z], spacing[1:])
    return SimClick((z, y, x), positive)


def tight_box(ref: np.ndarray) -> tuple[int, int, int, int, int]:
    """The box a user draws first: (z, y0, x0, y1, x1), inclusive, around the object's cross-section on
    the slice where it is largest (the slice of ``first_click``)."""
    z = largest_slice(ref)
    rows, cols = np.flatnonzero(ref[z].any(axis=1)), np.flatnonzero(ref[z].any(axis=0))
    return z, int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def suspect_click(pred: np.ndarray, ref: np.ndarray, suspects: list[int], spacing=(1.0, 1.0, 1.0)):
    """The correction of a user who looks only where the widget points (``suspects``, worst first): the
    largest error region of the first suspect slice that has an error; None when none has."""
    for z in suspects:
        found = error_click(None, pred[z], ref[z], spacing[1:])
        if found is not None:
            (y, x), positive = found
            return SimClick((z, y, x), positive)
    return None


def worst_slices(pred: np.ndarray, ref: np.ndarray, n: int = 5) -> list[int]:
    """The ``n`` slices with the most wrong voxels (the oracle user's candidates)."""
    errors = (pred != ref).reshape(ref.shape[0], -1).sum(axis=1)
    return [int(z) for z in np.argsort(-errors, kind="stable")[:n] if errors[z]]


def simulate(session, ref: np.ndarray, spacing, max_clicks: int, after_click=None, *, first_prompt: str = "click",
             user: str = "oracle") -> dict:
    """Run the protocol on one object with any session that answers ``click(point, positive) -> 3D
    mask``. ``dice`` always has ``max_clicks`` entries (prompts): when a result is perfect, or the user
    has nothing left to click, the remaining rounds keep its Dice. ``seconds`` is the wall time of each
    prompt (the method's work only, not the protocol's). ``after_click(session)`` runs after each
    prompt, untimed.

    ``first_prompt="box"``: round 1 is ``session.box(tight_box(ref))`` instead of a click.
    ``user="suspects"``: corrections go only to the slices ``session.suspects()`` names (the widget's
    "where to look next"), not to the oracle's worst slice; ``suspect_hits`` records, per correction,
    whether the first suspect slice was among the five truly worst."""
    clicks, dices, seconds, hits = [], [], [], []
    first_box = box = tight_box(ref) if first_prompt == "box" else None
    click = first_click(ref, spacing)
    while (box is not None or click is not None) and len(dices) < max_clicks:
        started = time.perf_counter()
        if box is not None:
            mask = np.asarray(session.box(box), dtype=bool)
        else:
            mask = np.asarray(session.click(click.point, click.positive), dtype=bool)
            clicks.append([*click.point, click.positive])
        seconds.append(time.perf_counter() - started)
        box = None
        dices.append(dice(mask, ref))
        if after_click is not None:
            after_click(session)
        if user == "suspects":
            suspects = [z for z, _ in session.suspects()]
            worst = worst_slices(mask, ref)
            if worst:
                hits.append(bool(suspects) and suspects[0] in worst)
            click = suspect_click(mask, ref, suspects, spacing)
        else:
            click = next_click(mask, ref, spacing)
    dices += dices[-1:] * (max_clicks - len(dices))
    out = {"clicks": clicks, "dice": dices, "seconds": seconds}
    if first_box is not None:
        out["box"] = list(first_box)
    if user == "suspects":
        out["suspect_hits"] = hits
    return out
