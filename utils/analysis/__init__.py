"""Measurements on networks: gating patterns, kernels, theory checks, path stability, attribution metrics."""
