"""Whether a prompt lies in the volume: the checks the Session, the object model and the command line
share (numpy only, so the command line refuses a bad prompt before torch loads). Coordinates in the
messages print as plain numbers."""

from __future__ import annotations

import numpy as np


def _voxel_coords(value, what: str, names: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """A prompt's coordinates as floats and as the nearest voxel indices, or a ValueError naming the
    prompt (``what``) and its coordinates (``names``, e.g. "z, y, x")."""
    n = len(names.split(","))
    try:
        coords = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is {n} coordinates ({names}), got {value!r}") from exc
    if coords.size != n or not np.isfinite(coords).all():
        raise ValueError(f"{what} is {n} finite coordinates ({names}), got {value!r}")
    return coords, tuple(int(np.floor(c + 0.5)) for c in coords)


def check_point(point, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The voxel (z, y, x) nearest to ``point``; ValueError when it is not three finite numbers inside
    ``shape``. Coordinates in the message print as plain numbers."""
    coords, idx = _voxel_coords(point, "a click", "z, y, x")
    if not all(0 <= i < n for i, n in zip(idx, shape)):
        plain = ", ".join(f"{c:g}" for c in coords)
        raise ValueError(f"click ({plain}) lies outside the volume of shape {tuple(shape)}")
    return idx


def check_box(box, shape: tuple[int, ...], axis: int) -> tuple[int, int, int, int, int]:
    """(z, y0, x0, y1, x1), z along ``axis`` and the corners in the other two axes in order -> the
    nearest voxels with sorted corners; ValueError when the box leaves the volume or is a line or a
    point."""
    coords, (z, y0, x0, y1, x1) = _voxel_coords(box, "a box", "z, y0, x0, y1, x1")
    in_plane = [n for i, n in enumerate(shape) if i != axis]
    (y0, y1), (x0, x1) = sorted((y0, y1)), sorted((x0, x1))
    plain = ", ".join(f"{c:g}" for c in coords)
    if not (0 <= z < shape[axis] and y0 >= 0 and x0 >= 0 and y1 < in_plane[0] and x1 < in_plane[1]):
        raise ValueError(f"box ({plain}) reaches outside the volume of shape {tuple(shape)}")
    if y1 - y0 < 1 or x1 - x0 < 1:
        raise ValueError(f"box ({plain}) is a line or a point: draw a rectangle")
    return z, y0, x0, y1, x1
