"""Measurements for the path-stability study (the paper's Hypothesis 1).

Hypothesis 1: the binary ReLU activation patterns of a network stabilise early in training, after
which the network behaves like a fixed kernel machine over its highly excited paths (the excitation
kernel, Eq. 23). Given checkpoints ``s, t`` of one run we measure

* how much their hard gates ``1[z > 0]`` overlap (:func:`gate_jaccard`, :func:`jaccard_matrix`);
* how well the weights of ``t`` do when run with the gates of ``s``, ``f_pi^(t)`` with ``pi = pi^(s)(x)``
  (:func:`cross_gated_logits`, :func:`cross_gating_matrices`, or row by row :func:`cross_gating_rows`
  and :func:`cross_gating_metrics`); once gates are fixed the network is
  linear in its input (Eq. 7), so this separates "which paths are open" from "what the weights are";
* a control, random hard gates with the same sparsity (:func:`random_gates_like`), so that high numbers
  mean something;
* how good a classifier the kernels are (:func:`kernel_knn_accuracy` with :func:`excitation_kernels`, :func:`utils.gating.input_kernel`, or the cosine of :func:`penultimate_features`).

Every ReLU *call* is one gating site, as in :mod:`utils.gating`. All functions run models in eval mode
and batch their inputs in chunks of ``chunk_size`` to bound memory.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.excitation import RELU_FUNCTIONS
from ..core.gates import Gate, check_temperature, get_gate, hard_gate
from .gating import input_kernel, preactivations
from ..models.nets import PoolResNet
from .stats import pearson


class GateMismatchError(ValueError):
    """Gates given for a model do not match its ReLU calls (their number or a shape)."""


def _require_eval(model: nn.Module) -> None:
    if model.training:
        raise ValueError("model is in training mode: call model.eval() first (BatchNorm would use batch "
                         "statistics and overwrite its running ones)")


def _chunks(n: int, chunk_size: int):
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [slice(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]


# --- checkpoints ---------------------------------------------------------------------------------

_EPOCH = re.compile(r"epoch_(\d+(?:\.\d+)?)\.pt")


def load_checkpoint(path: str | Path, num_classes: int = 10) -> PoolResNet:
    """A :class:`PoolResNet` (float32, CPU, eval mode) from a training checkpoint ``{"model": state_dict, ...}``
    (``utils.train``) or from a bare state dict (e.g. the float16 bundled weights)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    model = PoolResNet(num_classes=num_classes)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


def list_checkpoints(folder: str | Path) -> list[tuple[float, Path]]:
    """``(epoch, path)`` of every ``epoch_XX.XX.pt`` in ``folder``, sorted by epoch."""
    found = [(float(m.group(1)), p) for p in Path(folder).iterdir() if (m := _EPOCH.fullmatch(p.name))]
    return sorted(found)


# --- gate overlap -------------------------------------------------------------------------------

def _hard_patterns(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Bool ``z > 0`` per ReLU call, each (N, ...) like its pre-activation."""
    _require_eval(model)
    return [z > 0 for z in preactivations(model, x)]


def _check_sites(a: list, b: list, what: str = "patterns") -> None:
    if len(a) != len(b):
        raise GateMismatchError(f"{what} have {len(a)} and {len(b)} ReLU call sites: not the same architecture")
    for i, (p, q) in enumerate(zip(a, b)):
        if p.shape != q.shape:
            raise GateMismatchError(f"ReLU call {i}: shapes {tuple(p.shape)} and {tuple(q.shape)} differ")


def _jaccard(inter: torch.Tensor, active_s: torch.Tensor, active_t: torch.Tensor) -> torch.Tensor:
    union = active_s + active_t - inter
    # Two empty patterns are identical: Jaccard 1.
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def gate_jaccard(patterns_s: list[torch.Tensor], patterns_t: list[torch.Tensor],
                 per_site: bool = False) -> float | torch.Tensor:
    """Overlap of the active units of two models on the same inputs (Hypothesis 1: patterns stabilise).

    Per ReLU call site i, the Jaccard index ``|A_i ∩ B_i| / |A_i ∪ B_i|`` of the active sets pooled
    over all samples and units of the site (so a sample with few active units weighs little; a site
    where both sets are empty scores 1); then the unweighted mean over sites.

    Args:
        patterns_s, patterns_t: hard gates per call site, bool or {0, 1}, each (N, ...) with matching
            shapes, e.g. from :func:`utils.gating.gate_patterns` with ``temperature=None`` or
            :func:`gates_of`.
        per_site: return the (sites,) float64 tensor of per-site indices instead of their mean.
    """
    _check_sites(patterns_s, patterns_t)
    inter, act_s, act_t = (torch.zeros(len(patterns_s), dtype=torch.float64) for _ in range(3))
    for i, (p, q) in enumerate(zip(patterns_s, patterns_t)):
        p, q = _as_bool(p), _as_bool(q)
        inter[i], act_s[i], act_t[i] = (p & q).sum(), p.sum(), q.sum()
    sites = _jaccard(inter, act_s, act_t)
    return sites if per_site else sites.mean().item()


def _as_bool(p: torch.Tensor) -> torch.Tensor:
    if p.dtype == torch.bool:
        return p
    if not ((p == 0) | (p == 1)).all():
        raise ValueError("gate_jaccard takes hard gates (bool or {0, 1}); got soft values")
    return p != 0


@torch.no_grad()
def jaccard_matrix(models: list[nn.Module], x: torch.Tensor, chunk_size: int = 50,
                   per_site: bool = False) -> torch.Tensor:
    """:func:`gate_jaccard` between every pair of ``models`` on inputs x (N, ...), pooled over all of x.

    Each model's hard patterns are computed once per chunk (memory: about
    ``len(models) * chunk_size * units`` bytes, units = 3.4M per image for PoolResNet at 224px).

    Returns:
        (S, S) float64 symmetric matrix with ones on the diagonal, or (S, S, sites) if ``per_site``.
    """
    S = len(models)
    inter = None
    for sl in _chunks(len(x), chunk_size):
        patterns = [_hard_patterns(m, x[sl]) for m in models]
        for p in patterns[1:]:
            _check_sites(patterns[0], p)
        if inter is None:
            inter = torch.zeros(S, S, len(patterns[0]), dtype=torch.float64)
        for s in range(S):
            for t in range(s, S):
                counts = torch.tensor([(a & b).sum().item() for a, b in zip(patterns[s], patterns[t])],
                                      dtype=torch.float64)
                inter[s, t] += counts
                if t != s:
                    inter[t, s] += counts
        del patterns
    active = inter.diagonal(dim1=0, dim2=1).T  # (S, sites): |A ∩ A| = |A|
    sites = _jaccard(inter, active[:, None, :], active[None, :, :])
    return sites if per_site else sites.mean(-1)


# --- cross-gating -------------------------------------------------------------------------------

@torch.no_grad()
def gates_of(model: nn.Module, x: torch.Tensor, temperature: float | None = None,
             gate: str | Gate = "sigmoid") -> list[torch.Tensor]:
    """The gates pi(x) of every ReLU call of ``model(x)``, each shaped like its pre-activation z (N, ...):
    hard ``1[z > 0]`` if ``temperature`` is None, else soft ``gate(z / T)`` (the excitations of Eq. 23)."""
    _require_eval(model)
    zs = preactivations(model, x)
    if temperature is None:
        return [hard_gate(z) for z in zs]
    t, g = check_temperature(temperature), get_gate(gate)
    return [g(z / t) for z in zs]


class _CrossGate(TorchFunctionMode):
    """At the i-th ReLU call return ``z * gates[i]`` instead of ``relu(z)`` (in place if the call was)."""

    def __init__(self, gates: list[torch.Tensor]):
        super().__init__()
        self.gates, self.calls = gates, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in RELU_FUNCTIONS:
            return func(*args, **kwargs)
        i, z = self.calls, args[0]
        self.calls += 1
        if i >= len(self.gates):
            raise GateMismatchError(f"the model makes more ReLU calls than the {len(self.gates)} gate tensors given")
        g = self.gates[i]
        if g.shape != z.shape:
            raise GateMismatchError(f"ReLU call {i}: gate shape {tuple(g.shape)} != pre-activation shape "
                                    f"{tuple(z.shape)} (same architecture and the same x?)")
        g = g.to(device=z.device, dtype=z.dtype)
        inplace = bool(args[1]) if len(args) > 1 else bool(kwargs.get("inplace", RELU_FUNCTIONS[func]))
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
    _require_eval(model_t)
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
        # The k smallest of i.i.d. uniform keys are a uniform k-subset. A k-th-value selection per sample
        # is linear in units, where sorting the keys costs 8 forward passes; float64 keys make ties
        # (which would change the count) vanishingly rare.
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
    _require_eval(model)
    logits = torch.cat([model(x[sl]) for sl in _chunks(len(x), chunk_size)])
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
    _require_eval(model_s)
    labels = labels.long()
    K, T, N = len(temperatures), len(models_t), len(x)
    pred, true = torch.empty(K, T, N, dtype=torch.long), torch.empty(K, T, N, dtype=torch.float64)
    own_pred, own_true = torch.empty(N, dtype=torch.long), torch.empty(N, dtype=torch.float64)
    total = torch.zeros(K, 0, dtype=torch.float64)
    g = get_gate(gate)
    for sl in _chunks(N, chunk_size):
        store, logits = preactivations(model_s, x[sl], return_output=True)
        own_pred[sl], own_true[sl] = logits.argmax(1), logits.gather(1, labels[sl, None])[:, 0].double()
        for k, temperature in enumerate(temperatures):
            gs = [hard_gate(z) if temperature is None else g(z / check_temperature(temperature)) for z in store]
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


# --- kernel classifiers -------------------------------------------------------------------------

@torch.no_grad()
def excitation_kernels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, temperatures=(None, 0.3),
                       gate: str | Gate = "sigmoid", chunk_size: int = 50, block_size: int = 250) -> list[torch.Tensor]:
    """Cosine-form excitation kernels (Eq. 23) of x against y, one per temperature, from shared forward passes.

    ``K_T(x, x') = cos(x, x') * prod_l cos(gate_l(x), gate_l(x'))`` with hard gates for T = None and
    ``gate(z / T)`` otherwise: the values of :func:`utils.gating.excitation_kernel` with ``normalise=True``,
    computed block by block so that each forward pass serves every temperature, the gates of a block of ``block_size`` x-inputs are kept
    while all of y streams past (``N + ceil(N / block_size) * M`` forward passes instead of about
    ``N * M / chunk_size``), and the per-layer Gram products run in x's dtype (float32 for the study: ~1e-6
    relative error per factor, against float64 in :func:`utils.gating.kernel_from_patterns`).

    Memory: the block's unit-norm gates, ``len(temperatures) * block_size * units`` numbers (units = 0.81M per
    image for PoolResNet at 112px: 1.6 GB in float32 for two temperatures and 250 inputs).

    Args:
        x: inputs (N, ...); y: inputs (M, ...), e.g. val images against a train subset.

    Returns:
        list of (N, M) float64 kernels, in the order of ``temperatures``.
    """
    _require_eval(model)
    cos_in = input_kernel(x, y)
    out = [torch.empty(len(x), len(y), dtype=torch.float64) for _ in temperatures]
    for bi in _chunks(len(x), block_size):
        gx = _unit_gates(model, x[bi], temperatures, gate, chunk_size)
        for bj in _chunks(len(y), chunk_size):
            gy = _unit_gates(model, y[bj], temperatures, gate, chunk_size)
            for kernel, sites_x, sites_y in zip(out, gx, gy):
                block = cos_in[bi, bj].clone()
                for a, b in zip(sites_x, sites_y):
                    block *= (a @ b.T).double()
                kernel[bi, bj] = block
    return out


def _unit_gates(model: nn.Module, x: torch.Tensor, temperatures, gate, chunk_size: int) -> list[list[torch.Tensor]]:
    """Per temperature, per ReLU call: the gates of each input flattened to unit norm, (N, units) in x's dtype
    (an all-zero gate stays zero, as in :func:`utils.gating.input_kernel`)."""
    per_t: list[list[list[torch.Tensor]]] = [[] for _ in temperatures]
    g = get_gate(gate)
    for sl in _chunks(len(x), chunk_size):
        zs = preactivations(model, x[sl])
        for parts, t in zip(per_t, temperatures):
            gates = (hard_gate(z) if t is None else g(z / check_temperature(t)) for z in zs)
            parts.append([F.normalize(q.flatten(1), dim=1) for q in gates])
    return [[torch.cat(site) for site in zip(*parts)] for parts in per_t]


@torch.no_grad()
def penultimate_features(model: PoolResNet, x: torch.Tensor, chunk_size: int = 50) -> torch.Tensor:
    """The globally pooled features ``model.pool(model.features(x))`` that ``model.fc`` reads:
    x (N, 3, H, W) -> (N, channels) float32. Their cosine (``input_kernel(f, g)``) is the baseline
    feature kernel to compare the excitation kernel against."""
    if not all(hasattr(model, a) for a in ("features", "pool", "fc")):
        raise TypeError(f"penultimate_features needs a PoolResNet (features, pool, fc), got {type(model).__name__}")
    _require_eval(model)
    return torch.cat([model.pool(model.features(x[sl])).flatten(1) for sl in _chunks(len(x), chunk_size)])


def kernel_knn_predict(kernel: torch.Tensor, train_labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Class of each row of ``kernel`` (N, M) by majority vote of its k most similar training points;
    ties go to the class with the largest summed similarity among the k."""
    if not 1 <= k <= kernel.shape[1]:
        raise ValueError(f"k must be in [1, {kernel.shape[1]}], got {k}")
    if len(train_labels) != kernel.shape[1]:
        raise ValueError(f"kernel has {kernel.shape[1]} columns but {len(train_labels)} train labels")
    sims, idx = kernel.double().topk(k, dim=1)
    votes = nn.functional.one_hot(train_labels.long()[idx], int(train_labels.max()) + 1).double()  # (N, k, C)
    counts, mass = votes.sum(1), (votes * sims[..., None]).sum(1)
    tied = counts == counts.max(1, keepdim=True).values
    return torch.where(tied, mass, torch.full_like(mass, -torch.inf)).argmax(1)


def kernel_knn_accuracy(kernel_val_train: torch.Tensor, train_labels: torch.Tensor, val_labels: torch.Tensor,
                        k: int = 1) -> float:
    """Top-1 accuracy of the k-nearest-neighbour classifier defined by a kernel (higher = more similar).

    How good a classifier a kernel is: for the excitation kernel (Eq. 23, hard or soft gates, e.g. from
    :func:`excitation_kernels`), the input kernel (:func:`utils.gating.input_kernel`) or the
    cosine of :func:`penultimate_features`. ``kernel_val_train`` is (N_val, N_train); labels (N_train,),
    (N_val,). Ties: see :func:`kernel_knn_predict`.
    """
    if len(val_labels) != kernel_val_train.shape[0]:
        raise ValueError(f"kernel has {kernel_val_train.shape[0]} rows but {len(val_labels)} val labels")
    pred = kernel_knn_predict(kernel_val_train, train_labels, k)
    return (pred == val_labels.long()).double().mean().item()
