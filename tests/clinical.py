"""Small clinical test files written by SimpleITK itself: a DICOM series and oblique NRRD/MetaImage."""

from __future__ import annotations

import locale
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SERIES_UID = "1.2.826.0.1.3680043.2.1125.1.4242"


def oblique_image(shape_zyx=(3, 6, 5), seed: int = 0) -> sitk.Image:
    """An int16 image whose direction is a rotation about two axes, with non-unit, unequal spacing."""
    data = np.random.default_rng(seed).integers(-100, 1000, size=shape_zyx).astype(np.int16)
    image = sitk.GetImageFromArray(data)
    a, b = 0.3, -0.5
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    image.SetDirection((rz @ rx).ravel().tolist())
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    return image


def write_dicom_series(folder: Path, image: sitk.Image, uid: str = SERIES_UID) -> list[Path]:
    """One DICOM file per slice, with the position and orientation tags a scanner writes."""
    saved = locale.setlocale(locale.LC_ALL)  # GDCM's writer switches the process to the C locale...
    try:
        return _write_slices(folder, image, uid)
    finally:
        locale.setlocale(locale.LC_ALL, saved)  # ...which would make later tests write text as ASCII


def _write_slices(folder: Path, image: sitk.Image, uid: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    orientation = "\\".join(f"{v:.9f}" for v in (*direction[:, 0], *direction[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (("0020|000e", uid), ("0020|000d", uid + ".1"), ("0008|0060", "CT"),
                           ("0020|0037", orientation), ("0020|0032", "\\".join(f"{v:.9f}" for v in position)),
                           ("0020|0013", str(k + 1)), ("0008|0018", f"{uid}.2.{k + 1}")):
            slice_.SetMetaData(tag, value)
        paths.append(folder / f"slice{k:03d}.dcm")
        writer.SetFileName(str(paths[-1]))
        writer.Execute(slice_)
    return paths


def ras_point(image: sitk.Image, index_xyz) -> np.ndarray:
    """Where ITK itself puts a voxel, in RAS+ millimetres (ITK works in LPS)."""
    return np.asarray(image.TransformIndexToPhysicalPoint([int(i) for i in index_xyz])) * [-1, -1, 1]
