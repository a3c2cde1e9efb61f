"""napari reader for NIfTI, TIFF, NRRD and MetaImage volumes and DICOM series folders.

napari's contract: ``napari_get_reader`` returns a callable or ``None`` and never raises. Files we
cannot read are declined up front from their header (cheap), with the reason logged, so napari can
try another reader instead of crashing; damage only visible in the voxel data surfaces as an error
message from the reader function, which napari shows as a notification.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..io import Volume, VolumeError, probe_volume, read_volume, suffix_of

log = logging.getLogger(__name__)


def napari_get_reader(path):
    """Return ``read_layers`` if ``path`` is one scan file or DICOM series folder that looks readable,
    else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, Path)) or not (suffix_of(path) or Path(path).is_dir()):
        return None
    try:
        probe_volume(path)
    except VolumeError as exc:
        log.warning("napari-limnet declines %s: %s", path, exc)
        return None
    return read_layers


def read_layers(path) -> list[tuple]:
    """Read one volume as an image layer (spacing -> ``scale``; affine and header -> ``metadata``)."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    volume = read_volume(path)
    return [(volume.data, image_kwargs(volume, name=_stem(path)), "image")]


def image_kwargs(volume: Volume, *, name: str) -> dict:
    """Layer keyword arguments that keep the geometry for the widget and the labels writer."""
    return {
        "name": name,
        "scale": volume.spacing,
        "metadata": {"affine": volume.affine, "header": dict(volume.header)},
    }


def _stem(path) -> str:
    name = Path(path).resolve().name if Path(path).is_dir() else Path(path).name  # "." names its folder
    suffix = suffix_of(name)
    return name[: -len(suffix)] if suffix else name
