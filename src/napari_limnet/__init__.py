"""napari-limnet: click on one slice, get the object in 3D (LIM-Net + Multi-Round Result Fusion)."""

import os
from importlib.metadata import PackageNotFoundError, version

# OpenMP threads that spin while waiting turn any competition for the cores (napari's GUI thread, a
# second process) into 10-100x slower convolutions; measured 6.5 ms -> 560 ms per slice on 2 cores.
# Passive waiting costs nothing measurable here. Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("napari-limnet")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"


def __getattr__(name: str):
    # Lazy: napari imports the package to read its manifest; torch is loaded only when used.
    if name == "Session":
        from .engine import Session

        return Session
    if name == "load_model":
        from .model import load_model

        return load_model
    raise AttributeError(f"module 'napari_limnet' has no attribute {name!r}")


__all__ = ["Session", "__version__", "load_model"]
