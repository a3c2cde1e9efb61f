"""``limnet train CONFIG``: the lead wires ``add_train_parser`` into the ``limnet`` command."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..model import load_model
from .config import TrainConfig, load_config, resolve
from .data import val_volumes
from .rollout import val_objects, validate
from .trainer import VAL_SOURCES_EXTRA, Trainer


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train LIM-Net from a config file (see configs/)")
    parser.add_argument("config", help="training config (.json or .yaml)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint of this run")
    parser.add_argument("--device", default=None, help="override the config's device (auto, cpu, cuda)")
    parser.add_argument("--validate", type=int, default=0, metavar="N",
                        help="do not train: validate the config's exported weights on up to N val objects")
    parser.set_defaults(func=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    config, base = load_config(args.config)
    if args.device:
        config = type(config).from_dict({**config.to_dict(), "device": args.device,
                                         "stages": [vars(s) for s in config.stages]})
    if args.validate:
        print(json.dumps(validate_weights(config, base, args.validate), indent=1))
        return 0
    run_dir = Trainer(config, base).run(resume=not args.no_resume)
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
    """Stand-alone entry (``python -m napari_limnet.training.cli train CONFIG``) for use before the
    ``limnet`` command wires the parser in."""
    parser = argparse.ArgumentParser(prog="limnet")
    add_train_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
