"""``limnet eval``: the simulated-click benchmark from the command line.

``add_eval_parser(subparsers)`` and ``run_eval(args)`` are what the ``limnet`` command wires in;
``main(argv)`` runs the same thing stand-alone (``python -m napari_limnet.evaluation``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..command import run_command

DEFAULT_METHODS = "limnet,limnet-no-mrf,random-walker"


def _configure(p: argparse.ArgumentParser) -> None:
    from .methods import METHODS

    p.add_argument("data", help="folder laid out as <source>/<case>_image.nii.gz + <case>_label.nii.gz")
    p.add_argument("--split", choices=("train", "val"), default=None,
                   help="only the cases listed for this split in the splits file (default: all cases)")
    p.add_argument("--splits", default=None, metavar="FILE",
                   help="splits file, {source: {train: [...], val: [...]}} (default: DATA/splits.json)")
    p.add_argument("--sources", default=None, help="comma-separated source folders (default: all)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma-separated, from: {', '.join(METHODS)} (default: {DEFAULT_METHODS})")
    p.add_argument("--max-clicks", type=int, default=20, help="clicks per object (default 20, the NoC cap)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N cases of each source only")
    p.add_argument("--min-voxels", type=int, default=50, help="skip smaller objects (default 50)")
    p.add_argument("--slice-gap", type=float, default=None, metavar="MM",
                   help="keep every k-th slice, k the slice spacing nearest MM: thin-slice data seen as a "
                        "thick-slice scan (only where the files' slice spacing is true)")
    p.add_argument("--seed", type=int, default=0, help="seed set before every object (default 0)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the network methods run (default auto)")
    p.add_argument("--weights", default=None, help="LIM-Net weight file (default: the shipped weights)")
    p.add_argument("--out", default="limnet-eval", metavar="DIR",
                   help="output folder for objects.jsonl, summary.md and dice_vs_clicks.png "
                        "(default limnet-eval)")
    p.add_argument("--first-prompt", choices=("click", "box"), default="click",
                   help="round 1: the protocol's click (default), or the object's tight box on the slice of its "
                        "largest cross-section; later rounds are clicks")
    p.add_argument("--user", choices=("oracle", "suspects"), default="oracle",
                   help="where corrections go: the slice with the most errors (oracle, default), or only the "
                        "slices the widget names as suspect (where to look next)")
    p.add_argument("--crop-margin", default=None, metavar="PX,SLICES",
                   help="each object alone on its bounding box grown by PX pixels in-plane and SLICES slices "
                        "(e.g. 16,4: the view of the unseen-source figures in docs/evaluation.md); default: "
                        "every object in the whole volume")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no printed table")


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="simulated-click benchmark of LIM-Net and baselines",
        description="Run the simulated-click protocol (docs/evaluation.md) on every labelled object of a "
                    "data folder, for each method, and write per-object JSON lines, a Markdown summary "
                    "and a Dice-versus-clicks plot.")
    _configure(p)
    return p


def _split_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _crop_margin(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        in_plane, slices = (int(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"--crop-margin takes two whole numbers PX,SLICES (e.g. 16,4), got {text!r}") from None
    if in_plane < 0 or slices < 0:
        raise ValueError(f"--crop-margin must not be negative, got {text!r}")
    return in_plane, slices


def run_eval(args: argparse.Namespace) -> int:
    from .methods import MethodContext
    from .report import plot_dice_curves, render_markdown
    from .runner import evaluate, find_cases

    methods = _split_list(args.methods)
    if not methods:
        raise ValueError("--methods is empty")
    if args.slice_gap is not None and not args.slice_gap > 0:
        raise ValueError(f"--slice-gap must be a positive number of mm, got {args.slice_gap}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    crop_margin = _crop_margin(args.crop_margin)
    cases = find_cases(args.data, split=args.split, splits_file=args.splits,
                       sources=_split_list(args.sources), limit=args.limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    context = MethodContext(args.device, args.weights)
    started = time.perf_counter()
    records = evaluate(cases, methods, out / "objects.jsonl", context=context, max_clicks=args.max_clicks,
                       min_voxels=args.min_voxels, seed=args.seed, slice_gap=args.slice_gap,
                       progress=not args.quiet, first_prompt=args.first_prompt, user=args.user,
                       crop_margin=crop_margin)
    elapsed = time.perf_counter() - started
    if not records:
        raise ValueError(f"no objects of at least {args.min_voxels} voxels in the selected cases")
    notes = [f"data: {args.data}" + (f", split {args.split}" if args.split else "")
             + (f", first {args.limit} case(s) per source" if args.limit else "")
             + (f", every slice nearest {args.slice_gap:g} mm apart" if args.slice_gap else "")
             + (f", each object on its box + {crop_margin[0]} px, {crop_margin[1]} slices" if crop_margin else ""),
             f"{len(cases)} cases, methods {', '.join(methods)}, {args.max_clicks} clicks per object, "
             f"seed {args.seed}, {elapsed:.0f} s in all", f"first prompt {args.first_prompt}, user {args.user}",
             context.describe()]
    text = render_markdown(records, notes)
    (out / "summary.md").write_text(text)
    written = [out / "objects.jsonl", out / "summary.md"]
    try:
        written.append(plot_dice_curves(records, out / "dice_vs_clicks.png"))
    except ImportError:  # matplotlib is optional: the tables are the result, the plot an extra
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
    if not args.quiet:
        print(text)
    print(f"wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="limnet eval", description="simulated-click benchmark")
    _configure(parser)
    args = parser.parse_args(argv)
    return run_command("eval", lambda: run_eval(args))
