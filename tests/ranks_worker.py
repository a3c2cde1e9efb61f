"""Runs in processes spawned by test_parallel_training.py (spawn needs an importable function)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import distributed as dist

from napari_limnet.training.ranks import Ranks


def sync_known_gradients(rank: int, world: int, store: str, out: str) -> None:
    """Each process sets gradients that differ by rank; the results of one step_sync are saved."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1), torch.nn.Linear(1, 1))
        first, second, third = net
        first.weight.grad = torch.full_like(first.weight, 1.0 + 2 * rank)  # 1 and 3: mean 2
        first.bias.grad = torch.full_like(first.bias, 1.0 + 2 * rank)
        if rank == 1:  # used by one process only: the mean over both is half of it
            second.weight.grad = torch.full_like(second.weight, 4.0)
            second.bias.grad = torch.full_like(second.bias, 4.0)
        # third: used by no process
        net[0].register_buffer("stat", torch.full((2,), 10.0 * (rank + 1)))
        ranks = Ranks(rank, world)
        elapsed = ranks.step_sync(net, 10.0 * (rank + 1))
        ranks.average_buffers(net)
        torch.save({"elapsed": elapsed, "grads": [p.grad for p in net.parameters()], "stat": net[0].stat,
                    "share": ranks.share(list(range(5))), "gathered": ranks.gather([rank])},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
