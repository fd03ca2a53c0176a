"""Input-space vector fields of a classifier: the excitation pullback and the vanilla gradient.

Both follow Captum's convention: ``f(model, inputs, target)`` returns a tensor shaped like
``inputs``. Neither computes parameter gradients nor changes ``.grad`` or ``requires_grad`` on the model or the
input, not even for the length of the call: another thread may train the same model meanwhile.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Mapping, Sequence

import torch
from torch import nn

from . import torch_private as private
from .excitation import block
from .gates import Gate
from .rules import Rule
from .settings import FollowsReLU, Settings, resolve_settings
from .surrogates import inputs_only

Target = int | Sequence[int] | torch.Tensor
_TRAIN_DEPENDENT = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LazyBatchNorm1d,
                    nn.LazyBatchNorm2d, nn.LazyBatchNorm3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                    nn.AlphaDropout, nn.FeatureAlphaDropout)
"""Layers whose output depends on train mode (public classes; their private bases would name them all)."""


def check_inputs(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"inputs must be a batch (N, ...), e.g. images (N, 3, H, W); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"inputs must be floating point, got {x.dtype}")


def check_autograd_available(model: nn.Module) -> None:
    """A clear error where autograd cannot run: inside ``torch.inference_mode()``, or on a model whose parameters
    or buffers were made there (inference tensors cannot be saved for a backward pass)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("a pullback or gradient needs autograd, which is off inside torch.inference_mode(): "
                           "call it outside the inference_mode block")
    if any(t.is_inference() for t in (*model.parameters(), *model.buffers())):
        raise RuntimeError("the model's parameters or buffers are inference tensors (made under "
                           "torch.inference_mode()), which autograd cannot use: build the model and load its weights "
                           "outside inference_mode")


def as_targets(target: Target, batch: int, num_classes: int, device) -> torch.Tensor:
    """One class index per sample as an int64 tensor (N,) on ``device``, checked against ``num_classes``."""
    t, values = _indices(target, batch)
    _check_range(t, values, num_classes)
    return _to_device(t, device)


def _indices(target: Target, batch: int) -> tuple[torch.Tensor, list[int] | None]:
    """``target`` as an int64 tensor (N,) where it is (a tensor keeps its device), and its values as Python ints
    when they are on the CPU (read now, so that the range check after the forward pass waits for no device)."""
    if target is None:
        raise TypeError("target is required: the class whose logit to explain, an int or one index per sample")
    if isinstance(target, (str, bytes)):
        raise TypeError(f"target must be an int class index or one per sample, got the string {target!r}")
    try:
        t = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"target must be an int class index or one per sample, got {target!r} ({error})") from None
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    t = t.long()
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"target must be an int or one index per sample ({batch}), got shape {tuple(t.shape)}")
    return t, (t.tolist() if t.device.type == "cpu" else None)


def _check_range(t: torch.Tensor, values: list[int] | None, num_classes: int) -> None:
    """Indices read on the CPU are checked in Python; a tensor on a device is checked there without waiting for it
    (:func:`~utils.core.torch_private.assert_on_device`: out of range, the device stops with the message, as ``gather``'s own check would)."""
    if values is not None:
        if any(v < 0 or v >= num_classes for v in values):
            raise IndexError(f"target {values} out of range for a model with {num_classes} classes")
    else:
        private.assert_on_device(((t >= 0) & (t < num_classes)).all(),
                                 f"target out of range for a model with {num_classes} classes")


def _to_device(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` on ``device``; from the CPU to a GPU through pinned memory, so that the copy waits for no queued work."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.contiguous().pin_memory().to(device, non_blocking=True)
    return t.to(device)


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, checked to be class scores of shape (N, num_classes)."""
    logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model must map inputs (N, ...) to logits (N, num_classes); inputs {tuple(x.shape)} gave {shape}")
    return logits


def input_gradient(model: nn.Module, x: torch.Tensor, target: Target, context=None) -> torch.Tensor:
    """Gradient of the logits ``model(x)[i, target_i]`` w.r.t. ``x`` (N, ...), under an optional backward ``context``."""
    check_inputs(x)
    check_autograd_available(model)
    if any(m.training for m in model.modules() if isinstance(m, _TRAIN_DEPENDENT)):
        warnings.warn("model has BatchNorm or dropout in training mode (statistics change, outputs are random); "
                      "call model.eval() first", stacklevel=3)
    leaf = (x.clone() if x.is_inference() else x.detach()).requires_grad_(True)  # an inference tensor: a copy
    indices, values = _indices(target, x.shape[0])
    t = _to_device(indices, x.device)  # before the forward pass: no host-device synchronisation in the pullback
    # gradients for ``leaf`` alone, from autograd.grad's pruning (and inputs_only for our own Functions): the
    # parameters' requires_grad, which other threads using the model see, is never changed
    with torch.enable_grad(), inputs_only(), (context or contextlib.nullcontext()):
        logits = logits_of(model, leaf)
        _check_range(t, values, logits.shape[1])
        (grad,) = torch.autograd.grad(logits.gather(1, t.to(logits.device)[:, None]).sum(), leaf)
    return grad


def vanilla_gradient(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """The ordinary input gradient of logit ``target``.

    Args:
        model: classifier mapping (N, ...) to logits (N, num_classes), in eval mode.
        x: inputs (N, ...), e.g. images (N, 3, H, W) in [-1, 1]; any float dtype and device the model takes.
        target: class index (int) or one per sample (sequence or tensor of N ints).

    Returns:
        d logit_target / d x, same shape, dtype and device as ``x`` (logit units per input unit).

    Raises:
        TypeError, ValueError, IndexError: as :func:`excitation_pullback` (bad inputs, targets or model output).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from utils import vanilla_gradient
        >>> model = nn.Linear(3, 2)
        >>> torch.equal(vanilla_gradient(model, torch.randn(4, 3), 1), model.weight[1].detach().expand(4, 3))
        True
    """
    return input_gradient(model, x, target)


def excitation_pullback(model: nn.Module, x: torch.Tensor, target: Target,
                        temperature: float | None = 0.3,
                        gate: str | Gate = "sigmoid", *, pool_temperature: FollowsReLU = "relu", pool: str = "soft",
                        silu_temperature: float | None = 1.6, gelu_temperature: float | None = 1.0,
                        attention_temperature: float | None = 1.5, hardswish_temperature: float | None = 1.0,
                        leaky_relu_temperature: FollowsReLU = "relu", hardtanh_temperature: FollowsReLU = "relu",
                        layer_norm: str | None = "held", strict: bool = True, rules: Mapping[str, Rule] | None = None,
                        preset: str | None = None, settings: Settings | None = None) -> torch.Tensor:
    """The excitation pullback of logit ``target``: its gradient with soft ReLU gates (and soft max-pools).

    Same forward as ``model(x)``; in the backward pass each ReLU passes ``gate(z / temperature)`` of its
    pre-activation instead of ``1[z > 0]`` (the rule: :mod:`utils.core.rules.relu`), each 2-D max-pool the
    gradient of a softmax pool (:mod:`utils.core.rules.max_pool`), and SiLU, GELU, LayerNorm, attention, ...
    their rules (:mod:`utils.core.rules`). For a bias-free MLP this is ``e_target^T D_L W_L ... D_1 W_1`` with
    ``D_l = diag(gate(z_l / T))``.

    Args:
        model: classifier mapping (N, ...) to logits (N, num_classes), in eval mode.
        x: inputs (N, ...), e.g. images (N, 3, H, W) in [-1, 1].
        target: class index (int) or one per sample (sequence or tensor of N ints).
        temperature: ReLU gate temperature T > 0 (default 0.3); T -> 0 recovers the vanilla gradient; None keeps
            the hard gate.
        gate: the ReLU gate on ``z / T``: ``"sigmoid"`` (default), ``"normal_cdf"``, ``"softsign"`` or a callable.
        pool_temperature, pool, silu_temperature, ..., strict, rules: the other fields of
            :class:`~utils.core.settings.Settings`, same names and defaults (``pool_temperature=None``: hard
            max-pools; ``strict=False``: keep the exact backward of nonlinearities with no rule).
        preset: ``"paper"`` (the defaults) or ``"semantic"`` (:mod:`utils.core.presets`); keywords given beside it
            with a value other than their default override it.
        settings: a ready :class:`~utils.core.settings.Settings` instead of the keywords.

    Returns:
        Tensor shaped like ``x`` (same dtype and device): d logit_target / d x with the soft gates, in logit units
        per input unit.

    Raises:
        TypeError: ``x`` not a floating-point tensor, ``target`` not integer class indices, a bad setting.
        ValueError: ``x`` not a batch, ``model`` not mapping it to logits (N, num_classes), a bad setting.
        IndexError: a target outside the model's classes.
        UnsupportedNonlinearityError: (``strict=True``) a nonlinearity with no rule, named.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from utils import excitation_pullback, vanilla_gradient
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        >>> x = torch.randn(2, 4)
        >>> field = excitation_pullback(model, x, target=1)
        >>> field.shape
        torch.Size([2, 4])
        >>> torch.allclose(excitation_pullback(model, x, 1, temperature=1e-6), vanilla_gradient(model, x, 1))
        True
    """
    chosen = resolve_settings(
        settings, preset, temperature=temperature, gate=gate, pool_temperature=pool_temperature, pool=pool,
        silu_temperature=silu_temperature, gelu_temperature=gelu_temperature,
        attention_temperature=attention_temperature, hardswish_temperature=hardswish_temperature,
        leaky_relu_temperature=leaky_relu_temperature, hardtanh_temperature=hardtanh_temperature,
        layer_norm=layer_norm, strict=strict, rules=rules or {})
    return input_gradient(model, x, target, block(model, chosen, submodules=False))  # it calls only the model
