"""What makes the rules fast, each tested equal to the plain rule it stands in for.

- :mod:`.batch_norm_relu`: a ReLU after an inference-mode batch norm (plus residual addends) recomputes its
  pre-activation in the backward pass instead of saving a gate (``tests/core/test_excitation.py``: equal to
  :class:`~utils.core.rules.relu.SoftGateReLU`, also with addends changed in place);
- :mod:`.softmax_pool_backward`: the softmax pool's gradient gathered by one ``unfold`` / ``fold`` (GPU) or by
  cache-sized slices (CPU), chunked to a device budget (:mod:`utils.core.policy`); tested equal to the autograd
  gradient of :func:`~utils.core.rules.max_pool.softmax_pool2d` for every chunk size and both gathers;
- :mod:`.flush`: gates and softmax weights below ``sqrt(finfo.tiny)`` flushed to 0 on CPUs, where subnormal
  floats slow the convolutions' backward (``tests/core/test_excitation.py``: equal to the unflushed rule to
  within the flushed size).
"""
