"""The objects of one label volume: numpy in, numpy out, no Qt.

An ``Annotation`` owns a label volume (one integer value per object, 0 background) and, for every
object, a ``Session`` per clicked orientation. It decides how an object's result is written into the
shared volume (it takes background and its own voxels; other objects' voxels only with ``overwrite``)
and turns the user's hand edits of the volume into ``Session.edit`` calls. The napari widget, the
command line and scripts use the same object model.

Work comes as jobs: ``click``, ``box``, ``undo``, ``reset``, ``commit`` and ``repair`` return a generator of
``SliceWrite``s and return a result when exhausted. A job is prepared on the calling thread (it takes
the hand edits made so far) and may then run on another thread: it only *describes* label changes, and
``apply`` writes them, on the thread that owns ``labels``. Run one job at a time, each after all writes
of the previous one were applied. ``run`` does both on the calling thread::

    ann = Annotation(volume, spacing, make_session)
    ann.run(ann.click(1, (z, y, x)))         # object 1, one round
    ann.run(ann.box(1, (z, y0, x0, y1, x1)))  # a box on slice z: another round
    ann.run(ann.commit(1))                   # keep it; object 2 next
    ann.labels                               # the label volume
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from ..prompts import check_point
from .session import InteractiveSession, RoundUpdate

R = TypeVar("R")
Job = Generator["SliceWrite", None, R]


SessionFactory = Callable[[np.ndarray, tuple, int, "np.ndarray | None"], InteractiveSession]
"""(volume, spacing, axis, initial_mask) -> a session; called on the thread that runs the job."""


@dataclass(frozen=True)
class Box:
    """A box prompt as the user drew it: a rectangle ``(z, y0, x0, y1, x1)`` on slice z along ``axis``
    (corners in the other two axes, in order); kept so that the widget can show it."""

    axis: int
    box: tuple


@dataclass(frozen=True)
class SliceWrite:
    """An object's new mask on one slice, and the job's progress. ``index`` is the slice's index in
    the label volume as the Session built it (a tuple of one int and two full slices)."""

    label: int
    index: tuple
    mask: np.ndarray
    done: int
    total: int


@dataclass(frozen=True)
class EditPatch:
    """The user's hand edits of one object inside a bounding box: where they differ, what they are."""

    bbox: tuple[slice, slice, slice]
    now: np.ndarray
    diff: np.ndarray


@dataclass
class AnnotatedObject:
    """One object: its label value, a Session per clicked orientation (newest last), and what the label
    volume holds of it. Clicking in another orientation stacks a new Session seeded with the current
    mask, so undo walks back through orientations."""

    label: int
    shown: np.ndarray | None = None  # filled by the first job (a full-volume scan, kept off the GUI thread)
    sessions: list[InteractiveSession] = field(default_factory=list)
    suspects: list[tuple[int, int, float]] = field(default_factory=list)  # (axis, slice, predicted Dice)
    dirty: list[slice] | None = None  # bbox painted by the user since the last job
    needs_sync: bool = False  # a job stopped after some of its writes were applied
    box_rounds: list[tuple[InteractiveSession, int, Box]] = field(default_factory=list)  # (session, its round, box)

    @property
    def session(self) -> InteractiveSession | None:
        return self.sessions[-1] if self.sessions else None

    @property
    def mask(self) -> np.ndarray:
        """The object's current result; without a Session (new or committed) what the volume holds."""
        return self.session.mask if self.sessions else self.shown

    @property
    def rounds(self) -> int:
        """Rounds that undo can take back (clicks and hand edits, over all orientations)."""
        return sum(s.rounds for s in self.sessions)

    def add_dirty(self, bbox: list[slice]) -> None:
        self.dirty = list(bbox) if self.dirty is None else [
            slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(self.dirty, bbox)]

    def clicks(self) -> list:
        return [c for s in self.sessions for c in s.clicks]

    def boxes(self) -> list[Box]:
        """The boxes of the rounds that are still in effect (a Session records clicks, not boxes)."""
        return [box for _, _, box in self.box_rounds]

    def forget(self) -> None:
        """Drop the Sessions and what they stand for (reset, commit)."""
        self.sessions.clear()
        self.suspects = []
        self.box_rounds = []


class Annotation:
    """All objects of one image volume, sharing one label volume."""

    def __init__(self, volume: np.ndarray, spacing, make_session: SessionFactory, labels: np.ndarray | None = None,
                 *, overwrite: bool = False) -> None:
        self.volume = np.asarray(volume)
        self.spacing = tuple(float(s) for s in spacing)
        self.make_session = make_session
        if labels is None:
            labels = np.zeros(self.volume.shape, dtype=np.uint16)
        self.labels = labels  # may be replaced (same shape) between jobs, e.g. when a layer's data is
        self.objects: dict[int, AnnotatedObject] = {}
        self.overwrite = overwrite

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @labels.setter
    def labels(self, labels: np.ndarray) -> None:
        if labels.shape != self.volume.shape:
            raise ValueError(f"the label volume has shape {labels.shape}, the image {self.volume.shape}")
        self._labels = labels

    # ---- jobs (prepared on the owner thread, run anywhere) --------------------------------------
    def click(self, label: int, point, positive: bool = True, axis: int = 0) -> Job:
        """One round on object ``label``; the job returns the object's Session after the round, and
        updates the object's ``suspects`` (where to look next)."""
        point = check_point(point, self.volume.shape)
        obj, edits, repair = self._start(label)
        return self._round(obj, edits, repair, axis, lambda session: session.click_iter(point, bool(positive)))

    def box(self, label: int, box, axis: int = 0) -> Job:
        """One round on object ``label`` from a rectangle ``(z, y0, x0, y1, x1)`` on slice z along
        ``axis`` (``Session.box_iter``), otherwise as ``click``. The Session checks the box: a bad one
        makes the job raise ValueError before the object changes."""
        obj, edits, repair = self._start(label)
        return self._round(obj, edits, repair, axis, lambda session: session.box_iter(box), Box(axis, box))

    def undo(self, label: int) -> Job:
        """Undo the object's last round (click or hand edit), across orientations. The job returns
        whether anything was undone."""
        return self._undo(*self._start(label))

    def reset(self, label: int) -> Job:
        """Forget the object: its rounds, clicks and voxels."""
        return self._reset(*self._start(label))

    def commit(self, label: int) -> Job:
        """Keep the object as the volume holds it and free its Sessions (memory and undo history). The
        job returns the next unused label value (above every object and every value in the volume)."""
        return self._commit(*self._start(label))

    def repair(self) -> Job:
        """Only bring objects whose job stopped part-way back to their current result."""
        return self._repair(self._unsynced())

    def run(self, job: Job[R]) -> R:
        """Run a job here, applying its writes as they come; returns the job's result."""
        while True:
            try:
                write = next(job)
            except StopIteration as stop:
                return stop.value
            self.apply(write)

    # ---- owner thread ---------------------------------------------------------------------------
    def object(self, label: int) -> AnnotatedObject:
        """The object with this label value (its first job adopts voxels already holding it)."""
        if not 1 <= int(label) <= np.iinfo(self.labels.dtype).max:
            raise ValueError(f"object labels run from 1 to {np.iinfo(self.labels.dtype).max}, got {label}")
        return self.objects.setdefault(int(label), AnnotatedObject(int(label)))

    def apply(self, write: SliceWrite) -> None:
        """Write one slice of an object into ``labels`` in place. The object takes background and its
        own voxels; other objects' voxels only when ``overwrite`` is on (they then look for edits).
        Only the box holding the object's old and new mask is read and written (it runs on the GUI
        thread, once per slice of a round)."""
        obj = self.objects[write.label]
        shown = obj.shown[write.index]
        box = _box(write.mask | shown)
        if box is None:
            return
        plane, mask = self.labels[write.index][box], write.mask[box]
        own = plane == obj.label
        allowed = None if self.overwrite else own | (plane == 0)
        new = mask if allowed is None else mask & allowed
        if allowed is None and (taken := new & ~own & (plane != 0)).any():
            bbox = [slice(i, i + 1) if isinstance(i, int) else slice(0, n)
                    for i, n in zip(write.index, self.labels.shape)]
            for other in np.unique(plane[taken]):
                if int(other) in self.objects:
                    self.objects[int(other)].add_dirty(bbox)
        plane[own & ~new] = 0
        plane[new] = obj.label
        shown[box] = new

    def mark_painted(self, bbox: list[slice]) -> None:
        """The user changed ``labels`` inside ``bbox``: every object looks there for edits before its
        next job."""
        for obj in self.objects.values():
            obj.add_dirty(bbox)

    def abandoned(self, label: int) -> None:
        """A job of this object stopped after some of its writes were applied (cancelled or failed):
        the next job first brings the volume back to the object's result."""
        if label in self.objects:
            self.objects[label].needs_sync = True

    # ---- internals --------------------------------------------------------------------------------
    def _start(self, label: int) -> tuple[AnnotatedObject, EditPatch | None, list[AnnotatedObject]]:
        obj = self.object(label)
        return obj, self._take_edits(obj), self._unsynced()

    def _unsynced(self) -> list[AnnotatedObject]:
        return [o for o in self.objects.values() if o.needs_sync]

    def _take_edits(self, obj: AnnotatedObject) -> EditPatch | None:
        """Hand edits of ``obj`` since its last job (the job hands them to ``Session.edit``)."""
        if obj.dirty is None or obj.shown is None:
            return None
        bbox, obj.dirty = tuple(obj.dirty), None
        now = self.labels[bbox] == obj.label
        diff = now != obj.shown[bbox]
        if not diff.any():
            return None
        obj.shown[bbox] = now
        return EditPatch(bbox, now, diff)

    def _round(self, obj, edits, repair, axis: int, prompt: Callable[[InteractiveSession], Iterator[RoundUpdate]],
               box: Box | None = None) -> Job:
        """A round in the object's Session for ``axis``; a new orientation stacks a new Session seeded with
        the current mask, once the Session has accepted the prompt (a refused box leaves none behind)."""
        yield from self._prepare(obj, edits, repair)
        session = obj.session
        if session is None or session.axis != axis:
            initial = obj.mask.copy()
            session = self.make_session(self.volume, self.spacing, axis, initial if initial.any() else None)
        rounds = session.rounds
        for upd in prompt(session):
            if session is not obj.session:
                obj.sessions.append(session)
            yield SliceWrite(obj.label, upd.index, upd.mask, upd.done, upd.total)
        if box is not None and session.rounds > rounds:
            obj.box_rounds.append((session, session.rounds, box))
        self._find_suspects(obj)
        return session

    def _undo(self, obj, edits, repair) -> Job:
        yield from self._prepare(obj, edits, repair)
        undone = False
        while obj.sessions and not undone:
            undone = obj.session.undo()
            if not undone:  # nothing left in this orientation: fall back to the previous one
                obj.sessions.pop()
        obj.box_rounds = [(s, k, box) for s, k, box in obj.box_rounds if s in obj.sessions and k <= s.rounds]
        yield from self._sync(obj)
        self._find_suspects(obj)
        return undone

    def _reset(self, obj, edits, repair) -> Job:
        yield from self._prepare(obj, edits, repair)
        obj.forget()
        yield from self._sync(obj, np.zeros_like(obj.shown))

    def _commit(self, obj, edits, repair) -> Job:
        yield from self._prepare(obj, edits, repair)
        obj.forget()
        return max(int(self.labels.max()), *self.objects) + 1

    def _repair(self, repair) -> Job:
        yield from self._prepare(None, None, repair)

    @staticmethod
    def _find_suspects(obj: AnnotatedObject) -> None:
        """The slices of the object's newest Session that the quality head rates worst."""
        session = obj.session
        obj.suspects = [(session.axis, z, score) for z, score in session.suspects()] if session else []

    def _prepare(self, obj, edits, repair) -> Job:
        """Adopt the object's voxels on its first job, repair stopped objects, record hand edits."""
        if obj is not None and obj.shown is None:
            obj.shown = np.asarray(self.labels) == obj.label
        for other in repair:
            yield from self._sync(other)
            other.needs_sync = False
        if edits is not None and obj is not None and obj.session is not None:
            edited = obj.session.mask.copy()
            edited[edits.bbox][edits.diff] = edits.now[edits.diff]
            obj.session.edit(edited)

    def _sync(self, obj: AnnotatedObject, target: np.ndarray | None = None) -> Job:
        """Bring the volume to ``target`` (default: the object's current mask), slice by slice where
        they differ."""
        target = obj.mask if target is None else target
        n = target.shape[0]
        for k in range(n):
            if not np.array_equal(target[k], obj.shown[k]):
                yield SliceWrite(obj.label, (k, slice(None), slice(None)), target[k].copy(), k + 1, n)


def _box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of a 2D mask's True pixels; None if there are none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
