"""Runs in the processes that torchrun's launcher starts for test_parallel_training.py (the launcher
spawns them, so the entry points must be importable functions)."""

from __future__ import annotations

import uuid

import torch
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from napari_limnet.training import Trainer, load_config
from napari_limnet.training.distributed import process_group


def launch(entry, *args, processes: int = 2) -> dict:
    """``entry(*args)`` in ``processes`` processes joined as ``torchrun --standalone`` joins them; the
    return values by rank."""
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    return elastic_launch(config, entry)(*args)


def collectives() -> dict:
    """One step with gradients that differ by rank, then every collective the trainer uses."""
    with process_group("cpu") as ranks:
        torch.manual_seed(ranks.rank)  # different starting weights: the data-parallel wrapper unifies them
        net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1), torch.nn.Linear(1, 1))
        net[0].register_buffer("stat", torch.full((2,), 10.0 * (ranks.rank + 1)))
        first, second, _ = net  # the third layer is used by no process
        run = ranks.data_parallel(net)

        def step():
            loss = (1.0 + 2 * ranks.rank) * first(torch.ones(3)).sum()  # gradients 1 and 3: mean 2
            if ranks.rank == 1:  # used by one process only: the mean over both is half of it
                loss = loss + 4.0 * second(torch.ones(2)).sum()
            return {"loss": loss}

        run(step)["loss"].backward()
        ranks.average_buffers(net)
        return {"rank": ranks.rank, "weights": {k: v.clone() for k, v in net.state_dict().items()},
                "grads": [None if p.grad is None else p.grad.clone() for p in net.parameters()],
                "clock": ranks.mean(10.0 * (ranks.rank + 1)), "share": ranks.share(list(range(5))),
                "gathered": ranks.gather([ranks.rank]), "from_lead": ranks.from_lead(f"rank {ranks.rank}")}


def train(config_path: str) -> dict:
    """Train a config in this process, one of several; this process's final weights."""
    config, base = load_config(config_path)
    with process_group(config.device) as ranks:
        trainer = Trainer(config, base, ranks=ranks, log=lambda _: None)
        trainer.run()
        return {k: v.detach().cpu().clone() for k, v in trainer.net.state_dict().items()}
