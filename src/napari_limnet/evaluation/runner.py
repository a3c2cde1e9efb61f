"""Datasets and the evaluation loop: every object of every case, through every method, click by click,
written as one JSON line per (object, method) as soon as it is done, so a long run keeps its results."""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_limnet.clicks import simulate
from napari_limnet.io import VolumeError, probe_volume, read_volume

from .methods import METHODS, NETWORK_METHODS, MethodContext
from .protocol import object_metrics

IMAGE_SUFFIX = "_image.nii.gz"
LABEL_SUFFIX = "_label.nii.gz"


@dataclass(frozen=True)
class Case:
    source: str
    name: str
    image: Path
    label: Path


def find_cases(root, *, split: str | None = None, splits_file=None, sources: Sequence[str] | None = None,
               limit: int | None = None) -> list[Case]:
    """Cases under ``root/<source>/<case>_image.nii.gz`` (+ ``_label.nii.gz``), sorted by source and name.

    With ``split`` only the cases that ``splits_file`` (default ``root/splits.json``, format
    ``{source: {"train": [...], "val": [...]}}``) lists for it are kept; a source missing from the file
    is an error rather than silently dropped. ``limit`` keeps the first N cases of each source.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*" + IMAGE_SUFFIX)))
    if sources:
        unknown = set(sources) - {p.name for p in folders}
        if unknown:
            raise ValueError(f"no source folder with images for: {', '.join(sorted(unknown))} in {root}")
        folders = [p for p in folders if p.name in set(sources)]
    if not folders:
        raise ValueError(f"no <source>/<case>{IMAGE_SUFFIX} files under {root}")
    splits = _read_splits(Path(splits_file) if splits_file else root / "splits.json") if split else None
    cases = []
    for folder in folders:
        names = sorted(p.name[: -len(IMAGE_SUFFIX)] for p in folder.glob("*" + IMAGE_SUFFIX))
        if splits is not None:
            if split not in splits.get(folder.name, {}):
                raise ValueError(f"the splits file has no {split!r} list for source {folder.name!r}")
            listed = set(splits[folder.name][split])
            missing = listed - set(names)
            if missing:
                raise ValueError(f"{folder.name}: split cases without images: {', '.join(sorted(missing))}")
            names = [n for n in names if n in listed]
        for name in names[:limit]:
            label = folder / (name + LABEL_SUFFIX)
            if not label.exists():
                raise ValueError(f"{label} is missing (every image needs its label)")
            cases.append(Case(folder.name, name, folder / (name + IMAGE_SUFFIX), label))
    return cases


def _read_splits(path: Path) -> dict:
    if not path.exists():
        raise ValueError(f"splits file not found: {path}")
    return json.loads(path.read_text())


def iter_objects(labels: np.ndarray, min_voxels: int = 50) -> Iterator[tuple[int, np.ndarray]]:
    """(label value, binary mask) for each non-zero value with at least ``min_voxels`` voxels."""
    values, counts = np.unique(labels[labels != 0], return_counts=True)
    for value, count in zip(values, counts, strict=True):
        if count >= min_voxels:
            yield int(value), labels == value


def thin_slices(image: np.ndarray, labels: np.ndarray, spacing, gap: float | None):
    """Every k-th slice, k = the slice spacing nearest to ``gap`` mm (at least 1): a thin-slice scan
    seen as a thick-slice one (most clinical CT and MRI), where an object changes shape a lot from
    one slice to the next. Only for data whose stored slice spacing is true."""
    if not gap:
        return image, labels, tuple(spacing)
    k = max(1, int(round(gap / spacing[0])))
    return image[::k], labels[::k], (float(spacing[0]) * k, *spacing[1:])


def object_crop(ref: np.ndarray, margin: tuple[int, int]) -> tuple[slice, slice, slice]:
    """The object's bounding box grown by ``margin`` (in-plane pixels, slices) and clipped to the
    volume: the view in which the unseen-source figures of issue 23 were measured (a user who crops
    around the structure first, or a scan that holds little else). There a propagation past the
    object's end can leak over ``margin[1]`` slices at most, unlike in a whole scan."""
    in_plane, slices = margin
    (box,) = ndimage.find_objects(ref.astype(np.uint8))
    return tuple(slice(max(b.start - grow, 0), min(b.stop + grow, size))
                 for b, grow, size in zip(box, (slices, in_plane, in_plane), ref.shape))


def seed_everything(seed: int) -> None:
    """Same seed before every object, so one object's result does not depend on which ran before it."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:  # only the network methods load torch; do not import it for the others
        sys.modules["torch"].manual_seed(seed)


def check_cases(cases: Sequence[Case]) -> None:
    """Read every image's and label's header before any clicking, so that a corrupt file or a label
    of another shape stops a run of hours in seconds, with every bad case named at once."""
    problems = []
    for case in cases:
        shapes = []
        for path in (case.image, case.label):
            try:
                shapes.append(probe_volume(path))
            except VolumeError as exc:
                problems.append(str(exc))
        if len(shapes) == 2 and shapes[0] != shapes[1]:
            problems.append(f"{case.label}: shape {shapes[1]} differs from the image's {shapes[0]}")
    if problems:
        raise ValueError(f"{len(problems)} problem(s) in the cases to evaluate, nothing was run:\n  "
                         + "\n  ".join(problems))


def evaluate(cases: Sequence[Case], methods: Sequence[str], jsonl_path, *,
             context: MethodContext | None = None, max_clicks: int = 20, min_voxels: int = 50, seed: int = 0,
             slice_gap: float | None = None, progress: bool = True, first_prompt: str = "click",
             user: str = "oracle", crop_margin: tuple[int, int] | None = None) -> list[dict]:
    """Evaluate ``methods`` on every object of ``cases`` (seen through ``thin_slices`` with
    ``slice_gap``); write each record to ``jsonl_path`` (replaced) as soon as it is complete, and
    return all records. ``first_prompt`` and ``user`` choose the simulated user (``clicks.simulate``);
    a record's method name carries them (``limnet/box``, ``limnet/suspects``) so reports keep them apart.
    With ``crop_margin`` each object is seen alone, on its ``object_crop`` (method name ``.../crop``),
    in a session of its own."""
    from tqdm import tqdm

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be at least 1, got {max_clicks}")
    if (first_prompt, user) != ("click", "oracle"):
        plain = [m for m in methods if m not in NETWORK_METHODS]
        if plain:
            raise ValueError(f"{', '.join(plain)} take(s) clicks only: --first-prompt box and --user suspects "
                             f"need a LIM-Net session ({', '.join(sorted(NETWORK_METHODS))})")
    suffix = ("/box" if first_prompt == "box" else "") + ("/suspects" if user == "suspects" else "")
    suffix += "/crop" if crop_margin is not None else ""
    check_cases(cases)
    context = context or MethodContext()
    records = []
    jsonl_path = Path(jsonl_path)
    with open(jsonl_path, "w") as out, tqdm(cases, unit="case", disable=not progress, file=sys.stderr) as bar:
        for case in bar:
            image = read_volume(case.image)
            labels = np.asarray(read_volume(case.label).data)
            data, labels, spacing = thin_slices(image.data, labels, image.spacing, slice_gap)
            objects = list(iter_objects(labels, min_voxels))
            if not objects:
                continue
            for method in methods:
                session = None if crop_margin else METHODS[method](data, spacing, context)
                for value, ref in objects:
                    bar.set_postfix_str(f"{case.source}/{case.name} label {value} {method}")
                    seed_everything(seed)
                    if crop_margin:
                        view = object_crop(ref, crop_margin)
                        ref = ref[view]
                        session = METHODS[method](data[view], spacing, context)
                    session.reset()
                    record = {"source": case.source, "case": case.name, "label": value,
                              "voxels": int(ref.sum()), "method": method + suffix,
                              **simulate(session, ref, spacing, max_clicks, first_prompt=first_prompt,
                                         user=user)}
                    record.update(object_metrics(record["dice"]))
                    out.write(json.dumps(record) + "\n")
                    out.flush()
                    records.append(record)
    return records
