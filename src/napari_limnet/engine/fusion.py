"""Multi-Round Result Fusion: which round's mask a slice shows. Pure bookkeeping, no network.

Each round leaves a candidate mask on the slices it reached, each propagated from one of the user's
slices (its seed), with the quality head's predicted Dice. Per slice: the newest round that the user
*owns* there (a click or a hand edit on that slice) wins; otherwise the candidate propagated from the
nearest seed is preferred (fewer propagation steps carry less drift: a correction on slice 80 does not
replace slice 20's mask that came from a click on slice 21), the newest among equally near ones; an
older empty candidate is never preferred to the newest (its "no object here" may be a propagation
limit that a later click went past). Candidates from other seeds as near as the preferred one's
compete by the quality head's rating, the preferred needing ``PREFERRED_MARGIN`` less; an older one
from the same seed never competes (the newer one started from the user's newer mask there), nor does
a mask within ``NEAR_TIE`` of the preferred. An empty candidate is never scored: the quality
head predicts the Dice of a mask, and rates an empty one near 0 even where the object has ended. With
fusion off, the newest candidate wins (the ablation the evaluation compares against).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

PREFERRED_MARGIN = 0.1  # another round's candidate replaces the preferred one only when rated this much higher
NEAR_TIE = 0.98  # a mask this alike to the preferred one (Dice) is not rated: the head cannot rank near-ties


@dataclass(frozen=True)
class SliceMask:
    """A slice's binary mask stored as its bounding box, so that a round over 800 slices stays small."""

    y0: int
    x0: int
    data: np.ndarray  # bool, the bounding box content (0 x 0 when empty)

    @classmethod
    def from_full(cls, mask: np.ndarray) -> SliceMask:
        if not mask.any():
            return cls(0, 0, np.zeros((0, 0), dtype=bool))
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        return cls(int(rows[0]), int(cols[0]), np.array(box, dtype=bool))

    def to_full(self, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        h, w = self.data.shape
        out[self.y0:self.y0 + h, self.x0:self.x0 + w] = self.data
        return out

    @property
    def empty(self) -> bool:
        return self.data.size == 0

    def agreement(self, other: SliceMask) -> float:
        """Dice between two non-empty masks, from their boxes' overlap only."""
        (h, w), (oh, ow) = self.data.shape, other.data.shape
        y0, x0 = max(self.y0, other.y0), max(self.x0, other.x0)
        y1, x1 = min(self.y0 + h, other.y0 + oh), min(self.x0 + w, other.x0 + ow)
        if y1 <= y0 or x1 <= x0:
            return 0.0
        total = int(self.data.sum()) + int(other.data.sum())
        mine = self.data[y0 - self.y0:y1 - self.y0, x0 - self.x0:x1 - self.x0]
        theirs = other.data[y0 - other.y0:y1 - other.y0, x0 - other.x0:x1 - other.x0]
        return 2.0 * int(np.count_nonzero(mine & theirs)) / total


@dataclass
class Round:
    """One committed interaction: a click round, a hand edit, or the initial mask the session got."""

    kind: str  # "click" | "edit" | "initial"
    candidates: dict[int, SliceMask] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    owned: set[int] = field(default_factory=set)
    seeds: dict[int, int] = field(default_factory=dict)  # slice -> the user slice its walk started from

    def seed_distance(self, z: int) -> float:
        """Slices between slice z and the user slice its candidate was propagated from (inf: unknown,
        as for an initial mask)."""
        return abs(z - self.seeds[z]) if z in self.seeds else np.inf


def choose_round(rounds: list[Round], z: int, *, fusion: bool, score: Callable[[int, int], float],
                 margin: float = PREFERRED_MARGIN) -> int:
    """Index of the round whose candidate slice ``z`` shows, or -1 if no round reached it.
    ``score(round_index, z)`` supplies a missing score on demand: only slices that several equally
    near rounds compete for are ever scored. ``margin``: what the preferred candidate is spared (the
    training's replay of this rule tries others; infinite: the preferred one, unrated)."""
    contenders = []
    for i in range(len(rounds) - 1, -1, -1):
        r = rounds[i]
        if z not in r.candidates:
            continue
        if z in r.owned:
            return i
        contenders.append(i)
    if not contenders:
        return -1
    if not fusion or len(contenders) == 1:
        return contenders[0]
    newest = contenders[0]
    # nearest seed first, newer first among equals (sorted() keeps the newest-first order of ties)
    by_distance = sorted(contenders, key=lambda i: rounds[i].seed_distance(z))
    preferred = next(i for i in by_distance if i == newest or not rounds[i].candidates[z].empty)
    chosen = rounds[preferred].candidates[z]
    if chosen.empty:
        return preferred  # the head rates masks, not their absence: the newest "object ended" stands
    # An older "no object here" never beats a mask, nor does a mask from a farther seed, and a mask
    # nearly the same as the preferred one is not worth a head call (a few ms a slice): the head was
    # trained to rank candidates whose true Dice differ by 0.02 or more (training/round_candidates.py).
    near, seed = rounds[preferred].seed_distance(z), rounds[preferred].seeds.get(z)
    rivals = [i for i in contenders if i != preferred and rounds[i].seed_distance(z) == near
              and (seed is None or rounds[i].seeds.get(z) != seed)
              and not rounds[i].candidates[z].empty and rounds[i].candidates[z].agreement(chosen) < NEAR_TIE]
    if not rivals:
        return preferred
    best, best_score = -1, -np.inf
    for i in [preferred, *rivals]:  # the preferred first, then newest first: ties go to them
        s = rounds[i].scores[z] if z in rounds[i].scores else score(i, z)
        if i == preferred:
            s += margin
        if s > best_score:
            best, best_score = i, s
    return best
