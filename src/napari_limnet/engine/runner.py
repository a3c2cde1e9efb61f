"""The network side of a session: feature cache, the clicked slice's 2D mask, and propagation.

Works on an oriented volume (slices along axis 0) and numpy slices in, numpy masks out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import nullcontext

import numpy as np
import torch

from ..intensity import hounsfield_to_unit, is_hounsfield
from ..model import LimNet, SliceFeatures
from ..model.limnet import fused_for_inference
from .crops import (
    NEAR_WINDOW_MM,
    Roi,
    box_prior,
    crop_image,
    crop_mask,
    interaction_window,
    looks_like_leak,
    near_window,
    paste_logits,
    prompt_maps,
    quality_inputs,
    sized_by_window,
    zoom_in,
)
from .propagation import Track, anchor_window, goes_on_past_reach, memory_entries
from .propagation import step as walk_step

REACH = 0.5  # default reach of propagation past the outermost user slice holding the object, in object widths
REACH_CONFIDENCE = 0.85  # past the reach, a walk goes on while its slice masks are at least this confident


def object_slices_beyond(anchors: dict[int, np.ndarray], z: int, step: int) -> list[int]:
    """User slices past slice ``z`` in direction ``step`` that hold the object: while there are none,
    an empty user slice ends the object in that direction."""
    return [a for a, m in anchors.items() if (a - z) * step > 0 and m.any()]


def reach_in_slices(mask: np.ndarray, diameters: float, in_plane: tuple[float, float], slice_spacing: float) -> int:
    """How many slices past a user slice the object may extend, for an object no longer along the slice
    normal than ``diameters`` times its width there (the width: the equivalent-circle diameter of
    ``mask``, in mm). The memory module rarely predicts an empty slice, so without this prior a
    propagation runs on through the whole volume past the object's end."""
    width = 2.0 * np.sqrt(float(mask.sum()) * in_plane[0] * in_plane[1] / np.pi)
    return int(diameters * width / slice_spacing)


class NetworkRunner:
    """Runs LIM-Net on the slices of one oriented volume; caches per-slice features across rounds."""

    def __init__(self, net: LimNet, volume: np.ndarray, spacing: tuple[float, float], device: torch.device,
                 *, cache_slices: int = 256) -> None:
        self.volume = volume  # oriented view: slices along axis 0
        self.curve = hounsfield_to_unit if is_hounsfield(volume) else None  # a CT's HU curve (intensity.py)
        self.spacing = spacing  # in-plane (row, column) spacing
        self.crop = net.config.crop
        self.cache_slices = cache_slices
        self._cache: OrderedDict[tuple[int, Roi], tuple[SliceFeatures, torch.Tensor]] = OrderedDict()
        self._cache_lock = threading.Lock()  # the two propagation directions may run in two threads
        self.to(net, device)

    def to(self, net: LimNet, device: torch.device) -> None:
        self.device = device
        self.net = fused_for_inference(net).to(device)
        self.half = device.type == "cuda"
        with self._cache_lock:
            self._cache.clear()

    @property
    def slice_shape(self) -> tuple[int, int]:
        return self.volume.shape[1], self.volume.shape[2]

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.half else nullcontext()

    def features(self, z: int, roi: Roi) -> tuple[SliceFeatures, torch.Tensor]:
        """(features, key) of slice z in window roi, computed once and cached (LRU)."""
        with self._cache_lock:
            hit = self._cache.get((z, roi))
            if hit is not None:
                self._cache.move_to_end((z, roi))
                return hit
        image = crop_image(self.volume[z], roi, self.crop, self.curve).to(self.device)
        with self._autocast():
            feats = self.net.encode_image(image)
            key = self.net.encode_key(feats)
        entry = (feats, key)
        with self._cache_lock:
            self._cache[(z, roi)] = entry
            while len(self._cache) > self.cache_slices:
                self._cache.popitem(last=False)
        return entry

    @torch.inference_mode()
    def segment_slice(self, z: int, pos: list, neg: list, prev: np.ndarray,
                      hint: np.ndarray | None = None) -> np.ndarray:
        """The interaction module on slice z: all the slice's clicks plus its current mask -> 2D mask.
        Without a previous mask the first look sees the whole slice (or the window around ``hint``, the
        object on a nearby slice); ``_near_look`` may replace its mask."""
        clicks = list(pos) + list(neg)
        roi = interaction_window(prev, clicks, self.slice_shape, self.spacing, hint)
        if prev.any():
            return self._interact(z, roi, pos, neg, prev)
        return self._near_look(z, roi, pos, neg, self._first_look(z, roi, pos, neg))

    def _near_look(self, z: int, roi: Roi, pos: list, neg: list, mask: np.ndarray) -> np.ndarray:
        """The mask through a window near the clicks where the first look's ``mask`` over ``roi``
        looks like a leak (``looks_like_leak``) and was sized by its window (``sized_by_window``);
        else ``mask``."""
        near = near_window(pos, roi, mask, self.spacing)
        if near is None:
            return mask
        small = self._first_look(z, near, pos, neg)
        if not looks_like_leak(mask, small):
            return mask
        wider = near_window(pos, roi, mask, self.spacing, side_mm=2 * NEAR_WINDOW_MM)
        return small if wider is not None and sized_by_window(mask, self._first_look(z, wider, pos, neg)) else mask

    def _first_look(self, z: int, roi: Roi, pos: list, neg: list) -> np.ndarray:
        """A pass over ``roi`` from the clicks alone, then the zoomed pass on its result (``zoom_prior``
        says whether that result goes along)."""
        mask = self._interact(z, roi, pos, neg, np.zeros(self.slice_shape, dtype=bool))
        again = zoom_in(mask, roi, list(pos) + list(neg), self.spacing, self.crop)
        return self._interact(z, again[0], pos, neg, again[1]) if again else mask

    @torch.inference_mode()
    def segment_box(self, z: int, box: tuple[int, int, int, int]) -> np.ndarray:
        """The interaction module on slice z from a box (y0, x0, y1, x1), inclusive. The box enters as
        the previous-mask channel (the ellipse inscribed in it, ``box_prior``): the module was trained
        to correct a rough mask, and on the val sources this gives a better first mask than one click
        (docs/evaluation.md). The result is kept within the box, grown by a pixel for its edge."""
        prior = box_prior(self.slice_shape, box)
        y0, x0, y1, x1 = box
        inside = np.zeros(self.slice_shape, dtype=bool)
        inside[max(y0 - 1, 0):y1 + 2, max(x0 - 1, 0):x1 + 2] = True
        return self.segment_slice(z, [], [], prior) & inside

    def _interact(self, z: int, roi: Roi, pos: list, neg: list, prev: np.ndarray) -> np.ndarray:
        feats, _ = self.features(z, roi)
        prompts = prompt_maps(roi, pos, neg, prev, self.crop).to(self.device)
        with self._autocast():
            logits = self.net.interact(feats, prompts)
        return paste_logits(logits.float().cpu(), roi, self.slice_shape)

    @torch.inference_mode()
    def score(self, z: int, mask: np.ndarray) -> float:
        """Predicted Dice of ``mask`` on slice z (the quality head of MRF)."""
        image, mask_crop = quality_inputs(self.volume[z], mask, self.spacing, self.crop, self.curve)
        with self._autocast():
            return float(self.net.score(image.to(self.device), mask_crop.to(self.device))[0])

    @torch.inference_mode()
    def anchor_entries(self, anchors: dict[int, np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Memory entries of the user-interacted slices (permanent memory)."""
        entries = []
        for z, mask in sorted(anchors.items()):
            roi = anchor_window(mask, self.spacing)
            feats, key = self.features(z, roi)
            with self._autocast():
                entries += memory_entries(self.net, feats, key, crop_mask(mask, roi, self.crop).to(self.device))
        return entries

    @torch.inference_mode()
    def propagate(self, start: int, mask: np.ndarray, step: int, anchors: dict[int, np.ndarray],
                  entries: list, cancelled: Callable[[], bool], last: int | None = None,
                  confidence_floor: float | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Walk from slice ``start`` (mask given) in direction ``step``; yield (z, mask). Fusion scores
        a mask later, and only where several rounds reach the slice.
        The walk ends at the first anchor (user slice) that holds the object: the slices beyond it keep
        the rounds seeded from it, so a correction changes only the stretch between the user's slices
        that it belongs to. An empty anchor the user made is a wall: the walk ends there unless a later
        anchor holds the object (then it goes on, with that empty slice in memory, up to that anchor).
        Once the track has ended (EMPTY_STOP empty slices), the walk yields empty slices; so it does past
        slice ``last`` (None: no limit), unless ``confidence_floor`` is set: then it goes on past ``last``
        for as long as ``goes_on_past_reach`` says so, and ends at the first slice where it does not."""
        seed_feats, _ = self.features(start, anchor_window(mask, self.spacing))
        track = Track.open(entries, self.net.initial_hidden(seed_feats), mask, self.spacing)
        z = start + step
        while 0 <= z < self.volume.shape[0]:
            if cancelled():
                return
            past_last = last is not None and (z - last) * step > 0
            if z in anchors:
                if anchors[z].any() or not object_slices_beyond(anchors, z, step):
                    return
                track.mask = anchors[z]
            elif track.ended or (past_last and confidence_floor is None):
                yield z, np.zeros(self.slice_shape, dtype=bool)
            else:
                roi = track.window()
                feats, key = self.features(z, roi)
                with self._autocast():
                    logits, (out,) = walk_step(self.net, [track], feats, key, [roi])
                if past_last and out.any() and not goes_on_past_reach(logits, out, mask, confidence_floor):
                    track.end()
                    out = np.zeros_like(out)
                yield z, out
            z += step
