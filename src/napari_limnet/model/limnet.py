"""LIM-Net: the three modules behind named stages (Cutie/SAM2 style, no opaque ``forward``)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .encoder import ImageEncoder, SliceFeatures
from .interaction import InteractionModule
from .memory import KeyProjection, MemoryDecoder, ValueEncoder, read_memory
from .quality import QualityHead


@dataclass(frozen=True)
class LimNetConfig:
    """Sizes of the network. ``crop`` is the working resolution of every slice crop."""

    crop: int = 128
    c2: int = 16
    c4: int = 32
    c8: int = 64
    interaction_units: int = 2
    click_similarity: bool = False  # global click-similarity prompt maps (interaction.ClickSimilarity)
    key_dim: int = 32
    value_dim: int = 32
    hidden_dim: int = 16
    top_k: int = 0  # 0: softmax over all memory (fastest on CPU at our memory sizes)
    temperature: float = 10.0
    quality_size: int = 64
    quality_width: int = 16

    @classmethod
    def from_dict(cls, values: dict) -> LimNetConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


class LimNet(nn.Module):
    """Interaction module, memory module and quality head over one shared image encoder."""

    def __init__(self, config: LimNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or LimNetConfig()
        c = self.config
        channels = (c.c2, c.c4, c.c8)
        self.encoder = ImageEncoder(*channels)
        self.interaction = InteractionModule(channels, c.interaction_units, c.click_similarity)
        self.key_proj = KeyProjection(c.c4, c.key_dim)
        self.value_encoder = ValueEncoder(c.c4, c.value_dim)
        self.decoder = MemoryDecoder(c.c2, c.c4, c.value_dim, c.hidden_dim)
        self.quality = QualityHead(c.quality_size, c.quality_width)

    def forward(self, *args, **kwargs):  # pragma: no cover - callers compose the stages
        raise NotImplementedError("LimNet is used through its stages: encode_image, interact, ...")

    # --- stages -------------------------------------------------------------------------------
    def encode_image(self, image: torch.Tensor) -> SliceFeatures:
        return self.encoder(image)

    def interact(self, feats: SliceFeatures, prompts: torch.Tensor) -> torch.Tensor:
        return self.interaction(feats, prompts)

    def encode_key(self, feats: SliceFeatures) -> torch.Tensor:
        return self.key_proj(feats)

    def encode_value(self, feats: SliceFeatures, mask: torch.Tensor) -> torch.Tensor:
        return self.value_encoder(feats, mask)

    def read(self, query_key: torch.Tensor, mem_keys: torch.Tensor, mem_values: torch.Tensor):
        return read_memory(
            query_key, mem_keys, mem_values, top_k=self.config.top_k, temperature=self.config.temperature
        )

    def decode(self, feats, readout, hidden, prev_mask):
        return self.decoder(feats, readout, hidden, prev_mask)

    def initial_hidden(self, feats: SliceFeatures) -> torch.Tensor:
        f4 = feats.f4
        return f4.new_zeros(f4.shape[0], self.config.hidden_dim, *f4.shape[-2:])

    def score(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.quality(image, mask)


def fused_for_inference(net: LimNet) -> LimNet:
    """A copy of ``net`` (in eval mode) with every BatchNorm folded into its convolution: the same
    outputs, fewer passes over memory on the CPU."""
    fused = copy.deepcopy(net).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(conv, bn)
                    module[i + 1] = nn.Identity()
    return fused


def extended(net: LimNet, **options) -> tuple[LimNet, list[str]]:
    """``net``'s weights in a network with more options switched on (a fine-tuning run that adds a
    module): returns it and the names of the parameters it adds, which start as no-ops."""
    bigger = LimNet(replace(net.config, **options))
    missing, unexpected = bigger.load_state_dict(net.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"options {options} drop weights the network had: {unexpected[:3]}")
    return bigger.eval(), list(missing)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
