"""Measurements for the path-stability study (the paper's Hypothesis 1), gathered from the modules that hold them.

Hypothesis 1: the binary ReLU activation patterns of a network stabilise early in training, after which
the network behaves like a fixed kernel machine over its highly excited paths (the excitation kernel,
Eq. 23). Given checkpoints ``s, t`` of one run we measure

* how much their hard gates ``1[z > 0]`` overlap (:mod:`utils.analysis.overlap`: :func:`gate_jaccard`,
  :func:`jaccard_matrix`);
* how well the weights of ``t`` do when run with the gates of ``s``, ``f_pi^(t)`` with ``pi = pi^(s)(x)``
  (:mod:`utils.analysis.cross_gating`: :func:`cross_gated_logits`, :func:`cross_gating_matrices`, or row by
  row :func:`cross_gating_rows` and :func:`cross_gating_metrics`), against random hard gates of the same
  sparsity (:func:`random_gates_like`) so that high numbers mean something;
* how good a classifier the kernels are (:mod:`utils.analysis.kernel_knn`: :func:`kernel_knn_accuracy` with
  :func:`excitation_kernels`, :func:`utils.analysis.gating.input_kernel`, or the cosine of
  :func:`penultimate_features`).

Every ReLU *call* is one gating site, as in :mod:`utils.analysis.gating`. Training checkpoints are read by
:mod:`utils.experiments.training.checkpoints`.
"""
from .cross_gating import (cross_gated_logits, cross_gated_predictions, cross_gating_matrices, cross_gating_metrics,
                           cross_gating_rows, gates_of, predictions, random_gates_like)
from .kernel_knn import excitation_kernels, kernel_knn_accuracy, kernel_knn_predict, penultimate_features
from .overlap import GateMismatchError, gate_jaccard, jaccard_matrix

__all__ = ["GateMismatchError", "cross_gated_logits", "cross_gated_predictions", "cross_gating_matrices",
           "cross_gating_metrics", "cross_gating_rows", "excitation_kernels", "gate_jaccard", "gates_of",
           "jaccard_matrix", "kernel_knn_accuracy", "kernel_knn_predict", "penultimate_features", "predictions",
           "random_gates_like"]
