"""The settings of an excitation pullback: one rule per kind of nonlinearity, and what to do with the rest.

One :class:`Settings` object reaches every call: ``soft_backward``, ``excitation_pullback``,
``pullback_ascent`` and Captum's ``ExcitationPullback`` all take the same keywords (:func:`make_settings`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import inspect
from typing import Mapping

from .gates import Gate, check_temperature
from .presets import preset_keywords
from .rules import (RULES, AttentionRule, GELURule, HardswishRule, HardtanhRule, LayerNormRule, LeakyReLURule,
                    MaxPoolRule, ReLURule, Rule, SiLURule)


@dataclass(frozen=True)
class Settings:
    """``rules``: kind -> :class:`~utils.core.rules.Rule`, or None for the function's exact backward.
    ``strict``: raise on nonlinearities with no rule instead of keeping their exact backward."""

    rules: Mapping[str, Rule | None]
    strict: bool = True
    dispatch: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        unknown = set(self.rules) - set(RULES)
        if unknown:
            raise ValueError(f"unknown rule kinds {sorted(unknown)}: choose from {sorted(RULES)}")
        dispatch = {fn: rule for rule in self.rules.values() if rule is not None for fn in rule.functions}
        object.__setattr__(self, "dispatch", dispatch)

    def rule(self, kind: str) -> Rule | None:
        return self.rules.get(kind)


AS_RELU = "relu"
"""The default of the temperatures that follow the ReLU's (max-pool, LeakyReLU, Hardtanh): ``temperature``."""
OFF_ALIASES = {"pool": "hard", "layer_norm": "exact"}
"""Older spellings of "off" still taken: ``pool="hard"``, ``layer_norm="exact"`` (and ``soft_maxpool=False``)."""


def make_settings(temperature: float | None = 0.3, gate: str | Gate = "sigmoid", soft_maxpool: bool = True,
                  pool_temperature: float | str | None = AS_RELU, pool: str = "soft", strict: bool = True,
                  silu_temperature: float | None = 1.6, gelu_temperature: float | None = 1.0,
                  attention_temperature: float | None = 1.5, layer_norm: str | None = "held",
                  hardswish_temperature: float | None = 1.0, leaky_relu_temperature: float | str | None = AS_RELU,
                  hardtanh_temperature: float | str | None = AS_RELU,
                  rules: Mapping[str, Rule | None] | None = None, settings: Settings | None = None,
                  preset: str | None = None) -> Settings:
    """Settings from keywords; the defaults are the excitation pullback's.

    One convention for every kind of nonlinearity (the table in :mod:`utils.core.rules`): its keyword takes a
    temperature, or ``None`` for "off" (the function's own, exact backward); ``rules={kind: None}`` is the same.

    Args:
        temperature: ReLU gate temperature (default 0.3); None: ReLUs keep their hard gate.
        gate: ReLU gate, ``"sigmoid"`` (default), ``"normal_cdf"``, ``"softsign"`` or a callable on ``z / T``.
        soft_maxpool: False is ``pool_temperature=None`` (kept for older calls).
        pool_temperature: max-pool temperature, default ``"relu"`` (= ``temperature``); None: the hard max's
            own gradient (also spelled ``pool="hard"``).
        pool: ``"soft"`` (softmax-pool gradient) or ``"detached"`` (its weights held constant).
        strict: raise :class:`~utils.core.mode.UnsupportedNonlinearityError` on a nonlinearity with no rule
            (ELU, Softplus, Mish, PReLU, MaxPool1d/3d, a custom ``autograd.Function``, a ReLU-like call the rules
            do not recognise, ...); False keeps its exact backward.
        silu_temperature, gelu_temperature, attention_temperature, hardswish_temperature: each kind's T, or None.
        layer_norm: ``"held"`` (mean and variance held constant in the backward pass) or None (also ``"exact"``).
        leaky_relu_temperature, hardtanh_temperature: default ``"relu"`` (= ``temperature``), or a T, or None.
        rules: kind -> rule object (or None for the exact backward), overriding the keywords, e.g.
            ``rules={"gelu": GELURule(0.5)}``.
        settings: a ready :class:`Settings`, returned as is; no other keyword may be given with it.
        preset: a named choice of every keyword (:mod:`utils.core.presets`): ``"paper"`` (the defaults) or
            ``"semantic"`` (Semantic Pullbacks: normal-CDF ReLU gate at 0.6, detached max-pool at 0.3, attention
            at 1.0); keywords given with a value other than their default override it.
    """
    given = {k: v for k, v in locals().items() if k in _DEFAULTS and v is not _DEFAULTS[k]
             and not (type(v) is type(_DEFAULTS[k]) and v == _DEFAULTS[k])}
    if preset is not None:
        if settings is not None:
            raise TypeError("settings= is a complete Settings: it cannot be combined with preset=")
        return make_settings(**{**preset_keywords(preset), **given})
    if settings is not None:
        if given:
            raise TypeError(f"settings= is a complete Settings: it cannot be combined with {sorted(given)}; "
                            "change the Settings (make_settings(...)) or pass the keywords alone")
        if not isinstance(settings, Settings):
            raise TypeError(f"settings must be a Settings (make_settings(...)), got {type(settings).__name__}")
        return settings
    if not isinstance(strict, bool) and (isinstance(strict, str) or strict not in (0, 1)):
        raise TypeError(f"strict must be True or False, got {strict!r}")
    relu_t = _temperature(temperature, "temperature")
    if pool not in ("soft", "detached", OFF_ALIASES["pool"]):
        raise ValueError(f"pool must be one of ('soft', 'detached', 'hard'), got {pool!r}")
    if layer_norm not in ("held", OFF_ALIASES["layer_norm"], None):
        raise ValueError(f"layer_norm must be 'held' or None (also 'exact'), got {layer_norm!r}")
    pool_t = _temperature(pool_temperature, "pool_temperature", relu_t)
    if not soft_maxpool or pool == OFF_ALIASES["pool"]:
        pool_t = None
    chosen: dict[str, Rule | None] = {
        "relu": _rule(ReLURule, relu_t, gate),
        "max_pool": _rule(MaxPoolRule, pool_t, pool),
        "silu": _rule(SiLURule, _temperature(silu_temperature, "silu_temperature")),
        "gelu": _rule(GELURule, _temperature(gelu_temperature, "gelu_temperature")),
        "layer_norm": LayerNormRule() if layer_norm == "held" else None,
        "attention": _rule(AttentionRule, _temperature(attention_temperature, "attention_temperature")),
        "hardswish": _rule(HardswishRule, _temperature(hardswish_temperature, "hardswish_temperature")),
        "leaky_relu": _rule(LeakyReLURule, _temperature(leaky_relu_temperature, "leaky_relu_temperature", relu_t)),
        "hardtanh": _rule(HardtanhRule, _temperature(hardtanh_temperature, "hardtanh_temperature", relu_t)),
    }
    chosen.update(rules or {})
    return Settings(chosen, bool(strict))


_DEFAULTS = {name: p.default for name, p in inspect.signature(make_settings).parameters.items()
             if name not in ("settings", "preset")}


def _temperature(value, name: str, relu: float | None = None) -> float | None:
    """A kind's temperature: checked, None (off) kept, ``"relu"`` replaced by the ReLU's (``relu``)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value != AS_RELU or name == "temperature":
            raise ValueError(f"{name} must be a number > 0, None (exact backward)"
                             f"{'' if name == 'temperature' else ' or ' + repr(AS_RELU)}, got {value!r}")
        return relu
    return check_temperature(value, name)


def _rule(cls, temperature: float | None, *args) -> Rule | None:
    return None if temperature is None else cls(temperature, *args)


def split_settings(options: dict) -> tuple[dict, dict]:
    """``options`` split into the keywords of :func:`make_settings` and the rest."""
    names = set(inspect.signature(make_settings).parameters)
    return {k: v for k, v in options.items() if k in names}, {k: v for k, v in options.items() if k not in names}
