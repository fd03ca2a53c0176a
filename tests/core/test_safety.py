"""Safe use: threads, nesting, torch.compile, activation checkpointing, inference-mode models, Captum."""
import threading

import pytest
import torch
import torch.utils.checkpoint as checkpoint
import torchvision
from torch import nn

from conftest import assert_restored, snapshot
from zoo import make_zoo
from utils import ExcitationPullback, excitation_pullback, soft_backward, vanilla_gradient


def grad_inside(model, x, target=1):
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(model(leaf)[:, target].sum(), leaf)
    return g


def test_two_threads_on_one_model_get_their_own_results():
    model, x = make_zoo("reused")
    before = snapshot(model)
    temperatures = (0.1, 3.0)
    lone = {t: excitation_pullback(model, x, 1, temperature=t) for t in temperatures}
    barrier, results, errors = threading.Barrier(2), {t: [] for t in temperatures}, []

    def work(t):
        try:
            for _ in range(20):
                with soft_backward(model, temperature=t):
                    barrier.wait()  # both threads are inside their contexts now
                    results[t].append(grad_inside(model, x))
                    barrier.wait()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(t,)) for t in temperatures]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for t in temperatures:
        assert len(results[t]) == 20
        assert all(torch.equal(g, lone[t]) for g in results[t])
    assert_restored(model, before)
    # a thread with no context of its own sees the plain model while another thread's context is open
    seen = {}
    with soft_backward(model, temperature=0.1):
        th = threading.Thread(target=lambda: seen.setdefault("g", grad_inside(model, x)))
        th.start()
        th.join()
    torch.testing.assert_close(seen["g"], vanilla_gradient(model, x, 1))


def test_nested_contexts_innermost_wins_and_any_exit_order_restores():
    model, x = make_zoo("pools")
    before = snapshot(model)
    at = {t: excitation_pullback(model, x, 1, temperature=t) for t in (0.1, 2.0)}
    with soft_backward(model, temperature=0.1):
        with soft_backward(model, temperature=2.0):
            torch.testing.assert_close(grad_inside(model, x), at[2.0])
        torch.testing.assert_close(grad_inside(model, x), at[0.1])
    assert_restored(model, before)

    outer, inner = soft_backward(model, temperature=0.1), soft_backward(model, temperature=2.0)
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the outer context leaves first
    torch.testing.assert_close(grad_inside(model, x), at[2.0])
    inner.__exit__(None, None, None)
    assert_restored(model, before)
    torch.testing.assert_close(grad_inside(model, x), vanilla_gradient(model, x, 1))


class SmallNet(nn.Module):
    """ReLU, max-pool, GELU, layer norm; optionally the second half checkpointed."""

    def __init__(self, use_reentrant=None):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.b = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.GELU(), nn.Flatten(), nn.LayerNorm(4 * 16))
        self.fc = nn.Linear(4 * 16, 3)
        self.use_reentrant = use_reentrant

    def forward(self, x):
        y = self.a(x)
        y = self.b(y) if self.use_reentrant is None else checkpoint.checkpoint(self.b, y,
                                                                              use_reentrant=self.use_reentrant)
        return self.fc(y)


def small(use_reentrant=None):
    torch.manual_seed(0)
    return SmallNet(use_reentrant).double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_gives_the_eager_pullback(backend):
    model, x = small()
    eager = excitation_pullback(model, x, 1)
    compiled = torch.compile(model, backend=backend)
    torch.testing.assert_close(excitation_pullback(compiled, x, 1), eager)
    compiled(x)  # compiled (and cached) before the context opens
    with soft_backward(model):
        torch.testing.assert_close(grad_inside(compiled, x), eager)
    assert "forward" not in model.__dict__


def test_activation_checkpointing_gives_the_same_pullback():
    model, x = small()
    eager = excitation_pullback(model, x, 1)
    ckpt, _ = small(use_reentrant=False)
    torch.testing.assert_close(excitation_pullback(ckpt, x, 1), eager)
    reentrant, _ = small(use_reentrant=True)  # (reentrant checkpoints take .backward(), not autograd.grad)
    with soft_backward(reentrant):
        leaf = x.clone().requires_grad_()
        reentrant(leaf)[:, 1].sum().backward()
    torch.testing.assert_close(leaf.grad, eager)
    assert not nn.modules.module._global_forward_pre_hooks and not torch.overrides._get_current_function_mode_stack()


def test_memory_efficient_densenet_gives_the_same_pullback():
    torch.manual_seed(0)
    plain = torchvision.models.densenet121(weights=None).eval()
    efficient = torchvision.models.densenet121(weights=None, memory_efficient=True).eval()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 32, 32)
    a, b = excitation_pullback(plain, x, 1), excitation_pullback(efficient, x, 1)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * a.abs().max().item())


def test_model_made_under_inference_mode_gets_torchs_message_and_keeps_its_flags():
    with torch.inference_mode():
        model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="[Ii]nference tensors"):
        excitation_pullback(model, torch.randn(2, 4), 1)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert "forward" not in model.__dict__


def test_captum_attribution_equals_the_pullback_and_wraps_in_noise_tunnel():
    from captum.attr import NoiseTunnel

    model, x = make_zoo("pools")
    method = ExcitationPullback(model, temperature=0.2)
    torch.testing.assert_close(method.attribute(x, target=1), excitation_pullback(model, x, 1, temperature=0.2))
    torch.testing.assert_close(method.attribute((x,), target=[0, 1, 2], pool_temperature=None)[0],
                               excitation_pullback(model, x, [0, 1, 2], temperature=0.2, pool_temperature=None))
    smooth = NoiseTunnel(method).attribute(x, target=1, nt_type="smoothgrad", nt_samples=3, stdevs=0.0)
    torch.testing.assert_close(smooth, excitation_pullback(model, x, 1, temperature=0.2))
    with pytest.raises(ValueError, match="target"):
        method.attribute(x)
