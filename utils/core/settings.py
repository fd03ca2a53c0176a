"""The settings of an excitation pullback: one typed field per choice, one rule per kind of nonlinearity.

:class:`Settings` is the one place every choice lives. ``soft_backward``, ``excitation_pullback``,
``pullback_ascent`` and Captum's ``ExcitationPullback`` take its fields as keywords of the same names and
defaults (or a ready ``settings=``, or a named ``preset=``), and build one with :func:`resolve_settings`.

Each kind of nonlinearity has one field: a temperature T, or ``None`` for "off" (the function's own, exact
backward); ``"relu"`` means the ReLU's temperature.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal, Mapping

from .gates import Gate, check_temperature, get_gate
from .rules import (RULES, AttentionRule, GELURule, HardswishRule, HardtanhRule, LayerNormRule, LeakyReLURule,
                    MaxPoolRule, ReLURule, Rule, SiLURule)

AS_RELU = "relu"
"""The value of the temperatures that follow the ReLU's (max-pool, LeakyReLU, Hardtanh): ``temperature``."""
FollowsReLU = float | Literal["relu"] | None


@dataclass(frozen=True)
class Settings:
    """Every choice of an excitation pullback; the defaults are the paper's (arXiv:2507.22832 v1).

    Attributes:
        temperature: ReLU gate temperature T > 0 (default 0.3); None: ReLUs keep their hard gate.
        gate: ReLU gate on ``z / T``: ``"sigmoid"`` (default), ``"normal_cdf"``, ``"softsign"`` or a callable.
        pool_temperature: max-pool temperature (default ``"relu"``: ``temperature``); None: the hard max's own
            gradient.
        pool: ``"soft"`` (the softmax pool's gradient, default) or ``"detached"`` (its weights held constant).
        silu_temperature, gelu_temperature, attention_temperature, hardswish_temperature: each kind's T
            (defaults 1.6, 1.0, 1.5, 1.0), or None.
        leaky_relu_temperature, hardtanh_temperature: default ``"relu"`` (``temperature``), a T, or None.
        layer_norm: ``"held"`` (mean and variance held constant in the backward pass, default) or None.
        strict: raise :class:`~utils.core.mode.UnsupportedNonlinearityError` on a nonlinearity with no rule
            (ELU, Softplus, MaxPool1d, a custom ``autograd.Function``, ...); False keeps its exact backward.
        rules: kind -> a rule object of your own, replacing that kind's (e.g. ``{"gelu": GELURule(0.5)}``).

    Raises:
        ValueError, TypeError: a field out of its range or of the wrong type, naming the field.

    Example:
        >>> from utils import Settings
        >>> Settings(temperature=0.5).rule("relu")
        ReLURule(temperature=0.5, gate=<function sigmoid_gate ...>)
        >>> Settings(pool_temperature=None).rule("max_pool") is None
        True
    """

    temperature: float | None = 0.3
    gate: str | Gate = "sigmoid"
    pool_temperature: FollowsReLU = AS_RELU
    pool: Literal["soft", "detached"] = "soft"
    silu_temperature: float | None = 1.6
    gelu_temperature: float | None = 1.0
    attention_temperature: float | None = 1.5
    hardswish_temperature: float | None = 1.0
    leaky_relu_temperature: FollowsReLU = AS_RELU
    hardtanh_temperature: FollowsReLU = AS_RELU
    layer_norm: Literal["held"] | None = "held"
    strict: bool = True
    rules: Mapping[str, Rule] = field(default_factory=dict)
    chosen: Mapping[str, Rule | None] = field(init=False, repr=False, compare=False)
    dispatch: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.strict, bool):
            raise TypeError(f"strict must be True or False, got {self.strict!r}")
        if self.pool not in ("soft", "detached"):
            raise ValueError(f"pool must be 'soft' or 'detached' (pool_temperature=None: the hard max), "
                             f"got {self.pool!r}")
        if self.layer_norm not in ("held", None):
            raise ValueError(f"layer_norm must be 'held' or None (the exact backward), got {self.layer_norm!r}")
        unknown = set(self.rules) - set(RULES)
        if unknown:
            raise ValueError(f"unknown rule kinds {sorted(unknown)}: choose from {sorted(RULES)}")
        for kind, rule in self.rules.items():
            if not isinstance(rule, Rule):
                raise TypeError(f"rules[{kind!r}] must be a rule object (e.g. {RULES[kind].__name__}(...)); to turn "
                                f"the {kind} rule off, set its field to None")
        get_gate(self.gate)  # a bad gate named now, not in the backward pass
        relu_t = _temperature(self.temperature, "temperature")
        chosen = {
            "relu": _rule(ReLURule, relu_t, self.gate),
            "max_pool": _rule(MaxPoolRule, _temperature(self.pool_temperature, "pool_temperature", relu_t), self.pool),
            "silu": _rule(SiLURule, _temperature(self.silu_temperature, "silu_temperature")),
            "gelu": _rule(GELURule, _temperature(self.gelu_temperature, "gelu_temperature")),
            "layer_norm": LayerNormRule() if self.layer_norm == "held" else None,
            "attention": _rule(AttentionRule, _temperature(self.attention_temperature, "attention_temperature")),
            "hardswish": _rule(HardswishRule, _temperature(self.hardswish_temperature, "hardswish_temperature")),
            "leaky_relu": _rule(LeakyReLURule,
                                _temperature(self.leaky_relu_temperature, "leaky_relu_temperature", relu_t)),
            "hardtanh": _rule(HardtanhRule, _temperature(self.hardtanh_temperature, "hardtanh_temperature", relu_t)),
            **self.rules,
        }
        object.__setattr__(self, "chosen", chosen)
        object.__setattr__(self, "dispatch",
                           {fn: rule for rule in chosen.values() if rule is not None for fn in rule.functions})

    def rule(self, kind: str) -> Rule | None:
        """The rule for ``kind`` (``"relu"``, ``"max_pool"``, ...), or None where its backward stays exact."""
        return self.chosen.get(kind)

    def replace(self, **changes) -> "Settings":
        """A copy with ``changes`` (field names as keywords)."""
        return replace(self, **changes)


def resolve_settings(settings: Settings | None, preset: str | None, **keywords) -> Settings:
    """The settings one call asks for: ``settings`` as given; else ``preset``'s (:mod:`utils.core.presets`) with
    the keywords that differ from their default; else the keywords'.

    Raises:
        TypeError: ``settings`` combined with ``preset`` or with a keyword off its default, or not a Settings.
    """
    from .presets import preset_settings

    chosen = Settings(**keywords)
    changed = {name: value for name, value in keywords.items() if not _same(value, getattr(PAPER, name))}
    if settings is not None:
        if not isinstance(settings, Settings):
            raise TypeError(f"settings must be a Settings, got {type(settings).__name__}")
        if preset is not None or changed:
            given = sorted(changed) + (["preset"] if preset is not None else [])
            raise TypeError(f"settings= holds every choice: it cannot be combined with {given}; "
                            "change it with settings.replace(...) instead")
        return settings
    if preset is not None:
        return preset_settings(preset).replace(**changed)
    return chosen


def _same(a, b) -> bool:
    return a is b or (type(a) is type(b) and a == b)


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


FIELDS = tuple(f.name for f in fields(Settings) if f.init)
"""The fields a caller chooses, in order: the keywords of ``soft_backward``, ``excitation_pullback``, ..."""
PAPER = Settings()
"""The paper's settings (the defaults)."""
