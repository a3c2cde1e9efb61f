"""napari writer for labels layers: NIfTI or NRRD with the source scan's geometry, or TIFF.

The widget copies the image layer's ``metadata`` (affine and header, set by our reader) onto the labels
layer it creates, so a saved mask overlays the scan in any other tool. Labels layers without that
metadata are written with their ``scale`` as voxel spacing.
"""

from __future__ import annotations

from pathlib import Path

from ..io import suffix_of, write_labels

DEFAULT_SUFFIX = ".nii.gz"


def write_labels_layer(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer: write ``data`` (z, y, x) and return the written path."""
    target = Path(path)
    if not suffix_of(target):
        target = target.with_name(target.name + DEFAULT_SUFFIX)
    metadata = attributes.get("metadata") or {}
    like = metadata if metadata.get("affine") is not None else None
    spacing = None if like is not None else attributes.get("scale")
    return [str(write_labels(target, data, like=like, spacing=spacing))]


def save_job(path: str, data, attributes: dict):
    """``write_labels_layer`` as a widget job (a generator): it waits for the running job and runs on
    the worker thread; returns the written path."""
    yield from ()
    return write_labels_layer(path, data, attributes)[0]
