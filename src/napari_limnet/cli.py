"""The ``limnet`` command: segment a scan from clicks, evaluate, train. Thin wrappers over the library.

Only argparse is imported up front; torch, napari and the evaluation and training modules load when
their command runs, so ``limnet --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .command import run_command, warn

FORMATS = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, .tif, .tiff, or a DICOM series folder"


class Click(NamedTuple):
    point: tuple[float, float, float]  # (z, y, x)
    positive: bool
    mm: bool  # napari's world millimetres (--click-mm), else voxel indices (--click)

    def __str__(self) -> str:
        return ",".join(f"{c:g}" for c in self.point) + (" mm" if self.mm else "")


def parse_click(text: str, mm: bool = False) -> Click:
    """'z,y,x' or 'z,y,x,+' / 'z,y,x,-' -> Click((z, y, x), positive, mm)."""
    parts = [p.strip() for p in text.split(",")]
    positive = True
    if parts and parts[-1] in {"+", "-", "pos", "neg"}:
        positive = parts.pop() in {"+", "pos"}
    try:
        coords = tuple(float(p) for p in parts)
    except ValueError:
        coords = ()
    if len(coords) != 3 or not all(math.isfinite(c) for c in coords):
        raise argparse.ArgumentTypeError(f"a click is z,y,x with an optional ,+ or ,- (got {text!r})")
    return Click(coords, positive, mm)


def parse_click_mm(text: str) -> Click:
    return parse_click(text, mm=True)


def parse_box(text: str) -> tuple[int, ...]:
    """'z,y0,x0,y1,x1' (voxel indices) -> a tuple of five ints."""
    try:
        coords = tuple(float(p) for p in text.split(","))
    except ValueError:
        coords = ()
    if len(coords) != 5 or not all(math.isfinite(c) for c in coords):
        raise argparse.ArgumentTypeError(f"a box is z,y0,x0,y1,x1 in voxel indices (got {text!r})")
    return tuple(math.floor(c + 0.5) for c in coords)


def _attach_negative_values(argv: Sequence[str]) -> list[str]:
    """argparse reads '-1,20,20' as an option, so '--click -1,20,20' would fail with a puzzling message:
    treat it as '--click=-1,20,20', which is then checked like any click."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in ("--click", "--click-mm", "--box") and re.match(r"-[\d.]", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _add_segment_parser(sub) -> None:
    p = sub.add_parser(
        "segment", help="segment one object from clicks and save the mask",
        description="Segment one object in a 3D scan from clicks on its slices. Each click is one round "
                    "(2D mask on the clicked slice, propagation through the volume; where rounds overlap, "
                    "each slice keeps the result propagated from the nearest clicked slice unless --no-fusion), "
                    "in the order given. The mask is written with the scan's geometry (orientation, spacing "
                    "and origin), so it overlays the scan in napari, Slicer or ITK-SNAP.",
        epilog="Which coordinates? --click takes voxel indices, the numbers of image[z, y, x] in Python. "
               "napari's status bar shows something else for a scan with a voxel spacing: millimetres, "
               "index x spacing along each axis, counted from the first voxel; paste those into --click-mm. "
               "Neither is the scanner's patient (RAS/LPS) coordinate system.",
    )
    p.add_argument("image", help=f"input scan: {FORMATS}")
    p.add_argument("--click", action="append", dest="clicks", type=parse_click, default=[],
                   metavar="Z,Y,X[,+|-]",
                   help="a click in voxel indices, (z, y, x) array order counted from 0; '+' (default) "
                        "marks the object, '-' marks background. Repeat for more rounds.")
    p.add_argument("--click-mm", action="append", dest="clicks", type=parse_click_mm, metavar="Z,Y,X[,+|-]",
                   help="a click in millimetres as napari's status bar shows them for a scan opened with "
                        "this plugin (voxel index x spacing, along z, y, x). Rounds run in the order given, "
                        "--click and --click-mm mixed.")
    p.add_argument("--box", type=parse_box, metavar="Z,Y0,X0,Y1,X1",
                   help="a rectangle on slice Z (voxel indices; corners in the other two axes, in order) as the "
                        "first round: often a better start than one click; --click rounds then correct it")
    p.add_argument("--out", required=True, help="output labels file (.nii.gz, .nii, .nrrd, .tif, .tiff)")
    p.add_argument("--axis", type=int, default=0, choices=(0, 1, 2),
                   help="axis normal to the clicked slices; propagation runs along it (default 0)")
    p.add_argument("--label", type=int, default=1, help="label value written for the object (default 1)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the network runs: auto uses CUDA when present (default auto)")
    p.add_argument("--weights", default=None, help="a LIM-Net weight file (default: the shipped weights)")
    p.add_argument("--no-fusion", action="store_true",
                   help="let the newest round win on every slice it reached, instead of multi-round fusion "
                        "(each slice from the nearest clicked slice)")
    p.add_argument("--no-reach", action="store_true",
                   help="no limit on propagation: by default it goes half the object's width beyond the "
                        "clicked slice and further only while the network stays confident of the object")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run_segment)


def voxel_of(click: Click, volume) -> tuple[int, int, int]:
    """The voxel a click names, rounded as the engine rounds, or ``ValueError`` if outside the volume.
    Millimetres undo exactly the geometry the plugin's reader gives the napari layer (its ``scale`` and
    ``translate``), so the numbers napari shows for a voxel lead back to it."""
    from .ui._reader import image_kwargs

    layer = image_kwargs(volume, name="")
    scale, translate = layer["scale"], layer.get("translate", (0.0, 0.0, 0.0))
    point = [(c - t) / s for c, s, t in zip(click.point, scale, translate)] if click.mm else click.point
    index = tuple(math.floor(c + 0.5) for c in point)
    shape = volume.data.shape
    if not all(0 <= i < n for i, n in zip(index, shape)):
        if click.mm:
            extent = ", ".join(f"{a} {t:g} to {t + (n - 1) * s:g}"
                               for a, n, s, t in zip("zyx", shape, scale, translate))
            raise ValueError(f"click {click} is outside the volume ({extent} mm)")
        extent = ", ".join(f"{a} 0 to {n - 1}" for a, n in zip("zyx", shape))
        raise ValueError(f"click {click} is outside the volume (voxel indices {extent})")
    return index


def run_segment(args: argparse.Namespace) -> int:
    from .intensity import is_hounsfield
    from .io import check_writable, read_volume, write_labels
    from .prompts import check_box

    started = time.perf_counter()
    if not 1 <= args.label <= 255:
        raise ValueError(f"--label must be between 1 and 255, got {args.label}")
    check_writable(args.out)
    if not args.clicks and args.box is None:
        raise ValueError("give a --box, or at least one --click (voxel indices) or --click-mm (millimetres)")
    volume = read_volume(args.image)
    points = [(voxel_of(click, volume), click.positive) for click in args.clicks]  # before the network loads
    box = check_box(args.box, volume.data.shape, args.axis) if args.box is not None else None
    mask = _segment(volume, box, points, args)
    _warn_about(mask, volume, points if box is None else [(box, True), *points], args.out)
    if box is None and is_hounsfield(volume.data):  # CT val structures, v7: Dice 0.47 after a box, 0.37 after a click
        print("note: on a CT, a --box around a small structure gives a better start than a click",
              file=sys.stderr)
    out = Path(args.out)
    replaced = out.exists()
    write_labels(out, mask.astype("uint8") * args.label, like=volume)
    print(f"wrote {out}" + (" (replacing the file that was there)" if replaced else ""), file=sys.stderr)
    print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


def _segment(volume, box, points, args):
    from tqdm import tqdm

    from .engine import Session
    from .engine.runner import REACH

    session = Session(volume.data, spacing=volume.spacing, axis=args.axis, device=args.device,
                      weights=args.weights, fusion=not args.no_fusion, reach=math.inf if args.no_reach else REACH)
    print(f"weights: {session.weights.describe()}; device: {session.device}", file=sys.stderr)
    rounds = [(f"box {box}", session.box_iter, (box,))] if box is not None else []
    rounds += [(f"click {'+' if p else '-'}{point}", session.click_iter, (point, p)) for point, p in points]
    for desc, run_round, prompt in rounds:
        bar = tqdm(total=session.n_slices, unit="slice", disable=args.quiet, file=sys.stderr, desc=desc)
        for update in run_round(*prompt):
            bar.n = update.done
            bar.refresh()
        bar.close()
        t = session.last_timing
        print(f"round {session.rounds}: 2D mask {t.first_mask_s:.3f} s, 3D result {t.total_s:.2f} s "
              f"({t.slices_propagated} slices), {int(session.mask.sum())} voxels", file=sys.stderr)
        if session.last_warning:
            warn("segment", f"round {session.rounds}: {session.last_warning}")
    return session.mask


def _warn_about(mask, volume, points, out) -> None:
    """Say when the written mask is not what the clicks suggest: the user would otherwise find out later."""
    import numpy as np

    lo, hi = np.nanmin(volume.data), np.nanmax(volume.data)
    if lo == hi:
        warn("segment", f"the scan is constant (every voxel is {lo:g}): there is nothing to segment, so "
                        f"the {int(mask.sum())}-voxel mask in {out} is the network's guess around the click")
    elif not mask.any():
        why = ("only negative clicks were given, and they mark background" if not any(p for _, p in points)
               else "the network found no object at the clicks")
        warn("segment", f"the mask is empty: {why}; {out} holds no labelled voxel (add a positive click "
                        f"inside the object)")


def _add_view_parser(sub) -> None:
    p = sub.add_parser("view", help="open napari with the LIM-Net widget (and a scan, or the sample)",
                       description="Open napari with the LIM-Net dock widget. Without IMAGE, the bundled "
                                   "brain MRI sample (pyradiomics, BSD-3) is loaded.")
    p.add_argument("image", nargs="?", help=f"a scan to open: {FORMATS}")
    p.set_defaults(func=run_view)


def run_view(args: argparse.Namespace) -> int:
    import napari

    viewer = napari.Viewer(title="napari-limnet")
    if args.image:
        viewer.open(args.image, plugin="napari-limnet")
    else:
        viewer.open_sample("napari-limnet", "brain")
    viewer.window.add_plugin_dock_widget("napari-limnet", "LIM-Net interactive segmentation")
    napari.run()
    return 0


def _add_info_parser(sub) -> None:
    sub.add_parser("info", help="show the loaded weights and the available devices").set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    import torch

    from .engine.device import available_devices
    from .model import count_parameters, load_model

    net, info = load_model()
    print(f"weights: {info.describe()}")
    print(f"parameters: {count_parameters(net):,}")
    print(f"devices: {', '.join(available_devices())}; torch {torch.__version__}")
    return 0


# Commands whose modules import torch: their full parsers are built only when they are the command run.
# name: (module, function adding the parser, function running the command, line for `limnet --help`)
HEAVY_COMMANDS = {
    "eval": ("napari_limnet.evaluation.cli", "add_eval_parser", "run_eval",
             "simulated-click benchmark of LIM-Net and baselines"),
    "train": ("napari_limnet.training.cli", "add_train_parser", "run_train",
              "train LIM-Net from a config file (see configs/)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``limnet`` parser; ``eval`` and ``train`` get their full options only when ``command`` names
    them (their modules take seconds to import), a one-line entry for ``limnet --help`` otherwise."""
    parser = argparse.ArgumentParser(prog="limnet", description="LIM-Net interactive 3D segmentation")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_segment_parser(sub)
    for name, (module, add, run, summary) in HEAVY_COMMANDS.items():
        if name == command:
            loaded = importlib.import_module(module)
            getattr(loaded, add)(sub).set_defaults(func=getattr(loaded, run))
        else:
            sub.add_parser(name, help=summary)
    _add_view_parser(sub)
    _add_info_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = _attach_negative_values(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return run_command(args.command, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
