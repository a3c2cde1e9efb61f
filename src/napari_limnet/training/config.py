"""Training configuration: one JSON (or YAML) file fixes every choice of a run, so a run can be repeated."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass(frozen=True)
class StageConfig:
    """One training stage. ``kind`` is "interaction", "memory", "quality" or "fusion" (the quality head
    on real rounds' candidates, training/round_candidates.py); ``max_minutes`` caps the wall time
    (0: no cap) so that a CPU run ends on time even on a busy machine."""

    kind: str
    steps: int
    lr: float = 1e-3
    encoder_lr_scale: float = 1.0  # memory stage: slow the shared encoder down
    batch: int = 8
    seq_len: tuple[int, int] = (2, 6)  # memory stage: sequence length grows from first to second
    interaction_mix: float = 0.0  # memory stage: share of steps that train the interaction module
    crossing_share: float = 0.5  # memory stage: share of sequences that run off the end of the object
    max_minutes: float = 0.0
    freeze_norm: bool = False  # keep every BatchNorm's statistics fixed (fine-tuning with small batches)
    added_lr_scale: float = 1.0  # parameters that the init weights lack (``network`` options) learn this much faster
    objects: int = 0  # fusion stage: train objects whose protocol rounds are harvested
    clicks: int = 10  # fusion stage: protocol clicks per harvested object


@dataclass(frozen=True)
class TrainConfig:
    name: str = "limnet"
    seed: int = 0
    data_root: str = "../shared/data"  # relative paths are relative to the config file's folder's parent
    cache_dir: str = "cache"
    run_dir: str = "runs"
    sources: tuple[str, ...] = ("msd_hippocampus", "la2018_lgemri", "acdc_cine_mri")
    max_cases_per_source: int = 0  # 0: all train cases
    synthetic_share: float = 0.5  # probability that a sample comes from the synthetic generator
    synthetic_pool: int = 64  # synthetic volumes held in memory; one is replaced every step
    field_of_view_share: float = 0.3  # samples shown through only part of the slice around the object
    object_share: tuple[float, float] | None = None  # their object extent / window side (None: sides uniform)
    thick_slice_share: float = 0.0  # propagation sequences that skip slices, as a thick-slice scan would
    max_slice_gap: float = 6.0  # mm: how far apart those sequences' slices may be
    merged_share: float = 0.0  # samples whose object is a label merged with a label it touches
    min_object_voxels: int = 50
    max_clicks: int = 5  # interaction: up to this many simulated rounds before the trained one
    threads: int = 2
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA only
    checkpoint_every: int = 100
    val_every: int = 300
    val_objects: int = 12
    stages: tuple[StageConfig, ...] = field(default_factory=tuple)
    export_path: str = ""  # where the best weights are written after each stage ("" = nowhere)
    export_name: str = "limnet"
    init_weights: str = ""  # weights file a fresh run starts from (a fine-tuning run); "" = random init
    network: dict = field(default_factory=dict)  # LimNetConfig options (with init_weights: switched on in them)
    ranks: int = 1  # processes `limnet train` starts here via torchrun (a launcher's count wins); batch is per process

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training option(s): {sorted(unknown)}")
        values = dict(values)
        values["stages"] = tuple(
            StageConfig(**{**s, "seq_len": tuple(s.get("seq_len", (2, 6)))}) for s in values.get("stages", ())
        )
        for key in ("sources", "object_share"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        config = cls(**values)
        for stage in config.stages:
            if stage.kind not in ("interaction", "memory", "quality", "fusion"):
                raise ValueError(f"unknown stage kind {stage.kind!r}")
            if stage.kind == "fusion" and config.ranks > 1:
                raise ValueError("a fusion stage runs in one process (its harvest is the engine's own "
                                 "rounds): set ranks to 1")
        return config

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> TrainConfig:
        """A copy with some options changed (validated like a file's)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def read_config_values(path: str | Path) -> dict:
    """A config file's options, with those of the file it ``extends`` (a path relative to it) underneath:
    an override file names only what differs from its base (``stages`` is replaced as a whole)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml  # napari depends on PyYAML; JSON configs need nothing extra

        values = yaml.safe_load(text)
    else:
        values = json.loads(text)
    base = values.pop("extends", None)
    return {**read_config_values(path.parent / base), **values} if base else values


def load_config(path: str | Path) -> tuple[TrainConfig, Path]:
    """Read a config file; returns it with the base folder that its relative paths refer to (the
    parent of the folder holding the file, i.e. the repository root for ``configs/*.json``)."""
    path = Path(path)
    return TrainConfig.from_dict(read_config_values(path)), path.resolve().parent.parent


def resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else (base / p)
