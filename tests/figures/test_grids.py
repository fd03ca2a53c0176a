"""The ascent grids' file names at other temperatures, and the pullback-vs-gradient cosines over a grid."""
import pytest
import torch
from torch import nn

from utils.figures.grids import (AscentGrids, ascent_figures, figure_path, grid_cosines, perturbation_cosines)
from utils.models.zoo import Classifier
from zoo import TinyImageNet


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = Classifier(TinyImageNet(), nn.Identity(), [f"class {i}" for i in range(1000)], "tiny").eval()
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    return model, images


def test_paper_temperature_keeps_the_paper_names(tmp_path):
    assert figure_path(tmp_path, "pullback", "diff", "resnet50", 20.0, 5).name == "resnet50_alpha_20_steps_5.jpg"
    assert figure_path(tmp_path, "pullback", "diff", "resnet50", 20.0, 5, temperature=0.3) == \
        figure_path(tmp_path, "pullback", "diff", "resnet50", 20.0, 5)
    t1 = figure_path(tmp_path, "pullback", "diff", "bundled", 20.0, 5, temperature=1.0)
    assert t1 == tmp_path / "pullback_diff" / "bundled_temperature_1_alpha_20_steps_5.jpg"
    assert figure_path(tmp_path, "pullback", "image", "bundled", 20.0, 5, 1.0).name == \
        "bundled_temperature_1_alpha_20_steps_5.jpg"
    assert figure_path(tmp_path, "pullback", "diff", "bundled", 20.0, 1, 0.05).name == \
        "bundled_temperature_0.05_alpha_20_steps_1.jpg"
    # the vanilla gradient does not depend on T: its figures keep one name
    assert figure_path(tmp_path, "gradient", "diff", "bundled", 20.0, 5, 1.0).name == "bundled_alpha_20_steps_5.jpg"


def test_cosines_of_known_perturbations():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 6, 3, 8, 8, generator=g)
    assert torch.allclose(perturbation_cosines(a, a), torch.ones(5, 6, dtype=torch.float64))
    assert torch.allclose(perturbation_cosines(a, -3 * a), -torch.ones(5, 6, dtype=torch.float64))
    b = torch.randn(5, 6, 3, 8, 8, generator=g)
    orthogonal = b - (a * b).flatten(2).sum(-1)[..., None, None, None] / a.flatten(2).pow(2).sum(-1)[..., None, None, None] * a
    assert perturbation_cosines(a, orthogonal).abs().max() < 1e-6
    assert perturbation_cosines(torch.zeros_like(a), a).eq(0).all()
    with pytest.raises(ValueError):
        perturbation_cosines(a, a[:, :5])


def test_grid_cosines_reads_the_grids():
    images = torch.zeros(2, 3, 4, 4)
    pull = torch.randn(2, 3, 3, 4, 4)
    grad = torch.randn(2, 3, 3, 4, 4)
    result = AscentGrids({("pullback", 5): 1.0}, images=images, targets=[0, 1, 2], temperature=1.0,
                         perturbed={("pullback", 5): pull, ("gradient", 5): grad})
    stats = grid_cosines(result, steps=5)
    expected = perturbation_cosines(pull, grad)
    assert torch.equal(stats["cells"], expected)
    assert stats["mean"] == pytest.approx(expected.mean().item())
    assert stats["min"] <= stats["median"] <= stats["max"] and stats["temperature"] == 1.0
    identical = AscentGrids(images=images, targets=[0, 1, 2], perturbed={("pullback", 5): pull, ("gradient", 5): pull})
    assert grid_cosines(identical)["mean"] == pytest.approx(1.0)
    with pytest.raises(KeyError, match="no pullback grid after 1 steps"):
        grid_cosines(result, steps=1)
    other = AscentGrids(images=images + 1, targets=[0, 1, 2], perturbed={("gradient", 5): grad})
    with pytest.raises(ValueError, match="different images"):
        grid_cosines(result, other)


def test_temperature_grids_and_their_cosines(tiny, tmp_path):
    model, images = tiny
    paper = ascent_figures(model, images, tmp_path, steps=(1, 2), progress=False)
    assert isinstance(paper, dict) and set(paper) == {(m, k) for m in ("pullback", "gradient") for k in (1, 2)}
    assert all(0 <= rate <= 1 for rate in paper.values())  # still the hit rates, as before
    assert paper.perturbed["pullback", 2].shape == (5, 6, 3, 32, 32)
    assert set(paper.paths) == {figure_path(tmp_path, m, kind, "tiny", 20.0, k)
                                for m in ("pullback", "gradient") for kind in ("diff", "image") for k in (1, 2)}

    warm = ascent_figures(model, images, tmp_path, steps=(2,), temperature=1.0, methods=("pullback",), progress=False)
    for kind, folder in (("diff", "pullback_diff"), ("image", "pullback")):
        path = tmp_path / folder / "tiny_temperature_1_alpha_20_steps_2.jpg"
        assert path.stat().st_size > 10_000 and path in warm.paths
    assert set(warm) == {("pullback", 2)}
    # T = 1 pullbacks against the T = 0.3 run's gradient grid, without computing the gradient again
    stats = grid_cosines(warm, paper, steps=2)
    assert stats["cells"].shape == (5, 6) and -1 <= stats["min"] <= stats["max"] <= 1
    assert stats["temperature"] == 1.0
    # the same perturbations computed twice are identical: cosine 1
    again = ascent_figures(model, images, tmp_path / "again", steps=(2,), temperature=1.0, methods=("pullback",),
                           progress=False)
    assert torch.equal(again.perturbed["pullback", 2], warm.perturbed["pullback", 2])

    # as T -> 0 the pullback becomes the gradient, and so do the paths: cosine ~1
    cold = ascent_figures(model, images, tmp_path / "cold", steps=(2,), temperature=1e-6, progress=False)
    assert grid_cosines(cold, steps=2)["min"] > 0.9999
    assert grid_cosines(cold, steps=2)["mean"] > grid_cosines(warm, paper, steps=2)["mean"]
