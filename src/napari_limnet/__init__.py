"""napari-limnet: click on one slice, get the object in 3D (LIM-Net + Multi-Round Result Fusion)."""

from importlib.metadata import PackageNotFoundError, version

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
