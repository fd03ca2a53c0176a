"""preset="semantic" and preset="paper": each is its settings spelled out, everywhere the keywords are taken."""
import pytest
import torch
from torch import nn

from utils import Settings, excitation_pullback, pullback_ascent, soft_backward
from utils.core.presets import PRESETS, preset_settings
from utils.core.settings import resolve_settings

SPELLED_OUT = dict(temperature=0.6, gate="normal_cdf", pool="detached", pool_temperature=0.3, silu_temperature=1.6,
                   gelu_temperature=1.0, layer_norm="held", attention_temperature=1.0)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
                         nn.Conv2d(6, 6, 3), nn.SiLU(), nn.Conv2d(6, 6, 3), nn.GELU(), nn.Flatten(),
                         nn.LayerNorm(6 * 2 * 2), nn.Linear(6 * 2 * 2, 5)).double().eval()


def test_semantic_preset_is_its_settings_spelled_out():
    assert PRESETS["semantic"] == SPELLED_OUT
    assert preset_settings("semantic") == Settings(**SPELLED_OUT)
    assert preset_settings("paper") == Settings()
    assert preset_settings("semantic") != Settings()


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
    settings = resolve_settings(None, "semantic", temperature=0.5, strict=False, gate="sigmoid")
    assert settings.rule("relu").temperature == 0.5 and not settings.strict
    assert settings.gate == "normal_cdf"  # the default keyword value leaves the preset's
    assert settings.rule("max_pool").variant == "detached" and settings.rule("attention").temperature == 1.0


def test_bad_presets_are_refused():
    with pytest.raises(ValueError, match="unknown preset"):
        excitation_pullback(net(), torch.randn(1, 3, 12, 12, dtype=torch.float64), 0, preset="v7")
    with pytest.raises(TypeError, match="preset"):
        resolve_settings(Settings(), "semantic")
