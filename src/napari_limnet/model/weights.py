"""Loading the weights that ship inside the package: safe (``weights_only``), checked, and honest
about what was loaded."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .limnet import LimNet, LimNetConfig

WEIGHTS_NAME = "limnet.pt"


class WeightsError(OSError):
    """The weight file is missing, corrupt or does not match its recorded checksum (an ``OSError``, so
    the command line reports it as one clear line, like any other unreadable file)."""


@dataclass(frozen=True)
class WeightsInfo:
    """What the network is running with. ``trained`` is False for a random initialisation."""

    name: str
    trained: bool
    sha256: str | None
    path: str | None

    def describe(self) -> str:
        if not self.trained:
            return f"{self.name} (random initialisation: no trained weights loaded)"
        return f"{self.name} (sha256 {self.sha256[:12]}…)"


def shipped_weights_path() -> Path:
    return Path(str(resources.files("napari_limnet.model") / "weights" / WEIGHTS_NAME))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_sha256(path: Path) -> str | None:
    """The checksum recorded next to the weights (``<name>.sha256``), if any."""
    sidecar = path.with_suffix(path.suffix + ".sha256")
    if not sidecar.exists():
        return None
    return sidecar.read_text().split()[0].strip()


def save_weights(model: LimNet, path: Path, meta: dict | None = None) -> str:
    """Write a checkpoint loadable with ``weights_only=True`` and its checksum sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": model.config.to_dict(), "state_dict": model.state_dict(), "meta": dict(meta or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    sha = file_sha256(path)
    path.with_suffix(path.suffix + ".sha256").write_text(f"{sha}  {path.name}\n")
    return sha


def load_model(path: str | Path | None = None, *, allow_random: bool = True) -> tuple[LimNet, WeightsInfo]:
    """Load LIM-Net in eval mode on the CPU.

    ``path=None`` loads the shipped weights. If none ship with this build and ``allow_random`` is set,
    a seeded random network is returned with a warning and ``WeightsInfo.trained`` False.
    """
    explicit = path is not None
    path = Path(path) if explicit else shipped_weights_path()
    if explicit and path.is_dir():
        raise WeightsError(f"weights must be a file, got the folder {path.resolve()}")
    if not path.exists():
        if explicit or not allow_random:
            raise WeightsError(f"weight file not found: {path}")
        warnings.warn("napari-limnet ships no trained weights in this build: using a random network",
                      stacklevel=2)
        torch.manual_seed(0)
        return LimNet().eval(), WeightsInfo("random-init", False, None, None)
    expected = expected_sha256(path)
    actual = file_sha256(path)
    if expected is not None and expected != actual:
        raise WeightsError(
            f"checksum mismatch for {path}: expected {expected}, found {actual}. "
            "The file is corrupt or was replaced; reinstall napari-limnet."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = LimNet(LimNetConfig.from_dict(payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # any failure here means the file is unusable
        raise WeightsError(f"cannot load weights from {path}: {exc}") from exc
    name = str(payload.get("meta", {}).get("name", path.stem))
    return model.eval(), WeightsInfo(name, True, actual, str(path))
