"""The interactive session: clicks, rounds, propagation, fusion, undo. Numpy in, numpy out, no Qt.

A session belongs to one object in one volume. Each click is a round: the clicked slice's 2D mask
(all clicks ever made on that slice take part), then propagation in both directions, with every
user-interacted slice as a permanent memory anchor, up to the nearest user slice that holds the object
or, past the outermost one, ``reach`` object widths (a compact-object prior; ``math.inf``: no limit) and
beyond them for as long as the network stays confident of each slice's mask (``reach_confidence``;
None: the reach is a hard limit), so that a tube or a long organ is followed to its end.
Where rounds overlap, ``fusion`` (Multi-Round Result Fusion, on by default, engine/fusion.py) keeps the
one propagated from the nearest user slice, or between equally near ones from different user slices the
one the quality head rates clearly better; without it the newest wins.
Negative clicks on a slice without positive clicks trim the slice's mask with the network. When the
newest of them lies in the middle of the mask (``CENTRE_DEPTH``) and the trim would leave less than
``TRIM_KEEP`` of it, the click says the mask is wrong as a whole: the slice holds no object and the object
ends there. That is how a user stops a propagation that runs past the object's end. A trimmed slice that
keeps part of the object is propagated outwards only; towards the user's slices that hold the object the
slices are propagated again from those, as for an emptied slice.
Rounds run one at a time; starting a round or calling ``cancel`` stops the one in progress, and a
round that does not finish changes nothing.
``Segmenter`` and ``InteractiveSession`` state the contract that the evaluation, ``Annotation`` and the
widget rely on; ``Session`` is its implementation.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..model import LimNet, WeightsInfo, load_model
from ..prompts import check_box, check_point
from .device import configure_cpu_threads, resolve_device
from .fusion import Round, SliceMask, choose_round
from .parallel import interleave, walk_threads
from .runner import REACH, REACH_CONFIDENCE, NetworkRunner, object_slices_beyond, reach_in_slices

EDIT_ANCHORS = 4  # hand-edited slices nearest to the click that join the permanent memory
TRIM_KEEP = 0.7  # share of a slice's mask that negative clicks alone must leave for the object to stay there
NEAR_SLICES = 3  # how far a positive click on an empty slice looks for the object's window (_nearby_mask)
SUSPECTS = 3  # slices whose predicted quality is worst, shown to the user after each round
CENTRE_DEPTH = 0.9  # a negative click this deep in a mask (share of its greatest depth) is on the mask as a whole


@dataclass(frozen=True)
class Click:
    point: tuple[int, int, int]  # (z, y, x) in volume coordinates
    positive: bool
    round: int


@dataclass(frozen=True)
class RoundUpdate:
    """One step of a running round: the fused mask of one slice, and progress."""

    stage: str  # "slice" (the clicked slice, first) or "propagated"
    index: tuple  # indexes a volume-shaped array at this slice
    mask: np.ndarray  # 2D bool
    done: int
    total: int


@dataclass(frozen=True)
class RoundTiming:
    first_mask_s: float
    total_s: float
    slices_propagated: int


@runtime_checkable
class Segmenter(Protocol):
    """What the evaluation needs of a method: clicks one at a time, the 3D result, a fresh start."""

    @property
    def mask(self) -> np.ndarray: ...

    def click(self, point, positive: bool = True) -> np.ndarray: ...

    def reset(self) -> None: ...


@runtime_checkable
class InteractiveSession(Segmenter, Protocol):
    """What ``Annotation`` and the widget need besides: rounds streamed slice by slice (committed only
    when the generator is exhausted) from a click or a box, undo, hand edits, the clicks so far, the
    slicing axis, and the slices to check next."""

    axis: int

    @property
    def clicks(self) -> list[Click]: ...

    @property
    def rounds(self) -> int: ...

    def click_iter(self, point, positive: bool = True) -> Iterator[RoundUpdate]: ...

    def box_iter(self, box) -> Iterator[RoundUpdate]: ...

    def undo(self) -> bool: ...

    def edit(self, mask3d: np.ndarray) -> int: ...

    def suspects(self, n: int = SUSPECTS) -> list[tuple[int, float]]: ...


def _check_volume(volume) -> np.ndarray:
    arr = np.asarray(volume)
    if arr.ndim != 3:
        raise ValueError(f"volume must be 3D, got {arr.ndim}D with shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"volume is empty (shape {arr.shape})")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"volume must hold real numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not any(np.isfinite(s).any() for s in arr):
        raise ValueError("volume holds no finite value (all NaN or infinite)")
    return arr


def _check_spacing(spacing) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")
    return sp


class Session:
    """Interactive segmentation of one object. See docs/engine-api.md for the contract."""

    def __init__(self, volume, spacing=(1.0, 1.0, 1.0), axis: int = 0, device: str = "auto", *,
                 weights: str | Path | tuple[LimNet, WeightsInfo] | None = None,
                 initial_mask: np.ndarray | None = None, fusion: bool = True, reach: float = REACH,
                 reach_confidence: float | None = REACH_CONFIDENCE,
                 threads: int | None = None) -> None:
        self.volume = _check_volume(volume)
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        self.axis = axis
        self.spacing = _check_spacing(spacing)
        self.device = resolve_device(device)
        self._threads = threads
        if self.device.type == "cpu":
            configure_cpu_threads(threads)
        net, self.weights = weights if isinstance(weights, tuple) else load_model(weights)
        self.fusion = fusion
        try:
            self.reach = float(reach)
        except (TypeError, ValueError):
            self.reach = math.nan
        if not self.reach > 0:
            raise ValueError(f"reach must be a positive number of object widths (math.inf: no limit), got {reach!r}")
        if reach_confidence is not None and not 0 < reach_confidence < 1:
            raise ValueError(f"reach_confidence must be a probability between 0 and 1, or None, "
                             f"got {reach_confidence!r}")
        self.reach_confidence = reach_confidence
        self.shape = self.volume.shape
        in_plane = tuple(s for i, s in enumerate(self.spacing) if i != axis)
        self._runner = NetworkRunner(net, np.moveaxis(self.volume, axis, 0), in_plane, self.device)
        self._mask = np.zeros(self.shape, dtype=bool)
        self._omask = np.moveaxis(self._mask, axis, 0)  # oriented view, writes go through
        self._rounds: list[Round] = []
        self._clicks: list[Click] = []
        self._base = 0  # rounds below this index (the initial mask) are not undoable
        self._generation = 0
        self._generation_lock = threading.Lock()  # never held during compute: cancel() returns at once
        self._lock = threading.RLock()  # held while the clicked slice is computed or the state changes
        self.last_timing: RoundTiming | None = None
        self.last_warning: str | None = None  # what the user should know about the last round's result
        if initial_mask is not None:
            self._add_initial(initial_mask)

    # ---- public state ---------------------------------------------------------------------------
    @property
    def mask(self) -> np.ndarray:
        view = self._mask.view()
        view.flags.writeable = False
        return view

    @property
    def rounds(self) -> int:
        return len(self._rounds) - self._base

    @property
    def clicks(self) -> list[Click]:
        return list(self._clicks)

    @property
    def n_slices(self) -> int:
        return self.shape[self.axis]

    def propagated_candidates(self) -> dict[int, tuple[np.ndarray, int | None]]:
        """The newest round's non-empty masks on the slices it propagated to (not the user's own
        slices), keyed by slice, shown or not, each with the user slice it was propagated from (None
        for an initial mask): the candidates fusion ranks (it never scores an empty one). Read by the
        training of the quality head."""
        if not self._rounds:
            return {}
        r = self._rounds[-1]
        return {z: (c.to_full(self._runner.slice_shape), r.seeds.get(z)) for z, c in r.candidates.items()
                if z not in r.owned and not c.empty}

    def suspects(self, n: int = SUSPECTS) -> list[tuple[int, float]]:
        """Where to look next: the ``n`` slices of the result whose mask the quality head predicts worst,
        as (slice along ``axis``, predicted Dice), worst first. Slices the user clicked or edited are
        left out (the user has seen them), and so are empty ones (the head rates a mask, not its
        absence). Each round's ratings are kept, so asking again after a round rates only new masks."""
        with self._lock:
            owned = {z for r in self._rounds for z in r.owned}
            rated = []
            for z in np.flatnonzero(self._omask.any(axis=(1, 2))):
                i = choose_round(self._rounds, int(z), fusion=self.fusion, score=lambda k, zz: self._score(
                    self._rounds[k], zz))
                if int(z) not in owned and i >= 0:
                    rated.append((self._score(self._rounds[i], int(z)), int(z)))
        return [(z, score) for score, z in sorted(rated)[:n]]

    def slice_index(self, z: int) -> tuple:
        """Index of oriented slice z in a volume-shaped array."""
        index = [slice(None)] * 3
        index[self.axis] = z
        return tuple(index)

    # ---- rounds -----------------------------------------------------------------------------------
    def click(self, point, positive: bool = True) -> np.ndarray:
        """Run one round to completion and return the fused mask (unchanged if cancelled)."""
        for _ in self.click_iter(point, positive):
            pass
        return self.mask

    def click_iter(self, point, positive: bool = True) -> Iterator[RoundUpdate]:
        """Run one round, yielding the clicked slice's mask first, then each propagated slice."""
        vpoint = check_point(point, self.shape)
        oz, oy, ox = self._oriented(vpoint)

        def first_mask(index: int):
            new_click = Click(tuple(vpoint), bool(positive), index)
            on_slice = [c for c in self._clicks if self._oriented(c.point)[0] == oz] + [new_click]
            pos = [self._oriented(c.point)[1:] for c in on_slice if c.positive]
            neg = [self._oriented(c.point)[1:] for c in on_slice if not c.positive]
            current = self._omask[oz].copy()
            if pos:
                hint = None if current.any() else self._nearby_mask(oz)
                return self._runner.segment_slice(oz, pos, neg, current, hint), False, new_click
            return self._trim(oz, neg, current), True, new_click

        yield from self._round(oz, first_mask)

    def box(self, box) -> np.ndarray:
        """Run one round from a box drawn on a slice; returns the fused mask (see ``box_iter``)."""
        for _ in self.box_iter(box):
            pass
        return self.mask

    def box_iter(self, box) -> Iterator[RoundUpdate]:
        """A round whose prompt is a rectangle ``(z, y0, x0, y1, x1)`` on slice z of the session's axis
        (corners in the other two axes, in order, inclusive): the box gives the slice's mask, which
        propagates and fuses as a click's does; later clicks on that slice correct it."""
        oz, *corners = check_box(box, self.shape, self.axis)
        yield from self._round(oz, lambda index: (self._runner.segment_box(oz, tuple(corners)), False, None))

    def _round(self, oz: int, first_mask) -> Iterator[RoundUpdate]:
        generation = self._next_generation()
        start = time.perf_counter()
        try:
            yield from self._run_round(generation, oz, first_mask, start)
        except torch.cuda.OutOfMemoryError:
            if self.device.type != "cuda":
                raise
            warnings.warn("CUDA ran out of memory: continuing on the CPU", RuntimeWarning, stacklevel=2)
            self._move_to_cpu()
            yield from self._run_round(generation, oz, first_mask, start)

    def cancel(self) -> None:
        """Stop the running round (thread-safe, returns at once); it commits nothing."""
        self._next_generation()

    def _next_generation(self) -> int:
        with self._generation_lock:
            self._generation += 1
            return self._generation

    def edit(self, mask3d: np.ndarray) -> int:
        """Record the user's hand edits: every slice where ``mask3d`` differs from the current result
        becomes user-owned (kept by fusion, used as an anchor). Returns the number of edited slices."""
        mask3d = np.asarray(mask3d, dtype=bool)
        if mask3d.shape != self.shape:
            raise ValueError(f"edited mask has shape {mask3d.shape}, volume has {self.shape}")
        omask = np.moveaxis(mask3d, self.axis, 0)
        self.cancel()
        with self._lock:
            changed = [z for z in range(self.n_slices) if not np.array_equal(omask[z], self._omask[z])]
            if not changed:
                return 0
            edit = Round("edit", {z: SliceMask.from_full(omask[z]) for z in changed}, {}, set(changed))
            self._rounds.append(edit)
            self._recompute_fused(changed)
            return len(changed)

    def undo(self) -> bool:
        """Remove the last round; the mask returns exactly to what it was before that round."""
        self.cancel()
        with self._lock:
            if len(self._rounds) <= self._base:
                return False
            removed = self._rounds.pop()
            index = len(self._rounds)
            self._clicks = [c for c in self._clicks if c.round < index]
            self._recompute_fused(sorted(removed.candidates))
            return True

    def reset(self) -> None:
        """Forget every round (the initial mask too): an empty object."""
        self.cancel()
        with self._lock:
            self._rounds.clear()
            self._clicks.clear()
            self._base = 0
            self._mask[...] = False

    # ---- internals --------------------------------------------------------------------------------
    def _nearby_mask(self, z: int, within: int = NEAR_SLICES) -> np.ndarray | None:
        """The object's mask on the nearest slice within ``within`` of slice z that holds it, if any: a
        positive click on an empty slice next to the object looks there, not at the whole slice, whose
        first pass outlines far too much around a small structure (docs/evaluation.md: box then clicks
        on CT, Dice@5 0.32 -> 0.54)."""
        for d in range(1, within + 1):
            for zz in (z - d, z + d):
                if 0 <= zz < self.n_slices and self._omask[zz].any():
                    return self._omask[zz]
        return None

    def _oriented(self, point: tuple[int, int, int]) -> tuple[int, int, int]:
        rest = [p for i, p in enumerate(point) if i != self.axis]
        return point[self.axis], rest[0], rest[1]

    def _add_initial(self, initial_mask: np.ndarray) -> None:
        mask = np.asarray(initial_mask, dtype=bool)
        if mask.shape != self.shape:
            raise ValueError(f"initial mask has shape {mask.shape}, volume has {self.shape}")
        omask = np.moveaxis(mask, self.axis, 0)
        self._rounds.append(Round("initial", {z: SliceMask.from_full(omask[z]) for z in range(self.n_slices)}))
        self._base = 1
        self._mask[...] = mask

    def _score(self, r: Round, z: int) -> float:
        """The quality head's predicted Dice of a round's slice, computed once, when fusion needs it."""
        if z not in r.scores:
            r.scores[z] = self._runner.score(z, r.candidates[z].to_full(self._runner.slice_shape))
        return r.scores[z]

    def _fused(self, rounds: list[Round], z: int) -> np.ndarray:
        i = choose_round(rounds, z, fusion=self.fusion, score=lambda k, zz: self._score(rounds[k], zz))
        if i < 0:
            return np.zeros(self._runner.slice_shape, dtype=bool)
        return rounds[i].candidates[z].to_full(self._runner.slice_shape)

    def _recompute_fused(self, slices) -> None:
        """Show on these slices what fusion chooses among the committed rounds (after one was added or removed)."""
        for z in slices:
            self._omask[z] = self._fused(self._rounds, z)

    def _anchors(self, clicked: int, mask2d: np.ndarray) -> dict[int, np.ndarray]:
        owned_click = {z for r in self._rounds if r.kind == "click" for z in r.owned}
        edited = sorted({z for r in self._rounds if r.kind == "edit" for z in r.owned} - owned_click,
                        key=lambda z: abs(z - clicked))[:EDIT_ANCHORS]
        anchors = {z: self._omask[z].copy() for z in owned_click | set(edited)}
        anchors[clicked] = mask2d
        return anchors

    def _run_round(self, generation: int, oz: int, first_mask, start: float) -> Iterator[RoundUpdate]:
        """One round on oriented slice oz: ``first_mask(round index)`` gives the slice's mask, whether it
        is a trimmed leftover (see _walk), and the click to record (None for a box)."""
        def cancelled() -> bool:
            return self._generation != generation

        total = self.n_slices
        with self._lock:
            if cancelled():
                return
            mask2d, trimmed, new_click = first_mask(len(self._rounds))
            anchors = self._anchors(oz, mask2d)
            entries = self._runner.anchor_entries(anchors)
        first_mask_s = time.perf_counter() - start
        new = Round("click", {oz: SliceMask.from_full(mask2d)}, {}, {oz}, {oz: oz})
        done = 1
        yield RoundUpdate("slice", self.slice_index(oz), mask2d, done, total)
        trial = self._rounds + [new]
        stop = threading.Event()  # set when this round ends early (cancelled, closed or failed)

        def halted() -> bool:
            return stop.is_set() or cancelled()

        walks = [self._walk(oz, mask2d, trimmed, step, anchors, entries, halted) for step in (1, -1)]
        items = interleave(walks, walk_threads(self.device), stop)
        try:
            for z, out, seed in items:
                with self._lock:
                    if cancelled():
                        return
                    new.candidates[z] = SliceMask.from_full(out)  # scored only if fusion needs it
                    new.seeds[z] = seed
                    fused = self._fused(trial, z)
                    changes = fused.any() or self._omask[z].any()
                done += 1
                if changes:  # an empty slice that stays empty needs no update (and no redraw in napari)
                    yield RoundUpdate("propagated", self.slice_index(z), fused, done, total)
        finally:
            items.close()  # stops and joins the walks' threads
        with self._lock:
            if cancelled():
                return
            self._rounds.append(new)
            if new_click is not None:
                self._clicks.append(new_click)
            self._recompute_fused(sorted(new.candidates))
            self.last_timing = RoundTiming(first_mask_s, time.perf_counter() - start, len(new.candidates) - 1)
            self.last_warning = self._surprise(oz, mask2d, new_click is None or new_click.positive)

    def _surprise(self, z: int, mask2d: np.ndarray, positive: bool) -> str | None:
        """Why a committed round's result may not be what the user expects, in words; None if it is
        ordinary. The CLI prints it, the widget shows it as a notification."""
        image = self._runner.volume[z]
        finite = image[np.isfinite(image)]
        if finite.size == 0 or finite.min() == finite.max():
            value = f"{finite.flat[0]:g}" if finite.size else "NaN"
            return (f"the image is constant on the clicked slice (every voxel {value}): the mask there is not "
                    "based on image content")
        if mask2d.any() or self._mask.any():
            return None
        if positive:
            return "the network found no object at the click: the object is empty"
        if any(c.positive for c in self._clicks):
            return "the negative click removed the whole object: it is empty now (undo brings it back)"
        return ("a negative click only removes from the object, and there was nothing to remove: the object "
                "is empty (left-click inside the object first)")

    def _trim(self, z: int, neg: list, current: np.ndarray) -> np.ndarray:
        """A slice with negative clicks only: the network removes the clicked part of the slice's mask
        (it never adds to it). The slice is emptied, and becomes a stop slice (see _walk), when there
        was no mask, or when the newest click lies in the middle of the mask and less than
        ``TRIM_KEEP`` of it would remain: a click there says the whole mask is wrong (a leak past the
        object's end), while a click off-centre says that part is wrong (a leak beside the object,
        which keeps the rest even when the part is large)."""
        empty = np.zeros(self._runner.slice_shape, dtype=bool)
        if not current.any():
            return empty
        trimmed = self._runner.segment_slice(z, [], neg, current) & current
        if trimmed.sum() >= TRIM_KEEP * current.sum():
            return trimmed
        from ..clicks import depth_share  # scipy, only when a trim needs it

        return empty if depth_share(current, neg[-1], self._runner.spacing) >= CENTRE_DEPTH else trimmed

    def _walk(self, start: int, mask2d: np.ndarray, trimmed: bool, step: int, anchors: dict, entries: list,
              cancelled):
        """Propagation in one direction. A clicked slice left empty is a stop slice: when no
        user-interacted slice beyond it holds the object, the object ends there (every slice beyond
        is empty, with full confidence, until a later round says otherwise). Towards the object, the
        slices up to the stop slice are propagated again from the nearest user slice that holds it,
        now with the stop slice's "no object here" in memory. A ``trimmed`` slice (negative clicks
        only) is what is left of an earlier result, not a shape the user gave: towards a user slice
        that holds the object, the slices are propagated again from that slice in the same way, with
        the trimmed slice in memory, so that a leftover does not reshape the good slices in between.
        Yields (slice, mask, seed): the seed is the user slice the walk started from (for fusion)."""
        ahead = object_slices_beyond(anchors, start, step)
        if mask2d.any() and not (trimmed and ahead):
            walk = self._runner.propagate(start, mask2d, step, anchors, entries, cancelled,
                                          self._reach_end(start, mask2d, step, anchors), self.reach_confidence)
            return ((z, out, start) for z, out in walk)
        if ahead:
            source = min(ahead, key=lambda z: abs(z - start))
            walk = self._runner.propagate(source, anchors[source], -step, anchors, entries, cancelled)
            return ((z, out, source) for z, out in takewhile(lambda item: (item[0] - start) * step > 0, walk))
        empty = np.zeros(self._runner.slice_shape, dtype=bool)
        end = self.n_slices if step > 0 else -1
        return ((z, empty, start) for z in range(start + step, end, step) if z not in anchors)

    def _reach_end(self, start: int, mask2d: np.ndarray, step: int, anchors: dict) -> int | None:
        """The last slice a walk from the user's slice may fill: ``reach`` object widths past it, when
        no user slice beyond it holds the object (otherwise the walk ends at that slice, however far).
        None: no limit."""
        if math.isinf(self.reach) or object_slices_beyond(anchors, start, step):
            return None
        return start + step * reach_in_slices(mask2d, self.reach, self._runner.spacing, self.spacing[self.axis])

    def _move_to_cpu(self) -> None:
        torch.cuda.empty_cache()
        self.device = torch.device("cpu")
        configure_cpu_threads(self._threads)
        self._runner.to(self._runner.net.float(), self.device)
