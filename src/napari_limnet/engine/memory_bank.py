"""The memory stores of the propagation: permanent anchors, working memory, long-term prototypes.

Memory is bounded by configuration, not by the number of slices: working memory holds the last
``working_frames`` slices; an entry pushed out of it is consolidated into a long-term store of at
most ``longterm_elements`` prototypes, chosen by how much attention they have received (usage).
Permanent entries are the slices the user interacted with: never evicted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from torch.nn import functional as F


def pool_entry(key: torch.Tensor, value: torch.Tensor, factor: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """1 x C x H x W key/value maps -> C x N memory elements, average-pooled by ``factor`` so that one
    slice costs N = HW / factor^2 elements (keys re-normalised)."""
    if factor > 1:
        key = F.avg_pool2d(key, factor)
        value = F.avg_pool2d(value, factor)
    return F.normalize(key.flatten(2)[0], dim=0), value.flatten(2)[0]


@dataclass
class _Entry:
    key: torch.Tensor  # Ck x N
    value: torch.Tensor  # Cv x N
    usage: torch.Tensor  # N


class MemoryBank:
    """Key/value memory read by affinity; see the module docstring for the eviction policy."""

    def __init__(self, working_frames: int = 4, longterm_elements: int = 512) -> None:
        self.working_frames = working_frames
        self.longterm_elements = longterm_elements
        self.permanent: list[_Entry] = []
        self.working: deque[_Entry] = deque()
        self.longterm: _Entry | None = None

    def add_permanent(self, key: torch.Tensor, value: torch.Tensor) -> None:
        self.permanent.append(_Entry(key, value, key.new_zeros(key.shape[1])))

    def add(self, key: torch.Tensor, value: torch.Tensor) -> None:
        self.working.append(_Entry(key, value, key.new_zeros(key.shape[1])))
        while len(self.working) > self.working_frames:
            self._consolidate(self.working.popleft())

    def _consolidate(self, entry: _Entry) -> None:
        if self.longterm is None:
            merged = entry
        else:
            lt = self.longterm
            merged = _Entry(torch.cat([lt.key, entry.key], 1), torch.cat([lt.value, entry.value], 1),
                            torch.cat([lt.usage, entry.usage]))
        if merged.usage.numel() > self.longterm_elements:
            keep = merged.usage.topk(self.longterm_elements).indices.sort().values
            merged = _Entry(merged.key[:, keep], merged.value[:, keep], merged.usage[keep])
        self.longterm = merged

    def _entries(self) -> list[_Entry]:
        return self.permanent + list(self.working) + ([self.longterm] if self.longterm is not None else [])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All memory as 1 x Ck x N keys and 1 x Cv x N values."""
        entries = self._entries()
        return (torch.cat([e.key for e in entries], 1)[None], torch.cat([e.value for e in entries], 1)[None])

    def record_usage(self, usage: torch.Tensor, decay: float = 0.9) -> None:
        """usage: N (affinity mass per element from the last read, in ``tensors()`` order)."""
        offset = 0
        for entry in self._entries():
            n = entry.usage.numel()
            entry.usage.mul_(decay).add_(usage[offset:offset + n].to(entry.usage.dtype))
            offset += n

    @property
    def elements(self) -> int:
        return sum(e.usage.numel() for e in self._entries())

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for e in self._entries() for t in (e.key, e.value, e.usage))
