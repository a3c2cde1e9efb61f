"""Where the network looks: windows, intensity normalisation, and the crop <-> slice round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_limnet.engine.crops import (
    NEAR_WINDOW_MM,
    Roi,
    click_maps,
    crop_image,
    crop_mask,
    full_roi,
    looks_like_leak,
    near_window,
    paste_logits,
    roi_around,
    sized_by_window,
    zoom_prior,
)


def test_normalisation_ignores_the_intensity_scale():
    rng = np.random.default_rng(0)
    mri = rng.gamma(2.0, 50.0, (64, 64)).astype(np.float32)
    roi = full_roi(mri.shape)
    reference = crop_image(mri, roi, 64)
    ct = mri * 7.5 - 1024  # same picture in another unit (e.g. Hounsfield-like)
    micro = np.clip(mri * 100, 0, 65535).astype(np.uint16)
    assert torch.allclose(crop_image(ct, roi, 64), reference, atol=1e-4)
    assert torch.allclose(crop_image(micro, roi, 64), reference, atol=2e-3)
    assert float(reference.min()) >= 0 and float(reference.max()) <= 1


def test_nan_and_flat_slices_are_safe():
    image = np.full((32, 32), 5.0, np.float32)
    assert float(crop_image(image, full_roi(image.shape), 32).abs().max()) == 0
    image[:10] = np.nan
    image[20:] = 9.0
    out = crop_image(image, full_roi(image.shape), 32)
    assert torch.isfinite(out).all()


def test_window_is_square_in_millimetres_on_anisotropic_slices():
    mask = np.zeros((40, 200), bool)
    mask[18:22, 90:110] = True
    roi = roi_around(mask, [], mask.shape, spacing=(4.0, 1.0))
    assert roi.h * 4.0 == pytest.approx(roi.w * 1.0, abs=8 * 4.0)
    full = full_roi(mask.shape, spacing=(4.0, 1.0))
    assert full.h * 4.0 == pytest.approx(full.w, abs=4.0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (3.0, 0.7)])
def test_mask_crop_and_paste_round_trip(spacing):
    mask = np.zeros((90, 110), bool)
    mask[30:60, 40:85] = True
    roi = roi_around(mask, [(45, 50)], mask.shape, spacing)
    logits = (crop_mask(mask, roi, 128) - 0.5) * 20
    back = paste_logits(logits, roi, mask.shape)
    assert (back ^ mask).sum() <= 0.02 * mask.sum()


def test_window_falls_back_to_the_whole_slice_without_anything_to_look_at():
    assert roi_around(np.zeros((50, 60), bool), [], (50, 60)) == full_roi((50, 60))


def test_click_maps_peak_at_the_clicks():
    maps = click_maps([(10, 20)], [(30, 5), (2, 2)], 40)
    assert maps.shape == (1, 2, 40, 40)
    assert tuple(np.unravel_index(int(maps[0, 0].argmax()), (40, 40))) == (10, 20)
    assert float(maps[0, 1, 30, 5]) == pytest.approx(1.0) and float(maps[0, 1, 2, 2]) == pytest.approx(1.0)
    assert float(maps[0, 0, 30, 5]) < 1e-6


def test_a_coarse_first_mask_is_not_carried_into_the_zoomed_pass():
    """The first pass over a slice shrunk to the crop sizes a small object by the window; the zoomed
    pass must start from the clicks alone there, and keep the first mask everywhere else."""
    small = np.zeros((300, 300), bool)
    small[140:160, 140:170] = True  # spans 0.1 of the window
    large = np.zeros((300, 300), bool)
    large[60:240, 80:200] = True  # spans 0.6
    whole = full_roi(small.shape)
    assert not zoom_prior(small, whole, 128).any()
    assert zoom_prior(large, whole, 128) is large
    close_up = Roi(0, 0, 100, 100)  # a window the crop does not shrink: its mask is not coarse
    assert zoom_prior(small[100:200, 100:200], close_up, 128).any()


def test_a_fresh_click_gets_a_second_look_near_it_where_the_first_mask_is_wide():
    """CT slices of 128 pixels at 3 mm (384 mm): a square of NEAR_WINDOW_MM around the positive click,
    spread clicks widen it. None on a slice no wider than that, with no positive click, or where the
    whole-slice mask spans less than half the near window (nothing that could be a leak)."""
    ct = full_roi((128, 128), (3.0, 3.0))
    wide = np.zeros((128, 128), bool)
    wide[30:70, 40:90] = True  # 150 mm across
    near = near_window([(60, 70)], ct, wide, (3.0, 3.0))
    assert near.h == near.w and near.h * 3.0 >= NEAR_WINDOW_MM and near.h < 128
    assert near.y0 <= 60 < near.y0 + near.h and near.x0 <= 70 < near.x0 + near.w
    assert near_window([(20, 20), (100, 100)], ct, wide, (3.0, 3.0)) is None  # 2x their spread > the slice
    assert near_window([], ct, wide, (3.0, 3.0)) is None
    small = np.zeros_like(wide)
    small[55:65, 65:75] = True  # 30 mm
    assert near_window([(60, 70)], ct, small, (3.0, 3.0)) is None
    assert near_window([(60, 70)], full_roi((96, 96), (1.0, 1.0)), wide[:96, :96], (1.0, 1.0)) is None
    wider = near_window([(60, 70)], ct, wide, (3.0, 3.0), side_mm=2 * NEAR_WINDOW_MM)
    assert wider.h * 3.0 >= 2 * NEAR_WINDOW_MM and wider.h < 128


def test_a_whole_slice_mask_many_times_the_near_one_looks_like_a_leak():
    near = np.zeros((64, 64), bool)
    near[30:34, 30:34] = True
    leak = np.zeros_like(near)
    leak[20:44, 20:44] = True
    assert looks_like_leak(leak, near)
    assert not looks_like_leak(near | np.roll(near, 3, axis=0), near)
    assert not looks_like_leak(leak, np.zeros_like(near))  # nothing near the click: keep the whole-slice look


def test_a_mask_that_shrinks_with_its_window_was_sized_by_the_window():
    whole = np.zeros((64, 64), bool)
    whole[10:50, 10:50] = True
    half = np.zeros_like(whole)
    half[20:40, 20:40] = True  # a quarter of the area through a window half as wide
    assert sized_by_window(whole, half)
    assert not sized_by_window(whole, whole & ~np.eye(64, dtype=bool))  # the same outline
    assert not sized_by_window(whole, np.zeros_like(whole))
