"""Real training volumes: a one-off cache (uint8 image + uint8 labels per case, zyx order) so that
epochs never touch NIfTI files, and the sampling of one labelled object from a set of volumes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..intensity import to_uint8
from ..io import read_volume

# The ACDC files store 1 mm everywhere, but their slices are 5-10 mm apart: never reslice them.
SLICE_SPACING_OVERRIDE = {"acdc_cine_mri": 7.0}


@dataclass
class LabelledVolume:
    """A training or validation case: a scan in zyx order with its label map; ``objects`` lists the label
    values to train on. (``io.Volume`` is a scan as read from a file, with the geometry to write masks
    back; training needs the labels instead, and never writes.)"""

    name: str
    image: np.ndarray  # uint8 (real cases) or float32 in [0, 1] (synthetic)
    labels: np.ndarray  # uint8
    spacing: tuple[float, float, float]
    objects: tuple[int, ...]

    @cached_property
    def touching(self) -> tuple[tuple[int, int], ...]:
        """Pairs (a, b), a < b, of object labels that share a face somewhere in the volume (computed
        once per volume: the sampler merges such pairs into one object)."""
        pairs = set()
        for axis in range(self.labels.ndim):
            a = np.moveaxis(self.labels, axis, 0)
            lo, hi = a[:-1].ravel(), a[1:].ravel()
            differ = (lo != hi) & (lo > 0) & (hi > 0)
            pairs.update(zip(np.minimum(lo, hi)[differ].tolist(), np.maximum(lo, hi)[differ].tolist()))
        return tuple(sorted(p for p in pairs if p[0] in self.objects and p[1] in self.objects))

    def reslice_axes(self) -> tuple[int, ...]:
        """Axes along which slices look like in-plane slices (spacing within a factor 1.5)."""
        sp = np.asarray(self.spacing)
        return tuple(a for a in range(3) if max(np.delete(sp, a)) <= 1.5 * min(np.delete(sp, a)))



def read_case(data_root: Path, source: str, case: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """``<source>/<case>_image.nii.gz`` and its ``_label.nii.gz`` -> zyx float32 image, zyx uint8 labels,
    zyx spacing (read as every scan is: ``io.read_volume``)."""
    image = read_volume(data_root / source / f"{case}_image.nii.gz")
    labels = read_volume(data_root / source / f"{case}_label.nii.gz")
    return np.asarray(image.data, dtype=np.float32), np.asarray(labels.data).astype(np.uint8), image.spacing


def objects_of(labels: np.ndarray, min_voxels: int) -> tuple[int, ...]:
    counts = np.bincount(labels.ravel())
    return tuple(int(v) for v in np.flatnonzero(counts) if v > 0 and counts[v] >= min_voxels)


def split_cases(data_root: Path, source: str, split: str) -> list[str]:
    return json.loads((data_root / "splits.json").read_text()).get(source, {}).get(split, [])


def cache_case(data_root: Path, cache_dir: Path, split: str, source: str, case: str) -> Path:
    """``<cache>/<split>/<source>/<case>.npz`` (written once: later calls find it)."""
    out = cache_dir / split / source / f"{case}.npz"
    if not out.exists():
        image, labels, spacing = read_case(data_root, source, case)
        if split == "train" and source in SLICE_SPACING_OVERRIDE:  # val keeps the file's, as in use
            spacing = (SLICE_SPACING_OVERRIDE[source], *spacing[1:])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, image=to_uint8(image), labels=labels, spacing=np.array(spacing))
        tmp.replace(out)
    return out


def build_cache(data_root: Path, cache_dir: Path, sources, split: str = "train",
                max_cases: int = 0) -> list[Path]:
    """Cache every case of the split (the first ``max_cases`` of each source, if set)."""
    paths = []
    for source in sources:
        cases = split_cases(data_root, source, split)
        for case in cases[:max_cases] if max_cases else cases:
            paths.append(cache_case(data_root, cache_dir, split, source, case))
    return paths


def load_cached(paths, min_voxels: int) -> list[LabelledVolume]:
    volumes = []
    for path in paths:
        with np.load(path) as z:
            labels = z["labels"]
            objs = objects_of(labels, min_voxels)
            if objs:
                volumes.append(LabelledVolume(f"{path.parent.name}/{path.stem}", z["image"], labels,
                                      tuple(float(v) for v in z["spacing"]), objs))
    return volumes


def val_volumes(data_root: Path, sources, min_voxels: int, max_cases: int = 0) -> list[LabelledVolume]:
    """Validation cases straight from the NIfTI files (float images, true value ranges)."""
    out = []
    for source in sources:
        cases = split_cases(data_root, source, "val")
        for case in cases[:max_cases] if max_cases else cases:
            image, labels, spacing = read_case(data_root, source, case)
            objs = objects_of(labels, min_voxels)
            if objs:
                out.append(LabelledVolume(f"{source}/{case}", image, labels, spacing, objs))
    return out
