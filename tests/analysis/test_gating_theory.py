"""Call-level gates, the excitation kernel, path counts and the figure writers."""
import math

import pytest
import torch
from torch import nn

from zoo import TinyImageNet, make_zoo
from utils.figures.grids import ascent_figures, figure_path, temperature_sweep
from utils.analysis.gating import excitation_kernel, gate_kernel, gate_patterns, preactivations
from utils.models.zoo import Classifier
from utils.analysis.theory import count_paths, gated_product, gradient_agreement


def test_preactivations_cover_every_relu_call():
    model, x = make_zoo("reused")  # one ReLU module called three times
    zs = preactivations(model, x)
    assert len(zs) == 3 and zs[0].shape == (3, 4, 8, 8)
    model, x = make_zoo("functional")  # five spellings, two of them in place
    zs = preactivations(model, x)
    assert len(zs) == 5 and (zs[1] < 0).any() and (zs[3] < 0).any()  # recorded before the in-place ReLUs ran


def test_kernel_matches_explicit_per_layer_product():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).double().eval()
    x = torch.randn(4, 5, dtype=torch.float64)
    z1 = model[0](x)
    z2 = model[2](torch.relu(z1))
    for temperature, gate in ((None, lambda z: (z > 0).double()), (0.3, lambda z: torch.sigmoid(z / 0.3))):
        explicit = torch.empty(4, 4, dtype=torch.float64)
        for i in range(4):
            for j in range(4):
                explicit[i, j] = (x[i] @ x[j]) * (gate(z1[i]) @ gate(z1[j])) * (gate(z2[i]) @ gate(z2[j]))
        with torch.no_grad():
            torch.testing.assert_close(excitation_kernel(model, x, temperature=temperature, normalise=False), explicit)
            cosine = excitation_kernel(model, x, temperature=temperature)
        d = explicit.diagonal().sqrt()
        torch.testing.assert_close(cosine, explicit / (d[:, None] * d[None, :]))
        assert torch.allclose(cosine.diagonal(), torch.ones(4, dtype=torch.float64))
        per_layer = excitation_kernel(model, x, temperature=temperature, per_layer=True)
        torch.testing.assert_close(per_layer, cosine.sign() * cosine.abs() ** (1 / 3))
        # The gate factors alone: the explicit product without <x, x'>, as cosines; non-negative.
        gates_only = explicit / (x @ x.T)
        g = gates_only.diagonal().sqrt()
        torch.testing.assert_close(gate_kernel(model, x, temperature=temperature, per_layer=False),
                                   gates_only / (g[:, None] * g[None, :]))
        torch.testing.assert_close(gate_kernel(model, x, temperature=temperature),
                                   (gates_only / (g[:, None] * g[None, :])) ** (1 / 2))
        assert (gate_kernel(model, x, temperature=temperature) >= 0).all()


def test_gate_patterns_hard_and_soft():
    model, x = make_zoo("inplace")
    hard = gate_patterns(model, x)
    soft = gate_patterns(model, x, temperature=1e-9)
    assert all(set(h.unique().tolist()) <= {0.0, 1.0} for h in hard)
    assert all(torch.equal(h, s.round()) for h, s in zip(hard, soft))


def test_count_paths_against_brute_force():
    assert count_paths(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), (3,)) == 3 * 4 * 2
    # conv 3x3 (pad 1) on 4x4, 2 channels, then 2x2 max-pool and a linear read-out: every conv unit is in
    # exactly one window, each sees (row neighbours) x (column neighbours) inputs: (2+3+3+2)^2 per channel.
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 1))
    assert count_paths(net, (1, 4, 4)) == 2 * 10 ** 2
    skip = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    assert count_paths(skip, (2,)) == 4


def test_gated_product_is_the_network():
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 2, bias=False)).double()
    x = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(gated_product(mlp, x) @ x, mlp(x).detach())
    with pytest.raises(ValueError, match="bias-free"):
        gated_product(nn.Sequential(nn.Linear(4, 2)), x)


def test_gradient_agreement_rises_as_temperature_falls_per_sample():
    model, x = make_zoo("pools")
    sims = gradient_agreement(model, x, 1, [1.0, 0.1, 1e-9])
    assert sims.shape == (3, 3)
    assert (sims[0] < sims[1]).all() and (sims[1] < sims[2]).all()
    torch.testing.assert_close(sims[2], torch.ones(3, dtype=torch.float64), rtol=1e-6, atol=0)


def test_gradient_agreement_at_tied_maxima_needs_hard_pools():
    """A window whose maximum is tied: the soft pool splits the gradient at every T, the hard pool sends it to one
    slot, so only with hard pools does the pullback reach the gradient as T -> 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2)).double().eval()
    nn.init.ones_(model[2].weight)  # every window counts alike: cos = sqrt((1/4 + 3) / (1 + 3)) with one tied window
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    x[0, 0, :2, :2] = 5.0  # sample 0: a tied maximum in its first window; sample 1 has none
    soft = gradient_agreement(model, x, 0, [1e-6])[0]
    hard = gradient_agreement(model, x, 0, [1e-6], pool_temperature=None)[0]
    assert math.isclose(soft[0], math.sqrt(3.25 / 4), rel_tol=1e-9) and math.isclose(soft[1], 1.0, rel_tol=1e-9)
    torch.testing.assert_close(hard, torch.ones(2, dtype=torch.float64), rtol=1e-9, atol=0)


def test_figures_are_written_with_the_paper_names(tmp_path):
    torch.manual_seed(0)
    model = Classifier(TinyImageNet(), nn.Identity(), [f"class {i}" for i in range(1000)], "tiny").eval()
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    hits = ascent_figures(model, images, tmp_path, steps=(1, 2), progress=False)
    for method in ("pullback", "gradient"):
        for kind in ("diff", "image"):
            for k in (1, 2):
                assert figure_path(tmp_path, method, kind, "tiny", 20.0, k).stat().st_size > 10_000
        assert all(0 <= hits[method, k] <= 1 for k in (1, 2))
    assert (tmp_path / "pullback_diff" / "tiny_alpha_20_steps_2.jpg").exists()
    paths = temperature_sweep(model, images[:2], [0, 497], tmp_path, temperatures=(0.3, 1.0), steps=2)
    assert [p.name for p in paths] == ["tiny_pullback.jpg", "tiny_ascent_alpha_20_steps_2.jpg"]
