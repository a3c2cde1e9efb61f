"""Reading scans and writing label volumes: NIfTI (nibabel), TIFF stacks (tifffile), and NRRD, MetaImage
and DICOM series folders (SimpleITK, in ``clinical``). No napari, no Qt.

Everything in the package sees volumes in (z, y, x) order with the voxel spacing in the same order.
The geometry needed to put a mask back onto its scan (the NIfTI affine, qform/sform, units) travels
in ``Volume.header`` so that a label volume written with ``like=`` overlays the source in any tool.
Writes are atomic: a temporary file in the target folder is renamed over the target only once it is
complete, so a crash never leaves a half-written label file where a good one was.
"""

from __future__ import annotations

import os
import stat
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")
TIFF_SUFFIXES = (".tif", ".tiff")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")  # read through SimpleITK (see clinical.py)
SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES + ITK_SUFFIXES
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".tif", ".tiff")  # single-file formats, so writes stay atomic


class VolumeError(ValueError):
    """The file is not a readable 3D image (wrong format, corrupt, truncated, unsupported layout)."""


@dataclass(frozen=True)
class Volume:
    """A 3D scan in (z, y, x) order.

    ``affine`` follows the NIfTI convention: it maps the file's voxel index (x, y, z, 1) -- that is
    ``data[z, y, x]`` -- to world coordinates (millimetres, RAS+ for NIfTI, NRRD, MetaImage and DICOM,
    whose LPS geometry is converted). TIFF stacks get the diagonal affine of their spacing. ``header``
    holds plain values only (format, unit, qform/sform and their codes, source path) so it can live in
    a napari layer's metadata.
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    header: dict = field(default_factory=dict)


def suffix_of(path: str | os.PathLike) -> str:
    """The format suffix, lower case, with ``.nii.gz`` kept whole; '' if not one we handle."""
    name = Path(path).name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def probe_volume(path: str | os.PathLike) -> tuple[int, ...]:
    """Check cheaply (header only) that ``path`` looks like a 3D image we can read; return its (z, y, x)
    shape. Raises ``VolumeError`` saying why not. Used to decline files before loading any voxels."""
    if Path(path).is_dir():
        from .clinical import probe_series

        return probe_series(path)
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        img = _nifti_load(path)
        return zyx_shape(tuple(img.shape), path)
    if suffix in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return _tiff_layout(series.shape, series.axes, path)[1]
        except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
            raise VolumeError(f"{path}: not a readable TIFF ({exc})") from exc
    if suffix in ITK_SUFFIXES:
        from .clinical import probe_file

        return probe_file(path)
    raise _unsupported(path)


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a scan as a (z, y, x) ``Volume``: a NIfTI, TIFF, NRRD or MetaImage file, or a folder holding
    one DICOM series. The one reader for every caller (napari, the CLI, evaluation, training).

    2D images become one-slice volumes; singleton 4th dimensions are dropped. Multi-channel or
    time series data are refused (``VolumeError``), as are corrupt or truncated files and incomplete
    DICOM series.
    """
    if not os.path.exists(path):
        raise VolumeError(f"{path}: no such file or folder")
    if Path(path).is_dir():
        from .clinical import read_series

        return read_series(path)
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path)
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path)
    if suffix in ITK_SUFFIXES:
        from .clinical import read_file

        return read_file(path)
    raise _unsupported(path)


def _unsupported(path) -> VolumeError:
    return VolumeError(f"{path}: unsupported file type (expected a DICOM series folder or one of "
                       f"{', '.join(SUFFIXES)})")


def write_labels(path: str | os.PathLike, labels: np.ndarray, *, like: Volume | Mapping | None = None,
                 affine: np.ndarray | None = None, spacing=None) -> Path:
    """Write a (z, y, x) label volume atomically as NIfTI, NRRD or TIFF (chosen by the file suffix).

    Geometry, first match wins: ``affine`` (NIfTI convention, see ``Volume``); the affine and header of
    ``like`` (a ``Volume`` or a mapping with ``affine``/``header`` keys, e.g. napari layer metadata);
    ``spacing`` (z, y, x) as a diagonal affine; identity. Values are stored in the smallest unsigned
    integer type that holds them. Returns the written path.
    """
    path = Path(path)
    suffix = check_writable(path)
    data = _label_array(labels)
    header = dict(_get(like, "header") or {})
    if affine is None:
        affine = _get(like, "affine")
    if affine is None and spacing is None and header.get("spacing") is not None:
        spacing = header["spacing"]
    if affine is None:
        sz, sy, sx = (float(s) for s in (spacing if spacing is not None else (1.0, 1.0, 1.0)))
        affine = np.diag([sx, sy, sz, 1.0])
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    if suffix in NIFTI_SUFFIXES:
        _atomic_write(path, suffix, lambda tmp: _write_nifti(tmp, data, affine, header))
    elif suffix in TIFF_SUFFIXES:
        _atomic_write(path, suffix, lambda tmp: _write_tiff(tmp, data, spacing_of(affine), header))
    else:
        from .clinical import write_file

        _atomic_write(path, suffix, lambda tmp: write_file(tmp, data, affine))
    return path


def check_writable(path: str | os.PathLike) -> str:
    """The suffix of a label file ``write_labels`` can write, or ``ValueError`` naming the ones it can.
    Cheap: callers check an output name before any work."""
    suffix = suffix_of(path)
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(f"{path}: labels cannot be written in this file format; "
                         f"use one of {', '.join(WRITE_SUFFIXES)}")
    return suffix


# ---- NIfTI ---------------------------------------------------------------------------------------
def _nifti_load(path):
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad headers; all mean "not readable"
        raise VolumeError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise VolumeError(f"{path}: not a NIfTI image ({type(img).__name__})")
    return img


def zyx_shape(shape: tuple[int, ...], path) -> tuple[int, ...]:
    """(x, y[, z, 1...]) NIfTI shape -> (z, y, x); refuses real 4D/5D data."""
    extra = shape[3:]
    if len(shape) < 2 or any(n != 1 for n in extra):
        raise VolumeError(f"{path}: expected a 2D or 3D image, got shape {shape}")
    x, y = shape[:2]
    z = shape[2] if len(shape) > 2 else 1
    if min(x, y, z) == 0:
        raise VolumeError(f"{path}: image is empty (shape {shape})")
    return (z, y, x)


def _read_nifti(path) -> Volume:
    img = _nifti_load(path)
    shape = zyx_shape(tuple(img.shape), path)
    try:
        raw = np.asanyarray(img.dataobj)  # applies scl_slope/scl_inter when the header sets them
    except Exception as exc:  # zlib/EOF/OSError on truncated or damaged files
        raise VolumeError(f"{path}: voxel data are truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    data = np.ascontiguousarray(raw.reshape(shape[::-1]).transpose(2, 1, 0))
    affine = np.asarray(img.affine, dtype=float)
    hdr = img.header
    qform, qcode = hdr.get_qform(coded=True)
    sform, scode = hdr.get_sform(coded=True)
    space_unit, _ = hdr.get_xyzt_units()
    spacing = spacing_of(affine)
    header = {
        "format": "nifti",
        "source": str(path),
        "spacing": spacing,
        "unit": space_unit if space_unit != "unknown" else "mm",
        "qform": None if qform is None else qform.tolist(),
        "qform_code": int(qcode),
        "sform": None if sform is None else sform.tolist(),
        "sform_code": int(scode),
    }
    return Volume(data, spacing, affine, header)


def _write_nifti(tmp: Path, data: np.ndarray, affine: np.ndarray, header: Mapping) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data.transpose(2, 1, 0), affine)
    if header.get("format") == "nifti":
        # keep the source's geometry exactly: both transforms with their codes, as the scanner wrote them
        for kind in ("qform", "sform"):
            matrix, code = header.get(kind), int(header.get(f"{kind}_code", 0))
            setter = img.set_qform if kind == "qform" else img.set_sform
            setter(None if matrix is None else np.asarray(matrix), code=code)
    else:
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz=_nifti_unit(header.get("unit")))
    img.header["descrip"] = b"napari-limnet labels"
    nib.save(img, str(tmp))


def _nifti_unit(unit) -> str:
    return {"mm": "mm", "µm": "micron", "um": "micron", "micron": "micron", "m": "meter",
            "meter": "meter"}.get(str(unit), "mm")


# ---- TIFF ----------------------------------------------------------------------------------------
def _tiff_layout(shape: tuple[int, ...], axes: str, path) -> tuple[list[int], tuple[int, ...]]:
    """Which axes to squeeze, and the (z, y, x) shape. One Y and X axis, at most one stacking axis."""
    squeeze = [i for i, (n, a) in enumerate(zip(shape, axes)) if n == 1 and a not in "YX"]
    kept = [(n, a) for i, (n, a) in enumerate(zip(shape, axes)) if i not in squeeze]
    names = "".join(a for _, a in kept)
    if names.endswith("YX") and len(kept) in (2, 3) and not (len(kept) == 3 and names[0] in "CS"):
        dims = tuple(n for n, _ in kept)
        return squeeze, dims if len(dims) == 3 else (1, *dims)
    raise VolumeError(f"{path}: expected a 2D image or a 3D stack of one channel, "
                      f"got axes {axes!r} with shape {tuple(shape)}")


def _read_tiff(path) -> Volume:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            squeeze, shape = _tiff_layout(series.shape, series.axes, path)
            data = series.asarray()
            spacing, unit = _tiff_spacing(tif)
    except VolumeError:
        raise
    except Exception as exc:  # tifffile/zlib/imagecodecs errors on damaged files
        raise VolumeError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    data = np.ascontiguousarray(data.reshape(shape))
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    header = {"format": "tiff", "source": str(path), "spacing": spacing, "unit": unit}
    return Volume(data, spacing, affine, header)


def _tiff_spacing(tif) -> tuple[tuple[float, float, float], str]:
    """(z, y, x) spacing and unit from OME or ImageJ metadata; 1.0 and 'pixel' when absent."""
    if tif.is_ome and tif.ome_metadata:
        pixels = next((el for el in ET.fromstring(tif.ome_metadata).iter() if el.tag.endswith("Pixels")), None)
        if pixels is not None:
            sizes = [pixels.get(f"PhysicalSize{a}") for a in "ZYX"]
            if any(s is not None for s in sizes):
                unit = pixels.get("PhysicalSizeXUnit", "µm")
                return tuple(_positive(s) for s in sizes), unit
    if tif.is_imagej and tif.imagej_metadata is not None:
        meta = tif.imagej_metadata
        page = tif.pages[0]
        yx = [_resolution_to_spacing(page.tags.get(t)) for t in ("YResolution", "XResolution")]
        return (_positive(meta.get("spacing")), *yx), str(meta.get("unit", "pixel"))
    return (1.0, 1.0, 1.0), "pixel"


def _resolution_to_spacing(tag) -> float:
    """A TIFF resolution tag holds pixels per unit as a fraction; spacing is its inverse."""
    if tag is None:
        return 1.0
    num, den = tag.value
    return _positive(den / num) if num else 1.0


def _positive(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 1.0
    return v if np.isfinite(v) and v > 0 else 1.0


def _write_tiff(tmp: Path, data: np.ndarray, spacing, header: Mapping) -> None:
    import tifffile

    sz, sy, sx = spacing
    unit = str(header.get("unit", "mm"))
    if data.dtype.itemsize <= 2:  # ImageJ hyperstacks hold 8/16-bit labels and open in Fiji directly
        tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / sx, 1.0 / sy),
                         metadata={"axes": "ZYX", "spacing": sz, "unit": unit}, compression="zlib")
    else:
        tifffile.imwrite(tmp, data, ome=True, compression="zlib", metadata={
            "axes": "ZYX", "PhysicalSizeX": sx, "PhysicalSizeY": sy, "PhysicalSizeZ": sz,
            "PhysicalSizeXUnit": unit, "PhysicalSizeYUnit": unit, "PhysicalSizeZUnit": unit})


# ---- shared ----------------------------------------------------------------------------------------
def _get(like, key):
    if like is None:
        return None
    if isinstance(like, Mapping):
        return like.get(key)
    return getattr(like, key, None)


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """(z, y, x) voxel size: lengths of the affine's columns (x, y, z), reversed."""
    sx, sy, sz = (_positive(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
    return (sz, sy, sx)


def _label_array(labels) -> np.ndarray:
    data = np.asarray(labels)
    if data.ndim != 3:
        raise ValueError(f"labels must be a 3D (z, y, x) array, got shape {data.shape}")
    if data.dtype == bool:
        return data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {data.dtype}")
    lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if lo < 0:
        raise ValueError(f"labels must be non-negative, found {lo}")
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if hi <= np.iinfo(t).max)
    return data.astype(dtype, copy=False)


def _atomic_write(path: Path, suffix: str, write: Callable[[Path], None]) -> None:
    """Write through a temporary sibling file, flush it to disk, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600: keep the replaced file's mode, or the usual 0644 for a new file
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
