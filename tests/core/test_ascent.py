"""pullback_ascent: step norms, the eps ball, the [-1, 1] box, and that ascent ascends."""
import pytest
import torch
from torch import nn

from utils import pullback_ascent, vanilla_gradient
from utils.core.ascent import ascent_step, project_l2


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 4)).eval()


def norms(v):
    return v.flatten(1).norm(dim=1)


def test_raw_step_has_norm_alpha():
    x = torch.randn(3, 3, 16, 16)
    g = torch.randn(3, 3, 16, 16) * torch.tensor([1e-6, 1.0, 1e4]).view(3, 1, 1, 1)
    torch.testing.assert_close(norms(ascent_step(x, g, 20.0) - x), torch.full((3,), 20.0))
    assert torch.equal(ascent_step(x, torch.zeros_like(x), 20.0), x)


@pytest.mark.parametrize("method", ["pullback", "gradient"])
def test_unconstrained_steps_have_norm_alpha(method):
    """Far from the box faces and with a large ball, every iterate moves by exactly alpha."""
    model, x = small_cnn(), 0.01 * torch.randn(2, 3, 16, 16)
    path = pullback_ascent(model, x, [1, 2], steps=4, alpha=0.05, eps=1e3, method=method, return_trajectory=True)
    assert path.shape == (5, 2, 3, 16, 16) and torch.equal(path[0], x)
    for k in range(4):
        torch.testing.assert_close(norms(path[k + 1] - path[k]), torch.full((2,), 0.05), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["pullback", "gradient"])
def test_iterates_stay_in_ball_and_box(method):
    model, x = small_cnn(), torch.rand(3, 3, 16, 16) * 2 - 1
    path = pullback_ascent(model, x, 0, steps=10, alpha=20.0, eps=25.0, method=method, return_trajectory=True)
    assert path.min() >= -1 and path.max() <= 1
    assert (norms((path - x).flatten(0, 1)) <= 25.0 * (1 + 1e-6)).all()
    assert torch.equal(path[-1], pullback_ascent(model, x, 0, steps=10, alpha=20.0, eps=25.0, method=method))


def test_projection_is_onto_the_ball():
    origin, x = torch.zeros(2, 5), torch.tensor([[3.0, 4.0, 0, 0, 0], [0.3, 0.4, 0, 0, 0]])
    torch.testing.assert_close(project_l2(x, origin, 1.0), torch.tensor([[0.6, 0.8, 0, 0, 0], [0.3, 0.4, 0, 0, 0]]))


@pytest.mark.parametrize("method", ["gradient", "pullback"])
def test_target_logit_rises(method):
    model = small_cnn(1)
    x = torch.rand(4, 3, 16, 16) * 1.6 - 0.8
    targets = torch.tensor([0, 1, 2, 3])
    before = model(x).gather(1, targets[:, None])
    after = model(pullback_ascent(model, x, targets, steps=5, alpha=0.5, eps=10.0, method=method))
    assert (after.gather(1, targets[:, None]) > before).all()


def test_vanilla_ascent_is_sign_free_gradient_step():
    """One unconstrained vanilla step is x + alpha * g / ||g|| with g the vanilla gradient."""
    model, x = small_cnn(2), 0.01 * torch.randn(2, 3, 16, 16)
    g = vanilla_gradient(model, x, 3)
    expected = x + 0.1 * g / norms(g).view(-1, 1, 1, 1)
    torch.testing.assert_close(pullback_ascent(model, x, 3, steps=1, alpha=0.1, method="gradient"), expected)


def test_bad_arguments():
    model, x = small_cnn(), torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="method"):
        pullback_ascent(model, x, 0, method="guided")
    with pytest.raises(ValueError, match="steps"):
        pullback_ascent(model, x, 0, steps=-1)
    with pytest.raises(ValueError, match="alpha"):
        pullback_ascent(model, x, 0, alpha=0)


@pytest.mark.parametrize("method", ["pullback", "gradient"])
def test_initial_direction_replaces_only_the_first_backward_pass(method):
    """Handing the ascent its own field at x changes nothing; handing it another direction moves step one."""
    from utils.analysis.alignment import field

    model, x = small_cnn(), torch.rand(2, 3, 16, 16) * 2 - 1
    own = field(model, x, [1, 2], method)
    plain = pullback_ascent(model, x, [1, 2], steps=3, method=method, return_trajectory=True)
    reused = pullback_ascent(model, x, [1, 2], steps=3, method=method, return_trajectory=True, initial_direction=own)
    assert torch.equal(plain, reused)
    other = torch.randn_like(x)
    moved = pullback_ascent(model, x, [1, 2], steps=1, alpha=0.05, eps=1e3, method=method, initial_direction=other)
    torch.testing.assert_close(moved, ascent_step(x, other, 0.05).clamp(-1, 1))
    with pytest.raises(ValueError, match="shaped like x"):
        pullback_ascent(model, x, [1, 2], steps=1, method=method, initial_direction=other[:1])
