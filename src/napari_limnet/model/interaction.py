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


class ClickSimilarity(nn.Module):
    """Global prompt maps: how much each position's image features resemble those under the positive
    clicks, the negative clicks and the previous mask. A click otherwise reaches only as far as the
    convolutions carry it (its effect on the logits fades out ~50 px from it on the 128-px crop), so an
    object larger than that could not be filled whatever the image says. The projections start at zero:
    a network extended with this module answers exactly as before until it is trained."""

    SOURCES = 3  # positive clicks, negative clicks, previous mask

    def __init__(self, c4: int, c8: int, hidden: int = 16) -> None:
        super().__init__()
        self.mix = nn.Sequential(nn.Conv2d(2 * self.SOURCES, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.to4 = nn.Conv2d(hidden, c4, 1)
        self.to8 = nn.Conv2d(hidden, c8, 1)
        for proj in (self.to4, self.to8):
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, f4: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f4: B x C x h x w image features; prompts: B x 3 x S x S. Returns additions to the 1/4 and 1/8
        streams."""
        weights = F.adaptive_avg_pool2d(prompts, f4.shape[-2:])  # B x 3 x h x w
        unit = F.normalize(f4, dim=1)
        mass = weights.flatten(2).sum(-1)  # B x 3
        protos = torch.einsum("bkhw,bchw->bkc", weights, unit) / mass.clamp_min(1e-6)[..., None]
        sims = torch.einsum("bkc,bchw->bkhw", F.normalize(protos, dim=-1), unit)
        present = (mass > 1e-3).to(sims.dtype)[..., None, None]  # a source without pixels says nothing
        hidden = self.mix(torch.cat([sims * present, present.expand_as(sims)], dim=1))
        return self.to4(hidden), self.to8(F.avg_pool2d(hidden, 2))


class InteractionModule(nn.Module):
    """Encodes the round's click maps and the previous mask, fuses them into the image features and
    refines through exchange units; the output keeps the 1/2-resolution stream for boundaries."""

    def __init__(self, channels: tuple[int, int, int], n_units: int = 2, similarity: bool = False) -> None:
        super().__init__()
        c2, c4, c8 = channels
        self.similarity = ClickSimilarity(c4, c8) if similarity else None
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
        if self.similarity is not None:
            s4, s8 = self.similarity(feats.f4, prompts)
            p4, p8 = p4 + s4, p8 + resize_to(s8, p8)
        x2, x4, x8 = F.relu(feats.f2 + p2), F.relu(feats.f4 + p4), F.relu(feats.f8 + p8)
        for unit in self.units:
            x2, x4, x8 = unit(x2, x4, x8)
        fused = torch.cat([x2, resize_to(x4, x2), resize_to(x8, x2)], dim=1)
        logits = self.head(fused)
        return F.interpolate(logits, size=prompts.shape[-2:], mode="bilinear", align_corners=False)
