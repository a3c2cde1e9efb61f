"""The LIM-Net networks (pure PyTorch)."""

from .encoder import SliceFeatures
from .limnet import LimNet, LimNetConfig, count_parameters, extended
from .weights import WeightsError, WeightsInfo, load_model, save_weights

__all__ = [
    "LimNet", "LimNetConfig", "SliceFeatures", "WeightsError", "WeightsInfo", "count_parameters",
    "extended", "load_model", "save_weights",
]
