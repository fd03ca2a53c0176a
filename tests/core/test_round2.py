"""Issue 27's classes of silent or unclear failures: each case gives the right result or a clear error."""
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils import UnsupportedNonlinearityError, excitation_pullback, pullback_ascent, soft_backward, vanilla_gradient


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()


def x6(seed=1, n=4):
    return torch.randn(n, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# -- 1. a pullback changes nothing another thread sees -------------------------------------------------------------

class Paused(nn.Module):
    """``net(x)``; in the thread named "pullback" the forward call waits while the test runs a training step."""

    def __init__(self):
        super().__init__()
        self.net, self.inside, self.resume = mlp(), threading.Event(), threading.Event()

    def forward(self, x):
        if threading.current_thread().name == "pullback":
            self.inside.set()
            assert self.resume.wait(10)
        return self.net(x)


@pytest.mark.parametrize("field", [excitation_pullback, vanilla_gradient])
def test_a_training_step_in_another_thread_gets_its_parameter_gradients(field):
    model, x = Paused().double().eval(), x6()
    errors = []

    def work():
        try:
            field(model, x, 1)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=work, name="pullback")
    thread.start()
    try:
        assert model.inside.wait(10)  # the pullback is inside its forward call
        assert all(p.requires_grad for p in model.parameters())
        model.zero_grad(set_to_none=True)
        model(x)[:, 1].sum().backward()  # a training step, meanwhile
        assert all(p.grad is not None for p in model.parameters())
    finally:
        model.resume.set()
        thread.join()
    assert not errors


def test_pullback_computes_no_parameter_gradient_of_its_own_functions():
    """Inside the pullback, our autograd Functions skip the parameters' gradients (as autograd.grad's pruning does for
    torch's own), yet the same Function outside it still gives them."""
    from utils.core.rules.layer_norm import HeldLayerNorm
    from utils.core.surrogates import inputs_only

    x, w, b = torch.randn(3, 4, requires_grad=True), nn.Parameter(torch.rand(4) + 0.5), nn.Parameter(torch.randn(4))
    with inputs_only():
        out = HeldLayerNorm.apply(x, w, b, (4,), 1e-5)
    assert torch.autograd.grad(out.sum(), [x, w, b], allow_unused=True, materialize_grads=False)[1:] == (None, None)
    out = HeldLayerNorm.apply(x, w, b, (4,), 1e-5)
    assert all(g is not None for g in torch.autograd.grad(out.sum(), [x, w, b]))


# -- 2. max reductions take the max-pool rule; ReLU spellings the ReLU rule ------------------------------------

def soft_reduce_reference(x, dims, sign=1.0, temperature=0.3, detached=False):
    """Straight-through softmax pool over ``dims`` (float64, from the formula): forward the hard max (min), backward
    ``d/dx sum_k x_k softmax(sign x / T)_k`` (the weights held constant when ``detached``)."""
    w = torch.softmax(sign * x / temperature, dim=-1) if dims == (-1,) else \
        torch.softmax(sign * x.flatten(-len(dims)) / temperature, dim=-1).view_as(x)
    if detached:
        w = w.detach()
    soft = (x * w).sum(dims)
    hard = x.amax(dims) if sign > 0 else x.amin(dims)
    return hard.detach() + soft - soft.detach()


class Reduced(nn.Module):
    """conv -> ``reduce`` (to (N, C)) -> linear: a global pool written as a reduction."""

    def __init__(self, reduce):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc, self.reduce = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3), reduce

    def forward(self, x):
        return self.fc(self.reduce(self.conv(x)).reshape(x.shape[0], -1))


MAX_SPELLINGS = {
    "amax": (lambda z: z.amax(dim=(2, 3)), 1.0),
    "torch.amax keepdim": (lambda z: torch.amax(z, (-1, -2), keepdim=True), 1.0),
    "max(dim).values": (lambda z: torch.max(z.flatten(2), 2).values, 1.0),
    "Tensor.max(dim=)[0]": (lambda z: z.flatten(2).max(dim=-1)[0], 1.0),
    "max keepdim": (lambda z: z.flatten(2).max(-1, keepdim=True).values, 1.0),
    "topk(1)": (lambda z: z.flatten(2).topk(1)[0], 1.0),
    "torch.topk(k=1, dim=2)": (lambda z: torch.topk(z.flatten(2), k=1, dim=2).values, 1.0),
    "amin": (lambda z: z.amin(dim=(2, 3)), -1.0),
    "min(dim).values": (lambda z: z.flatten(2).min(2).values, -1.0),
    "topk(1, largest=False)": (lambda z: z.flatten(2).topk(1, largest=False).values, -1.0),
}


@pytest.mark.parametrize("pool", ["soft", "detached"])
@pytest.mark.parametrize("name", sorted(MAX_SPELLINGS))
def test_max_reductions_take_the_max_pool_rule(name, pool):
    reduce, sign = MAX_SPELLINGS[name]
    model = Reduced(reduce).double().eval()
    reference = Reduced(lambda z: soft_reduce_reference(z, (2, 3), sign, 0.2, pool == "detached")).double().eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-15)  # the hard reduction's forward
    leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(reference(leaf)[:, 1].sum(), leaf)
    field = excitation_pullback(model, x, 1, pool_temperature=0.2, pool=pool)
    torch.testing.assert_close(field, expected, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(field, vanilla_gradient(model, x, 1))
    # with the max-pool rule off, the hard backward
    torch.testing.assert_close(excitation_pullback(model, x, 1, pool_temperature=None), vanilla_gradient(model, x, 1))


def test_a_whole_tensor_max_takes_the_max_pool_rule():
    model = Reduced(lambda z: torch.stack([z[i, c].max() for i in range(z.shape[0]) for c in range(4)]))
    reference = Reduced(lambda z: torch.stack([soft_reduce_reference(z[i, c], (0, 1)) for i in range(z.shape[0])
                                               for c in range(4)]))
    model, reference = model.double().eval(), reference.double().eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    leaf = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(reference(leaf)[:, 2].sum(), leaf)
    torch.testing.assert_close(excitation_pullback(model, x, 2), expected, rtol=1e-10, atol=1e-12)


class Activated(nn.Module):
    def __init__(self, act):
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2, self.act = nn.Linear(6, 8), nn.Linear(8, 3), act

    def forward(self, x):
        return self.l2(self.act(self.l1(x)))


RELU_SPELLINGS = {
    "(z + z.abs()) / 2": lambda z: (z + z.abs()) / 2,
    "0.5 * (abs(z) + z)": lambda z: 0.5 * (abs(z) + z),
    "torch.add(z, torch.abs(z)) * 0.5": lambda z: torch.add(z, torch.abs(z)) * 0.5,
    "z.masked_fill(z < 0, 0)": lambda z: z.masked_fill(z < 0, 0),
    "torch.masked_fill(z, z <= 0, 0.0)": lambda z: torch.masked_fill(z, z <= 0, 0.0),
    "z.masked_fill_(z < 0, 0)": lambda z: z.masked_fill_(z < 0, 0),
}


@pytest.mark.parametrize("name", sorted(RELU_SPELLINGS))
def test_relu_spellings_take_the_relu_rule(name):
    model, relu = Activated(RELU_SPELLINGS[name]).double().eval(), Activated(nn.ReLU()).double().eval()
    x = x6() * 3
    torch.testing.assert_close(model(x), relu(x), rtol=0, atol=0)
    torch.testing.assert_close(excitation_pullback(model, x, 1), excitation_pullback(relu, x, 1), rtol=1e-12,
                               atol=1e-14)
    assert not torch.allclose(excitation_pullback(model, x, 1), vanilla_gradient(model, x, 1))


NO_RULE = {
    "topk(2)": (lambda z: z.topk(2).values.sum(-1, keepdim=True) * z, "topk"),
    "sort": (lambda z: z.sort(-1).values, "sort"),
    "median(dim)": (lambda z: z.median(-1, keepdim=True).values * z, "median"),
    "z.masked_fill(z > 0, 0)": (lambda z: z.masked_fill(z > 0, 0), "masked_fill"),
    "y.masked_fill(z < 0, 0)": (lambda z: (z * 2).masked_fill(z < 0, 0), "masked_fill"),
}


@pytest.mark.parametrize("name", sorted(NO_RULE))
def test_other_order_statistics_and_masks_are_named_in_strict_mode(name):
    act, word = NO_RULE[name]
    model, x = Activated(act).double().eval(), x6()
    with pytest.raises(UnsupportedNonlinearityError, match=word):
        excitation_pullback(model, x, 1)
    torch.testing.assert_close(excitation_pullback(model, x, 1, strict=False, temperature=None), vanilla_gradient(model, x, 1))


# -- 3. no result shares memory with an input ---------------------------------------------------------------------

def shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(steps=0, method="gradient"), dict(steps=1),
                                    dict(steps=0, return_trajectory=True)])
def test_ascent_results_never_share_the_callers_storage(kwargs):
    from utils import softmax_pool2d, soft_gate
    model, x = nn.Sequential(nn.Flatten(), mlp().float()), torch.rand(2, 1, 2, 3) * 2 - 1
    kept = x.clone()
    out = pullback_ascent(model, x, 1, **kwargs)
    assert not shares_memory(out, x)
    out.zero_()  # editing the result in place leaves the input alone
    assert torch.equal(x, kept)
    for result in (excitation_pullback(model, x, 1), vanilla_gradient(model, x, 1), soft_gate(x),
                   softmax_pool2d(x, 1)):
        assert not shares_memory(result, x)


# -- 4 and 7. bad settings are named -----------------------------------------------------------------------------

@pytest.mark.parametrize("keyword, value", [("temperature", True), ("temperature", False),
                                            ("pool_temperature", True), ("gelu_temperature", True),
                                            ("temperature", torch.tensor([0.3, 0.5])), ("temperature", "0.3"),
                                            ("temperature", torch.tensor(True))])
def test_a_temperature_that_is_not_one_number_is_named(keyword, value):
    with pytest.raises((TypeError, ValueError), match=keyword):
        excitation_pullback(mlp(), x6(), 1, **{keyword: value})


def test_a_one_element_tensor_temperature_is_its_number():
    torch.testing.assert_close(excitation_pullback(mlp(), x6(), 1, temperature=torch.tensor(0.5)),
                               excitation_pullback(mlp(), x6(), 1, temperature=0.5), rtol=0, atol=0)


@pytest.mark.parametrize("keyword, value", [("steps", True), ("steps", False), ("alpha", True), ("eps", True),
                                            ("steps", None), ("alpha", "20"), ("eps", torch.ones(2))])
def test_ascent_refuses_flags_and_non_numbers(keyword, value):
    model, x = nn.Sequential(nn.Flatten(), mlp().float()), torch.rand(2, 1, 2, 3) * 2 - 1
    with pytest.raises((TypeError, ValueError), match=keyword):
        pullback_ascent(model, x, 1, **{keyword: value})


@pytest.mark.parametrize("target", ["3", b"1", ["1", 2], [1, None], object()])
@pytest.mark.parametrize("field", [excitation_pullback, vanilla_gradient])
def test_a_target_that_is_not_class_indices_is_named(field, target):
    with pytest.raises(TypeError, match="target must be an int"):
        field(mlp(), x6(), target)


def test_strict_must_be_a_flag():
    with pytest.raises(TypeError, match="strict must be True or False"):
        excitation_pullback(mlp(), x6(), 1, strict="no")


# -- 5. a residual addend changed in place after the sum ---------------------------------------------------------

class ChangedAddend(nn.Module):
    """``relu(bn(conv(x)) + a)`` (the ReLU's gate recomputed from the batch norm), then ``a`` changed in place by
    ``change`` (``copy=True``: a copy changed instead, the same function written without the in-place change)."""

    def __init__(self, change, copy=False):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Linear(3, 2)
        self.bn.running_mean.uniform_(-0.5, 0.5)
        self.change, self.copy = change, copy

    def forward(self, x):
        a = x * 1.5
        y = F.relu(self.bn(self.conv(x)) + a, inplace=True)
        b = a.clone() if self.copy else a
        self.change(b)
        return self.fc((y + b).mean((2, 3)))


CHANGES = {"mul_": lambda a: a.mul_(2), "+=": lambda a: a.__iadd__(1.0), "setitem": lambda a: a.__setitem__(0, 0.0),
           "view.zero_": lambda a: a[:, 1].zero_(), "relu_": lambda a: F.relu(a, inplace=True)}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_an_addend_changed_in_place_after_the_sum_keeps_the_field(change):
    model, same = ChangedAddend(CHANGES[change]).double().eval(), ChangedAddend(CHANGES[change], True).double().eval()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vanilla_gradient(model, x, 1), vanilla_gradient(same, x, 1))  # plain autograd works
    torch.testing.assert_close(excitation_pullback(model, x, 1), excitation_pullback(same, x, 1), rtol=1e-12,
                               atol=1e-14)


def test_an_addend_changed_after_the_forward_call_is_reported_clearly():
    kept = []
    model = ChangedAddend(kept.append).double().eval()  # keeps the addend, unchanged, for the caller
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    with soft_backward(model):
        out = model(x)
    kept[0].mul_(2)  # after the forward call, where no mode sees it
    with pytest.raises(RuntimeError, match="changed in place after the model's forward call"):
        out[:, 1].sum().backward()


# -- 6. saving the model inside the block ---------------------------------------------------------------------------

def test_torch_save_inside_soft_backward_saves_the_model_itself():
    import io
    import pickle

    model, x = mlp(), x6()
    with soft_backward(model):
        buffer = io.BytesIO()
        torch.save(model, buffer)
        pickled = pickle.dumps(model)
        inside = model(x)
    buffer.seek(0)
    for loaded in (torch.load(buffer, weights_only=False), pickle.loads(pickled)):
        assert torch.equal(loaded(x), inside)
        assert torch.equal(excitation_pullback(loaded, x, 1), excitation_pullback(model, x, 1))
        assert torch.equal(vanilla_gradient(loaded, x, 1), vanilla_gradient(model, x, 1))
        with soft_backward(loaded):  # and it saves again
            pickle.dumps(loaded)
    assert "forward" not in model.__dict__


# -- 4. a model's own forward hooks take the rules; no process-wide hooks (issue 28, item 5) ----------------------

class PlusReLU(nn.Module):
    def forward(self, o):
        return o + F.relu(o)


@pytest.mark.parametrize("where", ["forward_hook", "forward_pre_hook"])
def test_a_relu_in_the_models_own_hook_takes_the_rule(where):
    def head():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 3)).double().eval()

    hooked, plain = head(), head()
    if where == "forward_hook":
        hooked[0].register_forward_hook(lambda m, args, out: F.relu(out))  # a ReLU inside a submodule's hook
        hooked.register_forward_hook(lambda m, args, out: out + F.relu(out))
        plain = nn.Sequential(plain[0], nn.ReLU(), plain[1], PlusReLU())
    else:
        hooked.register_forward_pre_hook(lambda m, args: (F.relu(args[0]),))
        plain = nn.Sequential(nn.ReLU(), plain[0], plain[1])
    x = x6() * 3
    torch.testing.assert_close(hooked(x), plain(x), rtol=0, atol=0)
    expected = excitation_pullback(plain, x, 1)
    torch.testing.assert_close(excitation_pullback(hooked, x, 1), expected, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(expected, vanilla_gradient(hooked, x, 1))


def test_an_unrelated_model_runs_no_code_of_ours_while_a_block_is_open():
    import os
    import sys

    import utils.core

    core = os.path.dirname(utils.core.__file__)
    model, other, x = mlp(), mlp(1), x6()
    ran = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(core):
            ran.append(frame.f_code.co_name)

    with soft_backward(model):
        assert not nn.modules.module._global_forward_pre_hooks and not nn.modules.module._global_forward_hooks
        sys.setprofile(profile)
        try:
            other(x.requires_grad_()).sum().backward()
        finally:
            sys.setprofile(None)
    assert ran == []
    assert not model._forward_hooks and not model._forward_pre_hooks and not model[0]._forward_pre_hooks
