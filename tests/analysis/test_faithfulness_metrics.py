"""Attribution adapters and faithfulness metrics: exact on models whose answers we know, and the
properties the evaluation relies on on the bundled model."""
import copy

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import InputXGradient
from torch import nn

from conftest import randomize_batchnorm
from utils import excitation_pullback, load_model, vanilla_gradient
from utils.analysis.attribution import METHODS, attribute, attribute_many, explain, gradcam_layer
from utils.analysis.faithfulness import (cascading_randomisation, deletion_insertion, faithfulness_correlation,
                                         infidelity, noisy_baseline, patch_subsets, pixel_order, pixel_relevance)
from utils.analysis.stats import bootstrap_ci, spearman
from utils.data.imagenette import load_image
from utils.experiments.faithfulness.run import evaluation_images
from utils.models.nets import PoolResNet



class Linear(nn.Module):
    """Two logits: ``<w, x>`` and 0. Its gradient x input is exactly each pixel's share of logit 0."""

    def __init__(self, shape, seed=0):
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        return torch.stack([(x * self.w).flatten(1).sum(1), torch.zeros(len(x), dtype=x.dtype)], 1)


@pytest.fixture(scope="module")
def bundled():
    return load_model("bundled")


def small_images(n=3, size=64, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- explainers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_is_shaped_like_input_and_leaves_no_trace(bundled, method):
    x = small_images()
    before = [(p.requires_grad, p.grad) for p in bundled.parameters()]
    options = {"samples": 2} if method == "smoothgrad" else {"steps": 2} if method in (
        "integrated_gradients", "pullback_ascent_5") else {}
    a = attribute(bundled, x, [0, 3, 9], method, **options)
    assert a.shape == x.shape and a.dtype == x.dtype and not a.requires_grad
    assert torch.isfinite(a).all() and a.abs().sum() > 0
    assert [(p.requires_grad, p.grad) for p in bundled.parameters()] == before
    assert not x.requires_grad and x.grad is None


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_methods_agree_with_their_definitions(bundled):
    x, t = small_images(), torch.tensor([1, 2, 3])
    many = attribute_many(bundled, x, t, ["gradient_x_input", "gradient", "pullback_x_input", "pullback"])
    assert list(many) == ["gradient_x_input", "gradient", "pullback_x_input", "pullback"]
    assert torch.equal(many["gradient"], vanilla_gradient(bundled, x, t))
    assert torch.equal(many["pullback"], excitation_pullback(bundled, x, t))
    assert torch.equal(many["pullback_x_input"], many["pullback"] * x)
    # Captum's own InputXGradient agrees with gradient x input computed from our gradient.
    captum = InputXGradient(bundled).attribute(x.clone(), target=t)
    torch.testing.assert_close(captum, many["gradient_x_input"], rtol=1e-5, atol=1e-7)
    # The ascent difference after K steps is the perturbation pullback_ascent makes.
    from utils import pullback_ascent
    diff = attribute(bundled, x, t, "pullback_ascent_5", steps=2)
    torch.testing.assert_close(diff, pullback_ascent(bundled, x, t, steps=2) - x)


class GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad.clamp_min(0) * (z > 0)


class GuidedModule(nn.Module):
    def forward(self, z):
        return GuidedReLU.apply(z)


def test_captum_guided_backprop_is_right_on_reused_inplace_relus(bundled):
    """Guided Backprop (Springenberg et al.) written out: every ReLU passes relu(grad) where z > 0.
    The bundled net reuses one in-place ReLU twice per block, where stateful hooks go wrong."""
    reference = copy.deepcopy(bundled)
    for module in reference.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, GuidedModule())
    x, t = small_images(), torch.tensor([4, 5, 6])
    leaf = x.clone().requires_grad_()
    reference(leaf).gather(1, t[:, None]).sum().backward()
    torch.testing.assert_close(attribute(bundled, x, t, "guided_backprop"), leaf.grad, rtol=1e-4, atol=1e-8)


def test_gradcam_is_nonnegative_upsampled_and_split_over_channels(bundled):
    x = small_images()
    cam = attribute(bundled, x, 2, "gradcam")
    assert (cam >= 0).all() and torch.equal(cam[:, 0], cam[:, 1]) and torch.equal(cam[:, 1], cam[:, 2])
    assert gradcam_layer(bundled) is bundled.net.features[-1]


def test_gradcam_layers_of_the_paper_architectures():
    nets = {name: torchvision.models.get_model(name, weights=None) for name in ("resnet50", "vgg11_bn", "densenet121")}
    assert gradcam_layer(nets["resnet50"]) is nets["resnet50"].layer4
    assert gradcam_layer(nets["vgg11_bn"]) is nets["vgg11_bn"].features[-2]  # last ReLU before the last pool
    assert gradcam_layer(nets["densenet121"]) is nets["densenet121"].features
    with pytest.raises(ValueError, match="layer="):
        gradcam_layer(nn.Linear(2, 2))


def test_explain_speaks_quantus_numpy(bundled):
    x = small_images(2).numpy()
    out = explain(bundled, x, np.array([0, 1]), method="gradient")
    assert isinstance(out, np.ndarray) and out.shape == x.shape
    np.testing.assert_allclose(out, vanilla_gradient(bundled, torch.from_numpy(x), [0, 1]).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute(bundled, torch.from_numpy(x), 0, "lime")


# --- metrics ----------------------------------------------------------------------------------------

def test_pixel_order_breaks_ties_randomly_not_in_raster_order():
    relevance = torch.zeros(1, 4, 4)
    relevance[0, 3, 3] = 1.0
    order = pixel_order(relevance, torch.Generator().manual_seed(0))
    assert order[0, 0] == 15 and sorted(order[0].tolist()) == list(range(16))
    assert order[0, 1:].tolist() != list(range(15))


def test_deletion_insertion_curves_follow_the_pixel_count():
    """f = [<w, x>, 0] with w = 1 / (C H W) and x = 1: deleting k pixels lowers logit 0 to 1 - k / (H W),
    so the target probability after step s is sigmoid(1 - s / S)."""
    n, h, w, steps = 2, 8, 8, 4
    model = Linear((3, h, w))
    model.w.data.fill_(1.0 / (3 * h * w))
    x = torch.ones(n, 3, h, w)
    target = torch.zeros(n, dtype=torch.long)
    out = deletion_insertion(model, x, target, {"any": torch.randn(n, h, w)}, torch.Generator().manual_seed(0),
                             steps=steps, blur_sigma=1.0)["any"]
    expected = torch.sigmoid(1 - torch.arange(steps + 1) / steps).expand(n, -1)
    torch.testing.assert_close(out["deletion"], expected)
    # Insertion of a constant image into its own blur (constant inside) ends at the original.
    torch.testing.assert_close(out["insertion"][:, -1], torch.sigmoid(torch.ones(n)))
    torch.testing.assert_close(out["deletion_auc"], torch.trapezoid(expected, dx=1 / steps, dim=1))


def test_deletion_rewards_the_true_ranking_over_its_reverse():
    n, h, w = 3, 8, 8
    model = Linear((3, h, w), seed=1)
    x = small_images(n, h, seed=2)
    target = torch.zeros(n, dtype=torch.long)
    true = pixel_relevance(model.w.detach() * x)
    out = deletion_insertion(model, x, target, {"true": true, "reversed": -true}, torch.Generator().manual_seed(0),
                             steps=8)
    assert (out["true"]["deletion_auc"] < out["reversed"]["deletion_auc"]).all()
    assert (out["true"]["insertion_auc"] > out["reversed"]["insertion_auc"]).all()
    half = deletion_insertion(model, x, target, {"true": true}, torch.Generator().manual_seed(0), steps=4, budget=0.5)
    assert half["true"]["deletion"].shape == (n, 5)
    with pytest.raises(ValueError, match="budget"):
        deletion_insertion(model, x, target, {"true": true}, torch.Generator(), budget=0)


def test_faithfulness_correlation_is_one_for_the_exact_attribution_of_a_linear_model():
    n, h, w = 3, 16, 16
    model = Linear((3, h, w))
    x = small_images(n, h, seed=3)
    target = torch.zeros(n, dtype=torch.long)
    exact = pixel_relevance(model.w.detach() * x)
    noise = torch.randn(n, h, w, generator=torch.Generator().manual_seed(4))
    corr = faithfulness_correlation(model, x, target, {"exact": exact, "noise": noise},
                                    torch.Generator().manual_seed(0), runs=16, patches=3, patch=4)
    torch.testing.assert_close(corr["exact"], torch.ones(n), rtol=0, atol=1e-5)
    assert (corr["noise"].abs() < 0.9).all()


def test_patch_subsets_are_whole_patches():
    masks = patch_subsets(2, 10, 12, runs=3, patches=4, patch=4, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (2, 3, 10, 12)
    full = patch_subsets(1, 8, 8, runs=1, patches=4, patch=4, generator=torch.Generator())
    assert full.all()
    assert (masks.sum((2, 3)) <= 4 * 16).all() and (masks.sum((2, 3)) >= 4 * 4).all()


def test_infidelity_matches_its_definition():
    """Yeh et al. Def. 2.1 with the optimal scale: min_beta E[(beta I.a - (f(x) - f(x - I)))^2]."""
    n, h, w = 2, 6, 6
    model = Linear((3, h, w))
    x = small_images(n, h, seed=5)
    target = torch.zeros(n, dtype=torch.long)
    exact = (model.w.detach() * torch.ones_like(x))  # the gradient: complete for a linear model
    assert infidelity(model, x, target, exact, seed=0, samples=4).abs().max() < 1e-8
    attribution = torch.randn(x.shape, generator=torch.Generator().manual_seed(6))
    got = infidelity(model, x, target, attribution, seed=3, samples=4)
    perturb = noisy_baseline(0.1, torch.Generator().manual_seed(3))
    # Captum repeats each image `samples` times (repeat_interleave) before perturbing.
    big = x.repeat_interleave(4, 0)
    I, perturbed = perturb(big)
    with torch.no_grad():
        dot = (I * attribution.repeat_interleave(4, 0)).flatten(1).sum(1).view(n, 4)
        delta = (model(big)[:, 0] - model(perturbed)[:, 0]).view(n, 4)
    beta = (dot * delta).mean(1) / (dot * dot).mean(1)
    torch.testing.assert_close(got, ((beta[:, None] * dot - delta) ** 2).mean(1), rtol=1e-4, atol=1e-9)


def test_spearman_known_values():
    a = torch.tensor([[1.0, 5.0, 2.0, 9.0]])
    assert spearman(a, a.exp()).item() == pytest.approx(1.0)
    assert spearman(a, -a).item() == pytest.approx(-1.0)
    # ranks (0, 2, 1, 3) vs (0, 1, 2, 3): 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(a, torch.tensor([[0.0, 1.0, 2.0, 3.0]])).item() == pytest.approx(0.8)


def test_cascading_randomisation_goes_top_down_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = randomize_batchnorm(PoolResNet(widths=(4, 4, 8, 8, 8), blocks=(1, 1, 1, 1))).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stages = list(cascading_randomisation(model, stages=3, seed=0))
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    assert [k for k, _, _ in stages] == [round(len(names) * (i + 1) / 3) for i in range(3)]
    assert {total for _, total, _ in stages} == {len(names)}
    for count, _, randomised in stages:
        changed = [n for n in names if not all(torch.equal(getattr(dict(model.named_modules())[n], p),
                                                           getattr(dict(randomised.named_modules())[n], p))
                                               for p in ("weight",))]
        # exactly the last `count` layers changed (BN weights reset to 1 count as changed: ours are random)
        assert changed == names[len(names) - count:]
        assert not randomised.training
    assert stages[0][2] is not stages[1][2]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # running statistics survive, so activations keep their scale
    bn = [m for m in stages[-1][2].modules() if isinstance(m, nn.BatchNorm2d)][0]
    assert torch.equal(bn.running_var, [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][0].running_var)


def test_bootstrap_ci_brackets_the_mean():
    values = torch.arange(100, dtype=torch.float64)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high and high - low < 20


# --- on real images ---------------------------------------------------------------------------------

def test_true_attributions_beat_random_and_randomised_models_decorrelate(bundled, data_root):
    picks = evaluation_images(data_root, 8, seed=1)
    x = torch.stack([load_image(p, 128) for _, p, _ in picks])
    t = torch.tensor([label for _, _, label in picks])
    ig = pixel_relevance(attribute(bundled, x, t, "integrated_gradients", steps=8))
    noise = torch.randn(x.shape[0], 128, 128, generator=torch.Generator().manual_seed(0))
    curves = deletion_insertion(bundled, x, t, {"ig": ig, "random": noise}, torch.Generator().manual_seed(0), steps=8)
    assert curves["ig"]["deletion_auc"].mean() < curves["random"]["deletion_auc"].mean() - 0.05
    assert curves["ig"]["insertion_auc"].mean() > curves["random"]["insertion_auc"].mean() + 0.05
    gradient = pixel_relevance(vanilla_gradient(bundled, x, t)).abs()
    *_, (_, _, randomised) = cascading_randomisation(bundled, stages=2)
    random_gradient = pixel_relevance(vanilla_gradient(randomised, x, t)).abs()
    assert spearman(gradient, gradient).min() == pytest.approx(1.0)
    assert spearman(gradient, random_gradient).mean() < 0.3
