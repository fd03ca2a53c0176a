"""Cross-gating: the weights of one network run with the ReLU gates of another, ``f_pi^(t)`` with
``pi = pi^(s)(x)`` (Hypothesis 1), and random gates of the same sparsity as a control.

Once the gates are fixed the network is linear in its input (Eq. 7), so this separates "which paths are
open" from "what the weights are". Every ReLU *call* is one gating site; models run in eval mode on inputs
batched in chunks of ``chunk_size``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.interception import RELU_FUNCTIONS, Interceptor, bound_argument
from ..core.gates import Gate, gate_or_hard
from .gating import chunks, preactivations, require_eval
from .overlap import GateMismatchError
from .stats import pearson


@torch.no_grad()
def gates_of(model: nn.Module, x: torch.Tensor, temperature: float | None = None,
             gate: str | Gate = "sigmoid") -> list[torch.Tensor]:
    """The gates pi(x) of every ReLU call of ``model(x)``, each shaped like its pre-activation z (N, ...):
    hard ``1[z > 0]`` if ``temperature`` is None, else soft ``gate(z / T)`` (the excitations of Eq. 23)."""
    require_eval(model)
    return [gate_or_hard(z, temperature, gate) for z in preactivations(model, x)]


class _CrossGate(Interceptor):
    """At the i-th ReLU call return ``z * gates[i]`` instead of ``relu(z)`` (in place if the call was)."""

    def __init__(self, gates: list[torch.Tensor]):
        super().__init__({fn: self._gated for fn in RELU_FUNCTIONS})
        self.gates, self.calls = gates, 0

    def _gated(self, func, args, kwargs):
        i, z = self.calls, args[0]
        self.calls += 1
        if i >= len(self.gates):
            raise GateMismatchError(f"the model makes more ReLU calls than the {len(self.gates)} gate tensors given")
        g = self.gates[i]
        if g.shape != z.shape:
            raise GateMismatchError(f"ReLU call {i}: gate shape {tuple(g.shape)} != pre-activation shape "
                                    f"{tuple(z.shape)} (same architecture and the same x?)")
        g = g.to(device=z.device, dtype=z.dtype)
        inplace = bool(bound_argument(args, kwargs, 1, "inplace", RELU_FUNCTIONS[func]))
        return z.mul_(g) if inplace else z * g


def cross_gated_logits(model_t: nn.Module, gates_s: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``f_pi^(t)(x)``: the weights of ``model_t`` with the gates ``pi = gates_s`` of another model s on the same x.

    The i-th ReLU call returns ``z_t * gates_s[i]`` instead of ``relu(z_t)``; everything else (convolutions,
    BatchNorm, max-pools, residual sums) is ``model_t``'s own. With fixed gates the network is linear in
    its input up to biases (Eq. 7). With ``gates_s = gates_of(model_t, x)`` this is exactly ``model_t(x)``.

    Args:
        model_t: the model whose weights are used (eval mode).
        gates_s: one tensor per ReLU call, shaped like that call's pre-activation (see :func:`gates_of`).
        x: inputs (N, ...), the ones the gates were computed on.

    Returns:
        logits (N, classes). Grad mode is left to the caller.

    Raises:
        GateMismatchError: the number of ReLU calls or a shape differs from ``gates_s``.
    """
    require_eval(model_t)
    mode = _CrossGate(gates_s)
    with mode:
        out = model_t(x)
    if mode.calls != len(gates_s):
        raise GateMismatchError(f"the model made {mode.calls} ReLU calls but {len(gates_s)} gate tensors were given")
    return out


def random_gates_like(gates: list[torch.Tensor], generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Control for cross-gating: random hard gates with the sparsity of ``gates``.

    For every call site and every sample, ``round(mean gate * units)`` units chosen uniformly at random are
    set to 1, the rest to 0 (so the fraction active per site and per sample matches to within 1 / units;
    for soft gates the mean gate is the expected fraction active). Shapes and dtypes are those of ``gates``.
    """
    out = []
    for g in gates:
        flat = g.flatten(1)
        n, units = flat.shape
        k = (flat.double().mean(1) * units).round().long()  # active units per sample
        # The k smallest of i.i.d. uniform keys are a uniform k-subset, found by a k-th-value selection per
        # sample (linear in units, where a sort of the keys would cost as much as 8 forward passes); float64
        # keys make ties (which would change the count) vanishingly rare.
        keys = torch.rand(n, units, generator=generator, dtype=torch.float64)
        keep = torch.zeros(n, units, dtype=torch.bool)
        for i in range(n):
            if k[i] > 0:
                keep[i] = keys[i] <= keys[i].kthvalue(int(k[i])).values
        out.append(keep.to(device=g.device, dtype=g.dtype).view_as(g))
    return out


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, chunk_size: int = 50) -> dict:
    """``f(x)`` summarised for the cross-gating metrics: ``"pred"`` (N,) int64 top-1 classes and ``"true"`` (N,)
    float64 true-class logits, for inputs x (N, ...) and labels (N,)."""
    require_eval(model)
    logits = torch.cat([model(x[sl]) for sl in chunks(len(x), chunk_size)])
    return {"pred": logits.argmax(1), "true": logits.gather(1, labels.long()[:, None])[:, 0].double()}


@torch.no_grad()
def cross_gating_rows(model_s: nn.Module, models_t: list[nn.Module], x: torch.Tensor, labels: torch.Tensor,
                      temperatures=(None,), gate: str | Gate = "sigmoid", chunk_size: int = 50,
                      control: torch.Generator | None = None) -> dict:
    """Row s of the cross-gating matrices, ``f_pi^(t)(x)`` with ``pi = pi^(s)(x)`` for every t in ``models_t``,
    for several kinds of gates of s at once.

    One recording pass of ``model_s`` per chunk yields its logits and the pre-activations from which every
    kind of gate is taken (hard ``1[z_s > 0]`` for a temperature None, else ``gate(z_s / T)``; see
    :func:`gates_of`); then one cross-gated pass per kind and per t. Cost per chunk: ``1 + K * T`` forward
    passes for K temperatures.

    Args:
        model_s: the model whose gates are used; models_t: T models of its architecture whose weights are used.
        x: inputs (N, ...); labels: true classes (N,).
        control: a generator: replace each kind of gates by :func:`random_gates_like` of them (same sparsity).

    Returns:
        dict: ``"pred"`` (K, T, N) int64 top-1 classes and ``"true"`` (K, T, N) float64 true-class logits of
        ``f_pi^(t)``; ``"active"`` (K, sites) float64 mean gate per ReLU call site over all of x (the fraction
        active for hard gates), before any randomisation; ``"own_pred"``, ``"own_true"`` (N,): ``f^(s)`` itself.
    """
    require_eval(model_s)
    labels = labels.long()
    K, T, N = len(temperatures), len(models_t), len(x)
    pred, true = torch.empty(K, T, N, dtype=torch.long), torch.empty(K, T, N, dtype=torch.float64)
    own_pred, own_true = torch.empty(N, dtype=torch.long), torch.empty(N, dtype=torch.float64)
    total = torch.zeros(K, 0, dtype=torch.float64)
    for sl in chunks(N, chunk_size):
        store, logits = preactivations(model_s, x[sl], return_output=True)
        own_pred[sl], own_true[sl] = logits.argmax(1), logits.gather(1, labels[sl, None])[:, 0].double()
        for k, temperature in enumerate(temperatures):
            gs = [gate_or_hard(z, temperature, gate) for z in store]
            sums = torch.tensor([q.double().sum().item() / q[0].numel() for q in gs], dtype=torch.float64)
            if total.shape[1] == 0:
                total = torch.zeros(K, len(gs), dtype=torch.float64)
            total[k] += sums
            if control is not None:
                gs = random_gates_like(gs, control)
            for t, mt in enumerate(models_t):
                out = cross_gated_logits(mt, gs, x[sl])
                pred[k, t, sl], true[k, t, sl] = out.argmax(1), out.gather(1, labels[sl, None])[:, 0].double()
    return {"pred": pred, "true": true, "active": total / N, "own_pred": own_pred, "own_true": own_true}


def cross_gated_predictions(model_s: nn.Module, models_t: list[nn.Module], x: torch.Tensor, labels: torch.Tensor,
                            temperature: float | None = None, gate: str | Gate = "sigmoid", chunk_size: int = 50,
                            control: torch.Generator | None = None) -> dict:
    """:func:`cross_gating_rows` for one kind of gates: ``"pred"``, ``"true"`` (T, N) and ``"active"`` (sites,)."""
    rows = cross_gating_rows(model_s, models_t, x, labels, (temperature,), gate, chunk_size, control)
    return {"pred": rows["pred"][0], "true": rows["true"][0], "active": rows["active"][0]}


def cross_gating_metrics(pred: torch.Tensor, true: torch.Tensor, own_pred: torch.Tensor, own_true: torch.Tensor,
                         labels: torch.Tensor) -> dict:
    """Accuracy, Pearson correlation and agreement of cross-gated networks against the networks themselves.

    Args:
        pred, true: top-1 classes and true-class logits of ``f_pi^(t)``, (..., N), e.g. (S, T, N).
        own_pred, own_true: the same for ``f^(t)``, broadcastable to ``pred`` (e.g. (T, N)).
        labels: (N,).

    Returns:
        dict of float64 tensors shaped ``pred.shape[:-1]``: ``"accuracy"`` (top-1 of ``f_pi^(t)``),
        ``"correlation"`` (Pearson over the N inputs of the true-class logits of ``f_pi^(t)`` and ``f^(t)``;
        NaN if either is constant), ``"agreement"`` (fraction where both predict the same class).
    """
    labels = labels.long()
    return {"accuracy": (pred == labels).double().mean(-1),
            "correlation": pearson(true.double(), own_true.double().expand_as(true)),
            "agreement": (pred == own_pred).double().mean(-1)}


@torch.no_grad()
def cross_gating_matrices(models: list[nn.Module], x: torch.Tensor, labels: torch.Tensor,
                          temperature: float | None = None, gate: str | Gate = "sigmoid",
                          chunk_size: int = 50, control: torch.Generator | None = None) -> dict:
    """Cross-gated networks ``f_pi^(t)`` with ``pi = pi^(s)(x)`` for every pair of models (Hypothesis 1).

    If gates stabilise early, the late weights t run with the gates of an early checkpoint s should
    classify about as well as ``f^(t)`` itself, and their true-class logits should track ``f^(t)``'s.

    Args:
        models: S models of one architecture, eval mode (e.g. checkpoints in training order).
        x: inputs (N, ...); labels: true classes (N,).
        temperature: None for hard gates ``1[z_s > 0]``, else soft ``gate(z_s / T)``.
        chunk_size: inputs per forward pass. Cost per chunk: S + S + S^2 forward passes
            (:func:`predictions` of each model, then one :func:`cross_gated_predictions` row per s).
        control: a generator: replace every gate set by :func:`random_gates_like` of it (same sparsity).

    Returns:
        dict of float64 tensors, rows s = source of the gates, columns t = source of the weights:
        ``"accuracy"`` (S, S): top-1 accuracy of ``f_pi^(t)``;
        ``"correlation"`` (S, S): Pearson correlation over x of the true-class logits of ``f_pi^(t)`` and ``f^(t)``
        (NaN if either is constant);
        ``"agreement"`` (S, S): fraction of x where ``f_pi^(t)`` and ``f^(t)`` predict the same class;
        ``"own_accuracy"`` (S,): accuracy of each ``f^(t)``.
    """
    own = [predictions(m, x, labels, chunk_size) for m in models]
    rows = [cross_gated_predictions(m, models, x, labels, temperature, gate, chunk_size, control) for m in models]
    own_pred, own_true = torch.stack([o["pred"] for o in own]), torch.stack([o["true"] for o in own])
    metrics = cross_gating_metrics(torch.stack([r["pred"] for r in rows]), torch.stack([r["true"] for r in rows]),
                                   own_pred, own_true, labels)
    return {**metrics, "own_accuracy": (own_pred == labels.long()).double().mean(-1)}
