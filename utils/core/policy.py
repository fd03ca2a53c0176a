"""How the surrogate backward passes spend memory and kernel launches, per kind of device.

The backward rules compute the same values on every device; what differs is the cheapest way to get them:

* on a **CPU** every pass over memory costs, and some kernels have slow paths: tiny gates and softmax weights are
  flushed to 0 (subnormal floats made ResNet50's convolution backward twice as slow), and the max-pool backward
  gathers window slots slice by slice on a few (sample, channel) planes at a time, sized for the cache (fresh
  pages cost more than the work);
* on a **GPU** every tensor operation is a kernel launch of a few microseconds, and subnormals cost nothing: the
  rules do a fixed number of operations per call, whatever the batch, channels or image size, and split the
  max-pool backward only when one of its temporaries would pass a memory budget (1/16 of the device's memory).

The policy is read once per call, in the forward pass (in the caller's thread: CUDA backward passes run in
autograd's own threads), and kept with the autograd node. :func:`use_policy` picks one for a block whatever the
device, so that a CPU can run, and CI can count, the operations a GPU would launch.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Policy:
    """``flush_subnormals``: set gates and softmax weights below ``sqrt(finfo.tiny)`` to 0 (see
    :func:`utils.core.optimised.flush.flush_tiny_`). ``pool_gather``: how the max-pool backward gathers window slots,
    ``"slices"`` (one strided slice per slot) or ``"unfold"`` (all at once). ``pool_chunk_bytes``: the most bytes one max-pool backward
    temporary may take before the planes are split into chunks (None: a device-sized budget)."""

    name: str
    flush_subnormals: bool
    pool_gather: str
    pool_chunk_bytes: int | None = None

    def pool_chunk_slots(self, device: torch.device, itemsize: int) -> int:
        """How many window slots (elements of one temporary) a chunk of the max-pool backward may hold."""
        budget = self.pool_chunk_bytes if self.pool_chunk_bytes is not None else _device_budget(device)
        return max(1, budget // itemsize)


CPU = Policy("cpu", flush_subnormals=True, pool_gather="slices", pool_chunk_bytes=4 * 2 ** 20)
"""A cache-sized temporary (2**20 float32 slots): reused memory, no page faults."""
GPU = Policy("cuda", flush_subnormals=False, pool_gather="unfold")
POLICIES = {"cpu": CPU, "cuda": GPU}
FALLBACK_BUDGET = 2 ** 30
"""Bytes of one temporary under the GPU policy on a device whose memory is not known (the CPU, when counting)."""

_chosen: contextvars.ContextVar[Policy | None] = contextvars.ContextVar("excitation_policy", default=None)


def policy_for(device: torch.device) -> Policy:
    """The policy :func:`use_policy` chose for this thread, else the CPU's on a CPU and the GPU's anywhere else."""
    chosen = _chosen.get()
    if chosen is not None:
        return chosen
    return CPU if device.type == "cpu" else GPU


@contextlib.contextmanager
def use_policy(policy: str | Policy):
    """Within the block (this thread), every surrogate uses ``policy`` (``"cpu"``, ``"cuda"`` or a
    :class:`Policy`) whatever the device of its tensors."""
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {sorted(POLICIES)} or a Policy, got {policy!r}")
        policy = POLICIES[policy]
    if not isinstance(policy, Policy):
        raise TypeError(f"policy must be a name or a Policy, got {type(policy).__name__}")
    token = _chosen.set(policy)
    try:
        yield policy
    finally:
        _chosen.reset(token)


@functools.lru_cache(maxsize=None)
def _device_budget(device: torch.device) -> int:
    """1/16 of a CUDA device's memory (a host-side query: no synchronisation), else :data:`FALLBACK_BUDGET`."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory // 16
    return FALLBACK_BUDGET
