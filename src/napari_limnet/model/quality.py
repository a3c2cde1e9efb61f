"""Quality head for Multi-Round Result Fusion: predicts the Dice of a mask on its slice."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import conv_bn


class QualityHead(nn.Module):
    """(image crop, mask crop) -> predicted Dice in [0, 1]. Independent of the other modules so that
    it judges their output rather than sharing their blind spots."""

    def __init__(self, size: int = 64, width: int = 16) -> None:
        super().__init__()
        self.size = size
        w = width
        self.body = nn.Sequential(
            conv_bn(2, w, stride=2), conv_bn(w, w), conv_bn(w, 2 * w, stride=2), conv_bn(2 * w, 2 * w),
            conv_bn(2 * w, 4 * w, stride=2), conv_bn(4 * w, 4 * w, stride=2),
        )
        self.fc = nn.Sequential(nn.Linear(8 * w + 1, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """image, mask: B x 1 x S x S (any S). Returns B predicted Dice values."""
        return self.rate(*self.inputs(image, mask))

    def inputs(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's own view (B x 2 x size x size, and the mask's share of the crop): training on
        many stored candidates keeps this, a quarter of the crops' size."""
        x = torch.cat([image, mask], dim=1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x, mask.flatten(1).mean(dim=1)

    def rate(self, x: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        pooled = torch.cat([y.mean(dim=(2, 3)), y.amax(dim=(2, 3)), area[:, None]], dim=1)
        return torch.sigmoid(self.fc(pooled)).squeeze(1)
