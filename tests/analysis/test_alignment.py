import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.analysis.alignment import (cosine, focus, mosaic, pairwise_cosines, perturbation,
                                      pullback_gradient_similarity, scale_to_norm, transfer)
from zoo import make_zoo


def test_cosine_is_per_sample_and_scale_free():
    a = torch.randn(4, 3, 5, 5)
    b = torch.randn(4, 3, 5, 5)
    expected = torch.tensor([F.cosine_similarity(a[i].flatten().double(), b[i].flatten().double(), dim=0)
                             for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close(cosine(a, b), expected)
    torch.testing.assert_close(cosine(a, 3.0 * a), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(cosine(a, -a), -torch.ones(4, dtype=torch.float64))
    zero = torch.zeros_like(a)
    assert torch.equal(cosine(a, zero), torch.zeros(4, dtype=torch.float64))


def test_similarity_tends_to_one_as_temperature_falls_and_drops_at_high_temperature():
    model, x = make_zoo("reused")  # ReLUs only: no tied maxima, so T -> 0 gives the gradient exactly
    sims = pullback_gradient_similarity(model, x, 2, temperatures=(1e-4, 3.0), steps=2, alpha=1.0, eps=5.0)
    assert set(sims) == {1e-4, 3.0}
    for kind in ("field", "ascent"):
        assert sims[1e-4][kind].shape == (3,)
        assert (sims[1e-4][kind] > 0.999).all()
        assert (sims[3.0][kind] < sims[1e-4][kind]).all()


def test_pairwise_cosines_cover_each_pair_once():
    f = {name: torch.randn(2, 3, 4, 4) for name in "abc"}
    pairs = pairwise_cosines(f)
    assert list(pairs) == [("a", "b"), ("a", "c"), ("b", "c")]
    torch.testing.assert_close(pairs[("a", "c")], cosine(f["a"], f["c"]))
    with pytest.raises(ValueError, match="share one shape"):
        pairwise_cosines({"a": torch.zeros(1, 3), "b": torch.zeros(2, 3)})


def test_scale_to_norm_sets_each_sample_norm():
    delta = torch.randn(3, 3, 8, 8)
    scaled = scale_to_norm(delta, 20.0)
    torch.testing.assert_close(scaled.flatten(1).norm(dim=1), torch.full((3,), 20.0))
    torch.testing.assert_close(cosine(scaled, delta), torch.ones(3, dtype=torch.float64))


def test_transfer_on_a_linear_model_matches_the_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double().eval()
    x = 0.1 * torch.randn(4, 3, 2, 2, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0])
    w = model[1].weight.detach()
    delta = 0.2 * w[target].view(4, 3, 2, 2)  # toward each target's weight vector; stays inside [-1, 1]
    out = transfer(model, x, delta, target)
    lp = lambda z: F.log_softmax(model(z), 1).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(out["logp_rise"], lp(x + delta) - lp(x))
    assert (out["logp_rise"] > 0).all()
    became = (model(x + delta).argmax(1) == target) & (model(x).argmax(1) != target)
    assert torch.equal(out["became"], became)
    none = transfer(model, x, torch.zeros_like(x), target)
    assert torch.equal(none["logp_rise"], torch.zeros(4, dtype=torch.float64)) and not none["became"].any()


def test_mosaic_places_each_image_in_its_quadrant():
    images = torch.stack([torch.full((3, 8, 6), float(i)) for i in range(4)])
    m = mosaic(images)
    assert m.shape == (3, 8, 6)
    for q, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        block = m[:, r * 4:(r + 1) * 4, c * 3:(c + 1) * 3]
        assert torch.allclose(block, torch.full_like(block, float(q)))
    with pytest.raises(ValueError, match="four images"):
        mosaic(images[:3])


def test_focus_is_the_positive_share_in_the_quadrant():
    a = torch.zeros(3, 3, 4, 4)
    a[0, :, 2:, :2] = 1.0  # all positive relevance in quadrant 2
    a[1] = 1.0  # uniform
    a[2] = torch.randn(3, 4, 4)
    f = focus(a, [2, 0, 3])
    assert f[0] == 1.0 and f[1] == 0.25
    rel = a[2].double().sum(0).clamp_min(0)
    torch.testing.assert_close(f[2], rel[2:, 2:].sum() / rel.sum())
    assert focus(-torch.ones(1, 3, 4, 4), [0]).isnan().all()
    with pytest.raises(ValueError, match="quadrant"):
        focus(a, [0, 1, 4])


def test_perturbation_is_the_ascent_displacement():
    model, x = make_zoo("reused")
    x = x.clamp(-1, 1)  # ascent clamps to [-1, 1]; from inside, the clamp only shortens the displacement
    delta = perturbation(model, x, 1, "gradient", steps=3, alpha=0.5, eps=1.0)
    assert delta.shape == x.shape
    assert (delta.flatten(1).norm(dim=1) <= 1.0 + 1e-9).all()
    assert (delta.flatten(1).norm(dim=1) > 0.5).all()
