"""The click rules that evaluation, validation and training share, and the whole-volume intensity window."""

from __future__ import annotations

import numpy as np
import pytest

from napari_limnet.clicks import depth_share, error_click, interior_click, interior_point
from napari_limnet.intensity import to_uint8, unit_window


def square(size: int = 9, side: int = 20) -> np.ndarray:
    region = np.zeros((side, side), bool)
    region[5:5 + size, 5:5 + size] = True
    return region


def test_depth_share_is_one_at_the_deepest_point_and_zero_outside():
    region = square()
    assert depth_share(region, interior_point(region)) == 1.0
    assert depth_share(region, (5, 9)) == pytest.approx(0.2)  # on the edge: 1 pixel of 5 deep
    assert depth_share(region, (0, 0)) == 0.0
    assert depth_share(np.zeros((4, 4), bool), (1, 1)) == 0.0


def test_random_clicks_land_inside_at_a_fifth_of_the_depth_or_more():
    region = square()
    rng = np.random.default_rng(0)
    clicks = {interior_click(rng, region, (1.0, 1.0)) for _ in range(200)}
    assert all(region[c] and depth_share(region, c) >= 0.2 for c in clicks)
    assert len(clicks) > 10  # spread, not always the centre
    assert interior_click(None, region, (1.0, 1.0)) == interior_point(region) == (9, 9)


def test_error_click_corrects_the_larger_error_region():
    ref = square()
    pred = ref.copy()
    pred[5:8, 5:14] = False  # 27 pixels missed
    pred[16:18, 0:4] = True  # 8 pixels too many
    (y, x), positive = error_click(None, pred, ref, (1.0, 1.0))
    assert positive and ref[y, x] and not pred[y, x]
    assert error_click(None, ref, ref, (1.0, 1.0)) is None


def test_unit_window_clips_outliers_and_fills_nan_with_the_median():
    volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    volume[0, 0, 0] = -1e6
    volume[9, 9, 9] = 1e6
    volume[5, 5, 5] = np.nan
    out = unit_window(volume)
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[5, 5, 5] == pytest.approx(0.5, abs=0.01)
    assert to_uint8(volume)[5, 5, 5] == round(out[5, 5, 5] * 255)
    with pytest.raises(ValueError, match="no finite values"):
        unit_window(np.full((2, 2, 2), np.nan))
