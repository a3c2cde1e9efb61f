"""Data-parallel training the standard way: a launcher (``torchrun``, or any that sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT) starts the processes, on one machine or several;
each draws its own samples, DistributedDataParallel averages their gradients, and they agree on the
stage clock so that all leave a stage at the same step. Weights therefore stay identical across
processes; only the lead (global rank 0) writes logs, checkpoints and exports.

Several processes pay off even on one GPU: a training step is mostly CPU work (sampling, augmentation,
simulated clicks, crops) that one process cannot spread over many cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import distributed as dist

from ..engine.device import resolve_device


class _Step(torch.nn.Module):
    """DistributedDataParallel averages the gradients of what runs inside its forward; a training step
    calls many of the network's methods, so the whole step runs as that forward."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, step: Callable, *args):
        return step(*args)


class Ranks:
    """This process's place among the training processes. With one process every collective is a
    no-op, so the trainer has a single code path."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0) -> None:
        self.rank = rank
        self.world = world
        self.local_rank = local_rank

    @property
    def lead(self) -> bool:
        return self.rank == 0

    @property
    def local_lead(self) -> bool:
        """The first process on its machine (which writes the machine's data cache)."""
        return self.local_rank == 0

    def device(self, name: str) -> torch.device:
        """The device named in the config; on CUDA with several processes, this process's GPU."""
        device = resolve_device(name)
        if device.type == "cuda" and self.world > 1:
            return torch.device("cuda", self.local_rank)
        return device

    def data_parallel(self, net: torch.nn.Module) -> Callable:
        """``run(step, *args)``: ``step(*args)``, whose loss's backward leaves the gradients averaged
        over the processes. A parameter no process used keeps ``grad=None`` (AdamW leaves it alone, as
        in one process); one used by some processes gets the mean over all of them. Batch-norm
        statistics stay per process until ``average_buffers``."""
        if self.world == 1:
            return lambda step, *args: step(*args)
        return torch.nn.parallel.DistributedDataParallel(_Step(net), find_unused_parameters=True,
                                                         broadcast_buffers=False)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The mean of a number over the processes (the stage clock: identical everywhere, so the
        learning rate and the time cap agree)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0]) / self.world

    def average_buffers(self, net: torch.nn.Module) -> None:
        """Batch-norm statistics are gathered per process: average them before they are used."""
        if self.world == 1:
            return
        for buf in net.buffers():
            if buf.is_floating_point():
                cpu = buf.detach().float().cpu()
                dist.all_reduce(cpu)
                buf.copy_(cpu / self.world)

    def from_lead(self, value):
        """The lead's ``value`` in every process (what the lead read from its disk: a checkpoint)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

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


@contextmanager
def process_group(device: str = "auto") -> Iterator[Ranks]:
    """Join the processes a launcher started, as its environment describes them (NCCL for CUDA
    tensors and gloo for CPU ones when ``device`` is CUDA, gloo alone otherwise); without a launcher,
    one process alone."""
    if "WORLD_SIZE" not in os.environ:
        yield Ranks()
        return
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    cuda = ranks.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    try:
        yield ranks
        # the lead exports after the last collective: no process tears its connections down (gloo's
        # threads) while another may still be using them
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch_here(processes: int, argv: list[str]) -> None:
    """``torchrun --standalone --nproc-per-node PROCESSES -m napari_limnet.training.cli ARGV``: the
    processes on this machine, started and joined by torchrun's own launcher."""
    from torch.distributed.run import main as torchrun

    torchrun(["--standalone", f"--nproc-per-node={processes}", "-m", "napari_limnet.training.cli", *argv])
