"""Training of LIM-Net: real volumes + a synthetic generator, simulated clicks, staged training."""

from .config import StageConfig, TrainConfig, load_config
from .trainer import Trainer

__all__ = ["StageConfig", "TrainConfig", "Trainer", "load_config"]
