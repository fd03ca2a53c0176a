"""soft_backward, excitation_pullback and vanilla_gradient: exactness, formulas, limits, restoration, errors."""
import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import assert_restored, snapshot
from references import loop_softmax_pool, reference_copy, reference_pool
from zoo import ZOO, make_zoo
from utils import (SoftMaxPool2d, UnsupportedNonlinearityError, excitation_pullback, soft_backward,
                   softmax_pool2d, vanilla_gradient)
from utils.core.gates import GATES
from utils.core.optimised.softmax_pool_backward import softmax_pool2d_backward

T = 0.3


def cosine(a, b):
    return F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


@pytest.mark.parametrize("name", ZOO)
def test_zoo_forward_exact_and_gradient_matches_reference(name):
    model, x = make_zoo(name)
    with torch.no_grad():
        expected = model(x)
    before = snapshot(model)
    with soft_backward(model, temperature=T):
        inside = model(x.clone().requires_grad_())  # through the surrogate Functions
        inside_no_grad = model(x.clone())
    assert torch.equal(inside.detach(), expected) and torch.equal(inside_no_grad, expected)
    assert_restored(model, before)

    target = torch.tensor([0, 3, 4])
    pullback = excitation_pullback(model, x, target, temperature=T)
    reference = vanilla_gradient(reference_copy(model, T), x, target)
    torch.testing.assert_close(pullback, reference, rtol=1e-10, atol=1e-12)
    # The surrogate really acts: the pullback is not the gradient.
    assert not torch.allclose(pullback, vanilla_gradient(model, x, target), rtol=1e-3)


@pytest.mark.parametrize("name", ["resnet50", "vgg11_bn", "densenet121"])
def test_paper_architectures_forward_bit_identical(paper_architectures, name):
    model = paper_architectures[name]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
    before = snapshot(model)
    with soft_backward(model):
        inside = model(x)
        inside_grad_mode = model(x.requires_grad_())
    assert torch.equal(inside, expected)
    assert torch.equal(inside_grad_mode.detach(), expected)
    assert_restored(model, before)
    with torch.no_grad():
        assert torch.equal(model(x), expected)


@pytest.mark.parametrize("gate", sorted(GATES))
def test_mlp_pullback_equals_gated_matrix_product(gate):
    """Eq. 6: for a bias-free MLP the pullback of logit c is e_c^T W_3 D_2 W_2 D_1 W_1, D_l = diag(gate(z_l / T))."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(7, 11, bias=False), nn.ReLU(), nn.Linear(11, 9, bias=False), nn.ReLU(),
                          nn.Linear(9, 4, bias=False)).double().eval()
    x = torch.randn(5, 7, dtype=torch.float64)
    W1, W2, W3 = (model[i].weight.detach().numpy() for i in (0, 2, 4))
    gate_np = {"sigmoid": lambda u: 1 / (1 + np.exp(-u)),
               "normal_cdf": np.vectorize(lambda u: 0.5 * (1 + __import__("math").erf(u / np.sqrt(2)))),
               "softsign": lambda u: 0.5 * (1 + u / (1 + np.abs(u)))}[gate]
    targets = [0, 1, 2, 3, 1]
    expected = []
    for xi, c in zip(x.numpy(), targets):
        z1 = W1 @ xi
        z2 = W2 @ np.maximum(z1, 0)
        D1, D2 = np.diag(gate_np(z1 / T)), np.diag(gate_np(z2 / T))
        expected.append(np.eye(4)[c] @ W3 @ D2 @ W2 @ D1 @ W1)
    got = excitation_pullback(model, x, targets, temperature=T, gate=gate)
    np.testing.assert_allclose(got.numpy(), np.stack(expected), rtol=1e-12, atol=1e-14)


def test_large_temperature_gives_half_gated_linear_network():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.ReLU(), nn.Linear(8, 8, bias=False), nn.ReLU(),
                          nn.Linear(8, 3, bias=False)).double().eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    linear = (model[4].weight @ model[2].weight @ model[0].weight).detach()
    got = excitation_pullback(model, x, 2, temperature=1e9)
    torch.testing.assert_close(got, 0.25 * linear[2].expand(4, -1), rtol=1e-8, atol=1e-10)


def test_bias_free_network_is_its_gradient_times_input():
    """Eqs. 7-8: a bias-free ReLU network is linear on its activation region: f(x) = <grad f(x), x>."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, bias=False), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(5, 4, 3, bias=False),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3, bias=False)).double().eval()
    x = torch.randn(4, 3, 10, 10, dtype=torch.float64)
    g = vanilla_gradient(model, x, 1)
    torch.testing.assert_close((g * x).flatten(1).sum(1), model(x)[:, 1].detach())


def test_small_temperature_recovers_vanilla_gradient():
    model, x = make_zoo("pools")
    vanilla = vanilla_gradient(model, x, 2)
    sims = [cosine(excitation_pullback(model, x, 2, temperature=t), vanilla) for t in (3.0, 0.3, 0.03, 0.003)]
    assert all(a < b for a, b in zip(sims, sims[1:])), sims
    assert sims[0] < 0.99
    torch.testing.assert_close(excitation_pullback(model, x, 2, temperature=1e-9), vanilla, rtol=1e-7, atol=1e-12)


POOL_CASES = [  # kernel, stride, padding, dilation, ceil_mode, input (H, W)
    # windows that tile the input (the backward's fast path), also with rows and columns no window reaches
    (2, None, 0, 1, False, (8, 8)),
    (2, 2, 0, 1, False, (9, 7)),
    ((2, 3), None, 0, 1, False, (7, 10)),
    (3, None, 0, 1, True, (9, 6)),
    # any other windows
    (2, None, 0, 1, True, (9, 8)),
    (3, 2, 1, 1, False, (9, 7)),
    (3, 1, 1, 1, False, (5, 6)),
    (2, 3, 1, 1, True, (8, 10)),
    (3, 2, 0, 2, True, (11, 9)),
    (3, 2, 1, 1, True, (10, 10)),
    ((2, 3), (1, 2), (1, 0), (1, 2), False, (6, 9)),
    (3, 3, 1, 1, True, (7, 8)),
]


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode, size", POOL_CASES)
def test_soft_maxpool_forward_exact_gradient_matches_loop(kernel, stride, padding, dilation, ceil_mode, size):
    args = (kernel, stride, padding, dilation, ceil_mode)
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    hard = F.max_pool2d(x, *args)
    assert torch.equal(SoftMaxPool2d.apply(x, 0.5, kernel, stride or kernel, padding, dilation, ceil_mode), hard)
    torch.testing.assert_close(softmax_pool2d(x, *args, temperature=0.5), loop_softmax_pool(x, *args, temperature=0.5))

    upstream = torch.randn_like(hard)
    leaf = x.clone().requires_grad_()
    (surrogate,) = torch.autograd.grad((SoftMaxPool2d.apply(leaf, 0.5, kernel, stride or kernel, padding, dilation,
                                                            ceil_mode) * upstream).sum(), leaf)
    (reference,) = torch.autograd.grad((reference_pool(leaf, *args, temperature=0.5) * upstream).sum(), leaf)
    torch.testing.assert_close(surrogate, reference, rtol=1e-10, atol=1e-12)
    # computed a few planes at a time: the same gradient, with any chunk size
    for chunk in (1, 40):
        chunked = softmax_pool2d_backward(x, hard, upstream, args, 0.5, chunk=chunk)
        torch.testing.assert_close(chunked, surrogate, rtol=1e-13, atol=1e-15)

    (hard_grad,) = torch.autograd.grad((F.max_pool2d(leaf, *args) * upstream).sum(), leaf)
    (cold,) = torch.autograd.grad((SoftMaxPool2d.apply(leaf, 1e-9, kernel, stride or kernel, padding, dilation,
                                                       ceil_mode) * upstream).sum(), leaf)
    torch.testing.assert_close(cold, hard_grad, rtol=1e-7, atol=1e-9)
    assert not torch.allclose(surrogate, hard_grad, atol=1e-3)


@pytest.mark.parametrize("args", [(2, None, 0, 1, False), (3, 2, 1, 1, True)])
def test_soft_maxpool_on_unbatched_input_equals_batch_of_one(args):
    x = torch.randn(3, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    upstream = torch.randn_like(F.max_pool2d(x, *args))
    kernel, stride, *rest = args
    grads = []
    for leaf in (x.clone().requires_grad_(), x.unsqueeze(0).clone().requires_grad_()):
        out = SoftMaxPool2d.apply(leaf, 0.5, kernel, stride or kernel, *rest)
        assert torch.equal(out, F.max_pool2d(leaf, *args))
        (grad,) = torch.autograd.grad((out * upstream.reshape(out.shape)).sum(), leaf)
        assert grad.shape == leaf.shape
        grads.append(grad.reshape(x.shape))
    leaf = x.unsqueeze(0).clone().requires_grad_()
    (reference,) = torch.autograd.grad((reference_pool(leaf, *args, temperature=0.5) * upstream).sum(), leaf)
    torch.testing.assert_close(grads[0], reference.squeeze(0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-13, atol=1e-15)


def test_pool_temperature_can_be_set_apart():
    # Pools before ReLUs: no tied maxima (ReLU zeros would tie, and a soft pool splits ties).
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(3, 2, 1), nn.ReLU(), nn.Conv2d(4, 4, 3),
                          nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9, 3)).double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    hard_pools = excitation_pullback(model, x, 1, pool_temperature=None)
    tiny_pool_t = excitation_pullback(model, x, 1, pool_temperature=1e-9)
    torch.testing.assert_close(tiny_pool_t, hard_pools, rtol=1e-7, atol=1e-12)
    assert not torch.allclose(excitation_pullback(model, x, 1), hard_pools, rtol=1e-3)


def test_densenet_final_functional_relu_is_soft(paper_architectures):
    """DenseNet's forward ends in F.relu(features, inplace=True): it must get the soft gate too."""
    model = paper_architectures["densenet121"]
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    captured = {}

    def keep_grad(module, inputs, output):
        if output.requires_grad:
            output.register_hook(lambda g: captured.setdefault("grad", g))

    handle = model.features.register_forward_hook(keep_grad)
    try:
        excitation_pullback(model, x, 5)
        with torch.no_grad():
            features = model.features(x)
    finally:
        handle.remove()
    w = model.classifier.weight[5].detach().view(1, -1, 1, 1) / (features.shape[-1] * features.shape[-2])
    soft = w * torch.sigmoid(features / T)
    assert (features < 0).any()
    torch.testing.assert_close(captured["grad"], soft.expand_as(captured["grad"]))
    assert not torch.allclose(captured["grad"], w * (features > 0))


def test_restored_after_exception_and_nothing_leaks():
    model, x = make_zoo("reused")
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with soft_backward(model):
            model(x)
            raise RuntimeError("boom")
    assert_restored(model, before)
    with pytest.raises(RuntimeError):  # an error inside forward (wrong channel count)
        with soft_backward(model):
            model(torch.randn(1, 4, 8, 8, dtype=torch.float64))
    assert_restored(model, before)
    # No mode is left on the stack: a ReLU outside any model has its hard gate again.
    z = torch.tensor([-1.0, 2.0], requires_grad=True)
    torch.relu(z).sum().backward()
    assert z.grad.tolist() == [0.0, 1.0]
    assert not torch.overrides._get_current_function_mode_stack()


def test_two_models_patched_at_once_keep_their_own_settings():
    a, x = make_zoo("reused")
    b, _ = make_zoo("pools")
    y = torch.randn(3, 3, 13, 13, dtype=torch.float64)
    lone_a = excitation_pullback(a, x, 1, temperature=0.1)
    lone_b = excitation_pullback(b, y, 1, temperature=2.0)
    before_a, before_b = snapshot(a), snapshot(b)
    with soft_backward(a, temperature=0.1), soft_backward(b, temperature=2.0):
        xa, yb = x.clone().requires_grad_(), y.clone().requires_grad_()
        (ga,) = torch.autograd.grad(a(xa)[:, 1].sum(), xa)
        (gb,) = torch.autograd.grad(b(yb)[:, 1].sum(), yb)
    torch.testing.assert_close(ga, lone_a)
    torch.testing.assert_close(gb, lone_b)
    assert_restored(a, before_a)
    assert_restored(b, before_b)


def test_no_side_effects_on_model_or_input():
    model, x = make_zoo("inplace")
    model[0].weight.requires_grad_(False)  # a mix of frozen and trainable parameters is kept as it was
    flags = [p.requires_grad for p in model.parameters()]
    x_before = x.clone()
    for fn in (vanilla_gradient, excitation_pullback):
        fn(model, x, 0)
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
        assert not x.requires_grad and x.grad is None
        assert torch.equal(x, x_before)


@pytest.mark.parametrize("bad", [0, -0.3, float("nan"), float("inf")])
def test_bad_temperature(bad):
    model, x = make_zoo("reused")
    with pytest.raises(ValueError, match="temperature"):
        excitation_pullback(model, x, 0, temperature=bad)
    with pytest.raises(ValueError, match="pool_temperature"):
        excitation_pullback(model, x, 0, pool_temperature=bad)


def test_clear_errors():
    model, x = make_zoo("reused")
    with pytest.raises(ValueError, match="unknown gate 'tanh'"):
        excitation_pullback(model, x, 0, gate="tanh")
    with pytest.raises(IndexError, match="out of range .* 5 classes"):
        excitation_pullback(model, x, 5)
    with pytest.raises(IndexError, match="out of range"):
        vanilla_gradient(model, x, [0, -1, 2])
    with pytest.raises(ValueError, match="one index per sample"):
        vanilla_gradient(model, x, [0, 1])
    with pytest.raises(TypeError, match="integer"):
        vanilla_gradient(model, x, 1.0)
    with pytest.raises(ValueError, match="batch"):
        vanilla_gradient(model, x[0, 0, 0], 0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(0), nn.Linear(4, 2)).eval()
    with pytest.raises(ValueError, match=r"logits \(N, num_classes\)"):
        vanilla_gradient(conv, torch.randn(3, 8, 8), 0)  # an image without its batch dimension


@pytest.mark.parametrize("module", [nn.ELU(), nn.Softplus(), nn.Mish(), nn.PReLU(), nn.MaxPool1d(2), nn.Threshold(0.1, 0.0),
                                    nn.AdaptiveMaxPool2d(2, return_indices=True), nn.MaxPool2d(2, return_indices=True)])
def test_unsupported_module_is_named(module):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), module)
    name = type(module).__name__
    with pytest.raises(UnsupportedNonlinearityError, match=f"1 \\({name}"):
        with soft_backward(model):
            pass
    assert "forward" not in model.__dict__


def test_unsupported_functional_call_is_named_unless_opted_out():
    class Net(nn.Module):
        def forward(self, x):
            return F.elu(x).flatten(1)[:, :2] + F.max_pool1d(x.flatten(2), 2).flatten(1)[:, :2]

    model, x = Net().eval(), torch.randn(2, 3, 4, 4)
    with pytest.raises(UnsupportedNonlinearityError, match="elu"):
        excitation_pullback(model, x, 0)
    torch.testing.assert_close(excitation_pullback(model, x, 0, strict=False), vanilla_gradient(model, x, 0))


def test_dtype_and_device_follow_the_input():
    for dtype in (torch.float32, torch.float64):
        model, x = make_zoo("pools", dtype)
        for fn in (vanilla_gradient, excitation_pullback):
            g = fn(model, x, 0)
            assert g.dtype == dtype and g.device == x.device and g.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    model, x = make_zoo("pools", torch.float32)
    cpu = excitation_pullback(model, x, 0)
    gpu = excitation_pullback(model.cuda(), x.cuda(), 0)
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


class ConvBNReLU(nn.Module):
    """conv -> BN -> in-place ReLU, then conv -> BN -> += residual -> in-place ReLU (torchvision's Bottleneck
    order), optionally with an identity op that hides the batch norm from the ReLU."""

    def __init__(self, barrier: bool):
        super().__init__()
        self.barrier = barrier
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8 * 64, 5)

    def forward(self, x):
        z = self.bn1(self.conv1(x))
        x = self.relu(z * 1.0 if self.barrier else z)
        z = self.bn2(self.conv2(x))
        z += x
        x = self.relu(z * 1.0 if self.barrier else z)
        return self.fc(x.flatten(1))


def _saved_bytes(model, x):
    """Bytes of the distinct storages autograd keeps for the backward of one pullback forward pass, besides
    the model's own parameters and buffers (which persist anyway)."""
    storages = {}
    persistent = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}

    def pack(t):
        if t.untyped_storage().data_ptr() not in persistent:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with soft_backward(model), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x.clone().requires_grad_())[:, 0].sum()
    return sum(storages.values())


@pytest.mark.parametrize("train_mode", [False, True])
def test_relu_after_batch_norm_saves_no_gate_and_gives_the_same_pullback(train_mode):
    from conftest import randomize_batchnorm

    torch.manual_seed(0)
    direct = randomize_batchnorm(ConvBNReLU(barrier=False)).double().train(train_mode)
    hidden = ConvBNReLU(barrier=True).double().train(train_mode)
    hidden.load_state_dict(direct.state_dict())
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3])
    if not train_mode:  # (train mode updates the running statistics; compare gradients once)
        # (the recomputation folds 1 / T into the batch norm: equal up to rounding, not bit for bit)
        torch.testing.assert_close(excitation_pullback(direct, x, target), excitation_pullback(hidden, x, target),
                                   rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(excitation_pullback(direct, x, target),
                                   vanilla_gradient(reference_copy(direct, 0.3), x, target), rtol=1e-10, atol=1e-12)
    gate_bytes = 2 * x.shape[0] * 8 * 8 * 8 * x.element_size()  # one (N, 8, 8, 8) gate per ReLU call
    saved_direct, saved_hidden = _saved_bytes(direct, x), _saved_bytes(hidden, x)
    if train_mode:  # batch statistics: the batch norm cannot be recomputed from running stats; gates are saved
        assert saved_direct == saved_hidden
    else:
        assert saved_hidden - saved_direct == gate_bytes


def _gates_saved(model, x, monkeypatch):
    """How many ReLU calls of one pullback save their gate (instead of recomputing it in the backward pass)."""
    from utils.core.rules.relu import SoftGateReLU

    calls, apply = [], SoftGateReLU.apply
    with monkeypatch.context() as patch:
        patch.setattr(SoftGateReLU, "apply", staticmethod(lambda *args: calls.append(1) or apply(*args)))
        excitation_pullback(model, x, 0)
    return len(calls)


class LateShortcut(nn.Module):
    """``relu(bn(conv(x)) + shortcut)`` with the shortcut's conv and batch norm run after the first batch norm
    (torchvision's Bottleneck with downsample does this); the batch norm output right of an out-of-place sum, or,
    with ``mutate``, a plain addend changed in place after the sum and before the ReLU."""

    def __init__(self, mutate: bool):
        super().__init__()
        self.mutate = mutate
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv_s, self.bn_s = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8 * 64, 5)

    def forward(self, x):
        y = self.bn(self.conv(x))
        s = self.bn_s(self.conv_s(x))
        if self.mutate:
            a = s * 1.0
            z = y + a
            a.mul_(3.0)  # z is unchanged, but a gate recomputed from y + a would be wrong
        else:
            z = s + y
        return self.fc(self.relu(z).flatten(1))


@pytest.mark.parametrize("mutate", [False, True])
def test_batch_norm_recipe_survives_a_shortcut_and_notices_changed_inputs(mutate, monkeypatch):
    from conftest import randomize_batchnorm

    torch.manual_seed(1)
    model = randomize_batchnorm(LateShortcut(mutate)).double().eval()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3])
    assert _gates_saved(model, x, monkeypatch) == (1 if mutate else 0)
    torch.testing.assert_close(excitation_pullback(model, x, target),
                               vanilla_gradient(reference_copy(model, 0.3), x, target), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["resnet50", "vgg11_bn", "densenet121"])
def test_recomputed_gates_on_paper_architectures_equal_saved_gates(paper_architectures, name, monkeypatch):
    from utils.core.excitation import ExcitationMode

    model = paper_architectures[name]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 7])
    # every ReLU after a batch norm recomputes its gate, also after a Bottleneck's downsample shortcut;
    # only VGG's two classifier ReLUs (after Linear layers) save theirs
    assert _gates_saved(model, x, monkeypatch) == {"resnet50": 0, "vgg11_bn": 2, "densenet121": 0}[name]
    recomputed, saved_recomputed = excitation_pullback(model, x, target), _saved_bytes(model, x)
    monkeypatch.setattr(ExcitationMode, "recipe_of", lambda self, z: None)  # every ReLU saves its gate
    saved, saved_gates = excitation_pullback(model, x, target), _saved_bytes(model, x)
    torch.testing.assert_close(recomputed, saved, rtol=1e-4, atol=1e-6 * saved.abs().max().item())
    assert saved_recomputed < 0.85 * saved_gates


def test_gates_below_sqrt_tiny_are_flushed_to_zero():
    from utils.core.gates import sigmoid_gate
    from utils.core.rules.relu import SoftGateReLU

    # At T = 0.3: u = -60 gives a gate of 8.7e-27 and u = -46.7 one of 5.2e-21, below the float32 cutoff
    # sqrt(tiny) = 1.1e-19; times a gradient of 1e-18 either would be a subnormal float. u = -40 gives 4.2e-18.
    z = torch.tensor([-18.0, -14.0, -12.0, -1.0, 0.0, 3.0], requires_grad=True)
    (grad,) = torch.autograd.grad(SoftGateReLU.apply(z, 0.3, sigmoid_gate, False).sum(), z)
    exact = torch.sigmoid(z.detach() * (1.0 / 0.3))
    assert (exact[:2] > 0).all() and (exact[:2] * 1e-18 < torch.finfo(torch.float32).tiny).all()
    assert torch.equal(grad[:2], torch.zeros(2)) and torch.equal(grad[2:], exact[2:])
    # float64 keeps everything above 1.5e-154
    (grad64,) = torch.autograd.grad(SoftGateReLU.apply(z.double(), 0.3, sigmoid_gate, False).sum(), z)
    assert (grad64 > 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clamped_gate_and_exp_equal_the_unclamped_formulas(dtype):
    """The clamps that keep exp off subnormals change no value: below them the result is 0 anyway, and above 40
    the sigmoid is 1 in both precisions; the fused gate-times-gradient agrees with gate, then product."""
    from utils.core.gates import sigmoid_gate
    from utils.core.optimised.flush import exp_flushed_, flush_tiny_, gate_of_scaled_, gate_times_

    u = torch.cat([torch.linspace(-800, 800, 20001, dtype=dtype), torch.randn(1000, dtype=dtype) * 50,
                   torch.tensor([-math.inf, math.inf, 36.0, 40.0, 41.0, -43.0, -44.0, -45.0], dtype=dtype)])
    cutoff = math.sqrt(torch.finfo(dtype).tiny)
    expected = torch.where(u > math.log(cutoff), torch.sigmoid(u), 0.0)  # zero where the gate is below ~cutoff
    assert torch.equal(gate_of_scaled_(u.clone(), sigmoid_gate), expected)
    assert (expected[u > 40] == 1).all() and (expected == 0).any() and ((expected > 0) & (expected < 1e-18)).any()
    assert expected[expected > 0].min() >= 0.999 * cutoff and (flush_tiny_(torch.sigmoid(u)) > 0).eq(expected > 0).all()

    grad = torch.randn(u.shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    fused = gate_times_(u.clone(), sigmoid_gate, grad)
    assert torch.equal(fused == 0, expected * grad == 0) and torch.equal(fused[u > 40], grad[u > 40])
    torch.testing.assert_close(fused, expected * grad, rtol=4 * torch.finfo(dtype).eps, atol=0)

    negative = -u.abs()
    assert torch.equal(exp_flushed_(negative.clone()), flush_tiny_(torch.exp(negative)))
    nan = torch.tensor([math.nan], dtype=dtype)
    assert torch.isnan(gate_of_scaled_(nan.clone(), sigmoid_gate)).all()
    assert torch.isnan(gate_times_(nan.clone(), sigmoid_gate, torch.ones_like(nan))).all()


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode, size", POOL_CASES)
@pytest.mark.parametrize("detached", [False, True])
def test_soft_maxpool_backward_is_the_same_gathered_by_slices_or_by_unfold(kernel, stride, padding, dilation,
                                                                          ceil_mode, size, detached):
    args = (kernel, stride, padding, dilation, ceil_mode)
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    hard = F.max_pool2d(x, *args)
    upstream = torch.randn_like(hard)
    for t in (0.5, 1e-9):  # at tiny T the padding's exponents are -inf: still no NaN
        slices = softmax_pool2d_backward(x, hard, upstream, args, t, detached=detached, gather="slices")
        for flush in (True, False):
            unfold = softmax_pool2d_backward(x, hard, upstream, args, t, detached=detached, flush=flush)
            torch.testing.assert_close(unfold, slices, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["resnet50", "vgg11_bn", "densenet121"])
def test_flushing_and_the_pool_backward_change_no_pullback_on_paper_architectures(paper_architectures, name):
    """The optimisations behind the rules (utils/core/optimised/) against the plain rules on whole networks:
    subnormal flushing off, and the max-pool backward gathered by slices in small chunks (CPU policy) or by one
    unfold (GPU policy), all give the same pullback."""
    from utils.core.policy import Policy, use_policy

    model = paper_architectures[name]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([2, 9])
    plain = Policy("plain", flush_subnormals=False, pool_gather="unfold", pool_chunk_bytes=2 ** 40)
    with use_policy(plain):
        expected = excitation_pullback(model, x, target)
    scale = expected.abs().max().item()
    for policy in ("cpu", "cuda", Policy("small chunks", True, "slices", pool_chunk_bytes=4096)):
        with use_policy(policy):
            torch.testing.assert_close(excitation_pullback(model, x, target), expected, rtol=1e-4, atol=1e-6 * scale)
