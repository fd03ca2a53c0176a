"""The method, one concern per module.

- :mod:`.gates`: soft gates ``gate(z / T)``; ``gate_or_hard`` (None means ReLU's hard gate).
- :mod:`.surrogates`: the ``autograd.Function``s that change a backward pass (per call): ``SoftGateReLU`` and its
  batch-norm-recomputing twin, ``SoftGate`` (any gated activation), ``SoftMaxPool2d`` (soft or detached weights),
  ``StraightThrough`` (the generic one: exact forward, a stand-in's backward), ``AttentionValues``.
- :mod:`.rules`: one small rule object per kind of nonlinearity, carrying its parameters and the functions it
  replaces (ReLU, max-pool, SiLU, GELU, LayerNorm, attention, LeakyReLU, Hardtanh/ReLU6, Hardswish); the
  ``RuleContext`` a rule sees; the table of keywords and of "off".
- :mod:`.settings`: ``Settings`` (one rule per kind, strictness) and ``make_settings`` (the keywords).
- :mod:`.interception`: ``Interceptor``, the one call-interception machinery, and the call families.
- :mod:`.mode`: ``ExcitationMode``, the interceptor that routes one forward call's calls to the rules;
  :mod:`.disguises`: ReLU-like calls written without ``relu``; :mod:`.reductions`: max and min reductions (the
  max-pool rule); :mod:`.recompute`: activation checkpoints and custom ``autograd.Function``s.
- :mod:`.torch_private`: every private part of torch the core uses, with a version check and plain fallbacks.
- :mod:`.excitation`: the ``soft_backward`` context (threads, nesting, compile, direct submodule calls, copies).
- :mod:`.pullback`, :mod:`.ascent`: the vector fields and the ascent along them.
- :mod:`.captum_attribution`: ``ExcitationPullback``, Captum's face of the pullback.
"""
