"""The inputs of one interaction step. Only training/steps.py uses this; it moves into steps.py with
the steps rewrite (issue 25 item 1), and this file goes with it."""

from __future__ import annotations

import numpy as np

from ..engine.crops import Roi, crop_image, prompt_maps


def interaction_inputs(image: np.ndarray, roi: Roi, pos, neg, prev: np.ndarray, crop: int):
    """The image crop and the 3 prompt channels (positive, negative clicks, previous mask)."""
    return crop_image(image, roi, crop), prompt_maps(roi, pos, neg, prev, crop)
