"""The batched training steps. Each one replays the engine's inference procedure (same windows,
same prompts, same memory bank) with the model's own intermediate outputs, so that training sees what
the network will see in use."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from ..clicks import dice as slice_dice
from ..clicks import error_click, interior_click
from ..engine.crops import (
    Roi,
    crop_image,
    crop_mask,
    interaction_window,
    paste_logits,
    prompt_maps,
    quality_inputs,
    zoom_in,
)
from ..engine.propagation import Track, anchor_window, memory_entries
from ..engine.propagation import step as walk_step
from ..model import LimNet
from .sampler import Sample
from .simulate import perturb_mask


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice per sample, averaged (an empty target is handled by the +1 smoothing)."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return (bce + dice).mean()


@dataclass
class QualityBuffer:
    """Recent (image crop, binary mask crop, true slice Dice) triples for the quality head, framed as
    the engine frames a mask it scores (``quality_inputs``)."""

    crop: int = 128
    capacity: int = 1024
    images: list = field(default_factory=list)
    masks: list = field(default_factory=list)
    dices: list = field(default_factory=list)

    def add(self, image: np.ndarray, mask: np.ndarray, ref: np.ndarray, spacing) -> None:
        """image, mask, ref: one whole slice (2D), the mask to score and the reference."""
        image_crop, mask_crop = quality_inputs(image, mask, spacing, self.crop)
        self.images.append(image_crop.half())
        self.masks.append((mask_crop > 0.5).half())
        self.dices.append(slice_dice(mask, ref))
        if len(self.dices) > self.capacity:
            del self.images[0], self.masks[0], self.dices[0]

    def batch(self, rng: np.random.Generator, size: int, device):
        idx = rng.integers(len(self.dices), size=min(size, len(self.dices)))
        image = torch.cat([self.images[i] for i in idx]).to(device).float()
        mask = torch.cat([self.masks[i] for i in idx]).to(device).float()
        return image, mask, torch.tensor([self.dices[i] for i in idx], device=device)


def quality_loss(net: LimNet, buffer: QualityBuffer, rng, size: int, device) -> torch.Tensor:
    image, mask, dice = buffer.batch(rng, size, device)
    return F.smooth_l1_loss(net.score(image, mask).float(), dice, beta=0.1)


def add_perturbed(buffer: QualityBuffer, rng, image: np.ndarray, ref: np.ndarray, spacing) -> None:
    """A hand-made wrong (or right, or empty) mask, so the quality head sees the whole Dice range."""
    r = rng.random()
    wrong = np.zeros_like(ref) if r < 0.15 else ref if r < 0.3 else perturb_mask(rng, ref)
    buffer.add(image, wrong, ref, spacing)


@dataclass
class _Click2D:
    """The state of one simulated interaction on one slice."""

    image: np.ndarray
    ref: np.ndarray
    spacing: tuple[float, float]
    pos: list
    neg: list
    prev: np.ndarray
    roi: Roi
    zoom_pending: bool  # the last round started from an empty mask: the engine zooms in next


def _start(rng, s: Sample) -> _Click2D:
    img, ref, sp = s.image[0], s.mask[0], s.spacing
    if rng.random() < 0.35:  # a correction on a slice that already has a (propagated) mask
        prev = s.mask[1] if rng.random() < 0.5 else perturb_mask(rng, ref)
        if prev.any():
            click = error_click(rng, prev, ref, sp) or (interior_click(rng, ref, sp), True)
            pos, neg = ([click[0]], []) if click[1] else ([], [click[0]])
            return _Click2D(img, ref, sp, pos, neg, prev, interaction_window(prev, pos + neg, ref.shape, sp), False)
    prev, pos = np.zeros_like(ref), [interior_click(rng, ref, sp)]
    hint = s.mask[1] if rng.random() < 0.5 else None  # the engine's window for a click next to the object
    return _Click2D(img, ref, sp, pos, [], prev, interaction_window(prev, pos, ref.shape, sp, hint), True)


def _advance(rng, st: _Click2D, mask: np.ndarray, crop: int) -> None:
    """What happens after the network answered: the engine's zoom-in, or the user's next click."""
    again = zoom_in(mask, st.roi, st.pos + st.neg, st.spacing, crop) if st.zoom_pending else None
    if again:
        st.roi, st.prev = again
        st.zoom_pending = False
        return
    st.prev = mask
    click = error_click(rng, mask, st.ref, st.spacing)
    if click is not None:
        (st.pos if click[1] else st.neg).append(click[0])
    st.zoom_pending = not mask.any()
    st.roi = interaction_window(mask, st.pos + st.neg, mask.shape, st.spacing)


def interaction_inputs(image: np.ndarray, roi: Roi, pos, neg, prev: np.ndarray, crop: int):
    """The image crop and the 3 prompt channels (positive, negative clicks, previous mask)."""
    return crop_image(image, roi, crop), prompt_maps(roi, pos, neg, prev, crop)


def _interact(net: LimNet, states: list[_Click2D], device) -> torch.Tensor:
    crop = net.config.crop
    xs, prompts = zip(*(interaction_inputs(s.image, s.roi, s.pos, s.neg, s.prev, crop) for s in states))
    x, p = torch.cat(xs).to(device), torch.cat(prompts).to(device)
    return net.interact(net.encode_image(x), p)


def interaction_step(net: LimNet, samples: list[Sample], rng, *, max_rounds: int, buffer: QualityBuffer,
                     device, autocast) -> torch.Tensor:
    """RITM-style: a random number of rounds without gradient (the model's own masks become the next
    prompts), then one round with gradient."""
    crop = net.config.crop
    states = [_start(rng, s) for s in samples]
    for _ in range(int(rng.integers(0, max_rounds + 1))):
        with torch.no_grad(), autocast():
            logits = _interact(net, states, device)
        for i, st in enumerate(states):
            mask = paste_logits(logits[i:i + 1].float().cpu(), st.roi, st.ref.shape)
            buffer.add(st.image, mask, st.ref, st.spacing)
            _advance(rng, st, mask, crop)
    with autocast():
        logits = _interact(net, states, device)
    target = torch.cat([crop_mask(st.ref, st.roi, crop) for st in states]).to(device)
    for i, st in enumerate(states):
        mask = paste_logits(logits[i:i + 1].detach().float().cpu(), st.roi, st.ref.shape)
        buffer.add(st.image, mask, st.ref, st.spacing)
        add_perturbed(buffer, rng, st.image, st.ref, st.spacing)
    return seg_loss(logits, target)


def walk_samples(net: LimNet, samples: list[Sample], seeds: list[np.ndarray], device):
    """The engine's walk (engine/propagation.py) along each sample's slices, from slice 0 with mask
    ``seeds[i]``, the sample's anchor slice (if any) in permanent memory as a user slice would be.
    Yields (slice index, live sample indices, logits, the live samples' slice masks) per slice, with
    gradients if the caller has them on. A sample whose track has ended (the object is over) drops out,
    as the engine stops predicting there."""
    crop = net.config.crop
    length = len(samples[0].mask) - (samples[0].anchor is not None)
    rows, imgs, masks = [0], [], []
    for s, seed in zip(samples, seeds):
        for z, m in [(0, seed)] + ([(s.anchor, s.mask[s.anchor])] if s.anchor is not None else []):
            roi = anchor_window(m, s.spacing)
            imgs.append(crop_image(s.image[z], roi, crop))
            masks.append(crop_mask(m, roi, crop))
        rows.append(len(imgs))
    feats = net.encode_image(torch.cat(imgs).to(device))
    entries = memory_entries(net, feats, net.encode_key(feats), torch.cat(masks).to(device))
    hidden = net.initial_hidden(feats)
    tracks = [Track.open(entries[a:b], hidden[a:a + 1], seed, s.spacing)
              for s, seed, a, b in zip(samples, seeds, rows, rows[1:])]
    for t in range(1, length):
        live = [i for i, track in enumerate(tracks) if not track.ended]
        if not live:
            return
        rois = [tracks[i].window() for i in live]
        feats = net.encode_image(torch.cat([crop_image(samples[i].image[t], r, crop)
                                            for i, r in zip(live, rois)]).to(device))
        logits, out = walk_step(net, [tracks[i] for i in live], feats, net.encode_key(feats), rois)
        yield t, live, rois, logits, out


def propagation_step(net: LimNet, samples: list[Sample], rng, *, buffer: QualityBuffer, device,
                     autocast) -> torch.Tensor:
    """Propagate from slice 0 (reference mask, sometimes perturbed like an interaction result) along
    the sample's slices, with gradients through the whole sequence."""
    crop = net.config.crop
    seeds = []
    for s in samples:
        m0 = s.mask[0] if rng.random() < 0.7 else perturb_mask(rng, s.mask[0])
        seeds.append(m0 if m0.any() else s.mask[0])
    losses = []
    with autocast():
        for t, live, rois, logits, out in walk_samples(net, samples, seeds, device):
            target = torch.cat([crop_mask(samples[i].mask[t], r, crop) for i, r in zip(live, rois)]).to(device)
            losses.append(seg_loss(logits, target))
            for i, mask in zip(live, out):
                buffer.add(samples[i].image[t], mask, samples[i].mask[t], samples[i].spacing)
    return torch.stack(losses).mean()
