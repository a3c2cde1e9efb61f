"""Clinical formats through SimpleITK: NRRD (.nrrd/.nhdr), MetaImage (.mha/.mhd), DICOM series folders.

ITK places voxels in LPS patient coordinates (origin, direction, spacing); ``Volume.affine`` follows
NIfTI (index (x, y, z) to RAS+ millimetres), so geometry is converted with the LPS -> RAS flip here and
back when writing. A DICOM scan and its NIfTI conversion therefore get the same affine, and a label
written in either format overlays the scan in any viewer. SimpleITK is imported only when one of these
formats is used (it adds about 0.3 s).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from .volumes import Volume, VolumeError, spacing_of, zyx_shape

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
POSITION, SERIES_UID = "0020|0032", "0020|000e"  # DICOM tags: Image Position (Patient), Series Instance UID
EVEN_SPACING = 0.1  # a slice gap may differ from the typical one by this share before the series is refused


def _sitk():
    import SimpleITK as sitk

    # ITK prints its warnings to stderr in C++ form; the conditions they report are checked here and
    # raised as one clear VolumeError instead.
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    return sitk


def _itk(call, failure: str):
    """Run one ITK call; its failure becomes a one-line ``VolumeError`` starting with ``failure``.

    ITK exceptions span lines and name C++ source files, and MetaIO/GDCM print some reasons straight
    to the process's stderr: that text is caught and goes into the message (replayed if the call works).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            result, error = call(), None
        except RuntimeError as exc:
            result, error = None, exc
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        printed = [ln.strip() for ln in caught.read().decode(errors="replace").splitlines() if ln.strip()]
    if error is not None:
        lines = [ln.strip() for ln in str(error).splitlines()[1:] if ln.strip()]  # [0] names the C++ file
        reasons = [re.sub(r"^(\[\w+\] |(s?itk::|ITK )ERROR: (\w+\(0x[0-9a-f]+\): )?)", "", ln)
                   for ln in [*lines[:1], *lines[1:][-1:], *printed]]
        raise VolumeError(f"{failure} ({'; '.join(dict.fromkeys(reasons)) or type(error).__name__})") from error
    if printed:
        print("\n".join(printed), file=sys.stderr)
    return result


# ---- single files: NRRD and MetaImage ------------------------------------------------------------
def probe_file(path) -> tuple[int, ...]:
    """(z, y, x) shape from the header alone; ``VolumeError`` if unreadable or not one 3D channel."""
    reader = _sitk().ImageFileReader()
    reader.SetFileName(str(path))
    _itk(reader.ReadImageInformation, f"{path}: not a readable image")
    if reader.GetNumberOfComponents() != 1:
        raise VolumeError(f"{path}: expected one channel, got {reader.GetNumberOfComponents()}")
    return zyx_shape(tuple(reader.GetSize()), path)


def read_file(path) -> Volume:
    """Read a .nrrd/.nhdr/.mha/.mhd file as a ``Volume`` (voxels checked after the header)."""
    probe_file(path)
    image = _itk(lambda: _sitk().ReadImage(str(path)), f"{path}: voxel data are missing, truncated or corrupt")
    fmt = "nrrd" if str(path).lower().endswith((".nrrd", ".nhdr")) else "metaimage"
    return _volume(_as_3d(image, path), path, {"format": fmt})


# ---- DICOM series folders ------------------------------------------------------------------------
def probe_series(folder) -> tuple[int, ...]:
    """(z, y, x) shape of the one DICOM series in ``folder``, from the slice headers."""
    files = _series_files(folder)
    reader = _sitk().ImageFileReader()
    reader.SetFileName(files[0])
    _itk(reader.ReadImageInformation, f"{folder}: {Path(files[0]).name} is not a readable DICOM slice")
    x, y, *z = reader.GetSize()
    return (len(files) if len(files) > 1 else (z[0] if z else 1), y, x)


def read_series(folder) -> Volume:
    """Read the DICOM series in ``folder`` (sorted by slice position, rescale slope/intercept applied).

    Refused with one line: a folder without a series or with several, slices that are damaged, and
    gaps (missing slices) that would stretch the scan.
    """
    sitk = _sitk()
    files = _series_files(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = _itk(reader.Execute, f"{folder}: the DICOM series could not be read")
    if len(files) > 1:
        _check_even_slices(folder, [reader.GetMetaData(i, POSITION) if reader.HasMetaDataKey(i, POSITION)
                                    else None for i in range(len(files))])
    uid = reader.GetMetaData(0, SERIES_UID).strip() if reader.HasMetaDataKey(0, SERIES_UID) else ""
    return _volume(_as_3d(image, folder), folder, {"format": "dicom", "series_uid": uid, "files": len(files)})


def _series_files(folder) -> tuple[str, ...]:
    sitk = _sitk()
    folder = str(folder)
    ids = _itk(lambda: sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder), f"{folder}: not a readable folder")
    if not ids:
        nested = any(entry.is_dir() for entry in os.scandir(folder))
        raise VolumeError(f"{folder}: no DICOM series in this folder"
                          + (" (subfolders are not searched: open the folder of one series)" if nested else ""))
    if len(ids) > 1:
        raise VolumeError(f"{folder}: holds {len(ids)} DICOM series; open a folder with one series "
                          f"(series UIDs: {', '.join(ids)})")
    files = _itk(lambda: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, ids[0]),
                 f"{folder}: the DICOM series could not be listed")
    left_out = sorted(set(_dicom_like(folder)) - {os.path.abspath(f) for f in files})
    if left_out:  # GDCM skips damaged slices silently: the series would have a hole
        raise VolumeError(f"{folder}: {Path(left_out[0]).name} is damaged or not a complete DICOM slice "
                          f"({len(left_out)} such file(s)); the series would have a gap")
    return files


def _dicom_like(folder: str) -> list[str]:
    """Files that announce themselves as DICOM (the 'DICM' mark at byte 128), DICOMDIR indexes aside."""
    found = []
    for entry in os.scandir(folder):
        if entry.is_file() and entry.name.upper() != "DICOMDIR":
            with open(entry.path, "rb") as fh:
                if fh.read(132)[128:] == b"DICM":
                    found.append(os.path.abspath(entry.path))
    return found


def _check_even_slices(folder, positions: list[str | None]) -> None:
    """Refuse a series whose slices are not evenly spaced: a missing slice would silently stretch it."""
    if any(p is None for p in positions):
        return  # no positions (e.g. secondary captures): nothing to check against
    points = np.array([[float(v) for v in p.split("\\")] for p in positions])
    gaps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    typical = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - typical)))
    if typical <= 0 or abs(gaps[worst] - typical) > EVEN_SPACING * typical:
        raise VolumeError(f"{folder}: slices are not evenly spaced ({gaps[worst]:.3g} mm between slices "
                          f"{worst + 1} and {worst + 2}, {typical:.3g} mm elsewhere): the series is "
                          f"incomplete or mixes scans")


# ---- shared ----------------------------------------------------------------------------------------
def _as_3d(image, path):
    """A 3D single-channel ITK image: 2D becomes one slice, a singleton 4th axis is dropped."""
    sitk = _sitk()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(f"{path}: expected one channel, got {image.GetNumberOfComponentsPerPixel()}")
    zyx_shape(tuple(image.GetSize()), path)
    if image.GetDimension() == 2:
        return sitk.JoinSeries([image])
    if image.GetDimension() == 4:
        return sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, 0])
    return image


def _volume(image, path, header: dict) -> Volume:
    matrix = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3) * np.asarray(image.GetSpacing())
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ matrix
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin())
    spacing = spacing_of(affine)
    data = np.ascontiguousarray(_sitk().GetArrayFromImage(image))  # ITK (x, y, z) is numpy (z, y, x)
    return Volume(data, spacing, affine, {**header, "source": str(path), "spacing": spacing, "unit": "mm"})


def write_file(tmp: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write (z, y, x) labels with the geometry of ``affine`` (NIfTI convention) as compressed NRRD."""
    sitk = _sitk()
    matrix = LPS_TO_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    image = sitk.GetImageFromArray(data)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((matrix / spacing).ravel().tolist())
    image.SetOrigin((LPS_TO_RAS @ affine[:3, 3]).tolist())
    try:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    except RuntimeError as exc:  # a failed write (disk full, ...) is an OSError like NIfTI's and TIFF's
        raise OSError(f"the NRRD writer failed: {str(exc).strip().splitlines()[-1]}") from exc
