"""One propagation step, shared by the engine and the training pipeline (so both run the same maths).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..model import LimNet, SliceFeatures
from .crops import Roi
from .memory_bank import MemoryBank, pool_entry


def memory_step(
    net: LimNet, feats: SliceFeatures, key: torch.Tensor, banks: list[MemoryBank], hidden: torch.Tensor,
    prev_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read each sample's memory for this slice and decode the batch. prev_mask: the neighbour's mask
    in this slice's crop (B x 1 x S x S). Returns logits (B x 1 x S x S) and the new hidden state."""
    readouts = []
    for i, bank in enumerate(banks):
        mem_keys, mem_values = bank.tensors()
        readout, usage = net.read(key[i:i + 1], mem_keys.to(key.dtype), mem_values.to(key.dtype))
        bank.record_usage(usage[0].detach())
        readouts.append(readout)
    return net.decode(feats, torch.cat(readouts), hidden, prev_mask)


def remember(net: LimNet, feats: SliceFeatures, key: torch.Tensor, logits: torch.Tensor,
             banks: list[MemoryBank]) -> None:
    """Add each sample's slice, with its predicted mask, to that sample's working memory."""
    values = net.encode_value(feats, torch.sigmoid(logits))
    for i, bank in enumerate(banks):
        bank.add(*pool_entry(key[i:i + 1].float(), values[i:i + 1].float()))


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
