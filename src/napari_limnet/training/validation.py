"""Validation during training: the engine's own ``NetworkRunner`` and ``Session`` on val objects, so
that the figures describe exactly what ships, and a stage keeps the weights that do best at what the
evaluation measures (3D Dice after a few protocol clicks)."""

from __future__ import annotations

import numpy as np
import torch

from ..clicks import dice, error_click, interior_click, largest_slice, simulate
from ..engine.runner import NetworkRunner
from ..engine.session import Session
from ..model import LimNet, WeightsInfo

VALIDATION_WEIGHTS = WeightsInfo("weights in training", True, None, None)
VAL_CLICKS = 5  # 3D protocol clicks per val object: Dice after 1, 3 and 5 of them


def evaluate_object(net: LimNet, volume: np.ndarray, ref: np.ndarray, spacing, device="cpu") -> dict:
    """2D: the interaction module alone on the largest cross-section, Dice after 1, 3 and 5 clicks.
    3D: the evaluation protocol itself (the same clicks, a default Session, with fusion), Dice
    after 1, 3 and 5 clicks: the product's figure, which the 2D and one-click figures do not predict
    (a stage can raise both and still lose Dice at later clicks). quality_mae: error of the predicted
    Dice on the 2D masks and on every slice of the final 3D result that holds the object or the mask."""
    sp = tuple(spacing[1:])
    runner = NetworkRunner(net, volume, sp, torch.device(device))
    z0 = largest_slice(ref)
    target = ref[z0]
    pos, neg, prev = [interior_click(None, target, sp)], [], np.zeros_like(target)
    result, quality_err = {}, []
    for n_clicks in range(1, 6):
        prev = runner.segment_slice(z0, pos, neg, prev)
        quality_err.append(abs(runner.score(z0, prev) - dice(prev, target)))
        if n_clicks in (1, 3, 5):
            result[f"dice2d@{n_clicks}"] = dice(prev, target)
        click = error_click(None, prev, target, sp)
        if click is None:
            result.update({f"dice2d@{k}": result.get(f"dice2d@{k}", 1.0) for k in (1, 3, 5)})
            break
        (pos if click[1] else neg).append(click[0])
    session = Session(volume, spacing, device=str(device), weights=(net, VALIDATION_WEIGHTS),
                      threads=torch.get_num_threads())
    dices = simulate(session, ref, spacing, VAL_CLICKS)["dice"]
    result.update({f"dice3d@{k}": dices[k - 1] for k in (1, 3, 5)})
    pred = session.mask
    for z in np.flatnonzero((pred | ref).reshape(ref.shape[0], -1).any(1)):
        quality_err.append(abs(runner.score(int(z), pred[z]) - dice(pred[z], ref[z])))
    result["quality_mae"] = float(np.mean(quality_err))
    return result


def evaluate_objects(net: LimNet, objects, device="cpu") -> list[tuple[str, dict]]:
    """(source, ``evaluate_object`` result) for (name, volume, ref, spacing) tuples, in eval mode."""
    was_training = net.training
    net.eval()
    rows = [(name.split("/")[0], evaluate_object(net, volume, ref, spacing, device))
            for name, volume, ref, spacing in objects]
    net.train(was_training)
    return rows


def summarize(rows: list[tuple[str, dict]]) -> dict:
    """Means over all rows and per source, and the score that picks a stage's best weights."""
    keys = list(rows[0][1])
    summary = {k: float(np.mean([r[k] for _, r in rows])) for k in keys}
    for source in sorted({s for s, _ in rows}):
        for k in keys:
            summary[f"{source}/{k}"] = float(np.mean([r[k] for s, r in rows if s == source]))
    summary["score"] = float(np.mean([summary[k] for k in ("dice3d@1", "dice3d@3", "dice3d@5")]))
    return summary


def validate(net: LimNet, objects, device="cpu") -> dict:
    return summarize(evaluate_objects(net, objects, device))


def val_objects(volumes, limit: int, rng: np.random.Generator):
    """Up to ``limit`` (name, volume, ref, spacing) objects, drawn evenly across sources."""
    by_source: dict[str, list] = {}
    for vol in volumes:
        for label in vol.objects:
            by_source.setdefault(vol.name.split("/")[0], []).append((vol, label))
    picked = []
    for _, items in sorted(by_source.items()):
        order = rng.permutation(len(items))
        picked += [items[i] for i in order[: max(1, limit // len(by_source))]]
    return [(v.name, v.image, v.labels == label, v.spacing) for v, label in picked[:limit]]
