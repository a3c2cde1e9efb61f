"""Running a round's two propagation directions at the same time on the CPU.

The per-slice work is many small convolutions, which gain little from a second intra-op thread:
two walks with one thread each finish sooner than one walk after the other with two threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from itertools import chain

import torch

_DONE = object()


def walk_threads(device: torch.device) -> int:
    """Torch threads each walk gets when the walks run side by side; 0: run them one after the other
    (on CUDA, or with a single CPU thread, which a GUI keeps free for its event loop)."""
    if device.type != "cpu":
        return 0
    threads = torch.get_num_threads()
    return threads // 2 if threads >= 2 else 0


def interleave(walks: list[Iterable], threads: int, stop: threading.Event) -> Iterator:
    """The items of every walk, in the order they are produced. With ``threads`` > 0 each walk runs in
    its own thread with that many torch threads. When this generator ends, fails or is closed it sets
    ``stop`` and waits for those threads, so each walk must end soon after ``stop`` is set (through
    its ``cancelled`` callback). An exception in a walk is raised here."""
    if threads <= 0 or len(walks) < 2:
        yield from chain.from_iterable(walks)
        return
    caller_threads = torch.get_num_threads()
    items: queue.Queue = queue.Queue()

    def drain(walk: Iterable) -> None:
        torch.set_num_threads(threads)
        try:
            for item in walk:
                items.put(item)
        except BaseException as exc:  # handed to the caller, raised there
            items.put(exc)
        finally:
            items.put(_DONE)

    workers = [threading.Thread(target=drain, args=(w,), daemon=True, name="limnet-walk") for w in walks]
    for worker in workers:
        worker.start()
    try:
        running = len(workers)
        while running:
            item = items.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        # a thread that sets torch's thread count also sets it for every thread started later
        torch.set_num_threads(caller_threads)
