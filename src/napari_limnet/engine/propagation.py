"""The memory module's walk through slices: the one implementation that the engine runs for a user's
round and the training pipeline runs with gradients, so that training sees exactly what the network
sees in use.

A walk follows several sequences at once (a training batch; the engine follows one). Each sequence is
a ``Track``: its memory bank (the user's slices as permanent entries), sensory state, and the mask of
the slice it came from, whose window frames the next slice. The caller decides which slices to feed
(the engine: volume slices between the user's; training: a sampled run of slices) and with which
features (the engine: cached, without gradients; training: fresh, with gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..model import LimNet, SliceFeatures
from .crops import Roi, crop_mask, paste_logits, roi_around
from .memory_bank import MemoryBank, pool_entry

EMPTY_STOP = 3  # consecutive empty slices after which a track has ended (the object is over)
MIN_PIXELS = 3  # a predicted slice mask smaller than this counts as empty
WALK_EXPAND = 0.5  # the next slice's window: the last mask's box enlarged by this share, for motion
WORKING_FRAMES = 4  # working memory of a walk, in slices
LONGTERM_ELEMENTS = 512  # long-term memory of a walk, in pooled elements
REACH_GROWTH = 2.0  # past the reach, a slice mask larger than this many times the start slice's ends a walk


def anchor_window(mask: np.ndarray, spacing: tuple[float, float]) -> Roi:
    """The window in which a user slice (or a walk's seed slice) is encoded into memory."""
    return roi_around(mask, [], mask.shape, spacing)


def memory_entries(net: LimNet, feats: SliceFeatures, key: torch.Tensor,
                   mask_crops: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One permanent memory entry per row of the batch: the slice's key and the value of its mask."""
    values = net.encode_value(feats, mask_crops)
    return [pool_entry(key[i:i + 1].float(), values[i:i + 1].float()) for i in range(len(values))]


@dataclass
class Track:
    """One sequence a walk follows; ``mask``/``roi`` describe the slice it stepped from."""

    bank: MemoryBank
    hidden: torch.Tensor  # 1 x C x h x w sensory state, in the frame of ``roi``
    mask: np.ndarray  # bool slice mask the next window is placed around
    roi: Roi
    spacing: tuple[float, float]
    empties: int = 0

    @classmethod
    def open(cls, entries: list, hidden: torch.Tensor, seed_mask: np.ndarray,
             spacing: tuple[float, float]) -> Track:
        """A track from a seed slice whose mask is known; ``hidden``: ``LimNet.initial_hidden`` of
        that slice in its anchor window; ``entries``: the user's slices (permanent memory)."""
        bank = MemoryBank(WORKING_FRAMES, LONGTERM_ELEMENTS)
        for key, value in entries:
            bank.add_permanent(key, value)
        return cls(bank, hidden.float(), seed_mask, anchor_window(seed_mask, spacing), spacing)

    @property
    def ended(self) -> bool:
        return self.empties >= EMPTY_STOP

    def end(self) -> None:
        """The object is over in this direction: no more slices are predicted."""
        self.empties = EMPTY_STOP

    def window(self) -> Roi:
        """Where the next slice is looked at: around the last mask, or where the last window was."""
        if self.mask.any():
            return roi_around(self.mask, [], self.mask.shape, self.spacing, expand=WALK_EXPAND)
        return self.roi


def step(net: LimNet, tracks: list[Track], feats: SliceFeatures, key: torch.Tensor,
         rois: list[Roi]) -> tuple[torch.Tensor, list[np.ndarray]]:
    """One slice for each track: read its memory, decode, remember the result, move on.

    ``feats``/``key``: the tracks' next slices, each in its ``rois`` entry (from ``Track.window``).
    Returns the logits (B x 1 x S x S, with gradients when the caller has them on) and each track's
    slice mask (a mask under MIN_PIXELS is emptied; EMPTY_STOP of them end the track)."""
    crop = net.config.crop
    hidden = torch.cat([resample_hidden(t.hidden, t.roi, r) for t, r in zip(tracks, rois)])
    prev = torch.cat([crop_mask(t.mask, r, crop) for t, r in zip(tracks, rois)]).to(key.device)
    readouts = []
    for i, t in enumerate(tracks):
        mem_keys, mem_values = t.bank.tensors()
        readout, usage = net.read(key[i:i + 1], mem_keys.to(key.dtype), mem_values.to(key.dtype))
        t.bank.record_usage(usage[0].detach())
        readouts.append(readout)
    logits, hidden = net.decode(feats, torch.cat(readouts), hidden, prev)
    values = net.encode_value(feats, torch.sigmoid(logits))
    masks = []
    for i, (t, roi) in enumerate(zip(tracks, rois)):
        t.bank.add(*pool_entry(key[i:i + 1].float(), values[i:i + 1].float()))
        out = paste_logits(logits[i:i + 1].detach().float().cpu(), roi, t.mask.shape)
        t.empties = t.empties + 1 if out.sum() < MIN_PIXELS else 0
        if t.empties:
            out[:] = False
        t.hidden, t.mask, t.roi = hidden[i:i + 1].float(), out, roi
        masks.append(out)
    return logits, masks


def confidence(logits: torch.Tensor) -> float:
    """How sure the network is of a slice mask (1 x 1 x S x S logits): its mean probability over the
    crop pixels it puts in the mask (0 for an empty mask). Inside an object it stays near 1; where a
    walk runs on past the object's end, onto tissue that only resembles it, it drops (a
    hippocampus's slowly shrinking tail, a lesion's neighbour; docs/evaluation.md)."""
    prob = torch.sigmoid(logits.detach().float())
    inside = prob > 0.5
    return float(prob[inside].mean()) if bool(inside.any()) else 0.0


def goes_on_past_reach(logits: torch.Tensor, mask: np.ndarray, start: np.ndarray, floor: float) -> bool:
    """Whether a walk that has passed the reach keeps slice ``mask`` (from ``logits``) and goes on: the
    network's ``confidence`` in it is at least ``floor`` (the object's end as the network sees it, so
    that a tube or a long organ is followed past a fixed distance and a tail past the object's end is
    not), and it is no larger than ``REACH_GROWTH`` times the ``start`` slice's mask (weights less sure
    of where an object ends can spread over the background with confidence; docs/evaluation.md)."""
    return confidence(logits) >= floor and int(mask.sum()) <= REACH_GROWTH * int(start.sum())


def resample_hidden(hidden: torch.Tensor, old: Roi, new: Roi) -> torch.Tensor:
    """Move the sensory state from the previous slice's window to this slice's window (zeros where
    the new window sees what the old one did not)."""
    if old == new:
        return hidden
    h, w = hidden.shape[-2:]
    # Pixel centres of the new window, in the old window's normalised [-1, 1] coordinates.
    ys = (new.y0 + (torch.arange(h, dtype=torch.float32) + 0.5) * new.h / h - old.y0) / old.h * 2 - 1
    xs = (new.x0 + (torch.arange(w, dtype=torch.float32) + 0.5) * new.w / w - old.x0) / old.w * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None].to(hidden)
    return F.grid_sample(hidden, grid.expand(hidden.shape[0], -1, -1, -1), mode="bilinear",
                         padding_mode="zeros", align_corners=False)
