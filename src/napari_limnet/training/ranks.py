"""Data-parallel training over several processes on one machine.

The training step is mostly CPU work (sampling, augmentation, simulated clicks, crops), which one
process cannot spread over many cores; the network itself is small. So a config may ask for
``ranks`` processes: each draws its own samples, all average their gradients before every optimizer
step (gloo, on CPU copies, so the same code runs with or without CUDA), and they agree on the stage
clock so that all of them leave a stage at the same step. Weights therefore stay identical across
processes; only the lead process (rank 0) writes logs, checkpoints and exports.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import distributed as dist


class Ranks:
    """This process's place among the training processes. With one process every collective is a
    no-op, so the trainer has a single code path."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank = rank
        self.world = world

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def step_sync(self, net: torch.nn.Module, elapsed: float) -> float:
        """Average the gradients over the processes and return the mean stage clock (identical in
        every process, so the learning rate and the time cap agree).

        A parameter that no process used this step keeps ``grad=None``, as in a single process, so
        AdamW leaves it alone; one used by some processes gets the average over all of them."""
        if self.world == 1:
            return elapsed
        params = [p for p in net.parameters() if p.requires_grad]
        grads = [p.grad.detach().float().flatten() if p.grad is not None
                 else torch.zeros(p.numel(), device=p.device) for p in params]
        used = [float(p.grad is not None) for p in params]
        flat = torch.cat([torch.cat(grads).cpu(), torch.tensor([*used, elapsed])])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, flag in zip(params, flat[-len(params) - 1:-1].tolist()):
            n = p.numel()
            if flag > 0:
                p.grad = flat[offset:offset + n].view_as(p).to(device=p.device, dtype=p.dtype)
            else:
                p.grad = None
            offset += n
        return float(flat[-1])

    def average_buffers(self, net: torch.nn.Module) -> None:
        """Batch-norm statistics are gathered per process: average them before they are used."""
        if self.world == 1:
            return
        for buf in net.buffers():
            if buf.is_floating_point():
                cpu = buf.detach().float().cpu()
                dist.all_reduce(cpu)
                buf.copy_(cpu / self.world)

    def broadcast_state(self, net: torch.nn.Module) -> None:
        """Every process starts a stage from the lead's weights and buffers."""
        if self.world == 1:
            return
        for tensor in net.state_dict().values():
            cpu = tensor.detach().cpu().clone()
            dist.broadcast(cpu, src=0)
            tensor.copy_(cpu)

    def gather(self, items: list) -> list:
        """Concatenate every process's list (rank order)."""
        if self.world == 1:
            return items
        out: list = [None] * self.world
        dist.all_gather_object(out, items)
        return [item for part in out for item in part]

    def share(self, items: list) -> list:
        """This process's share of a list of work items."""
        return items[self.rank::self.world]


def _rank_main(rank: int, world: int, store: str, config_path: str, resume: bool, device: str | None) -> None:
    from .config import load_config
    from .trainer import Trainer

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        config, base = load_config(config_path)
        if device:
            config = config.replace(device=device)
        Trainer(config, base, ranks=Ranks(rank, world), log=print if rank == 0 else (lambda _: None)).run(resume)
        # the lead still exports after the last collective: no process tears its connections down
        # (gloo's threads) while another may still be using them
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ranks(config_path: str | Path, world: int, resume: bool = True, device: str | None = None) -> None:
    """Train with ``world`` processes (spawned: CUDA cannot be shared with forked children)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="limnet-ranks-") as tmp:
        mp.spawn(_rank_main, args=(world, str(Path(tmp) / "store"), str(config_path), resume, device),
                 nprocs=world, join=True)
