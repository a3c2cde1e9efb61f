"""Single-object inference, written from the engine's procedure, for validation during training
(the engine's Session adds caching, fusion and threading on top of the same steps)."""

from __future__ import annotations

import numpy as np
import torch

from ..engine.crops import Roi, click_maps, crop_image, crop_mask, full_roi, paste_logits, roi_around
from ..engine.memory_bank import MemoryBank, pool_entry
from ..engine.propagation import memory_step, resample_hidden
from ..model import LimNet
from .simulate import error_click, interior_click, slice_dice

EMPTY_STOP = 3


def interaction_inputs(image: np.ndarray, roi: Roi, pos, neg, prev: np.ndarray, crop: int):
    """The image crop and the 3 prompt channels (positive, negative clicks, previous mask)."""
    maps = click_maps(roi.to_crop(pos, crop), roi.to_crop(neg, crop), crop)
    return crop_image(image, roi, crop), torch.cat([maps, crop_mask(prev, roi, crop)], 1)


@torch.no_grad()
def segment_slice(net: LimNet, image, spacing, pos, neg, prev, device="cpu") -> tuple[np.ndarray, float]:
    """One interaction round on a slice, with the zoom-in pass. Returns the mask and its predicted Dice."""
    crop = net.config.crop
    shape = image.shape
    empty = not prev.any()
    roi = full_roi(shape, spacing) if empty else roi_around(prev, list(pos) + list(neg), shape, spacing)
    while True:
        x, p = interaction_inputs(image, roi, pos, neg, prev, crop)
        x = x.to(device)
        logits = net.interact(net.encode_image(x), p.to(device)).float()
        mask = paste_logits(logits.cpu(), roi, shape)
        if empty and mask.any():
            empty = False
            zoomed = roi_around(mask, list(pos) + list(neg), shape, spacing)
            if zoomed != roi:
                roi, prev = zoomed, mask
                continue
        return mask, float(net.score(x, (logits > 0).float()))


@torch.no_grad()
def propagate(net: LimNet, volume: np.ndarray, spacing, z0: int, anchors: dict, direction: int,
              device="cpu") -> dict[int, tuple[np.ndarray, float]]:
    """Spread the mask of slice z0 (``anchors[z0]``) along axis 0 in one direction; every anchor is a
    permanent memory entry. Returns {z: (mask, predicted Dice)} for the slices it reached."""
    crop = net.config.crop
    shape = volume.shape[1:]
    bank = MemoryBank(working_frames=4, longterm_elements=512)
    for z, mask in anchors.items():
        roi = roi_around(mask, [], shape, spacing)
        feats = net.encode_image(crop_image(volume[z], roi, crop).to(device))
        value = net.encode_value(feats, crop_mask(mask, roi, crop).to(device))
        bank.add_permanent(*pool_entry(net.encode_key(feats), value))
        if z == z0:
            hidden, prev_roi = net.initial_hidden(feats), roi
    prev_mask = anchors[z0]
    out, empties, z = {}, 0, z0 + direction
    while 0 <= z < volume.shape[0] and empties < EMPTY_STOP:
        roi = roi_around(prev_mask, [], shape, spacing, expand=0.5) if prev_mask.any() else prev_roi
        x = crop_image(volume[z], roi, crop).to(device)
        feats = net.encode_image(x)
        key = net.encode_key(feats)
        hidden = resample_hidden(hidden, prev_roi, roi)
        prev = crop_mask(prev_mask, roi, crop).to(device)
        logits, hidden = memory_step(net, feats, key, bank, hidden, prev)
        logits = logits.float()
        mask = paste_logits(logits.cpu(), roi, shape)
        bank.add(*pool_entry(key, net.encode_value(feats, torch.sigmoid(logits))))
        out[z] = (mask, float(net.score(x, (logits > 0).float())))
        empties = 0 if mask.any() else empties + 1
        prev_mask, prev_roi, z = mask, roi, z + direction
    return out


def evaluate_object(net: LimNet, volume: np.ndarray, ref: np.ndarray, spacing, device="cpu") -> dict:
    """Clicks of the evaluation protocol on the largest cross-section: 2D Dice after 1, 3 and 5
    clicks; 3D Dice of the one-click mask propagated both ways; error of the predicted Dice."""
    sp = tuple(spacing[1:])
    z0 = int(np.argmax(ref.reshape(ref.shape[0], -1).sum(1)))
    img, target = volume[z0], ref[z0]
    pos, neg, prev = [interior_click(None, target, sp)], [], np.zeros_like(target)
    result, quality_err = {}, []
    for n_clicks in range(1, 6):
        prev, predicted = segment_slice(net, img, sp, pos, neg, prev, device)
        quality_err.append(abs(predicted - slice_dice(prev, target)))
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
        for direction in (-1, 1):
            spread = propagate(net, volume, sp, z0, {z0: first}, direction, device)
            for z, (mask, predicted) in spread.items():
                pred[z] = mask
                quality_err.append(abs(predicted - slice_dice(mask, ref[z])))
    result["dice3d@1"] = slice_dice(pred, ref)
    result["quality_mae"] = float(np.mean(quality_err))
    return result


def validate(net: LimNet, objects, device="cpu") -> dict:
    """Mean of ``evaluate_object`` over (name, volume, ref, spacing) tuples; per-source means too."""
    was_training = net.training
    net.eval()
    rows = []
    for name, volume, ref, spacing in objects:
        rows.append((name.split("/")[0], evaluate_object(net, volume, ref, spacing, device)))
    net.train(was_training)
    keys = list(rows[0][1])
    summary = {k: float(np.mean([r[k] for _, r in rows])) for k in keys}
    for source in sorted({s for s, _ in rows}):
        for k in keys:
            summary[f"{source}/{k}"] = float(np.mean([r[k] for s, r in rows if s == source]))
    summary["score"] = float(np.mean([summary[k] for k in ("dice2d@1", "dice2d@3", "dice2d@5", "dice3d@1")]))
    return summary


def val_objects(volumes, limit: int, rng: np.random.Generator):
    """Up to ``limit`` (name, volume, ref, spacing) objects, drawn evenly across sources."""
    by_source: dict[str, list] = {}
    for vol in volumes:
        for label in vol.objects:
            by_source.setdefault(vol.name.split("/")[0], []).append((vol, label))
    picked = []
    for source, items in sorted(by_source.items()):
        order = rng.permutation(len(items))
        picked += [items[i] for i in order[: max(1, limit // len(by_source))]]
    return [(v.name, v.image, v.labels == label, v.spacing) for v, label in picked[:limit]]
