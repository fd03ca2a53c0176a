"""The Semantic Pullbacks explainers: each against its definition, and every pullback row against its original at
the ReLU limit T -> 0."""
import pytest
import torch
import torchvision
from captum.attr import DeepLift, IntegratedGradients
from torch import nn

from utils import excitation_pullback, vanilla_gradient
from utils.analysis import averaged_fields as avg
from utils.analysis.explainers import (EXPLAINERS, PAPER_ROWS, PULLBACK_OF, ascent, available, gradcam_layer,
                                       gradient, pullback, seeded)
from utils.core.presets import PRESETS


class Tiny(nn.Module):
    """A VGG-shaped ReLU net (``features``, ``avgpool``, ``classifier``), so that Grad-CAM has its layer."""

    def __init__(self, relu=nn.ReLU, pool=nn.MaxPool2d, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), relu(), pool(2),
                                      nn.Conv2d(6, 8, 3, padding=1), relu())
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32, 16), relu(), nn.Linear(16, 5))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def tiny():
    return Tiny().double().eval()


def batch(n=2, size=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g, dtype=torch.float64) * 2 - 1, torch.arange(n) % 5


def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 4)).double().eval()


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_soft_pullback_is_the_semantic_pullback():
    model, (x, t) = tiny(), batch()
    ours = EXPLAINERS["SoftPullback"](model, x, t)
    assert torch.equal(ours, excitation_pullback(model, x, t, temperature=0.6, gate="normal_cdf", pool="detached",
                                                 pool_temperature=0.3))
    assert not torch.allclose(ours, excitation_pullback(model, x, t))  # not the v1 settings
    assert torch.equal(EXPLAINERS["Gradient"](model, x, t), vanilla_gradient(model, x, t))


@pytest.mark.parametrize("field", [pullback, gradient])
def test_ascent_steps_have_norm_alpha_and_are_not_clipped(field):
    model, (x, t) = tiny(), batch()
    previous = x
    for k in range(1, 4):
        moved = x + ascent(field, model, x, t, steps=k, alpha=20.0)
        torch.testing.assert_close((moved - previous).flatten(1).norm(dim=1), torch.full((2,), 20.0, dtype=x.dtype))
        previous = moved
    assert previous.abs().max() > 1  # no clipping to [-1, 1], no ball
    assert torch.equal(EXPLAINERS["PullbackAscent" if field is pullback else "GradientAscent"](model, x, t),
                       ascent(field, model, x, t, steps=5, alpha=20.0))


def test_smoothgrad_without_noise_is_the_gradient():
    model, (x, t) = tiny(), batch()
    smoothed = avg.smooth(gradient, model, x, t, draws=7, sigma=0.0, generator=generator())
    torch.testing.assert_close(smoothed, gradient(model, x, t), rtol=1e-12, atol=1e-14)
    noisy = avg.smooth(gradient, model, x, t, draws=7, sigma=0.15, generator=generator())
    assert not torch.allclose(noisy, gradient(model, x, t))


@pytest.mark.parametrize("field", [pullback, gradient])
def test_fusion_without_weight_noise_is_smooth(field):
    model, (x, t) = tiny(), batch()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fused = avg.fusion(field, model, x, t, models=1, draws=4, weight_sigma=0.0, generator=generator(3))
    assert torch.equal(fused, avg.smooth(field, model, x, t, draws=4, generator=generator(3)))
    two = avg.fusion(field, model, x, t, models=2, draws=3, weight_sigma=0.0, generator=generator(3))
    torch.testing.assert_close(two, avg.smooth(field, model, x, t, draws=6, generator=generator(3)))
    shaken = avg.fusion(field, model, x, t, models=2, draws=3, weight_sigma=0.1, generator=generator(3))
    assert not torch.allclose(shaken, two)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # the model is left as it was


def test_integrated_gradients_of_a_linear_model_is_x_times_w():
    model = linear()
    x, t = torch.randn(3, 3, 6, 6, dtype=torch.float64), torch.tensor([0, 2, 3])
    w = model[1].weight[t].view(3, 3, 6, 6).detach()
    torch.testing.assert_close(EXPLAINERS["IntegratedGradients"](model, x, t), x * w)
    torch.testing.assert_close(EXPLAINERS["GradientShap"](model, x, t, generator=generator()), x * w)


def test_integrated_gradients_is_captums_trapezoid_rescaled():
    """Captum's riemann_trapezoid weights sum to 1 - 1/n; ours sum to 1 (the trapezoid rule)."""
    model, (x, t) = tiny(), batch()
    captum = IntegratedGradients(model).attribute(x.clone(), baselines=0.0, target=t, n_steps=10,
                                                  method="riemann_trapezoid")
    torch.testing.assert_close(EXPLAINERS["IntegratedGradients"](model, x, t), captum / 0.9)


def test_gradient_shap_averages_the_gradient_on_the_segment():
    model, (x, t) = tiny(), batch()
    g = generator(5)
    alphas = [torch.rand(2, 1, 1, 1, generator=g, dtype=x.dtype) for _ in range(5)]
    expected = x * sum(gradient(model, a * x, t) for a in alphas) / 5
    torch.testing.assert_close(EXPLAINERS["GradientShap"](model, x, t, generator=generator(5)), expected)


class SurrogateLikeReLU(nn.ReLU):
    """A subclass of nn.ReLU, as the authors' surrogates are: Captum's DeepLift keys its rules on the exact type."""


class SurrogateLikeMaxPool(nn.MaxPool2d):
    """The same for the max-pool (their surrogate max-pool runs the hard max in the forward pass)."""


def test_deep_lift_is_what_captum_computes_without_its_rules():
    model, (x, t) = Tiny(SurrogateLikeReLU, SurrogateLikeMaxPool).double().eval(), batch()
    captum = DeepLift(model).attribute(x.clone().requires_grad_(), target=t, baselines=torch.zeros_like(x))
    torch.testing.assert_close(EXPLAINERS["DeepLift"](model, x, t), captum.detach())
    torch.testing.assert_close(EXPLAINERS["DeepLift"](model, x, t), x * vanilla_gradient(model, x, t))
    torch.testing.assert_close(EXPLAINERS["PbDeepLift"](model, x, t), x * pullback(model, x, t))


def test_pullback_rows_equal_their_originals_at_the_relu_limit(monkeypatch):
    """With the gate and pool temperatures -> 0 the semantic pullback of a ReLU net is its gradient: every
    pullback row becomes the row it softens (same seeds, same draws)."""
    monkeypatch.setitem(PRESETS, "semantic", dict(PRESETS["semantic"], temperature=1e-9, pool_temperature=1e-9))
    # Average pools: Integrated Gradients starts at the blank image, whose max-pool windows are ties (the hard
    # max's gradient picks one input, the soft pool's limit shares among them).
    model, (x, t) = Tiny(pool=nn.AvgPool2d).double().eval(), batch(size=16)
    cheap = {"SmoothPullback": dict(draws=3), "FusionPullback": dict(models=2, draws=2)}
    for soft, hard in PULLBACK_OF.items():
        if soft in cheap:
            fn = avg.smooth if soft == "SmoothPullback" else avg.fusion
            a = fn(pullback, model, x, t, **cheap[soft], generator=generator())
            b = fn(gradient, model, x, t, **cheap[soft], generator=generator())
        else:
            a, b = (seeded([name], 0, "cpu")[name](model, x, t) for name in (soft, hard))
        assert a.abs().max() > 0, soft
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10, msg=f"{soft} vs {hard}")


def test_pullback_rows_differ_from_their_originals_at_the_preset():
    model, (x, t) = tiny(), batch(size=16)
    for soft in ("SoftPullback", "PullbackShap", "IntegratedPullbacks", "PbDeepLift", "GuidedPbCam"):
        a, b = (seeded([name], 0, "cpu")[name](model, x, t) for name in (soft, PULLBACK_OF[soft]))
        assert not torch.allclose(a, b), soft


def test_random_rows_are_seeded():
    model, (x, t) = tiny(), batch()
    for name in ("GradientShap", "PullbackShap"):
        first, again, other = (seeded([name], s, "cpu")[name](model, x, t) for s in (0, 0, 1))
        assert torch.equal(first, again) and not torch.equal(first, other)


def test_gradcam_layers():
    nets = {name: torchvision.models.get_model(name, weights=None, num_classes=10)
            for name in ("resnet50", "vgg11_bn", "densenet121")}
    assert gradcam_layer(nets["resnet50"]) is nets["resnet50"].layer4[-1].conv3
    assert gradcam_layer(nets["vgg11_bn"]) is nets["vgg11_bn"].avgpool
    assert gradcam_layer(nets["densenet121"]) is nets["densenet121"].features.norm5
    assert gradcam_layer(linear()) is None
    assert available(linear()) == [n for n in EXPLAINERS if n not in ("GuidedGradCam", "GuidedPbCam")]
    assert list(EXPLAINERS)[:12] == list(PAPER_ROWS)
    with pytest.raises(ValueError, match="unknown explainers"):
        available(linear(), ["Saliency"])
