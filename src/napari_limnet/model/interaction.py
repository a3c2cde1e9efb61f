"""Interaction module: clicks + previous mask + image features -> mask logits of one slice."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import ResBlock, conv_bn, resize_to
from .encoder import SliceFeatures


class ExchangeUnit(nn.Module):
    """One HRNet-style stage: a residual block per branch, then every branch receives the others."""

    def __init__(self, channels: tuple[int, int, int]) -> None:
        super().__init__()
        c2, c4, c8 = channels
        self.blocks = nn.ModuleList([ResBlock(c) for c in channels])
        # Upward paths: 1x1 projections, then bilinear upsampling.
        self.up4_2 = conv_bn(c4, c2, kernel=1, act=False)
        self.up8_2 = conv_bn(c8, c2, kernel=1, act=False)
        self.up8_4 = conv_bn(c8, c4, kernel=1, act=False)
        # Downward paths: strided 3x3 convs.
        self.down2_4 = conv_bn(c2, c4, stride=2, act=False)
        self.down4_8 = conv_bn(c4, c8, stride=2, act=False)
        self.down2_8 = nn.Sequential(conv_bn(c2, c2, stride=2), conv_bn(c2, c8, stride=2, act=False))

    def forward(self, x2: torch.Tensor, x4: torch.Tensor, x8: torch.Tensor):
        b2, b4, b8 = (blk(x) for blk, x in zip(self.blocks, (x2, x4, x8)))
        y2 = b2 + resize_to(self.up4_2(b4), b2) + resize_to(self.up8_2(b8), b2)
        y4 = b4 + resize_to(self.down2_4(b2), b4) + resize_to(self.up8_4(b8), b4)
        y8 = b8 + resize_to(self.down4_8(b4), b8) + resize_to(self.down2_8(b2), b8)
        return F.relu(y2), F.relu(y4), F.relu(y8)


class InteractionModule(nn.Module):
    """Encodes the round's click maps and the previous mask, fuses them into the image features and
    refines through exchange units; the output keeps the 1/2-resolution stream for boundaries."""

    def __init__(self, channels: tuple[int, int, int], n_units: int = 2) -> None:
        super().__init__()
        c2, c4, c8 = channels
        # 3 prompt channels: positive clicks, negative clicks, previous mask.
        self.prompt2 = nn.Sequential(conv_bn(3, c2, stride=2), conv_bn(c2, c2, act=False))
        self.prompt4 = conv_bn(c2, c4, stride=2, act=False)
        self.prompt8 = conv_bn(c4, c8, stride=2, act=False)
        self.units = nn.ModuleList([ExchangeUnit(channels) for _ in range(n_units)])
        self.head = nn.Sequential(conv_bn(c2 + c4 + c8, c2, kernel=1), conv_bn(c2, c2), nn.Conv2d(c2, 1, 1))

    def forward(self, feats: SliceFeatures, prompts: torch.Tensor) -> torch.Tensor:
        """prompts: B x 3 x S x S (pos map, neg map, previous mask). Returns B x 1 x S x S logits."""
        p2 = self.prompt2(prompts)
        p4 = self.prompt4(p2)
        p8 = self.prompt8(p4)
        x2, x4, x8 = F.relu(feats.f2 + p2), F.relu(feats.f4 + p4), F.relu(feats.f8 + p8)
        for unit in self.units:
            x2, x4, x8 = unit(x2, x4, x8)
        fused = torch.cat([x2, resize_to(x4, x2), resize_to(x8, x2)], dim=1)
        logits = self.head(fused)
        return F.interpolate(logits, size=prompts.shape[-2:], mode="bilinear", align_corners=False)
