"""Each rule alone against its formula on a one-layer model; the limits; settings reach every call."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from references import reference_gradient
from utils import excitation_pullback, pullback_ascent, soft_backward, vanilla_gradient
from utils.core.excitation import UnsupportedNonlinearityError
from utils.core.gates import gate_or_hard, hard_gate
from utils.core.rules import GELURule, ReLURule
from utils.core.settings import Settings

D = 6


class Copy(nn.Module):
    def forward(self, x):
        return x * 1.0  # not the leaf itself: an in-place activation may follow


def readout(act: nn.Module) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``Linear(act(x))``: the pullback of logit c is ``W[c] * g(x)`` for a rule with gate g."""
    torch.manual_seed(0)
    model = nn.Sequential(Copy(), act, nn.Linear(D, 3)).double().eval()
    x = torch.linspace(-4, 4, 2 * D, dtype=torch.float64).view(2, D)
    return model, x, model[2].weight.detach()[1]


def phi(u):
    return 0.5 * (1 + torch.erf(u / math.sqrt(2)))


@pytest.mark.parametrize("act, gate, settings", [
    (nn.SiLU(), lambda z: torch.sigmoid(z / 1.6), {}),
    (nn.SiLU(inplace=True), lambda z: torch.sigmoid(z / 0.7), {"silu_temperature": 0.7}),
    (nn.GELU(), lambda z: phi(z), {}),
    (nn.GELU(approximate="tanh"), lambda z: phi(z / 0.5), {"gelu_temperature": 0.5}),
    (nn.Hardswish(), lambda z: torch.clamp(z / 6 + 0.5, 0, 1), {}),
    (nn.LeakyReLU(0.1), lambda z: 0.1 + 0.9 * torch.sigmoid(z / 0.3), {}),
    (nn.ReLU6(), lambda z: torch.sigmoid(z / 0.3) * torch.sigmoid((6 - z) / 0.3), {}),
    (nn.Hardtanh(-2.0, 3.0), lambda z: torch.sigmoid((z + 2) / 0.5) * torch.sigmoid((3 - z) / 0.5),
     {"hardtanh_temperature": 0.5}),
    (nn.ReLU(), lambda z: torch.sigmoid(z / 0.3), {}),
])
def test_gated_rule_is_its_gate(act, gate, settings):
    model, x, w = readout(act)
    expected = w * gate(x)
    torch.testing.assert_close(excitation_pullback(model, x, 1, **settings), expected, rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        plain = model(x.clone())
    with soft_backward(model, **settings):
        assert torch.equal(model(x.clone().requires_grad_()).detach(), plain)


@pytest.mark.parametrize("act, kind", [(nn.SiLU(), "silu"), (nn.GELU(), "gelu"), (nn.Hardswish(), "hardswish")])
def test_none_keeps_a_kinds_exact_backward(act, kind):
    model, x, _ = readout(act)
    torch.testing.assert_close(excitation_pullback(model, x, 1, **{f"{kind}_temperature": None}),
                               vanilla_gradient(model, x, 1))


def test_sigmoid_gates_of_squeeze_excitation_keep_their_backward():
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.out = nn.Linear(D, D), nn.Linear(D, 3)
            self.gate = nn.Hardsigmoid()

        def forward(self, x):
            return self.out(x * torch.sigmoid(self.fc(x)) * self.gate(self.fc(x)))

    model, x = SE().double().eval(), torch.randn(4, D, dtype=torch.float64)
    torch.testing.assert_close(excitation_pullback(model, x, 1), vanilla_gradient(model, x, 1))


def test_layer_norm_holds_its_statistics():
    torch.manual_seed(1)
    model = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 3)).double().eval()
    nn.init.normal_(model[0].weight)
    x = torch.randn(4, D, dtype=torch.float64)
    w, gamma = model[1].weight.detach()[2], model[0].weight.detach()
    rstd = 1 / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(excitation_pullback(model, x, 2), w * gamma * rstd, rtol=1e-12, atol=1e-14)
    # the limit: with its statistics not held, the layer norm has its own gradient
    torch.testing.assert_close(excitation_pullback(model, x, 2, layer_norm=None), vanilla_gradient(model, x, 2))


class SoftmaxAttention(nn.Module):
    """Swin's way: explicit logits, softmax, (eval) dropout, weights @ values."""

    def __init__(self, use_sdpa=False):
        super().__init__()
        self.qkv, self.fc, self.use_sdpa = nn.Linear(8, 24), nn.Linear(5 * 8, 3), use_sdpa

    def forward(self, x):
        q, k, v = self.qkv(x).unflatten(-1, (3, 2, 4)).permute(2, 0, 3, 1, 4)  # (3, N, heads, L, d)
        if self.use_sdpa:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            a = F.dropout(F.softmax(q @ k.transpose(-2, -1) * 0.5, dim=-1), 0.1, training=False)
            o = a.matmul(v)
        return self.fc(o.transpose(1, 2).flatten(1))


class MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.fc = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(5 * 8, 3)

    def forward(self, x):
        return self.fc(self.attn(x, x, x, need_weights=False)[0].flatten(1))


@pytest.mark.parametrize("make", [lambda: SoftmaxAttention(False), lambda: SoftmaxAttention(True), MHA])
def test_attention_is_softmax_at_temperature_and_exact_at_one(make):
    torch.manual_seed(2)
    model, x = make().double().eval(), torch.randn(2, 5, 8, dtype=torch.float64)
    for t in (1.5, 0.5):
        torch.testing.assert_close(excitation_pullback(model, x, 1, attention_temperature=t),
                                   reference_gradient(model, x, 1, attention=t), rtol=1e-10, atol=1e-13)
    vanilla = vanilla_gradient(model, x, 1)
    assert not torch.allclose(excitation_pullback(model, x, 1), vanilla, rtol=1e-3)
    torch.testing.assert_close(excitation_pullback(model, x, 1, attention_temperature=1.0), vanilla)


def test_attention_stand_in_is_the_softmax_at_temperature():
    """On ``fc(softmax(q k^T s) v)`` (linear after the attention) the pullback is the gradient of the model with
    ``softmax(q k^T s / T)``: the formula itself, without any reference code."""

    class Hot(SoftmaxAttention):
        def forward(self, x):
            q, k, v = self.qkv(x).unflatten(-1, (3, 2, 4)).permute(2, 0, 3, 1, 4)
            return self.fc((torch.softmax(q @ k.transpose(-2, -1) * 0.5 / 1.5, -1) @ v).transpose(1, 2).flatten(1))

    torch.manual_seed(3)
    model, x = SoftmaxAttention().double().eval(), torch.randn(2, 5, 8, dtype=torch.float64)
    hot = Hot().double().eval()
    hot.load_state_dict(model.state_dict())
    torch.testing.assert_close(excitation_pullback(model, x, 2), vanilla_gradient(hot, x, 2), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("pool", ["soft", "detached", None])
def test_pool_variants(pool):
    """Soft, detached, and off (``pool_temperature=None``: the hard max's own gradient)."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(3, 2, 1), nn.AdaptiveMaxPool2d(2), nn.Flatten(),
                          nn.Linear(12, 3)).double().eval()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    if pool is None:
        got = excitation_pullback(model, x, 1, pool_temperature=None)
        torch.testing.assert_close(got, reference_gradient(model, x, 1, pool=0.5, pool_variant="hard"), rtol=1e-10,
                                   atol=1e-13)
        torch.testing.assert_close(got, vanilla_gradient(model, x, 1))
        return
    got = excitation_pullback(model, x, 1, pool=pool, pool_temperature=0.5)
    torch.testing.assert_close(got, reference_gradient(model, x, 1, pool=0.5, pool_variant=pool), rtol=1e-10,
                               atol=1e-13)
    # T -> 0 recovers the gradient away from ties
    torch.testing.assert_close(excitation_pullback(model, x, 1, pool=pool, pool_temperature=1e-9),
                               vanilla_gradient(model, x, 1), rtol=1e-7, atol=1e-10)


def test_tied_maxima_split_evenly_unless_hard():
    """The documented limit: a soft pool splits the gradient among tied maxima for every T; a hard one picks one."""
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1, 1)).double().eval()
    nn.init.ones_(model[3].weight)
    x = -torch.ones(1, 1, 2, 2, dtype=torch.float64)  # all four slots are 0 after the ReLU: a four-way tie
    x[0, 0, 0, 0] = -2.0
    for pool in ("soft", "detached"):
        g = excitation_pullback(model, x, 0, temperature=1e-9, pool=pool, pool_temperature=1e-9)
        assert torch.equal(g, torch.zeros_like(g))  # the ReLU gates are 0 here; look at the pool alone:
    pool_only = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1, 1)).double().eval()
    nn.init.ones_(pool_only[2].weight)
    tie = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    soft = excitation_pullback(pool_only, tie, 0, pool_temperature=1e-9)
    torch.testing.assert_close(soft, torch.full_like(tie, 0.25))
    hard = excitation_pullback(pool_only, tie, 0, pool_temperature=None)
    assert hard.sum() == 1 and (hard == 1).sum() == 1
    torch.testing.assert_close(hard, vanilla_gradient(pool_only, tie, 0))


class Disguised(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how, self.fc1, self.fc2 = how, nn.Linear(D, D), nn.Linear(D, 3)

    def forward(self, x):
        z = self.fc1(x)
        if self.how == "relu":
            y = F.relu(z)
        elif self.how == "clamp":
            y = z.clamp(min=0)
        elif self.how == "clamp_":
            y = z.clone().clamp_(min=0.0)
        elif self.how == "clamp_min":
            y = torch.clamp_min(z, 0)
        elif self.how == "maximum":
            y = torch.maximum(z, torch.zeros(()))
        elif self.how == "where":
            y = torch.where(z > 0, z, 0.0)
        elif self.how == "threshold":
            y = F.threshold(z, 0.0, 0.0)
        return self.fc2(y)


@pytest.mark.parametrize("how", ["clamp", "clamp_", "clamp_min", "maximum", "where", "threshold"])
def test_relus_in_disguise_are_softened(how):
    torch.manual_seed(5)
    relu = Disguised("relu").double().eval()
    model = Disguised(how).double().eval()
    model.load_state_dict(relu.state_dict())
    x = torch.randn(4, D, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model(x), relu(x))
    expected = excitation_pullback(relu, x, 1)
    assert not torch.allclose(expected, vanilla_gradient(relu, x, 1))
    torch.testing.assert_close(excitation_pullback(model, x, 1), expected, rtol=1e-12, atol=1e-14)


def test_settings_reach_pullback_ascent():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.MaxPool2d(2), nn.ELU(), nn.Flatten(),
                          nn.Linear(4 * 16, 3)).eval()
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with pytest.raises(UnsupportedNonlinearityError, match="ELU"):
        pullback_ascent(model, x, 1, steps=1)
    for settings in ({"pool_temperature": 0.05}, {"gelu_temperature": 0.2}, {"pool": "detached"}):
        a = pullback_ascent(model, x, 1, steps=1, strict=False, **settings)
        b = (x + 20.0 * (g := excitation_pullback(model, x, 1, strict=False, **settings))
             / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(-1, 1)
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="pool_temperature"):
        pullback_ascent(model, x, 1, steps=1, strict=False, pool_temperature=-1.0)


def test_rules_are_objects_with_their_parameters():
    settings = Settings(rules={"gelu": GELURule(0.25), "relu": ReLURule(0.1, "normal_cdf")})
    assert settings.rule("gelu").temperature == 0.25 and settings.rule("relu").temperature == 0.1
    model, x, w = readout(nn.GELU())
    torch.testing.assert_close(excitation_pullback(model, x, 1, settings=settings), w * phi(x / 0.25))
    with pytest.raises(ValueError, match="unknown rule kinds"):
        Settings(rules={"tanh": None})
    with pytest.raises(ValueError, match="pool must be .soft. or .detached."):
        Settings(pool="mean")


def test_gate_or_hard():
    z = torch.tensor([-1.0, 0.5])
    assert torch.equal(gate_or_hard(z, None), hard_gate(z))
    torch.testing.assert_close(gate_or_hard(z, 0.3), torch.sigmoid(z / 0.3))
