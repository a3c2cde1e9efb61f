"""Training on a machine that cannot read the data folder (a pack) and in several processes under
torchrun's launcher: gradients are averaged exactly, the processes agree on the clock and end with the
same weights, and a two-process ``limnet train`` trains, validates and exports like a single process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ranks_worker import collectives, launch, train
from test_training import ROOT, tiny_config

from napari_limnet.model import LimNet, LimNetConfig, load_model
from napari_limnet.training import Trainer
from napari_limnet.training.cli import main as train_main
from napari_limnet.training.pack import write_pack
from napari_limnet.training.trainer import VAL_SOURCES_EXTRA

SOURCES = ("msd_hippocampus", "la2018_lgemri", "acdc_cine_mri")


def write_config(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "configs" / "tiny.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(tiny_config(tmp_path, **overrides).to_dict()))
    return path


def test_data_parallel_step_averages_gradients_and_the_collectives_agree():
    results = launch(collectives)
    assert sorted(results) == [0, 1]
    for rank, res in results.items():
        first_w, first_b, second_w, second_b, third_w, third_b = res["grads"]
        assert torch.equal(first_w, torch.full((2, 3), 2.0)) and torch.equal(first_b, torch.full((2,), 2.0))
        assert torch.equal(second_w, torch.full((1, 2), 2.0)) and torch.equal(second_b, torch.full((1,), 2.0))
        assert third_w is None and third_b is None  # unused everywhere: AdamW must skip it, as alone
        assert res["clock"] == 15.0
        assert torch.equal(res["weights"]["0.stat"], torch.full((2,), 15.0))
        assert res["share"] == ([0, 2, 4] if rank == 0 else [1, 3])
        assert res["gathered"] == [0, 1]
        assert res["from_lead"] == "rank 0"
    for key, value in results[0]["weights"].items():  # the lead's starting weights, everywhere
        assert torch.equal(value, results[1]["weights"][key]), key


def test_two_processes_end_with_the_same_weights_and_export_them(tmp_path):
    export = tmp_path / "weights" / "limnet.pt"
    weights = launch(train, str(write_config(tmp_path, export_path=str(export))))
    assert sorted(weights) == [0, 1]
    torch.manual_seed(0)  # the config's seed: the weights the trainer starts from
    initial = LimNet(LimNetConfig()).state_dict()
    exported = load_model(export)[0].state_dict()
    trained = [k for k, v in weights[0].items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert len(trained) > len(weights[0]) // 2  # the steps changed the weights ...
    for key, value in weights[0].items():  # ... identically in both processes, and the lead exported them
        if value.is_floating_point():  # weights and batch-norm statistics (not each process's batch count)
            assert torch.equal(value, weights[1][key]), key
        assert torch.equal(value, exported[key]), key


def test_limnet_train_starts_its_ranks_under_torchrun(tmp_path, capsys):
    export = tmp_path / "weights" / "limnet.pt"
    assert train_main(["train", str(write_config(tmp_path, export_path=str(export), export_name="tiny-ranks",
                                                  ranks=2))]) == 0
    events = [json.loads(line) for line in (tmp_path / "runs" / "tiny-test" / "log.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "start" and events[0]["ranks"] == 2
    # one log, written by the lead only, with the same validation points as a single process
    vals = [(e["kind"], e["step"]) for e in events if e["event"] == "val"]
    assert vals == [("interaction", 0), ("interaction", 3), ("memory", 0), ("memory", 2), ("quality", 2)]
    assert events[-1]["event"] == "done"
    net, info = load_model(export)
    assert info.trained and info.name == "tiny-ranks"


def test_pack_fits_its_budget_and_trains(shared_data, tmp_path):
    pack = tmp_path / "pack"
    listing = write_pack(shared_data, tmp_path / "cache", SOURCES, (*SOURCES, *VAL_SOURCES_EXTRA), pack,
                         budget_mb=4.0, val_cases=1)
    size = sum(p.stat().st_size for p in pack.rglob("*.npz"))
    assert size <= 4e6 and listing["mb"] <= 4.0
    assert sorted(Path(p).parts[1] for p in listing["val"]) == sorted((*SOURCES, *VAL_SOURCES_EXTRA))
    train_sources = {Path(p).parts[1] for p in listing["train"]}
    assert {"msd_hippocampus", "acdc_cine_mri"} <= train_sources  # small files are not crowded out
    config = tiny_config(tmp_path, sources=list(SOURCES), data_root=str(pack), val_objects=4)
    trainer = Trainer(config, ROOT, log=lambda _: None)
    assert len(trainer.sampler.volumes) == len(listing["train"])
    assert {name.split("/")[0] for name, *_ in trainer.val_set} <= {*SOURCES, *VAL_SOURCES_EXTRA}
    sample = trainer.sampler.sample(2)
    assert sample.mask[0].any()
    # writing the pack again replaces it; a folder with other content is never deleted
    write_pack(shared_data, tmp_path / "cache", SOURCES, SOURCES, pack, budget_mb=1.0, val_cases=1)
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="holds no training pack"):
        write_pack(shared_data, tmp_path / "cache", SOURCES, SOURCES, keep, budget_mb=1.0, val_cases=1)
    assert (keep / "notes.txt").read_text() == "user data"
