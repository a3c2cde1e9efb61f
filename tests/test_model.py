"""The networks: shapes and dtypes through each module, size, and safe, checked weight loading."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from napari_limnet.engine.crops import click_maps
from napari_limnet.model import (
    LimNet,
    LimNetConfig,
    WeightsError,
    count_parameters,
    extended,
    load_model,
    save_weights,
)
from napari_limnet.model.memory import read_memory
from napari_limnet.model.weights import file_sha256, shipped_weights_path


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return LimNet().eval()


def test_parameter_count_is_compact(net):
    assert count_parameters(net) < 10_000_000


@torch.inference_mode()
def test_interaction_module_shapes(net):
    s = net.config.crop
    feats = net.encode_image(torch.rand(2, 1, s, s))
    assert feats.f2.shape == (2, net.config.c2, s // 2, s // 2)
    assert feats.f4.shape == (2, net.config.c4, s // 4, s // 4)
    assert feats.f8.shape == (2, net.config.c8, s // 8, s // 8)
    logits = net.interact(feats, torch.rand(2, 3, s, s))
    assert logits.shape == (2, 1, s, s) and logits.dtype == torch.float32


@torch.inference_mode()
def test_memory_module_shapes(net):
    s, c = net.config.crop, net.config
    feats = net.encode_image(torch.rand(1, 1, s, s))
    key = net.encode_key(feats)
    assert key.shape == (1, c.key_dim, s // 4, s // 4)
    assert torch.allclose(key.norm(dim=1), torch.ones(1, s // 4, s // 4), atol=1e-4)
    value = net.encode_value(feats, torch.rand(1, 1, s, s))
    assert value.shape == (1, c.value_dim, s // 4, s // 4)
    n = 300
    readout, usage = net.read(key, torch.rand(1, c.key_dim, n), torch.rand(1, c.value_dim, n))
    assert readout.shape == (1, c.value_dim, s // 4, s // 4)
    assert usage.shape == (1, n)
    # every query pixel distributes one unit of attention
    assert usage.sum().item() == pytest.approx((s // 4) ** 2, rel=1e-4)
    logits, hidden = net.decode(feats, readout, net.initial_hidden(feats), torch.rand(1, 1, s, s))
    assert logits.shape == (1, 1, s, s)
    assert hidden.shape == (1, c.hidden_dim, s // 4, s // 4)


@torch.inference_mode()
def test_quality_head_predicts_a_dice_per_mask(net):
    q = net.score(torch.rand(3, 1, 96, 96), torch.rand(3, 1, 96, 96).round())
    assert q.shape == (3,)
    assert bool(((q >= 0) & (q <= 1)).all())


def test_forward_is_not_a_stage(net):
    with pytest.raises(NotImplementedError):
        net(torch.rand(1, 1, 8, 8))


def test_weights_round_trip_with_checksum(tmp_path):
    torch.manual_seed(1)
    net = LimNet(LimNetConfig(c2=8, c4=16, c8=32))
    path = tmp_path / "w.pt"
    sha = save_weights(net, path, meta={"name": "unit-test"})
    loaded, info = load_model(path)
    assert info.trained and info.sha256 == sha and info.name == "unit-test"
    assert loaded.config == net.config
    for a, b in zip(loaded.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)


def test_corrupt_weights_are_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "w.pt"
    save_weights(LimNet(), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_model(path)


def test_missing_explicit_weights_raise(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "absent.pt")


@pytest.mark.parametrize("given", ["", "."])
def test_a_folder_given_as_weights_is_refused_with_a_clear_message(given):
    with pytest.raises(WeightsError, match="must be a file"):
        load_model(given)


def test_shipped_weights_load_and_say_what_they_are():
    net, info = load_model()
    assert isinstance(net, LimNet)
    sha = file_sha256(shipped_weights_path())
    assert info.trained and info.sha256 == sha and info.path == str(shipped_weights_path())
    assert info.describe() == f"{info.name} (sha256 {sha[:12]}…)"


@torch.inference_mode()
def test_folding_batchnorm_keeps_the_outputs():
    from napari_limnet.model.limnet import fused_for_inference

    net = LimNet().eval()
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    fused = fused_for_inference(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.rand(1, 1, 128, 128)
    a, b = net.encode_image(x), fused.encode_image(x)
    assert torch.allclose(a.f8, b.f8, atol=1e-4)
    prompts = torch.rand(1, 3, 128, 128)
    assert torch.allclose(net.interact(a, prompts), fused.interact(b, prompts), atol=1e-3)
    assert torch.allclose(net.score(x, prompts[:, :1]), fused.score(x, prompts[:, :1]), atol=1e-4)


def _click_prompts(s: int, pos) -> torch.Tensor:
    return torch.cat([click_maps(pos, [], s), torch.zeros(1, 1, s, s)], dim=1)


@torch.inference_mode()
def test_adding_click_similarity_keeps_the_shipped_answers_until_trained(tmp_path):
    """A fine-tuning run that switches the module on starts from exactly the shipped network's masks,
    and the weights it saves load back with the module."""
    shipped, _ = load_model()
    net, added = extended(shipped, click_similarity=True)
    assert added and all(name.startswith("interaction.similarity.") for name in added)
    image = torch.rand(1, 1, 128, 128)
    prompts = _click_prompts(128, [(64, 64)])
    before = shipped.interact(shipped.encode_image(image), prompts)
    assert torch.equal(before, net.interact(net.encode_image(image), prompts))
    save_weights(net, tmp_path / "w.pt", {"name": "test"})
    assert load_model(tmp_path / "w.pt")[0].config.click_similarity


def test_click_similarity_reaches_across_the_whole_crop():
    """Without the module a click cannot change the logits on the far side of the crop (the
    convolutions' reach); with it, it can: a large organ can be filled from one click."""
    torch.manual_seed(0)
    image = torch.rand(1, 1, 128, 128)
    reach = {}
    for on in (False, True):
        net = LimNet(LimNetConfig(click_similarity=on)).eval()
        if on:  # past the zero start, as after training
            torch.nn.init.normal_(net.interaction.similarity.to4.weight)
        prompts = _click_prompts(128, [(100, 100)]).requires_grad_(True)
        net.interact(net.encode_image(image), prompts)[0, 0, 8, 8].backward()
        reach[on] = float(prompts.grad[0, 0].abs().sum())
    assert reach[False] == 0.0 and reach[True] > 0.0


@pytest.mark.parametrize("top_k", [0, 5])
def test_memory_readout_is_attention_over_memory(top_k):
    """Each query pixel reads a convex mix of memory values, weighted by key similarity (only its top_k
    best matches when top_k is set); usage is the attention mass each element received."""
    gen = torch.Generator().manual_seed(0)
    query = F.normalize(torch.randn(2, 8, 3, 4, generator=gen), dim=1)
    keys = F.normalize(torch.randn(2, 8, 20, generator=gen), dim=1)
    values = torch.randn(2, 6, 20, generator=gen)
    readout, usage = read_memory(query, keys, values, top_k=top_k, temperature=10.0)
    sim = torch.einsum("bcq,bcn->bqn", query.flatten(2), keys) * 10.0 / 8 ** 0.5
    if top_k:
        sim = sim.masked_fill(sim < sim.topk(top_k, dim=2).values[..., -1:], float("-inf"))
    weights = sim.softmax(dim=2)
    torch.testing.assert_close(readout, torch.einsum("bqn,bcn->bcq", weights, values).view(2, 6, 3, 4))
    torch.testing.assert_close(usage, weights.sum(dim=1))
    assert torch.allclose(usage.sum(dim=1), torch.full((2,), 12.0))
