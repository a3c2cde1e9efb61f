"""Image encoder shared by the interaction and memory modules.

Its output depends on the image crop only, so the engine caches it per slice and reuses it across
rounds and across the interaction and propagation steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import ResBlock, conv_bn


@dataclass
class SliceFeatures:
    """Multi-resolution features of one image crop (B x C x H/s x W/s for s = 2, 4, 8)."""

    f2: torch.Tensor
    f4: torch.Tensor
    f8: torch.Tensor


class ImageEncoder(nn.Module):
    """Three-scale CNN: the high-resolution stream keeps boundaries, the low ones give context."""

    def __init__(self, c2: int, c4: int, c8: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(1, c2, stride=2), ResBlock(c2))
        self.down4 = nn.Sequential(conv_bn(c2, c4, stride=2), ResBlock(c4))
        self.down8 = nn.Sequential(conv_bn(c4, c8, stride=2), ResBlock(c8))

    def forward(self, image: torch.Tensor) -> SliceFeatures:
        """image: B x 1 x S x S, normalised to roughly [0, 1]."""
        f2 = self.stem(image)
        f4 = self.down4(f2)
        f8 = self.down8(f4)
        return SliceFeatures(f2, f4, f8)
