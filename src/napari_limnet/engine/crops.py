"""Where the network looks: square regions of interest on a slice, and the crop <-> slice mapping.

Every network input is a square crop resized to ``LimNetConfig.crop`` pixels; the engine, the training
pipeline and the evaluation all go through these functions so that they see the same geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

MIN_ROI = 24
COARSE_SPAN = 0.3  # zoom_prior: a first mask narrower than this share of a shrunk whole-slice window is coarse
NEAR_WINDOW_MM = 128.0  # near_window: a fresh click looked at again through a window this wide
LEAK_RATIO = 3.0  # looks_like_leak: a whole-slice mask this many times the near window's may be a leak
SCALE_RATIO = 2.0  # sized_by_window: a whole-slice mask this many times the one through twice the near window


@dataclass(frozen=True)
class Roi:
    """A window on a slice: top-left corner (y0, x0) and extent (h, w) in slice pixels, square in
    physical units so that anisotropic pixels look isotropic to the network. It may reach outside
    the slice; the outside is filled with edge values."""

    y0: int
    x0: int
    h: int
    w: int

    def to_crop(self, points_yx, crop: int) -> np.ndarray:
        """Slice pixel coordinates -> crop pixel coordinates."""
        scale = np.array([crop / self.h, crop / self.w], dtype=np.float32)
        return (np.asarray(points_yx, dtype=np.float32).reshape(-1, 2) - (self.y0, self.x0) + 0.5) * scale - 0.5


def _square(cy: float, cx: float, side_mm: float, spacing: tuple[float, float], snap: int) -> Roi:
    h = max(1, int(np.ceil(side_mm / spacing[0] / snap)) * snap)
    w = max(1, int(np.ceil(side_mm / spacing[1] / snap)) * snap)
    grid = max(1, snap // 2)
    return Roi(int(round((cy - h / 2) / grid)) * grid, int(round((cx - w / 2) / grid)) * grid, h, w)


def full_roi(shape: tuple[int, int], spacing: tuple[float, float] = (1.0, 1.0)) -> Roi:
    """The smallest centred window, square in millimetres, that holds the whole slice."""
    h, w = shape
    side_mm = max(h * spacing[0], w * spacing[1])
    rh = max(h, int(round(side_mm / spacing[0])))
    rw = max(w, int(round(side_mm / spacing[1])))
    return Roi((h - rh) // 2, (w - rw) // 2, rh, rw)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """First and last row, first and last column of a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _extent_mm(r0: float, r1: float, c0: float, c1: float, spacing: tuple[float, float]) -> float:
    """The larger side, in mm, of rows r0..r1 by columns c0..c1 (inclusive)."""
    return max((r1 - r0 + 1) * spacing[0], (c1 - c0 + 1) * spacing[1])


def roi_around(mask: np.ndarray | None, points_yx, shape: tuple[int, int],
               spacing: tuple[float, float] = (1.0, 1.0), *, expand: float = 0.4, margin: int = 8) -> Roi:
    """Window around the mask and the points, enlarged for context, snapped to a coarse grid so that
    nearby requests map to the same window (and reuse cached features). Falls back to the full slice
    when there is nothing to look at or the window would be larger than the slice."""
    ys: list[float] = []
    xs: list[float] = []
    if mask is not None and mask.any():
        r0, r1, c0, c1 = _box(mask)
        ys += [r0, r1]
        xs += [c0, c1]
    for y, x in np.asarray(points_yx, dtype=float).reshape(-1, 2):
        ys.append(y)
        xs.append(x)
    full = full_roi(shape, spacing)
    if not ys:
        return full
    pix = min(spacing)
    extent_mm = _extent_mm(min(ys), max(ys), min(xs), max(xs), spacing)
    side_mm = max(MIN_ROI * pix, extent_mm * (1 + expand) + 2 * margin * pix)
    roi = _square((min(ys) + max(ys)) / 2, (min(xs) + max(xs)) / 2, side_mm, spacing, snap=8)
    if roi.h >= full.h or roi.w >= full.w:
        return full
    return roi


def interaction_window(prev: np.ndarray, clicks, shape: tuple[int, int], spacing: tuple[float, float],
                       hint: np.ndarray | None = None) -> Roi:
    """Where the interaction module looks on a slice: around the slice's mask and clicks; while it has no
    mask, around ``hint`` (the object on a nearby slice) and the clicks, else the whole slice (a zoomed
    second pass follows, ``zoom_in``). The engine and the training pipeline both call this, so that
    training sees the windows of use."""
    if prev.any():
        return roi_around(prev, clicks, shape, spacing)
    if hint is not None and hint.any():
        return roi_around(hint, clicks, shape, spacing)
    return full_roi(shape, spacing)


def zoom_in(mask: np.ndarray, roi: Roi, clicks, spacing: tuple[float, float], crop: int):
    """After a whole-slice pass over ``roi`` answered ``mask``: (window, previous mask) of the second,
    zoomed pass, or None when there is nothing to zoom on or the window would not change."""
    if not mask.any():
        return None
    zoom = roi_around(mask, clicks, mask.shape, spacing)
    return None if zoom == roi else (zoom, zoom_prior(mask, roi, crop))


def near_window(pos, first: Roi, first_mask: np.ndarray, spacing: tuple[float, float],
                side_mm: float = NEAR_WINDOW_MM) -> Roi | None:
    """Where a fresh click is looked at again (``looks_like_leak``): ``side_mm`` around the positive
    clicks (wider if they are spread). None where that is not smaller than ``first``, or where the
    first look's mask spans less than half of ``NEAR_WINDOW_MM``: the leaks this look catches spanned
    90-180 mm on the val sources, and skipping it spares two network passes on most clicks."""
    if not len(pos) or not first_mask.any():
        return None
    if _extent_mm(*_box(first_mask), spacing) < NEAR_WINDOW_MM / 2:
        return None
    pts = np.asarray(pos, dtype=float).reshape(-1, 2)
    (y0, x0), (y1, x1) = pts.min(axis=0), pts.max(axis=0)
    pix = min(spacing)
    side_mm = max(side_mm, MIN_ROI * pix, 2 * _extent_mm(y0, y1, x0, x1, spacing))
    roi = _square((y0 + y1) / 2, (x0 + x1) / 2, side_mm, spacing, snap=8)
    return None if roi.h >= first.h or roi.w >= first.w else roi


def looks_like_leak(whole: np.ndarray, near: np.ndarray) -> bool:
    """Whether a fresh click's whole-slice mask may have leaked: more than ``LEAK_RATIO`` times the
    mask that the same click gives through ``near_window``.

    The interaction module sizes a mask partly by the window it is shown: on a whole CT slice a spinal
    cord of 6 pixels comes out ~10 times too large, while through the near window the click gets the
    structure's size. Area alone cannot tell that leak from an organ wider than the near window (drawn
    whole on the whole slice, as a blob through the near window; the CT's leaks span 90-180 mm, like
    such organs): ``sized_by_window`` decides (docs/evaluation.md, "The first click's window")."""
    return bool(near.any() and whole.sum() > LEAK_RATIO * near.sum())


def sized_by_window(whole: np.ndarray, wider: np.ndarray) -> bool:
    """Whether a whole-slice mask shrinks by more than ``SCALE_RATIO`` through a window twice as wide
    as the near one: an object's own outline does not change with the window it is seen through, a
    mask sized by the window does. An organ as wide as the near window or wider is drawn much the same
    through the wider one (1.0-1.7 times smaller; val atria with doubled or tripled spacing), a CT leak
    shrinks (1.8-21 times for most)."""
    return bool(wider.any() and whole.sum() > SCALE_RATIO * wider.sum())


def zoom_prior(mask: np.ndarray, roi: Roi, crop: int) -> np.ndarray:
    """The previous mask that the zoomed-in pass gets after a first pass over ``roi`` answered ``mask``.

    Where ``roi`` had to be shrunk to fit the crop and the mask spans less than ``COARSE_SPAN`` of it,
    the first pass saw the object at a few dozen pixels and sized its mask by the window more than by
    the object's edges (small structures came out 1.3-4x too large, docs/evaluation.md). Passed on,
    that size carries into the zoomed pass; there the clicks alone are the better start."""
    if max(roi.h, roi.w) <= crop or not mask.any():
        return mask
    r0, r1, c0, c1 = _box(mask)
    span = max((r1 - r0 + 1) / roi.h, (c1 - c0 + 1) / roi.w)
    return np.zeros_like(mask) if span < COARSE_SPAN else mask


def _window(image: np.ndarray, roi: Roi) -> np.ndarray:
    """The ROI's pixels, edge-padded where it leaves the slice."""
    h, w = image.shape
    y1, x1 = roi.y0 + roi.h, roi.x0 + roi.w
    cy0, cx0, cy1, cx1 = max(roi.y0, 0), max(roi.x0, 0), min(y1, h), min(x1, w)
    win = image[cy0:cy1, cx0:cx1]
    pads = ((cy0 - roi.y0, y1 - cy1), (cx0 - roi.x0, x1 - cx1))
    if any(p for pair in pads for p in pair):
        win = np.pad(win, pads, mode="edge")
    return win


def crop_image(image: np.ndarray, roi: Roi, crop: int, curve=None) -> torch.Tensor:
    """Slice (any numeric dtype, NaN tolerated) -> 1 x 1 x crop x crop float tensor normalised to
    [0, 1] by the crop's own 1st/99th percentiles, so that CT, MRI and microscopy look alike.
    ``curve`` (e.g. the HU curve of a CT) maps the window's values first: only the pixels the
    network sees pay for it."""
    win = _window(image, roi)
    win = (curve(win) if curve is not None else win).astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(win))[None, None]
    return normalise(_resize(t, (crop, crop)))


def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(t.shape[-2:]) == size:
        return t
    shrink = t.shape[-2] > size[0] or t.shape[-1] > size[1]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def normalise(t: torch.Tensor) -> torch.Tensor:
    """Robust per-image min-max to [0, 1]; NaNs become 0; a flat image becomes all zeros."""
    flat = t.flatten(1)
    finite = torch.isfinite(flat)
    if not bool(finite.all()):
        fill = torch.where(finite, flat, torch.full_like(flat, float("inf"))).amin(dim=1, keepdim=True)
        fill = torch.where(torch.isfinite(fill), fill, torch.zeros_like(fill))
        flat = torch.where(finite, flat, fill)
    # numpy's partition-based percentile: the same values as torch.quantile, ~8x faster (no full sort)
    q = torch.from_numpy(np.percentile(flat.numpy(), [1, 99], axis=1).T.astype(np.float32))  # B x 2
    lo, hi = q[:, :1], q[:, 1:]
    span = (hi - lo).clamp_min(1e-6)
    out = ((flat - lo) / span).clamp_(0, 1)
    out = torch.where(hi - lo > 1e-6, out, torch.zeros_like(out))
    return out.view_as(t)


def crop_mask(mask: np.ndarray, roi: Roi, crop: int) -> torch.Tensor:
    """Binary slice mask -> 1 x 1 x crop x crop float tensor (area-weighted, values in [0, 1])."""
    h, w = mask.shape
    padded = np.zeros((roi.h, roi.w), np.float32)
    y1, x1 = roi.y0 + roi.h, roi.x0 + roi.w
    cy0, cx0, cy1, cx1 = max(roi.y0, 0), max(roi.x0, 0), min(y1, h), min(x1, w)
    if cy1 > cy0 and cx1 > cx0:
        padded[cy0 - roi.y0:cy1 - roi.y0, cx0 - roi.x0:cx1 - roi.x0] = mask[cy0:cy1, cx0:cx1]
    return _resize(torch.from_numpy(padded)[None, None], (crop, crop))


def paste_logits(logits: torch.Tensor, roi: Roi, shape: tuple[int, int]) -> np.ndarray:
    """Crop logits (1 x 1 x S x S) -> boolean mask of the whole slice (outside the ROI: background)."""
    h, w = shape
    out = np.zeros((h, w), dtype=bool)
    y1, x1 = roi.y0 + roi.h, roi.x0 + roi.w
    cy0, cx0, cy1, cx1 = max(roi.y0, 0), max(roi.x0, 0), min(y1, h), min(x1, w)
    if cy1 <= cy0 or cx1 <= cx0:
        return out
    up = logits.float()
    if tuple(up.shape[-2:]) != (roi.h, roi.w):
        up = F.interpolate(up, size=(roi.h, roi.w), mode="bilinear", align_corners=False)
    out[cy0:cy1, cx0:cx1] = (up[0, 0, cy0 - roi.y0:cy1 - roi.y0, cx0 - roi.x0:cx1 - roi.x0] > 0).numpy()
    return out


def click_maps(pos_yx, neg_yx, crop: int, sigma: float = 4.0) -> torch.Tensor:
    """Positive and negative clicks (crop coordinates) -> 1 x 2 x crop x crop Gaussian maps."""
    grid = torch.arange(crop, dtype=torch.float32)
    maps = torch.zeros(2, crop, crop)
    for channel, points in enumerate((pos_yx, neg_yx)):
        for y, x in np.asarray(points, dtype=np.float32).reshape(-1, 2):
            gy = torch.exp(-((grid - float(y)) ** 2) / (2 * sigma**2))
            gx = torch.exp(-((grid - float(x)) ** 2) / (2 * sigma**2))
            maps[channel] = torch.maximum(maps[channel], gy[:, None] * gx[None, :])
    return maps[None]


def prompt_maps(roi: Roi, pos, neg, prev: np.ndarray, crop: int) -> torch.Tensor:
    """The interaction module's 3 prompt channels for a window (1 x 3 x crop x crop): positive and
    negative clicks (slice coordinates) and the slice's previous mask."""
    maps = click_maps(roi.to_crop(pos, crop), roi.to_crop(neg, crop), crop)
    return torch.cat([maps, crop_mask(prev, roi, crop)], dim=1)


def box_prior(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """The ellipse inscribed in box (y0, x0, y1, x1, inclusive): a box prompt as a rough mask."""
    y0, x0, y1, x1 = box
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    cy, cx, ry, rx = (y0 + y1) / 2, (x0 + x1) / 2, (y1 - y0 + 1) / 2, (x1 - x0 + 1) / 2
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def quality_inputs(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float], crop: int, curve=None):
    """The quality head's view of a slice mask: image and mask in the mask's own window. Every
    candidate of a slice is framed this way, in use and in training, so that their scores compare."""
    roi = roi_around(mask, [], mask.shape, spacing)
    return crop_image(image, roi, crop, curve), crop_mask(mask, roi, crop)
