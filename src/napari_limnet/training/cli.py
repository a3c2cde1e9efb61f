"""``limnet train CONFIG``: one process, or one of many under ``torchrun`` (training/distributed.py)."""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..command import run_command
from ..model import load_model
from .config import TrainConfig, load_config, resolve
from .data import val_volumes
from .distributed import launch_here, process_group
from .pack import write_pack
from .trainer import VAL_SOURCES_EXTRA, Trainer
from .validation import val_objects, validate


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train LIM-Net from a config file (see configs/)")
    parser.add_argument("config", help="training config (.json or .yaml)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint of this run")
    parser.add_argument("--device", default=None, help="override the config's device (auto, cpu, cuda)")
    parser.add_argument("--validate", type=int, default=0, metavar="N",
                        help="do not train: validate the config's exported weights on up to N val objects")
    parser.add_argument("--pack", metavar="DIR", default=None,
                        help="do not train: write the config's data as a training pack (for a machine that "
                             "cannot read the data folder; point data_root at it)")
    parser.add_argument("--pack-mb", type=float, default=56.0, help="size limit of the pack (MB)")
    parser.add_argument("--pack-val-cases", type=int, default=6, help="val cases per source in the pack")
    parser.set_defaults(func=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    config, base = load_config(args.config)
    if args.device:
        config = config.replace(device=args.device)
    if args.validate:
        print(json.dumps(validate_weights(config, base, args.validate), indent=1))
        return 0
    if args.pack:
        listing = write_pack(resolve(base, config.data_root), resolve(base, config.cache_dir), config.sources,
                             (*config.sources, *VAL_SOURCES_EXTRA), Path(args.pack), args.pack_mb,
                             args.pack_val_cases)
        print(f"pack of {listing['mb']} MB in {args.pack}: {len(listing['train'])} train cases, "
              f"{len(listing['val'])} val cases")
        return 0
    run_dir = resolve(base, config.run_dir) / config.name
    if config.ranks > 1 and "WORLD_SIZE" not in os.environ:  # the shortcut: torchrun on this machine
        launch_here(config.ranks, ["train", args.config, *(["--no-resume"] if args.no_resume else []),
                                   *(["--device", args.device] if args.device else [])])
    else:
        with process_group(config.device) as ranks:
            Trainer(config, base, log=print if ranks.lead else lambda _: None, ranks=ranks).run(
                resume=not args.no_resume)
            if not ranks.lead:
                return 0
    print(f"training finished; log and checkpoints in {run_dir}")
    return 0


CARD_DRAW_SEED = 2  # the same val objects for every release, whatever seed trained it


def validate_weights(config: TrainConfig, base: Path, limit: int) -> dict:
    """The validation behind the model card's table: exported weights, val cases of every source."""
    net, info = load_model(resolve(base, config.export_path))
    torch.set_num_threads(config.threads)
    data_root = resolve(base, config.data_root)
    volumes = val_volumes(data_root, (*config.sources, *VAL_SOURCES_EXTRA), config.min_object_voxels)
    objects = val_objects(volumes, limit, np.random.default_rng(CARD_DRAW_SEED))
    summary = validate(net, objects)
    return {"weights": info.describe(), "objects": len(objects),
            "per_source": dict(Counter(name.split("/")[0] for name, *_ in objects)), **summary}


def main(argv=None) -> int:
    """``python -m napari_limnet.training.cli train CONFIG``: training without the ``limnet`` command's
    other dependencies (a machine with torch, numpy, scipy and scikit-image only)."""
    parser = argparse.ArgumentParser(prog="limnet")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_command("train", lambda: args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
