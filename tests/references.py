"""Slow, independent reference implementations of the surrogates, written differently on purpose.

- ReLU: straight-through through an antiderivative of the gate, ``relu(z) + (S(z) - S(z).detach())``
  with ``S'(z) = gate(z / T)`` (for the sigmoid, ``S(z) = T softplus(z / T)``).
- Max-pool: a Python loop over output positions that builds each window by index arithmetic.
- Everything else (:class:`ReferenceMode`): straight-through ``exact.detach() + (s - s.detach())`` with ``s``
  the stand-in written from the rule's formula: ``z * g(z).detach()`` for gated activations, the layer norm with
  detached statistics, attention written out as ``softmax(q k^T * scale / T) @ v``. Shares no code with ``utils``.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair
from torch.overrides import TorchFunctionMode


def antiderivative(z: torch.Tensor, temperature: float, gate: str) -> torch.Tensor:
    u = z / temperature
    if gate == "sigmoid":
        s = F.softplus(u)
    elif gate == "normal_cdf":
        s = u * 0.5 * (1 + torch.erf(u / math.sqrt(2))) + torch.exp(-u * u / 2) / math.sqrt(2 * math.pi)
    elif gate == "softsign":
        s = 0.5 * (u + u.abs() - torch.log1p(u.abs()))
    else:
        raise ValueError(gate)
    return temperature * s


def reference_relu(z: torch.Tensor, temperature: float = 0.3, gate: str = "sigmoid") -> torch.Tensor:
    s = antiderivative(z, temperature, gate)
    return torch.relu(z).detach() + (s - s.detach())


def loop_softmax_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, temperature=0.3,
                      detached=False):
    """Softmax pool by explicit loops; the output grid is taken from F.max_pool2d itself. ``detached`` holds the
    softmax weights constant."""
    k, p, d = _pair(kernel_size), _pair(padding), _pair(dilation)
    s = _pair(stride if stride else kernel_size)
    out_h, out_w = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode).shape[-2:]
    h, w = x.shape[-2:]
    rows = []
    for i in range(out_h):
        cols = []
        for j in range(out_w):
            window = [x[..., r, c] for a in range(k[0]) for b in range(k[1])
                      for r, c in [(i * s[0] - p[0] + a * d[0], j * s[1] - p[1] + b * d[1])]
                      if 0 <= r < h and 0 <= c < w]
            v = torch.stack(window, -1)
            weights = torch.softmax(v / temperature, -1)
            cols.append((v * (weights.detach() if detached else weights)).sum(-1))
        rows.append(torch.stack(cols, -1))
    return torch.stack(rows, -2)


def reference_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, temperature=0.3,
                   detached=False):
    soft = loop_softmax_pool(x, kernel_size, stride, padding, dilation, ceil_mode, temperature, detached)
    hard = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    return hard.detach() + (soft - soft.detach())


class RefReLU(nn.Module):
    def __init__(self, temperature, gate="sigmoid"):
        super().__init__()
        self.temperature, self.gate = temperature, gate

    def forward(self, z):
        return reference_relu(z, self.temperature, self.gate)


class RefPool(nn.Module):
    def __init__(self, pool: nn.MaxPool2d, temperature):
        super().__init__()
        self.pool, self.temperature = pool, temperature

    def forward(self, x):
        p = self.pool
        return reference_pool(x, p.kernel_size, p.stride, p.padding, p.dilation, p.ceil_mode, self.temperature)


def reference_copy(model: nn.Module, temperature: float, gate: str = "sigmoid") -> nn.Module:
    """A copy of a zoo model whose ReLU and max-pool modules and functional ops use the references."""
    import copy

    ref = copy.deepcopy(model)
    for module in list(ref.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, RefReLU(temperature, gate))
            elif isinstance(child, nn.MaxPool2d):
                setattr(module, name, RefPool(child, temperature))
    if hasattr(ref, "ops"):
        ref.ops = ReferenceOps(temperature, gate)
    return ref


class TorchOps:
    """The functional calls zoo models make, as torch spells them."""
    relu = staticmethod(F.relu)
    relu_ = staticmethod(torch.relu_)
    torch_relu = staticmethod(torch.relu)
    tensor_relu = staticmethod(torch.Tensor.relu)
    max_pool2d = staticmethod(F.max_pool2d)


class ReferenceOps:
    def __init__(self, temperature, gate):
        self.temperature, self.gate = temperature, gate

    def relu(self, z, inplace=False):
        return reference_relu(z, self.temperature, self.gate)

    relu_ = torch_relu = tensor_relu = relu

    def max_pool2d(self, x, *args, **kwargs):
        return reference_pool(x, *args, temperature=self.temperature, **kwargs)


# ---- every rule, by formula, as a function mode -----------------------------------------------------------------

def straight_through(exact, stand_in):
    return exact.detach() + (stand_in - stand_in.detach())


def phi(u):
    return 0.5 * (1 + torch.erf(u / math.sqrt(2)))


GATED = {  # function -> (kind, gate of z given T and the call's arguments)
    F.silu: ("silu", lambda z, t, args: torch.sigmoid(z / t)),
    F.gelu: ("gelu", lambda z, t, args: phi(z / t)),
    F.hardswish: ("hardswish", lambda z, t, args: torch.clamp(z / t / 6 + 0.5, 0, 1)),
    F.relu6: ("hardtanh", lambda z, t, args: torch.sigmoid(z / t) * torch.sigmoid((6 - z) / t)),
    F.hardtanh: ("hardtanh", lambda z, t, args: torch.sigmoid((z - args.get(1, -1.0)) / t)
                 * torch.sigmoid((args.get(2, 1.0) - z) / t)),
    F.leaky_relu: ("leaky_relu", lambda z, t, args: args.get(1, 0.01) + (1 - args.get(1, 0.01)) * torch.sigmoid(z / t)),
}
RELUS = (F.relu, torch.relu, torch.Tensor.relu, F.relu_, torch.relu_, torch.Tensor.relu_)
DEFAULTS = dict(relu=0.3, pool=0.3, pool_variant="soft", silu=1.6, gelu=1.0, hardswish=1.0, hardtanh=0.3,
                leaky_relu=0.3, attention=1.5, layer_norm=True)


class ReferenceMode(TorchFunctionMode):
    """Straight-through stand-ins for every rule, from the formulas; T per kind in ``temperatures``."""

    def __init__(self, **temperatures):
        super().__init__()
        self.t = {**DEFAULTS, **temperatures}
        self.weights = {}  # id(attention weights) -> (weights, logits)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        t = self.t
        if func in RELUS:
            return reference_relu(args[0], t["relu"])
        if func is F.max_pool2d:
            if t["pool_variant"] == "hard":
                return func(*args, **kwargs)
            kwargs = {k: v for k, v in kwargs.items() if k != "return_indices"}
            return reference_pool(*args, **kwargs, temperature=t["pool"], detached=t["pool_variant"] == "detached")
        if func is F.adaptive_max_pool2d:
            if t["pool_variant"] == "hard":
                return func(*args, **kwargs)
            x, size = args[0], args[1] if len(args) > 1 else kwargs["output_size"]
            size = (size, size) if isinstance(size, int) else size
            kernel = (x.shape[-2] // size[0], x.shape[-1] // size[1])
            return reference_pool(x, kernel, kernel, temperature=t["pool"], detached=t["pool_variant"] == "detached")
        if func in GATED:
            kind, gate = GATED[func]
            z = args[0]
            named = dict(enumerate(args))
            named.update({1: kwargs["negative_slope"]} if "negative_slope" in kwargs else {})
            stand_in = z * gate(z, t[kind], named).detach()
            return straight_through(func(z.detach().clone(), *args[1:], **kwargs), stand_in)
        if func is F.layer_norm and t["layer_norm"]:
            named = {**dict(zip(("input", "normalized_shape", "weight", "bias", "eps"), args)), **kwargs}
            x, shape, eps = named["input"], named["normalized_shape"], named.get("eps", 1e-5)
            dims = tuple(range(x.dim() - len(shape), x.dim()))
            mean = x.mean(dims, keepdim=True).detach()
            var = ((x - mean) ** 2).mean(dims, keepdim=True).detach()
            held = (x - mean) / torch.sqrt(var + eps)
            if named.get("weight") is not None:
                held = held * named["weight"]
            if named.get("bias") is not None:
                held = held + named["bias"]
            return straight_through(func(*args, **kwargs), held)
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            scale = kwargs.get("scale") or 1 / math.sqrt(q.shape[-1])
            logits = q @ k.transpose(-2, -1) * scale
            if kwargs.get("attn_mask") is not None:
                logits = logits + kwargs["attn_mask"]
            return straight_through(func(*args, **kwargs), torch.softmax(logits / t["attention"], -1) @ v)
        if func is F.multi_head_attention_forward:
            return self._mha(func, args, kwargs)
        if func in (F.softmax, torch.softmax, torch.Tensor.softmax):
            out = straight_through(func(*args, **kwargs), torch.softmax(args[0] / t["attention"], -1))
            self.weights[id(out)] = (out, args[0])
            return out
        if func is F.dropout and id(args[0]) in self.weights:
            out = func(*args, **kwargs)
            self.weights[id(out)] = (out, self.weights[id(args[0])][1])
            return out
        if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__) and id(args[0]) in self.weights \
                and self.weights[id(args[0])][0] is args[0]:
            logits = self.weights[id(args[0])][1]
            return straight_through(func(*args, **kwargs), torch.softmax(logits / t["attention"], -1) @ args[1])
        return func(*args, **kwargs)

    def _mha(self, func, args, kwargs):
        """nn.MultiheadAttention's function written out (packed projections, no masks, no dropout)."""
        exact = func(*args, **kwargs)
        query, key, value, e, heads, w_in, b_in = args[:7]
        w_out, b_out = args[11], args[12]
        length, batch = query.shape[:2]
        d = e // heads
        q, k, v = (F.linear(x, w_in[i * e:(i + 1) * e], b_in[i * e:(i + 1) * e]) for i, x in enumerate((query, key, value)))
        q, k, v = (x.reshape(x.shape[0], batch * heads, d).transpose(0, 1) for x in (q, k, v))
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d) / self.t["attention"], -1)
        o = (weights @ v).transpose(0, 1).reshape(length, batch, e)
        return straight_through(exact[0], F.linear(o, w_out, b_out)), None


def reference_gradient(model, x, target, **temperatures):
    """Input gradient of ``model(x)[i, target_i]`` under :class:`ReferenceMode`."""
    leaf = x.detach().clone().requires_grad_()
    with ReferenceMode(**temperatures):
        logits = model(leaf)
    target = torch.as_tensor(target).expand(x.shape[0])
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), leaf)
    return grad
