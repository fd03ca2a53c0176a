"""The method, one concern per module; read it in this order.

1. :mod:`.pullback` (``excitation_pullback``, ``vanilla_gradient``) and :mod:`.ascent` (``pullback_ascent``):
   the vector fields and the ascent along them.
2. :mod:`.rules`: one rule per kind of nonlinearity, each stating its backward plainly --
   :mod:`.rules.relu` (the paper's soft gate ``gate(z / T)``), :mod:`.rules.max_pool` (the softmax pool's
   gradient), :mod:`.rules.gated` (SiLU, GELU, Hardswish, LeakyReLU, Hardtanh), :mod:`.rules.layer_norm`,
   :mod:`.rules.attention`; :mod:`.gates` the gates themselves.
3. :mod:`.settings` (the composite: ``Settings``, one typed field per choice, one rule per kind) and
   :mod:`.presets` (``"paper"``, ``"semantic"``).
4. :mod:`.excitation` (``soft_backward``: which model, thread and settings a call runs under) and :mod:`.mode`
   (``ExcitationMode``: routes one forward call's calls to the rules), on :mod:`.interception` (the function
   families and the one interceptor).
5. :mod:`.canonizers`: what puts a model's calls into the rules' form (ReLUs written another way, max reductions,
   batch-norm recipes); :mod:`.optimised`: what makes the rules fast, each tested equal to its plain rule
   (batch-norm recompute, the softmax pool's per-device backward, subnormal flushing), on :mod:`.policy` (per
   device: flushing, chunk sizes, gather).
6. :mod:`.surrogates` (what every ``autograd.Function`` of ours honours, ``SoftGate``, ``StraightThrough``),
   :mod:`.recompute` (activation checkpoints, custom Functions), :mod:`.torch_private` (every private part of
   torch the core uses, with a version check and plain fallbacks), :mod:`.captum_attribution`
   (``ExcitationPullback``, Captum's face of the pullback).
"""
