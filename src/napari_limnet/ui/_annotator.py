"""The state behind the widget, without napari or Qt: the objects being segmented, the rule for writing
an object into the shared labels array, and the jobs that run on the worker thread.

Threading contract. Jobs (``click``, ``undo``, ``reset``) are generators run one at a time on a worker
thread: they own the objects' ``Session``s while they run and only *describe* label changes, as
``SliceWrite``s, which the GUI thread applies with ``apply``. ``ObjectState.shown`` (what the labels
layer holds for the object) and the labels array itself are written only on the GUI thread. A job
starts after the previous one has finished and all its writes were applied, so it may read ``shown``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

SessionFactory = Callable[..., object]  # (volume, spacing, axis, initial_mask) -> Session


@dataclass(frozen=True)
class SliceWrite:
    """The object's new mask on one slice (``axis``, ``k``) and the job's progress."""

    label: int
    axis: int
    k: int
    mask: np.ndarray
    stage: str  # "slice" (clicked slice), "propagated", or "sync" (undo/reset/repair)
    done: int
    total: int

    @property
    def index(self) -> tuple:
        index: list = [slice(None)] * 3
        index[self.axis] = self.k
        return tuple(index)


@dataclass(frozen=True)
class EditPatch:
    """The user's hand edits of one object inside a bounding box: where they differ, what they are."""

    bbox: tuple[slice, slice, slice]
    now: np.ndarray
    diff: np.ndarray


@dataclass
class ObjectState:
    """One object: its label value, a Session per clicked orientation (newest last), and what the labels
    layer shows of it. Clicking in another orientation stacks a new Session seeded with the current mask,
    so undo walks back through orientations."""

    label: int
    shown: np.ndarray | None = None  # filled by the first job (a full-volume scan, kept off the GUI thread)
    sessions: list = field(default_factory=list)
    hidden_clicks: int = 0  # clicks hidden from the prompt layer by "clear prompts"
    dirty: list[slice] | None = None  # bbox painted by the user since the last job
    needs_sync: bool = False  # a round was cancelled or failed after streaming slices

    @property
    def session(self):
        return self.sessions[-1] if self.sessions else None

    @property
    def mask(self) -> np.ndarray:
        """The object's current result; without a Session (new or committed) what the layer shows."""
        return self.session.mask if self.sessions else self.shown

    def add_dirty(self, bbox: list[slice]) -> None:
        self.dirty = list(bbox) if self.dirty is None else [
            slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(self.dirty, bbox)]

    def clicks(self) -> list:
        return [c for s in self.sessions for c in s.clicks]


class Annotator:
    """All objects of one image volume, sharing one labels array."""

    def __init__(self, volume: np.ndarray, spacing, make_session: SessionFactory) -> None:
        self.volume = volume
        self.spacing = tuple(float(s) for s in spacing)
        self.make_session = make_session
        self.objects: dict[int, ObjectState] = {}
        self.overwrite = False
        self.labels: np.ndarray | None = None  # the labels layer's array, set by the GUI before each job

    # ---- GUI thread --------------------------------------------------------------------------------
    def object(self, label: int) -> ObjectState:
        """The object with this label value (its first job adopts voxels already painted with it)."""
        return self.objects.setdefault(label, ObjectState(label))

    def mark_painted(self, bbox: list[slice]) -> None:
        """The user painted inside ``bbox``: every object must look there for edits before its next job."""
        for obj in self.objects.values():
            obj.add_dirty(bbox)

    def take_edits(self, obj: ObjectState, labels: np.ndarray) -> EditPatch | None:
        """Hand edits of ``obj`` since the last job (the next job hands them to ``Session.edit``)."""
        if obj.dirty is None or obj.shown is None:
            return None
        bbox, obj.dirty = tuple(obj.dirty), None
        now = labels[bbox] == obj.label
        diff = now != obj.shown[bbox]
        if not diff.any():
            return None
        obj.shown[bbox] = now
        return EditPatch(bbox, now, diff)

    def apply(self, write: SliceWrite, labels: np.ndarray) -> None:
        """Write one slice of an object into ``labels`` in place. The object takes background and its own
        voxels; other objects' voxels only when ``overwrite`` is on (they are then told to look for edits)."""
        obj = self.objects[write.label]
        plane = labels[write.index]
        own = plane == obj.label
        allowed = None if self.overwrite else own | (plane == 0)
        new = write.mask if allowed is None else write.mask & allowed
        if allowed is None and (taken := new & ~own & (plane != 0)).any():
            bbox = [slice(0, n) for n in labels.shape]
            bbox[write.axis] = slice(write.k, write.k + 1)
            for other in np.unique(plane[taken]):
                if int(other) in self.objects:
                    self.objects[int(other)].add_dirty(bbox)
        plane[own & ~new] = 0
        plane[new] = obj.label
        obj.shown[write.index] = new

    # ---- worker thread: jobs -----------------------------------------------------------------------
    def click(self, obj: ObjectState, point, positive: bool, axis: int, edits: EditPatch | None,
              repair: list[ObjectState]) -> Iterator[SliceWrite]:
        """One round: repair cancelled work, record edits, then stream the clicked slice and the
        propagated ones. Returns the Session's timing; raises what the Session raises."""
        yield from self._prepare(obj, edits, repair)
        session = obj.session
        if session is None or session.axis != axis:
            initial = obj.mask.copy()
            session = self.make_session(self.volume, self.spacing, axis, initial if initial.any() else None)
            obj.sessions.append(session)
        for upd in session.click_iter(point, positive):
            yield SliceWrite(obj.label, session.axis, _k(upd.index), np.array(upd.mask, dtype=bool),
                             upd.stage, upd.done, upd.total)
        return session.last_timing

    def undo(self, obj: ObjectState, edits: EditPatch | None, repair: list[ObjectState]) -> Iterator[SliceWrite]:
        """Undo the object's last round (click or hand edit), across orientations. Returns whether
        anything was undone."""
        yield from self._prepare(obj, edits, repair)
        undone = False
        while obj.sessions and not undone:
            undone = obj.session.undo()
            if not undone:  # nothing left in this orientation: fall back to the previous one
                obj.sessions.pop()
        yield from self._sync(obj)
        return undone

    def reset(self, obj: ObjectState, edits: EditPatch | None, repair: list[ObjectState]) -> Iterator[SliceWrite]:
        """Forget the object: its rounds, clicks and voxels."""
        yield from self._prepare(obj, edits, repair)
        obj.sessions.clear()
        obj.hidden_clicks = 0
        yield from self._sync(obj, np.zeros_like(obj.shown))

    def commit(self, obj: ObjectState, edits: EditPatch | None, repair: list[ObjectState]) -> Iterator[SliceWrite]:
        """Keep the object as the layer shows it and free its Sessions (their memory and undo history)."""
        yield from self._prepare(obj, edits, repair)
        obj.sessions.clear()

    def repair(self, repair: list[ObjectState]) -> Iterator[SliceWrite]:
        """Only bring objects whose round was cancelled or failed back to their committed state."""
        yield from self._prepare(None, None, repair)

    def _prepare(self, obj: ObjectState | None, edits: EditPatch | None,
                 repair: list[ObjectState]) -> Iterator[SliceWrite]:
        if obj is not None and obj.shown is None:
            obj.shown = np.asarray(self.labels) == obj.label
        for other in repair:
            yield from self._sync(other)
            other.needs_sync = False
        if edits is not None and obj is not None and obj.session is not None:
            edited = obj.session.mask.copy()
            edited[edits.bbox][edits.diff] = edits.now[edits.diff]
            obj.session.edit(edited)

    def _sync(self, obj: ObjectState, target: np.ndarray | None = None) -> Iterator[SliceWrite]:
        """Bring the labels layer to ``target`` (default: the object's current mask), slice by slice
        where they differ."""
        target = obj.mask if target is None else target
        n = target.shape[0]
        for k in range(n):
            if not np.array_equal(target[k], obj.shown[k]):
                yield SliceWrite(obj.label, 0, k, target[k].copy(), "sync", k + 1, n)


def _k(index: tuple) -> int:
    return next(int(i) for i in index if not isinstance(i, slice))
