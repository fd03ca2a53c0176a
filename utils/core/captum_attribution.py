"""Captum's face of the excitation pullback: ``ExcitationPullback(model).attribute(inputs, target=...)``.

A ``GradientAttribution``, so that Captum's ``NoiseTunnel`` (SmoothGrad and friends) and metrics
(``infidelity``, ``sensitivity_max``) can wrap it. Needs ``captum`` (imported on first use of this module).
"""
from __future__ import annotations

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage

from .pullback import excitation_pullback
from .settings import FIELDS


class ExcitationPullback(GradientAttribution):
    """The excitation pullback as a Captum attribution method.

    Args:
        model: classifier mapping (N, ...) to logits (N, num_classes), in eval mode.
        **settings: default settings: the keywords of :func:`utils.core.pullback.excitation_pullback`
            (``temperature``, ``gate``, ``pool_temperature``, ..., ``preset``, ``settings``; the fields of
            :class:`~utils.core.settings.Settings`); ``attribute`` may override them.

    Raises:
        TypeError: an unknown settings keyword (named at construction, not at the first attribution).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from utils import ExcitationPullback, excitation_pullback
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        >>> x = torch.randn(2, 4)
        >>> a = ExcitationPullback(model, temperature=0.5).attribute(x, target=2)
        >>> torch.equal(a, excitation_pullback(model, x, 2, temperature=0.5))
        True
    """

    def __init__(self, model: torch.nn.Module, **settings):
        super().__init__(model)
        unknown = set(settings) - {*FIELDS, "preset", "settings"}
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}: choose from {[*FIELDS, 'preset', 'settings']}")
        self.settings = settings

    @log_usage()
    def attribute(self, inputs, target=None, additional_forward_args=None, **settings):
        """``excitation_pullback(model, inputs, target, **settings)``, shaped like ``inputs``.

        Args:
            inputs: a tensor (N, ...) or a 1-tuple holding one (returned as a 1-tuple, Captum's convention).
            target: class index (int) or one per sample (sequence or tensor of N ints); required.
            additional_forward_args: not supported (the model takes one input).
            **settings: excitation pullback settings, over those given to the constructor.

        Returns:
            The excitation pullback shaped like ``inputs`` (a 1-tuple for a 1-tuple).

        Raises:
            NotImplementedError: several inputs or ``additional_forward_args``.
            ValueError: no ``target``.
        """
        as_tuple = isinstance(inputs, tuple)
        if as_tuple and len(inputs) != 1:
            raise NotImplementedError(f"ExcitationPullback takes one input tensor, got a tuple of {len(inputs)}")
        if additional_forward_args is not None:
            raise NotImplementedError("ExcitationPullback does not take additional_forward_args")
        if target is None:
            raise ValueError("ExcitationPullback needs a target class (int, or one per sample)")
        x = inputs[0] if as_tuple else inputs
        field = excitation_pullback(self.forward_func, x, target, **{**self.settings, **settings})
        return (field,) if as_tuple else field
