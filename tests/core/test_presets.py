"""preset="semantic" and preset="paper": each is its settings spelled out, everywhere the keywords are taken."""
import pytest
import torch
from torch import nn

from utils import excitation_pullback, make_settings, pullback_ascent, soft_backward
from utils.core.presets import PRESETS

SPELLED_OUT = dict(temperature=0.6, gate="normal_cdf", pool="detached", pool_temperature=0.3, silu_temperature=1.6,
                   gelu_temperature=1.0, layer_norm="held", attention_temperature=1.0)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
                         nn.Conv2d(6, 6, 3), nn.SiLU(), nn.Conv2d(6, 6, 3), nn.GELU(), nn.Flatten(),
                         nn.LayerNorm(6 * 2 * 2), nn.Linear(6 * 2 * 2, 5)).double().eval()


def test_semantic_preset_is_its_settings_spelled_out():
    assert PRESETS["semantic"] == SPELLED_OUT
    assert repr(make_settings(preset="semantic")) == repr(make_settings(**SPELLED_OUT))
    assert repr(make_settings(preset="paper")) == repr(make_settings())
    assert repr(make_settings(preset="semantic")) != repr(make_settings())


def test_preset_pullback_equals_spelled_out():
    model, x = net(), torch.randn(3, 3, 12, 12, dtype=torch.float64)
    ours = excitation_pullback(model, x, [0, 1, 2], preset="semantic")
    assert torch.equal(ours, excitation_pullback(model, x, [0, 1, 2], **SPELLED_OUT))
    assert not torch.allclose(ours, excitation_pullback(model, x, [0, 1, 2]))  # v1 differs
    with soft_backward(model, preset="semantic"):
        x1 = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(model(x1)[torch.arange(3), torch.tensor([0, 1, 2])].sum(), x1)
    assert torch.equal(grad, ours)
    steps = dict(steps=2, alpha=0.5, eps=10.0)
    assert torch.equal(pullback_ascent(model, x, 1, preset="semantic", **steps),
                       pullback_ascent(model, x, 1, **SPELLED_OUT, **steps))


def test_keywords_beside_a_preset_override_it():
    settings = make_settings(preset="semantic", temperature=0.5, strict=False)
    assert settings.rules["relu"].temperature == 0.5 and not settings.strict
    assert settings.rules["max_pool"].variant == "detached" and settings.rules["attention"].temperature == 1.0


def test_bad_presets_are_refused():
    with pytest.raises(ValueError, match="unknown preset"):
        make_settings(preset="v7")
    with pytest.raises(TypeError, match="preset"):
        make_settings(preset="semantic", settings=make_settings())
