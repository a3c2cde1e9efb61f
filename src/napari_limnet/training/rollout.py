"""Validation during training: the engine's own ``NetworkRunner`` on val objects, so that the figures
describe exactly what ships (the Session adds fusion, undo and threading on top of it, and the same
compact-object reach that bounds the propagation here)."""

from __future__ import annotations

import numpy as np
import torch

from ..engine.crops import Roi, crop_image, prompt_maps
from ..engine.runner import REACH, NetworkRunner, reach_in_slices
from ..evaluation.protocol import dice as slice_dice
from ..model import LimNet
from .simulate import error_click, interior_click


def interaction_inputs(image: np.ndarray, roi: Roi, pos, neg, prev: np.ndarray, crop: int):
    """The image crop and the 3 prompt channels (positive, negative clicks, previous mask)."""
    return crop_image(image, roi, crop), prompt_maps(roi, pos, neg, prev, crop)


def evaluate_object(net: LimNet, volume: np.ndarray, ref: np.ndarray, spacing, device="cpu") -> dict:
    """Clicks of the evaluation protocol on the largest cross-section: 2D Dice after 1, 3 and 5
    clicks; 3D Dice of the one-click mask propagated both ways, as far as the Session's default reach
    lets it; error of the predicted Dice."""
    sp = tuple(spacing[1:])
    runner = NetworkRunner(net, volume, sp, torch.device(device))
    z0 = int(np.argmax(ref.reshape(ref.shape[0], -1).sum(1)))
    target = ref[z0]
    pos, neg, prev = [interior_click(None, target, sp)], [], np.zeros_like(target)
    result, quality_err = {}, []
    for n_clicks in range(1, 6):
        prev = runner.segment_slice(z0, pos, neg, prev)
        quality_err.append(abs(runner.score(z0, prev) - slice_dice(prev, target)))
        if n_clicks == 1:
            first = prev
        if n_clicks in (1, 3, 5):
            result[f"dice2d@{n_clicks}"] = slice_dice(prev, target)
        click = error_click(None, prev, target, sp)
        if click is None:
            result.update({f"dice2d@{k}": result.get(f"dice2d@{k}", 1.0) for k in (1, 3, 5)})
            break
        (pos if click[1] else neg).append(click[0])
    pred = np.zeros_like(ref)
    pred[z0] = first
    if first.any():
        anchors = {z0: first}
        entries = runner.anchor_entries(anchors)
        reach = reach_in_slices(first, REACH, sp, spacing[0])
        for direction in (-1, 1):
            last = z0 + direction * reach
            for z, mask in runner.propagate(z0, first, direction, anchors, entries, lambda: False, last):
                pred[z] = mask
                quality_err.append(abs(runner.score(z, mask) - slice_dice(mask, ref[z])))
    result["dice3d@1"] = slice_dice(pred, ref)
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
    summary["score"] = float(np.mean([summary[k] for k in ("dice2d@1", "dice2d@3", "dice2d@5", "dice3d@1")]))
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
