"""The methods the evaluation can run, by name. Adding one is one line in ``METHODS``.

A method is opened once per case, ``opener(volume, spacing, context) -> session``, and the session is
``reset()`` before each object of that case (so per-slice caches are reused, as when a user outlines
several structures in one scan). The session answers ``click((z, y, x), positive) -> 3D bool mask``,
which is exactly the :class:`napari_limnet.Session` contract.
"""

from __future__ import annotations

import math
from functools import partial

from .baselines import RandomWalkerSession


class MethodContext:
    """What the network methods share across cases: device and weights, loaded once per run."""

    def __init__(self, device: str = "auto", weights: str | None = None) -> None:
        self.device = device
        self.weights = weights
        self._model = None

    def model(self):
        if self._model is None:
            from napari_limnet.model import load_model

            self._model = load_model(self.weights)
        return self._model

    def describe(self) -> str:
        """One line for the report: which weights produced the network rows (empty if none ran)."""
        if self._model is None:
            return ""
        return f"LIM-Net weights: {self._model[1].describe()}"


def _open_limnet(volume, spacing, context: MethodContext, **options):
    """A LIM-Net session; ``options`` override the Session's defaults (fusion, reach)."""
    from napari_limnet.engine import Session

    return Session(volume, spacing=spacing, axis=0, device=context.device, weights=context.model(), **options)


def _open_random_walker(volume, spacing, context: MethodContext):
    return RandomWalkerSession(volume, spacing)


METHODS = {
    "limnet": partial(_open_limnet, fusion=True),
    "limnet-no-mrf": partial(_open_limnet, fusion=False),  # ablation: newest round wins on every slice
    "limnet-no-reach": partial(_open_limnet, fusion=True, reach=math.inf),  # ablation: no compact-object prior
    # ablation: the reach is a hard limit (no walk past it, however confident the network is)
    "limnet-fixed-reach": partial(_open_limnet, fusion=True, reach_confidence=None),
    "random-walker": _open_random_walker,
}

# Methods whose sessions are LIM-Net sessions: they also take box prompts and name suspect slices.
NETWORK_METHODS = frozenset(name for name, opener in METHODS.items() if getattr(opener, "func", None) is _open_limnet)
