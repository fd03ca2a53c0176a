"""Canonizers (Zennit's word): what puts a model's calls into the form the rules expect, changing no gradient
themselves.

- :mod:`.disguises`: ReLUs written without ``relu`` (``clamp(min=0)``, ``maximum(z, 0)``, ``where(z > 0, z, 0)``,
  ``z * (z > 0)``, ``(z + z.abs()) / 2``, ...) handed to the ReLU rule, ``clamp(z, lo, hi)`` to the Hardtanh rule;
- :mod:`.reductions`: max and min reductions (``amax``, ``max(dim)``, ``topk(1)``) handed to the max-pool rule;
- :mod:`.batch_norm`: inference-mode batch norms (plus residual addends) noted, so that the ReLU after one
  recomputes instead of saving (:mod:`utils.core.optimised.batch_norm_relu`).
"""
