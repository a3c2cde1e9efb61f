"""A CT is recognised from its values and read through the soft-tissue-weighted HU curve."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_limnet.intensity import hounsfield_to_unit, is_hounsfield, to_uint8
from napari_limnet.training.data import read_case


def _ct_like(rng) -> np.ndarray:
    """Air around a water-like body with a bone rod, in HU."""
    vol = np.full((16, 64, 64), -1000.0, np.float32)
    yy, xx = np.mgrid[:64, :64]
    body = (yy - 32) ** 2 + (xx - 32) ** 2 < 26 ** 2
    vol[:, body] = 40.0
    vol[:, 28:34, 28:34] = 900.0
    return (vol + rng.normal(0, 10, vol.shape)).astype(np.int16)


def test_ct_is_recognised_and_mri_is_not():
    rng = np.random.default_rng(0)
    assert is_hounsfield(_ct_like(rng))
    mri_uint8 = rng.integers(0, 255, (16, 64, 64)).astype(np.uint8)
    z_scored = rng.normal(0, 1, (16, 64, 64)).astype(np.float32)
    assert not is_hounsfield(mri_uint8) and not is_hounsfield(z_scored)
    assert not is_hounsfield(np.zeros((4, 8, 8), np.float32))


def test_soft_tissue_gets_most_of_the_range():
    soft = hounsfield_to_unit(np.array([-200.0, 300.0]))
    assert soft[1] - soft[0] >= 0.65  # 500 HU of soft tissue: most of [0, 1]
    assert hounsfield_to_unit(np.array([-3000.0]))[0] == 0 and hounsfield_to_unit(np.array([4000.0]))[0] == 1
    # 30 HU apart (parotid against muscle) stays several uint8 levels apart in the training cache
    cache = to_uint8(np.concatenate([_ct_like(np.random.default_rng(1)).astype(np.float32).ravel(), [10.0, 40.0]]))
    assert int(cache[-1]) - int(cache[-2]) >= 10


def test_real_sources_are_told_apart(shared_data):
    splits = json.loads((shared_data / "splits.json").read_text())
    for source, expected in (("openkbp_hn_ct", True), ("la2018_lgemri", False), ("msd_hippocampus", False),
                             ("acdc_cine_mri", False)):
        image, _, _ = read_case(shared_data, source, splits[source]["val"][0])
        assert is_hounsfield(image) == expected, source
    lung, _, _ = read_case(shared_data, "pyradiomics_testcases", "lung1")
    brain, _, _ = read_case(shared_data, "pyradiomics_testcases", "brain1")
    assert is_hounsfield(lung) and not is_hounsfield(brain)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_the_engine_reads_a_ct_through_the_curve(dtype, weights):
    """The network's crop of a CT equals the crop of the HU-curved slice; an MRI's is not curved."""
    import torch

    from napari_limnet.engine.crops import crop_image, full_roi
    from napari_limnet.engine.runner import NetworkRunner

    volume = _ct_like(np.random.default_rng(2)).astype(dtype)
    runner = NetworkRunner(weights[0], volume, (1.0, 1.0), torch.device("cpu"))
    roi = full_roi(volume.shape[1:])
    seen = crop_image(volume[3], roi, 128, runner.curve)
    torch.testing.assert_close(seen, crop_image(hounsfield_to_unit(volume[3]), roi, 128))
    assert not torch.allclose(seen, crop_image(volume[3], roi, 128))
    mri = NetworkRunner(weights[0], np.random.default_rng(3).random((4, 32, 32)).astype(np.float32), (1.0, 1.0),
                        torch.device("cpu"))
    assert mri.curve is None
