"""The quality head trained on what fusion ranks: the candidates that real rounds leave on a slice.

Fusion compares, on one slice, the masks of several rounds of one object. Those masks are alike, and a
head that learnt the Dice of single masks from training steps ranked them poorly (v4's head: two
candidates of a slice in the better order 67 % of the time, weighted by their Dice gap, on the val
objects; an older round chosen with it lowered the slice's Dice on average). The "fusion" stage runs the
evaluation protocol through a default Session (so the clicks are those of the shipped default) on
train objects, keeps every round's propagated candidates with their true Dice and their offset to
the user slice they came from, and trains the head on that Dice plus a ranking loss between the
candidates of each slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from ..clicks import dice, simulate
from ..engine.crops import quality_inputs
from ..engine.fusion import NEAR_TIE, Round, SliceMask, choose_round
from ..engine.session import Session
from ..model import LimNet
from .validation import VALIDATION_WEIGHTS

RANK_MIN_GAP = 0.02  # pairs whose true Dice differ less than this carry no ranking signal
RANK_SHARPNESS = 20.0  # scale of predicted-Dice gaps in the logistic ranking loss
UNKNOWN_OFFSET = np.iinfo(np.int64).max  # harvested before offsets existed: every older candidate competes


def _no_ties() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.int64)


@dataclass
class Candidates:
    """Candidate masks in the head's own view, with their true slice Dice. ``group``: candidates of one
    slice of one object, which fusion compares; ``round``: the round that made each (1 = first click);
    ``ties``: (older, newer) index pairs of one slice whose masks agree at ``NEAR_TIE`` or more, which
    fusion does not compare; ``offset``: the user slice each candidate was propagated from, minus
    its own slice (fusion prefers the nearest and compares only equally near ones from different
    user slices; None: all from different slices at the same distance)."""

    x: torch.Tensor  # N x 2 x S x S float16
    area: torch.Tensor  # N
    dice: torch.Tensor  # N
    group: np.ndarray
    round: np.ndarray
    ties: np.ndarray = field(default_factory=_no_ties)
    offset: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.offset is None:  # candidates harvested before offsets: the rule of that time
            self.offset = np.full(len(self.dice), UNKNOWN_OFFSET)

    def __len__(self) -> int:
        return len(self.dice)

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(torch.zeros(0, 2, 1, 1, dtype=torch.float16), torch.zeros(0), torch.zeros(0),
                       np.zeros(0, int), np.zeros(0, int))
        groups, ties, group_offset, index_offset = [], [], 0, 0
        for p in parts:
            groups.append(p.group + group_offset)
            ties.append(p.ties + index_offset)
            group_offset += int(p.group.max()) + 1
            index_offset += len(p)
        return cls(torch.cat([p.x for p in parts]), torch.cat([p.area for p in parts]),
                   torch.cat([p.dice for p in parts]), np.concatenate(groups),
                   np.concatenate([p.round for p in parts]), np.concatenate(ties),
                   np.concatenate([p.offset for p in parts]))

    def subset(self, index: np.ndarray) -> Candidates:
        t = torch.from_numpy(index)
        where = np.full(len(self), -1)
        where[index] = np.arange(len(index))
        ties = where[self.ties]
        return Candidates(self.x[t], self.area[t], self.dice[t], self.group[index], self.round[index],
                          ties[(ties >= 0).all(axis=1)], self.offset[index])

    def to_dict(self) -> dict:
        return {"x": self.x, "area": self.area, "dice": self.dice, "group": torch.from_numpy(self.group),
                "round": torch.from_numpy(self.round), "ties": torch.from_numpy(self.ties),
                "offset": torch.from_numpy(self.offset)}

    @classmethod
    def from_dict(cls, d: dict) -> Candidates:
        ties = d["ties"].numpy() if "ties" in d else _no_ties()
        offset = d["offset"].numpy() if "offset" in d else None
        return cls(d["x"], d["area"], d["dice"], d["group"].numpy(), d["round"].numpy(), ties, offset)


def harvest_object(net: LimNet, volume: np.ndarray, ref: np.ndarray, spacing, clicks: int,
                   device="cpu") -> Candidates:
    """The protocol's ``clicks`` rounds on one object; every non-empty propagated candidate of every
    round, framed as the engine frames a mask it scores."""
    session = Session(volume, spacing, device=str(device), weights=(net, VALIDATION_WEIGHTS),
                      threads=torch.get_num_threads())
    crop = net.config.crop
    xs, areas, dices, groups, rounds, ties, offsets = [], [], [], [], [], [], []
    earlier: dict[int, list[tuple[int, SliceMask]]] = {}  # per slice: (index, mask) of older candidates

    def keep(s: Session) -> None:
        for z, (mask, seed) in s.propagated_candidates().items():
            image_crop, mask_crop = quality_inputs(volume[z], mask, tuple(spacing[1:]), crop)
            x, area = net.quality.inputs(image_crop, mask_crop)
            box, n = SliceMask.from_full(mask), len(dices)
            ties.extend((i, n) for i, older in earlier.get(z, []) if older.agreement(box) >= NEAR_TIE)
            earlier.setdefault(z, []).append((n, box))
            xs.append(x.half()), areas.append(area), dices.append(dice(mask, ref[z]))
            groups.append(z), rounds.append(s.rounds), offsets.append(seed - z)

    with torch.no_grad():
        simulate(session, ref, spacing, clicks, after_click=keep)
    if not xs:
        return Candidates.concat([])
    return Candidates(torch.cat(xs), torch.cat(areas).float(), torch.tensor(dices, dtype=torch.float32),
                      np.asarray(groups), np.asarray(rounds), np.asarray(ties, dtype=np.int64).reshape(-1, 2),
                      np.asarray(offsets, dtype=np.int64))


def ranking_loss(scores: torch.Tensor, dice: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Logistic loss on every pair of one slice's candidates in the wrong order, weighted by how much
    their true Dice differ (a near tie costs nothing)."""
    gap = dice[:, None] - dice[None, :]
    pairs = (group[:, None] == group[None, :]) & (gap > RANK_MIN_GAP)
    if not pairs.any():
        return scores.sum() * 0
    margin = (scores[:, None] - scores[None, :])[pairs] * RANK_SHARPNESS
    return (F.softplus(-margin) * gap[pairs]).sum() / gap[pairs].sum()


def head_loss(net: LimNet, batch: Candidates) -> torch.Tensor:
    scores = net.quality.rate(batch.x.float(), batch.area)
    regression = F.smooth_l1_loss(scores, batch.dice, beta=0.1)
    return regression + ranking_loss(scores, batch.dice, torch.from_numpy(batch.group))


@torch.no_grad()
def predict(net: LimNet, cands: Candidates, chunk: int = 2048) -> np.ndarray:
    net.quality.eval()
    out = [net.quality.rate(cands.x[i:i + chunk].float(), cands.area[i:i + chunk])
           for i in range(0, len(cands), chunk)]
    return torch.cat(out).numpy() if out else np.zeros(0)


@dataclass(frozen=True)
class _Harvested:
    """A harvested candidate in the place of its mask, so that the replay runs the engine's own
    ``choose_round``: never empty (empty masks are not harvested), and alike to another candidate
    exactly where the harvest recorded a near tie."""

    index: int
    ties: frozenset
    empty = False

    def agreement(self, other: _Harvested) -> float:
        return 1.0 if frozenset((self.index, other.index)) in self.ties else 0.0


def decision_gain(scores: np.ndarray, cands: Candidates, margin: float) -> dict:
    """Fusion's choices replayed offline through the engine's ``choose_round``: after each round that
    reached a slice, the candidate chosen among that round's and the older ones, with the head's
    ``scores`` and the preferred one (nearest to its user slice, the newest of those) spared
    ``margin``. gain: mean slice Dice over the preferred one's; oracle: the same for the candidate
    with the best true Dice; pair_order: share of candidate pairs the head orders right, weighted by
    their Dice gap."""
    d = cands.dice.numpy()
    order = np.lexsort((cands.round, cands.group))
    tied = frozenset(frozenset(pair) for pair in cands.ties.tolist())
    slices = np.split(order, np.flatnonzero(np.diff(cands.group[order])) + 1) if len(order) else []
    gain = oracle = right = weight = 0.0
    n = 0
    for index in slices:
        z = int(cands.group[index[0]])  # a slice of one object: the offsets are relative to it
        rounds = [Round("click", candidates={z: _Harvested(int(i), tied)}, scores={z: float(scores[i])},
                        seeds={} if cands.offset[i] == UNKNOWN_OFFSET else {z: z + int(cands.offset[i])})
                  for i in index]  # oldest first, as a session keeps them
        for t in range(2, len(rounds) + 1):
            seen = rounds[:t]
            # every round carries its score, so choose_round never asks for one (score=None)
            pick = choose_round(seen, z, fusion=True, score=None, margin=margin)
            preferred = choose_round(seen, z, fusion=True, score=None, margin=np.inf)
            gain += d[index[pick]] - d[index[preferred]]
            oracle += d[index[:t]].max() - d[index[preferred]]
            n += 1
        s = scores[index]
        gap = d[index][:, None] - d[index][None, :]
        w = np.where(gap > 0, gap, 0.0)
        right += float((w * (s[:, None] > s[None, :])).sum())
        weight += float(w.sum())
    n = max(n, 1)
    return {"gain": float(gain / n), "oracle": float(oracle / n), "decisions": n,
            "pair_order": right / max(weight, 1e-9),
            "mae": float(np.abs(scores - cands.dice.numpy()).mean()) if len(cands) else 0.0}
