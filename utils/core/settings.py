"""The settings of an excitation pullback: one rule per kind of nonlinearity, and what to do with the rest.

One :class:`Settings` object reaches every call: ``soft_backward``, ``excitation_pullback``,
``pullback_ascent`` and Captum's ``ExcitationPullback`` all take the same keywords (:func:`make_settings`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from .gates import Gate, check_temperature
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


def make_settings(temperature: float = 0.3, gate: str | Gate = "sigmoid", soft_maxpool: bool = True,
                  pool_temperature: float | None = None, pool: str = "soft", strict: bool = True,
                  silu_temperature: float | None = 1.6, gelu_temperature: float | None = 1.0,
                  attention_temperature: float | None = 1.5, layer_norm: str = "held",
                  hardswish_temperature: float | None = 1.0, leaky_relu_temperature: float | None = None,
                  hardtanh_temperature: float | None = None,
                  rules: Mapping[str, Rule | None] | None = None, settings: Settings | None = None) -> Settings:
    """Settings from keywords; the defaults are the excitation pullback's.

    Args:
        temperature: ReLU gate temperature (default 0.3); also the max-pool's, LeakyReLU's and Hardtanh's
            (ReLU6's) unless set apart.
        gate: ReLU gate, ``"sigmoid"`` (default), ``"normal_cdf"``, ``"softsign"`` or a callable on ``z / T``.
        soft_maxpool: False is ``pool="hard"``.
        pool_temperature: max-pool temperature (default ``temperature``).
        pool: ``"soft"`` (softmax-pool gradient), ``"detached"`` (its weights held constant) or ``"hard"``.
        strict: raise :class:`~utils.core.excitation.UnsupportedNonlinearityError` on a nonlinearity with no rule
            (ELU, Softplus, Mish, PReLU, MaxPool1d/3d, ...); False keeps its exact backward.
        silu_temperature, gelu_temperature, attention_temperature, hardswish_temperature: each kind's T;
            None keeps that kind's exact backward.
        layer_norm: ``"held"`` (mean and variance held constant in the backward pass) or ``"exact"``.
        leaky_relu_temperature, hardtanh_temperature: default ``temperature``; None is ``temperature`` too.
        rules: kind -> rule object (or None for the exact backward), overriding the keywords, e.g.
            ``rules={"gelu": GELURule(0.5)}``.
        settings: a ready :class:`Settings`; returned as is (no other keyword may be given with it).
    """
    if settings is not None:
        return settings
    temperature = check_temperature(temperature)
    pool_temperature = temperature if pool_temperature is None else check_temperature(pool_temperature,
                                                                                         "pool_temperature")
    if layer_norm not in ("held", "exact"):
        raise ValueError(f"layer_norm must be 'held' or 'exact', got {layer_norm!r}")
    optional: Callable = lambda cls, t: None if t is None else cls(t)  # noqa: E731
    chosen: dict[str, Rule | None] = {
        "relu": ReLURule(temperature, gate),
        "max_pool": MaxPoolRule(pool_temperature, pool if soft_maxpool else "hard"),
        "silu": optional(SiLURule, silu_temperature),
        "gelu": optional(GELURule, gelu_temperature),
        "layer_norm": LayerNormRule() if layer_norm == "held" else None,
        "attention": optional(AttentionRule, attention_temperature),
        "hardswish": optional(HardswishRule, hardswish_temperature),
        "leaky_relu": LeakyReLURule(temperature if leaky_relu_temperature is None else leaky_relu_temperature),
        "hardtanh": HardtanhRule(temperature if hardtanh_temperature is None else hardtanh_temperature),
    }
    chosen.update(rules or {})
    return Settings(chosen, bool(strict))


def split_settings(options: dict) -> tuple[dict, dict]:
    """``options`` split into the keywords of :func:`make_settings` and the rest."""
    import inspect

    names = set(inspect.signature(make_settings).parameters)
    return {k: v for k, v in options.items() if k in names}, {k: v for k, v in options.items() if k not in names}
