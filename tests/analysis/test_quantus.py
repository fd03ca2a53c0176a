"""Our faithfulness metrics against Quantus' implementations, configured the same way (Quantus is a
test-only dependency). Where the two define a metric differently, the check is on a case where both
definitions give the same exact answer, and the difference is stated in our metric's docstring."""
import numpy as np
import pytest
import torch
from torch import nn

quantus = pytest.importorskip("quantus")

from utils.analysis.attribution import attribute, explain  # noqa: E402
from utils.analysis.faithfulness import (deletion_insertion, faithfulness_correlation, infidelity,  # noqa: E402
                                         pixel_relevance)
from utils.models.nets import PoolResNet  # noqa: E402


@pytest.fixture(scope="module")
def small():
    """A random PoolResNet on 64 px inputs in [-1, 1] (any multiple of 32 works) and one target per image."""
    torch.manual_seed(0)
    model = PoolResNet().eval()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target


@pytest.fixture(scope="module")
def linear():
    """A linear classifier: every subset's logit drop is exactly that subset's gradient x input."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    return model, x, torch.tensor([0, 1, 2, 3])


def test_deletion_curve_equals_quantus_pixel_flipping(small):
    """Quantus' PixelFlipping with baseline 0 (mid-grey), softmax probabilities and whole pixels per step (the
    relevance repeated over channels, so a pixel's three values sort together) samples our deletion curve after its
    first point (Quantus does not record the unperturbed image)."""
    model, x, target = small
    relevance = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(2))  # continuous: no ties
    steps = 16
    ours = deletion_insertion(model, x, target, {"r": relevance}, torch.Generator().manual_seed(0), steps=steps)
    metric = quantus.PixelFlipping(features_in_step=64 * 64 // steps, perturb_baseline=0.0, normalise=False,
                                   abs=False, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=relevance[:, None].expand_as(x).numpy(),
                    device="cpu", softmax=True)
    # Quantus checks the step against H * W but flips channel values (3 per pixel): every third of its points
    # is a whole number of our steps.
    theirs = torch.tensor(np.array(theirs), dtype=torch.float32)[:, 2::3]
    torch.testing.assert_close(ours["r"]["deletion"][:, 1:], theirs,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_faithfulness_correlation_agrees_on_a_linear_model(linear, sign):
    """On a linear model, gradient x input predicts every subset's logit drop exactly: both implementations give
    correlation +1 (and -1 for the negated map) whatever subsets they draw. Ours draws whole pixels (square
    patches, here 1 x 1) and sums the channel-summed relevance over them; Quantus draws single channel values
    and sums the per-channel attribution, so it is given the attribution before the channel sum."""
    model, x, target = linear
    a = sign * attribute(model, x, target, "gradient_x_input")
    ours = faithfulness_correlation(model, x, target, {"a": pixel_relevance(a)}, torch.Generator().manual_seed(0),
                                    runs=20, patches=6, patch=1)["a"]
    np.random.seed(0)
    metric = quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=6, perturb_baseline=0.0, abs=False,
                                             normalise=False, return_aggregate=False, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(),
                    a_batch=a.detach().numpy(), device="cpu", softmax=False)
    torch.testing.assert_close(ours.float(), torch.full((4,), sign), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(theirs, dtype=torch.float32), torch.full((4,), sign), atol=1e-4, rtol=0)


def test_infidelity_is_zero_for_the_gradient_of_a_linear_model_in_both(linear):
    """Yeh's infidelity of the exact gradient of a linear model is 0 for any perturbation: ours (Gaussian noisy
    baseline, optimal rescaling, via Captum) and Quantus' (cumulative patch replacement by a baseline, no
    rescaling) agree there, and both are positive for a map that is not the gradient."""
    model, x, target = linear
    grad = attribute(model, x, target, "gradient")
    wrong = attribute(model, x, target, "gradient_x_input")
    metric = quantus.Infidelity(perturb_baseline=0.0, perturb_patch_sizes=[4], n_perturb_samples=2,
                                normalise=False, abs=False, disable_warnings=True)
    for a, zero in ((grad, True), (wrong, False)):
        ours = infidelity(model, x, target, a, seed=0, samples=4)
        theirs = torch.tensor(metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(),
                                     a_batch=a.detach().numpy(), device="cpu", softmax=False))
        if zero:
            assert ours.abs().max() < 1e-6 and theirs.abs().max() < 1e-6
        else:
            assert (ours > 1e-4).all() and (theirs > 1e-4).all()


def test_explain_works_as_quantus_explain_func(small):
    """A real Quantus call with our adapter computes the same attributions as passing them in: identical scores
    when Quantus draws the same subsets."""
    model, x, target = small
    kwargs = dict(nr_runs=5, subset_size=64, perturb_baseline=0.0, abs=False, normalise=False,
                  return_aggregate=False, disable_warnings=True)
    np.random.seed(3)
    via_explain = quantus.FaithfulnessCorrelation(**kwargs)(
        model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=None, explain_func=explain,
        explain_func_kwargs={"method": "pullback"}, device="cpu")
    a = explain(model, x.numpy(), target.numpy(), method="pullback")
    assert isinstance(a, np.ndarray) and a.shape == tuple(x.shape)
    np.random.seed(3)
    given = quantus.FaithfulnessCorrelation(**kwargs)(
        model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=a, device="cpu")
    assert len(via_explain) == 3 and np.all(np.isfinite(via_explain))
    np.testing.assert_allclose(via_explain, given, rtol=1e-5, atol=1e-6)
