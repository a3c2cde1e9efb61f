"""The ``limnet`` command: segment a scan from clicks, evaluate, train. Thin wrappers over the library."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def parse_click(text: str) -> tuple[tuple[float, float, float], bool]:
    """'z,y,x' or 'z,y,x,+' / 'z,y,x,-' -> ((z, y, x), positive)."""
    parts = [p.strip() for p in text.split(",")]
    positive = True
    if parts and parts[-1] in {"+", "-", "pos", "neg"}:
        positive = parts.pop() in {"+", "pos"}
    try:
        coords = tuple(float(p) for p in parts)
    except ValueError:
        coords = ()
    if len(coords) != 3:
        raise argparse.ArgumentTypeError(f"a click is z,y,x with an optional ,+ or ,- (got {text!r})")
    return coords, positive


def _add_segment_parser(sub) -> None:
    p = sub.add_parser(
        "segment", help="segment one object from clicks and save the mask",
        description="Segment one object in a 3D scan from clicks on its slices. Each --click is one round "
                    "(2D mask on the clicked slice, propagation through the volume; where rounds overlap, "
                    "each slice keeps the result propagated from the nearest clicked slice unless --no-fusion), "
                    "in the order given. The mask is written with the image's geometry (NIfTI affine kept).",
    )
    p.add_argument("image", help="input scan: .nii, .nii.gz, .tif or .tiff")
    p.add_argument("--click", action="append", type=parse_click, required=True, metavar="Z,Y,X[,+|-]",
                   help="voxel coordinates in (z, y, x) array order as napari shows them; '+' (default) "
                        "marks the object, '-' marks background. Repeat for more rounds.")
    p.add_argument("--out", required=True, help="output labels file (.nii.gz, .nii, .tif)")
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
                   help="let propagation run past half the object's width beyond the clicked slice "
                        "(for long, tube-like structures)")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def run_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .engine import Session
    from .engine.runner import REACH
    from .io import read_volume, write_labels

    if not 1 <= args.label <= 255:
        raise ValueError(f"--label must be between 1 and 255, got {args.label}")
    volume = read_volume(args.image)
    session = Session(volume.data, spacing=volume.spacing, axis=args.axis, device=args.device,
                      weights=args.weights, fusion=not args.no_fusion, reach=None if args.no_reach else REACH)
    print(f"weights: {session.weights.describe()}; device: {session.device}", file=sys.stderr)
    for point, positive in args.click:
        bar = tqdm(total=session.n_slices, unit="slice", disable=args.quiet, file=sys.stderr,
                   desc=f"click {'+' if positive else '-'}{tuple(int(round(c)) for c in point)}")
        for update in session.click_iter(point, positive):
            bar.n = update.done
            bar.refresh()
        bar.close()
        t = session.last_timing
        print(f"round {session.rounds}: 2D mask {t.first_mask_s:.3f} s, 3D result {t.total_s:.2f} s "
              f"({t.slices_propagated} slices), {int(session.mask.sum())} voxels", file=sys.stderr)
    labels = session.mask.astype("uint8") * args.label
    out = write_labels(args.out, labels, like=volume)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _add_view_parser(sub) -> None:
    p = sub.add_parser("view", help="open napari with the LIM-Net widget (and a scan, or the sample)",
                       description="Open napari with the LIM-Net dock widget. Without IMAGE, the bundled "
                                   "brain MRI sample (pyradiomics, BSD-3) is loaded.")
    p.add_argument("image", nargs="?", help="a scan to open (.nii, .nii.gz, .tif, .tiff)")


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
    sub.add_parser("info", help="show the loaded weights and the available devices")


def run_info(args: argparse.Namespace) -> int:
    import torch

    from .engine.device import available_devices
    from .model import count_parameters, load_model

    net, info = load_model()
    print(f"weights: {info.describe()}")
    print(f"parameters: {count_parameters(net):,}")
    print(f"devices: {', '.join(available_devices())}; torch {torch.__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .evaluation.cli import add_eval_parser
    from .training.cli import add_train_parser

    parser = argparse.ArgumentParser(prog="limnet", description="LIM-Net interactive 3D segmentation")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_segment_parser(sub)
    add_eval_parser(sub)
    add_train_parser(sub)
    _add_view_parser(sub)
    _add_info_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.command == "segment":
            code = run_segment(args)
        elif args.command == "info":
            code = run_info(args)
        elif args.command == "view":
            code = run_view(args)
        elif args.command == "eval":
            from .evaluation.cli import run_eval

            code = run_eval(args)
        else:
            from .training.cli import run_train

            code = run_train(args)
    except (ValueError, OSError) as exc:  # bad input: one clear line, no traceback
        print(f"limnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "segment":
        print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
