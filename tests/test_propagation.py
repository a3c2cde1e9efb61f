"""Training and inference run one propagation walk: the same sequence gives the same masks."""

from __future__ import annotations

import numpy as np
import torch

from napari_limnet.engine.runner import NetworkRunner
from napari_limnet.model import load_model
from napari_limnet.training.data import read_case
from napari_limnet.training.sampler import Sample
from napari_limnet.training.steps import walk_samples


def _both_paths(volume: np.ndarray, ref: np.ndarray, spacing: tuple[float, float], start: int, length: int):
    """Masks of slices start+1 .. start+length-1, walked by the engine and by the training pipeline."""
    net = load_model()[0].eval()
    runner = NetworkRunner(net, volume, spacing, torch.device("cpu"))
    anchors = {start: ref[start]}
    walk = runner.propagate(start, ref[start], 1, anchors, runner.anchor_entries(anchors), lambda: False)
    engine = [mask for _, (_, mask) in zip(range(length - 1), walk)]
    sample = Sample(volume[start:start + length].astype(np.float32), ref[start:start + length], spacing)
    with torch.no_grad():
        training = [out[0] for _, _, _, _, out in walk_samples(net, [sample], [ref[start]], "cpu")]
    return engine, training


def _assert_same(engine, training):
    assert len(training) >= 3  # the walk went some way before the object ended
    for z, (a, b) in enumerate(zip(engine, training), 1):
        # BatchNorm is folded into the convolutions for inference: a rounding-level difference may flip
        # a pixel on the boundary, never more.
        assert (a ^ b).sum() <= max(2, 0.005 * a.sum()), f"slice +{z}: {(a ^ b).sum()} pixels differ"
    assert not any(m.any() for m in engine[len(training):])  # where training stopped, the engine is empty


def test_training_walks_the_engines_propagation(ellipsoid):
    volume, ref = ellipsoid
    start = int(np.flatnonzero(ref.any(axis=(1, 2)))[0]) + 2
    engine, training = _both_paths(volume, ref, (1.0, 1.0), start, 12)
    _assert_same(engine, training)
    assert any(m.any() for m in training)


def test_training_walks_the_engines_propagation_on_a_real_case(shared_data):
    image, labels, spacing = read_case(shared_data, "la2018_lgemri", _first_val(shared_data))
    ref = labels == 1
    start = int(np.argmax(ref.sum(axis=(1, 2))))
    engine, training = _both_paths(image, ref, spacing[1:], start, 10)
    _assert_same(engine, training)
    dice = [2 * (m & r).sum() / (m.sum() + r.sum()) for m, r in zip(training, ref[start + 1:])]
    assert np.mean(dice) > 0.7  # and the walk follows the atrium


def _first_val(root) -> str:
    import json

    return json.loads((root / "splits.json").read_text())["la2018_lgemri"]["val"][0]
