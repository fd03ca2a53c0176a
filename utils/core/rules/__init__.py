"""Excitation rules: how each nonlinearity's backward pass changes. The forward pass is always the model's own.

A rule is a small object that carries its own parameters and names the functions it replaces
(``functions``); :class:`utils.core.settings.Settings` holds one rule per ``kind`` (the composite) and
:class:`utils.core.mode.ExcitationMode` routes every call of those functions to ``rule.apply(ctx, ...)``, ``ctx``
a :class:`~.base.RuleContext`: all a rule sees of the forward call. Each rule's backward is that of a softened
stand-in, straight-through. Read the paper's two first: :mod:`.relu` and :mod:`.max_pool`.

Each rule module states its rule plainly; what makes it fast sits behind it in :mod:`utils.core.optimised`
(each optimisation tested equal to the plain rule), and what puts a model's calls into the form the rules
expect in :mod:`utils.core.canonizers` (ReLUs written another way, max reductions, batch-norm recipes).

One convention for every kind (a field of :class:`utils.core.settings.Settings`): a temperature T, or ``None``
for "off", the function's own exact backward; ``"relu"`` means the ReLU's temperature.

============  ===================================================================  ==========================  =======
kind          backward                                                             keyword                     default
============  ===================================================================  ==========================  =======
relu          ``gate(z / T)`` instead of ``1[z > 0]``; also ``clamp(min=0)``,      ``temperature``             0.3
              ``maximum(z, 0)``, ``where(z > 0, z, 0)``, ``z * (z > 0)``, ...
max_pool      softmax-pool gradient (``pool="soft"``) or with its weights held     ``pool_temperature``        "relu"
              (``"detached"``); 2-D and adaptive 2-D pools, ``amax``,
              ``max(z, dim)``, ``topk(z, 1)`` (min ones mirrored)
silu          ``sigmoid(z / T)``: ``z * sigmoid(z / T)`` with the gate held        ``silu_temperature``        1.6
gelu          ``Phi(z / T)`` (standard normal CDF)                                 ``gelu_temperature``        1.0
layer_norm    the layer norm's gradient with its mean and variance held            ``layer_norm``              "held"
              (``"held"``; None: exact)
attention     the gradient of ``softmax(Q K^T / (sqrt(d) T)) V``                   ``attention_temperature``   1.5
leaky_relu    ``a + (1 - a) sigmoid(z / T)``                                       ``leaky_relu_temperature``  "relu"
hardtanh      ``sigmoid((z - lo) / T) sigmoid((hi - z) / T)``; also ReLU6 and      ``hardtanh_temperature``    "relu"
              ``clamp(z, lo, hi)``, one bound infinite when absent
hardswish     ``hardsigmoid(z / T)``: ``z * hardsigmoid(z)`` with the gate held    ``hardswish_temperature``   1.0
============  ===================================================================  ==========================  =======
"""
from __future__ import annotations

from .attention import AttentionRule
from .base import Rule, RuleContext, needs_grad, scaled_gate
from .gated import GatedRule, GELURule, HardswishRule, HardtanhRule, LeakyReLURule, SiLURule
from .layer_norm import LayerNormRule
from .max_pool import MaxPoolRule
from .relu import ReLURule

RULES: dict[str, type[Rule]] = {cls.kind: cls for cls in (
    ReLURule, MaxPoolRule, SiLURule, GELURule, LayerNormRule, AttentionRule, LeakyReLURule, HardtanhRule,
    HardswishRule)}
"""Every kind of rule, by name."""

__all__ = ["RULES", "AttentionRule", "GELURule", "GatedRule", "HardswishRule", "HardtanhRule", "LayerNormRule",
           "LeakyReLURule", "MaxPoolRule", "ReLURule", "Rule", "RuleContext", "SiLURule", "needs_grad", "scaled_gate"]
