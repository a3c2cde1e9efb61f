"""A training pack: the cache's uint8 volumes (train and val cases) in one folder of bounded size,
for a machine that can receive a few tens of MB but cannot read the data folder (a rented GPU). A
config whose ``data_root`` is a pack trains from it as it would from the data folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .data import LabelledVolume, build_cache, cache_case, load_cached, split_cases


def write_pack(data_root: Path, cache_dir: Path, sources, val_sources, out: Path, budget_mb: float,
               val_cases: int) -> dict:
    """Copy the first ``val_cases`` val cases of every source in ``val_sources``, then train cases
    in split order, always from the source with the fewest bytes packed so far (so small-file sources
    are not starved by large-file ones), until the next case of every source would break ``budget_mb``."""
    budget = budget_mb * 1e6
    val = build_cache(data_root, cache_dir, val_sources, "val", max_cases=val_cases)
    queues = {s: split_cases(data_root, s, "train") for s in sources}
    packed = dict.fromkeys(sources, 0)
    train, used = [], sum(p.stat().st_size for p in val)
    while any(queues.values()):
        source = min((s for s in sources if queues[s]), key=packed.__getitem__)
        path = cache_case(data_root, cache_dir, "train", source, queues[source].pop(0))
        size = path.stat().st_size
        if used + size > budget:
            queues[source] = []  # cases are taken in split order: this source is full
            continue
        train.append(path)
        packed[source] += size
        used += size
    if out.exists():  # an older pack is replaced; anything else is the user's and stays
        if not (out / "pack.json").exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} is not empty and holds no training pack: choose a new folder")
        shutil.rmtree(out)
    for path in (*val, *train):
        target = out / path.relative_to(cache_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    listing = {"sources": list(sources), "val_sources": list(val_sources), "mb": round(used / 1e6, 1),
               "train": [str(p.relative_to(cache_dir)) for p in train],
               "val": [str(p.relative_to(cache_dir)) for p in val]}
    (out / "pack.json").write_text(json.dumps(listing, indent=1))
    return listing


def read_pack(root: Path, sources, min_voxels: int) -> tuple[list[LabelledVolume], list[LabelledVolume]]:
    """(train volumes of ``sources``, every val volume) of a pack."""
    listing = json.loads((root / "pack.json").read_text())
    train = [root / p for p in listing["train"] if Path(p).parts[1] in sources]
    return load_cached(train, min_voxels), load_cached([root / p for p in listing["val"]], min_voxels)
