"""What a careful user still hits: each case either gives the right field or a clear error, never a silent wrong."""
import copy
import threading

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from torch import nn

from utils import (Settings, UnsupportedNonlinearityError, excitation_pullback, pullback_ascent, soft_backward,
                   vanilla_gradient)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()


def x6(seed=1):
    return torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


class Overlapping(nn.Module):
    """A model whose forward makes two threads' pullbacks overlap, the first one in finishing first: thread 0
    enters, thread 1 enters, thread 0 leaves, thread 1 leaves."""

    def __init__(self):
        super().__init__()
        self.net, self.entered, self.left = mlp(), [threading.Event(), threading.Event()], threading.Event()

    def forward(self, x):
        role = int(threading.current_thread().name)
        self.entered[role].set()
        if role == 0:
            assert self.entered[1].wait(10)
        else:
            assert self.left.wait(10)
        return self.net(x)


def test_overlapping_pullbacks_in_threads_leave_requires_grad_as_it_was():
    model, x = Overlapping().double().eval(), x6()
    model.net[0].bias.requires_grad_(False)  # a mix of frozen and trainable parameters
    flags = [p.requires_grad for p in model.parameters()]
    results, errors = {}, []

    def work(role):
        try:
            if role == 1:
                assert model.entered[0].wait(10)  # thread 0 is inside its pullback (its parameters frozen)
            results[role] = excitation_pullback(model, x, 1)
            if role == 0:
                model.left.set()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(role,), name=str(role)) for role in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    expected = excitation_pullback(model.net, x, 1)
    assert torch.equal(results[0], expected) and torch.equal(results[1], expected)
    assert [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("alpha, eps", [(float("inf"), 100.0), (float("nan"), 1.0), (20.0, float("nan")),
                                        (-1.0, 1.0), (20.0, 0.0)])
def test_ascent_refuses_a_step_or_radius_that_is_not_a_positive_number(alpha, eps):
    model, x = nn.Sequential(nn.Flatten(), mlp().float()), torch.rand(2, 1, 2, 3) * 2 - 1
    with pytest.raises(ValueError, match="alpha must be a finite number > 0 and eps a number > 0"):
        pullback_ascent(model, x, 1, steps=1, alpha=alpha, eps=eps)


def test_ascent_with_an_infinite_radius_is_unconstrained():
    model, x = nn.Sequential(nn.Flatten(), mlp().float()), torch.rand(2, 1, 2, 3) * 0.2 - 0.1
    step = pullback_ascent(model, x, 1, steps=1, alpha=0.05, eps=float("inf"))
    g = excitation_pullback(model, x, 1)
    torch.testing.assert_close(step, x + 0.05 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1))


def test_settings_refuse_other_keywords_beside_them():
    s = Settings(temperature=0.3)
    model, x = mlp(), x6()
    assert torch.equal(excitation_pullback(model, x, 1, settings=s), excitation_pullback(model, x, 1))
    with pytest.raises(TypeError, match="cannot be combined with .*temperature"):
        excitation_pullback(model, x, 1, settings=s, temperature=5.0)
    with pytest.raises(TypeError, match="cannot be combined with .*pool"):
        excitation_pullback(model, x, 1, settings=s, pool="detached")
    with pytest.raises(TypeError, match="must be a Settings"):
        excitation_pullback(model, x, 1, settings={"temperature": 0.3})


@pytest.mark.parametrize("spelling", [dict(soft_maxpool=False), dict(pool="hard"), dict(layer_norm="exact"),
                                      dict(rules={"max_pool": None})])
def test_each_choice_has_one_spelling(spelling):
    """Off is the kind's field set to None, nothing else (pool_temperature=None, layer_norm=None)."""
    with pytest.raises((TypeError, ValueError)):
        excitation_pullback(mlp(), x6(), 1, **spelling)


def test_missing_target_is_named():
    with pytest.raises(TypeError, match="target is required"):
        excitation_pullback(mlp(), x6(), None)
    with pytest.raises(TypeError, match="target is required"):
        vanilla_gradient(mlp(), x6(), None)


def test_inference_mode_and_inference_tensors_get_a_clear_message():
    model, x = mlp(), x6()
    flags = [p.requires_grad for p in model.parameters()]
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="inside torch.inference_mode"):
            excitation_pullback(model, x, 1)
        frozen_x = x.clone()
    assert frozen_x.is_inference()  # an input made there is taken as it is
    torch.testing.assert_close(excitation_pullback(model, frozen_x, 1), excitation_pullback(model, x, 1))
    torch.testing.assert_close(vanilla_gradient(model, frozen_x, 1), vanilla_gradient(model, x, 1))
    assert [p.requires_grad for p in model.parameters()] == flags
    with torch.inference_mode():
        made_there = mlp()
    with pytest.raises(RuntimeError, match="parameters or buffers are inference tensors.*outside"):
        excitation_pullback(made_there, x, 1)


class Head(nn.Module):
    """``Linear(act(x * 1.0))`` on (N, 6) inputs, or through a (1, 2, 3) image for 2-D layers."""

    def __init__(self, act, image=False):
        super().__init__()
        self.act, self.image, self.fc = act, image, nn.Linear(4 if image else 6, 3)

    def forward(self, x):
        y = x * 1.0
        return self.fc(self.act(y.view(-1, 1, 2, 3) if self.image else y).flatten(1))


OFF_CASES = [(nn.ReLU(), "temperature"), (nn.MaxPool2d((1, 2), stride=1), "pool_temperature"),
             (nn.SiLU(), "silu_temperature"), (nn.GELU(), "gelu_temperature"), (nn.LayerNorm(6), "layer_norm"),
             (nn.Softmax(dim=-1), "attention_temperature"), (nn.Hardswish(), "hardswish_temperature"),
             (nn.LeakyReLU(0.1), "leaky_relu_temperature"), (nn.ReLU6(), "hardtanh_temperature")]


@pytest.mark.parametrize("act, keyword", OFF_CASES, ids=[k for _, k in OFF_CASES])
def test_none_is_off_for_every_kind(act, keyword):
    torch.manual_seed(0)
    model = Head(act, image=isinstance(act, nn.MaxPool2d)).double().eval()
    nn.init.normal_(model.fc.weight)
    x = x6() * 4
    vanilla = vanilla_gradient(model, x, 1)
    assert not torch.allclose(excitation_pullback(model, x, 1), vanilla, rtol=1e-3)
    torch.testing.assert_close(excitation_pullback(model, x, 1, **{keyword: None}), vanilla)
    kind = {"temperature": "relu", "pool_temperature": "max_pool", "layer_norm": "layer_norm"}.get(
        keyword, keyword.replace("_temperature", ""))
    assert Settings(**{keyword: None}).rule(kind) is None


@pytest.mark.parametrize("act, keyword", [(nn.LeakyReLU(0.1), "leaky_relu_temperature"),
                                          (nn.ReLU6(), "hardtanh_temperature"),
                                          (nn.MaxPool2d((1, 2), stride=1), "pool_temperature")])
def test_relu_temperature_is_followed_by_default_and_by_name(act, keyword):
    torch.manual_seed(0)
    model, x = Head(act, image=isinstance(act, nn.MaxPool2d)).double().eval(), x6() * 4
    apart = excitation_pullback(model, x, 1, temperature=2.0, **{keyword: 0.7})
    for following in ({}, {keyword: "relu"}):
        torch.testing.assert_close(excitation_pullback(model, x, 1, temperature=0.7, **following), apart)
    with pytest.raises(ValueError, match=f"{keyword} must be a number > 0, None"):
        Settings(**{keyword: "exact"})


class HandReLU(torch.autograd.Function):
    """A ReLU with its own backward: no rule can soften it."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * (z > 0)


def test_custom_autograd_function_is_named_unless_strict_is_off():
    model, x = Head(nn.Identity()).double().eval(), x6()
    model.act.forward = HandReLU.apply
    with pytest.raises(UnsupportedNonlinearityError, match="HandReLU .*custom torch.autograd.Function"):
        excitation_pullback(model, x, 1)
    torch.testing.assert_close(excitation_pullback(model, x, 1, strict=False), vanilla_gradient(model, x, 1))
    assert "forward" not in model.__dict__


class PlainCheckpoint(nn.Module):
    """``fc2(relu(fc1(x)))`` with the ReLU inside ``checkpoint`` of a plain function (no module inside)."""

    def __init__(self, reentrant=None):
        super().__init__()
        self.fc1, self.fc2, self.reentrant = nn.Linear(6, 8), nn.Linear(8, 3), reentrant

    def forward(self, x):
        z = self.fc1(x)
        if self.reentrant is None:
            return self.fc2(F.relu(z))
        return self.fc2(checkpoint.checkpoint(lambda t: F.relu(t) * 1.0, z, use_reentrant=self.reentrant))


def field_by_backward(model, x, target=1, **settings):
    with soft_backward(model, **settings):
        leaf = x.clone().requires_grad_()
        model(leaf)[:, target].sum().backward()  # (reentrant checkpoints take .backward(), not autograd.grad)
    return leaf.grad


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_of_a_plain_function_gets_the_rules(reentrant):
    torch.manual_seed(0)
    plain = PlainCheckpoint().double().eval()
    model = PlainCheckpoint(reentrant).double().eval()
    model.load_state_dict(plain.state_dict())
    x = x6()
    expected = excitation_pullback(plain, x, 1, temperature=0.5)
    assert not torch.allclose(expected, vanilla_gradient(plain, x, 1))
    torch.testing.assert_close(field_by_backward(model, x, temperature=0.5), expected)
    if not reentrant:
        torch.testing.assert_close(excitation_pullback(model, x, 1, temperature=0.5), expected)


def test_checkpoint_recomputed_on_another_thread_gets_the_rules():
    """A CUDA backward pass runs on the device's own thread, where no context is open: the recomputation must take
    the settings of the forward call that made the checkpoint (here: the backward run from another thread)."""
    torch.manual_seed(0)
    plain = PlainCheckpoint().double().eval()
    model = PlainCheckpoint(False).double().eval()
    model.load_state_dict(plain.state_dict())
    x = x6()
    leaf = x.clone().requires_grad_()
    with soft_backward(model, temperature=0.5):
        out = model(leaf)[:, 1].sum()
        th = threading.Thread(target=out.backward)
        th.start()
        th.join()
    torch.testing.assert_close(leaf.grad, excitation_pullback(plain, x, 1, temperature=0.5))


def test_deep_copy_made_inside_the_block_is_its_own_model():
    model, x = mlp(), x6()
    with soft_backward(model):
        twin = copy.deepcopy(model)
    assert "forward" not in model.__dict__
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
        expected = twin[2](twin[1](twin[0](x)))
        assert torch.equal(twin(x), expected) and not torch.allclose(model(x), expected)
    torch.testing.assert_close(excitation_pullback(twin, x, 1), excitation_pullback(copy.deepcopy(twin), x, 1))


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(x)


def test_a_submodule_called_directly_inside_the_block_gets_the_rules():
    clf, x = Wrapped().eval(), x6()
    expected = excitation_pullback(clf.net, x, 1, temperature=0.5)
    assert not torch.allclose(expected, vanilla_gradient(clf.net, x, 1))
    with soft_backward(clf, temperature=0.5):
        leaf = x.clone().requires_grad_()
        (direct,) = torch.autograd.grad(clf.net(leaf)[:, 1].sum(), leaf)
        leaf = x.clone().requires_grad_()
        (through,) = torch.autograd.grad(clf(leaf)[:, 1].sum(), leaf)
    torch.testing.assert_close(direct, expected)
    torch.testing.assert_close(through, expected)
    torch.testing.assert_close(grad_of(clf.net, x), vanilla_gradient(clf.net, x, 1))  # after the block: plain


def grad_of(model, x, target=1):
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(model(leaf)[:, target].sum(), leaf)
    return g


def test_torch_func_and_double_backward_are_refused_clearly():
    model, x = mlp(), x6()
    with soft_backward(model):
        with pytest.raises(RuntimeError, match="torch.func transforms .* cannot run through soft_backward"):
            torch.func.grad(lambda t: model(t)[:, 1].sum())(x)
        leaf = x.clone().requires_grad_()
        with pytest.raises(RuntimeError, match="create_graph=True"):
            torch.autograd.grad(model(leaf)[:, 1].sum(), leaf, create_graph=True)
    assert "forward" not in model.__dict__


class Spelled(nn.Module):
    """``act(x * 1.0)`` for an activation written as a function, then a linear readout."""

    def __init__(self, spelling):
        super().__init__()
        self.spelling, self.fc = spelling, nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.spelling(x * 1.0))


def _mul_in_place(z):
    y = z * 1.0
    return y.mul_(y > 0)


RELU_SPELLINGS = {
    "maximum(z, zeros_like(z))": lambda z: torch.maximum(z, torch.zeros_like(z)),
    "where(z > 0, z, zeros_like(z))": lambda z: torch.where(z > 0, z, torch.zeros_like(z)),
    "where(z >= 0, z, 0)": lambda z: torch.where(z >= 0, z, 0),
    "where(z < 0, 0, z)": lambda z: torch.where(z < 0, 0.0, z),
    "z.where(z > 0, 0)": lambda z: z.where(z > 0, 0.0),
    "z * (z > 0)": lambda z: z * (z > 0),
    "(z > 0).float() * z": lambda z: (z > 0).float() * z,
    "z.mul_(z > 0)": _mul_in_place,
    "max(z, new_zeros)": lambda z: torch.max(z, z.new_zeros(())),
}
CLAMP_SPELLINGS = {  # spelling, its gate (T = 0.3)
    "z.clamp(0, 6)": (lambda z: z.clamp(0, 6), lambda z: torch.sigmoid(z / 0.3) * torch.sigmoid((6 - z) / 0.3)),
    "clamp(z, -1, 1)": (lambda z: torch.clamp(z, -1.0, 1.0),
                        lambda z: torch.sigmoid((z + 1) / 0.3) * torch.sigmoid((1 - z) / 0.3)),
    "z.clamp(max=1)": (lambda z: z.clamp(max=1.0), lambda z: torch.sigmoid((1 - z) / 0.3)),
    "clamp_min(z, 0.5)": (lambda z: torch.clamp_min(z, 0.5), lambda z: torch.sigmoid((z - 0.5) / 0.3)),
}
UNRECOGNISED = {
    "where(z > 0, z, 0.1 * z)": lambda z: torch.where(z > 0, z, 0.1 * z),
    "z * (z > 1)": lambda z: z * (z > 1),
    "maximum(z, -z)": lambda z: torch.maximum(z, -z),
    "clamp(z, min=tensor)": lambda z: z.clamp(min=torch.full_like(z, 0.5)),
    "hardshrink(z, 0.5)": lambda z: F.hardshrink(z, 0.5),
}


def spelled(spelling, seed=0):
    torch.manual_seed(seed)
    return Spelled(spelling).double().eval(), x6() * 3


@pytest.mark.parametrize("name", RELU_SPELLINGS)
def test_relu_spellings_are_softened(name):
    model, x = spelled(RELU_SPELLINGS[name])
    relu, _ = spelled(F.relu)
    with torch.no_grad():
        assert torch.equal(model(x), relu(x))
    expected = excitation_pullback(relu, x, 1)
    assert not torch.allclose(expected, vanilla_gradient(relu, x, 1))
    torch.testing.assert_close(excitation_pullback(model, x, 1), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", CLAMP_SPELLINGS)
def test_clamps_take_the_hardtanh_rule(name):
    spelling, gate = CLAMP_SPELLINGS[name]
    model, x = spelled(spelling)
    expected = model.fc.weight.detach()[1] * gate(x)
    torch.testing.assert_close(excitation_pullback(model, x, 1), expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(excitation_pullback(model, x, 1, hardtanh_temperature=None),
                               vanilla_gradient(model, x, 1))


@pytest.mark.parametrize("name", UNRECOGNISED)
def test_unrecognised_relu_like_calls_are_named_under_strict(name):
    model, x = spelled(UNRECOGNISED[name])
    with pytest.raises(UnsupportedNonlinearityError, match="has no excitation rule"):
        excitation_pullback(model, x, 1)
    torch.testing.assert_close(excitation_pullback(model, x, 1, strict=False), vanilla_gradient(model, x, 1))


def test_a_rule_sees_only_its_context():
    from utils.core.rules import ReLURule, RuleContext

    seen = []

    class Watched(ReLURule):
        def apply(self, ctx, func, args, kwargs):
            seen.append(ctx)
            return super().apply(ctx, func, args, kwargs)

    model, x = mlp(), x6()
    torch.testing.assert_close(excitation_pullback(model, x, 1, rules={"relu": Watched()}),
                               excitation_pullback(model, x, 1))
    assert seen and all(type(ctx) is RuleContext for ctx in seen)
    assert RuleContext._fields == ("recipe_of", "remember_attention", "unsupported", "watch")
