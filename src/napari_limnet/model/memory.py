"""Memory module networks: key projection, value encoder, affinity readout, sensory update, decoder.

The stores themselves (which entries are kept, consolidation into long-term prototypes) are engine
policy and live in ``napari_limnet.engine.memory_bank``; this file holds only learnable parts and the
readout maths they are trained with.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ResBlock, conv_bn, resize_to
from .encoder import SliceFeatures


class KeyProjection(nn.Module):
    """Slice features -> unit-norm keys (B x Ck x H/4 x W/4) used for matching across slices."""

    def __init__(self, c4: int, key_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c4, key_dim, 3, padding=1)

    def forward(self, feats: SliceFeatures) -> torch.Tensor:
        return F.normalize(self.proj(feats.f4), dim=1)


class ValueEncoder(nn.Module):
    """(slice features, mask) -> values (B x Cv x H/4 x W/4) that carry 'object here' to other slices."""

    def __init__(self, c4: int, value_dim: int) -> None:
        super().__init__()
        self.mask_path = nn.Sequential(conv_bn(1, 16, stride=2), conv_bn(16, 16, stride=2))
        self.fuse = nn.Sequential(conv_bn(c4 + 16, value_dim), ResBlock(value_dim))

    def forward(self, feats: SliceFeatures, mask: torch.Tensor) -> torch.Tensor:
        m = resize_to(self.mask_path(mask), feats.f4)
        return self.fuse(torch.cat([feats.f4, m], dim=1))


def read_memory(
    query_key: torch.Tensor, mem_keys: torch.Tensor, mem_values: torch.Tensor, *, top_k: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Affinity readout.

    query_key: B x Ck x H x W; mem_keys: B x Ck x N; mem_values: B x Cv x N.
    Returns the readout (B x Cv x H x W) and the affinity mass each memory element received (B x N),
    which the memory bank uses as usage when it consolidates long-term memory.
    """
    b, ck, h, w = query_key.shape
    # Query-major layout (B x HW x N): the softmax runs over contiguous memory, and the scale is applied
    # to the small query instead of the large similarity matrix (3x faster on CPU than memory-major).
    q = query_key.flatten(2).transpose(1, 2) * (temperature / math.sqrt(ck))  # B x HW x Ck
    sim = torch.bmm(q, mem_keys)  # B x HW x N
    if top_k and sim.shape[2] > top_k:
        vals, idx = sim.topk(top_k, dim=2)
        affinity = torch.zeros_like(sim).scatter_(2, idx, torch.softmax(vals, dim=2))
    else:
        affinity = torch.softmax(sim, dim=2)
    readout = torch.bmm(mem_values, affinity.transpose(1, 2)).view(b, -1, h, w)
    return readout, affinity.sum(dim=1)


class SensoryUpdate(nn.Module):
    """Convolutional GRU: the short-range recurrent state carried from one slice to the next."""

    def __init__(self, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gates = nn.Conv2d(in_dim + hidden_dim, 2 * hidden_dim, 3, padding=1)
        self.candidate = nn.Conv2d(in_dim + hidden_dim, hidden_dim, 3, padding=1)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.gates(torch.cat([x, hidden], 1))).chunk(2, dim=1)
        cand = torch.tanh(self.candidate(torch.cat([x, r * hidden], 1)))
        return (1 - z) * hidden + z * cand


class MemoryDecoder(nn.Module):
    """Readout + sensory state + the neighbour slice's mask -> mask logits of the current slice."""

    def __init__(self, c2: int, c4: int, value_dim: int, hidden_dim: int) -> None:
        super().__init__()
        mid = max(c4, value_dim)
        self.fuse4 = nn.Sequential(conv_bn(c4 + value_dim + hidden_dim + 1, mid), ResBlock(mid), ResBlock(mid))
        self.fuse2 = nn.Sequential(conv_bn(mid + c2 + 1, c2), ResBlock(c2))
        self.out = nn.Conv2d(c2, 1, 1)
        self.sensory = SensoryUpdate(mid, hidden_dim)

    def forward(
        self, feats: SliceFeatures, readout: torch.Tensor, hidden: torch.Tensor, prev_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """prev_mask: B x 1 x S x S, the neighbour slice's mask in this slice's crop.
        Returns logits (B x 1 x S x S) and the updated hidden state."""
        m4 = F.adaptive_avg_pool2d(prev_mask, feats.f4.shape[-2:])
        x4 = self.fuse4(torch.cat([feats.f4, readout, hidden, m4], dim=1))
        m2 = F.adaptive_avg_pool2d(prev_mask, feats.f2.shape[-2:])
        x2 = self.fuse2(torch.cat([resize_to(x4, feats.f2), feats.f2, m2], dim=1))
        logits = F.interpolate(self.out(x2), size=prev_mask.shape[-2:], mode="bilinear", align_corners=False)
        return logits, self.sensory(x4, hidden)
