"""Choosing where the network runs."""

from __future__ import annotations

import os

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else CPU. Unknown names and "cuda" without CUDA are errors."""
    text = str(name).lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
        return torch.device(text)
    raise ValueError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")


def configure_cpu_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads: ``threads``, else the ``LIMNET_THREADS`` environment variable (for
    shared machines and batch jobs), else all cores up to 4 (small convolutions gain little beyond
    that). A GUI passes ``cores - 1`` so that its own thread keeps a core."""
    if threads is None and os.environ.get("LIMNET_THREADS", "").strip().isdigit():
        threads = int(os.environ["LIMNET_THREADS"])
    wanted = max(1, threads if threads is not None else min(4, os.cpu_count() or 1))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


def gui_threads() -> int:
    """Threads for inference behind a GUI: one core stays with the event loop."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def available_devices() -> list[str]:
    """What the device selector offers, best first."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.insert(0, "cuda")
    return found
