"""The LIM-Net networks (pure PyTorch)."""

from .encoder import SliceFeatures
from .limnet import LimNet, LimNetConfig, count_parameters, extended
from .weights import WeightsError, WeightsInfo, load_model, save_weights

__all__ = [
    "extended",
    "LimNet", "LimNetConfig", "SliceFeatures", "WeightsError", "WeightsInfo", "count_parameters",
    "load_model", "save_weights",
]
