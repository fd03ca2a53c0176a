"""The ReLU rule after an inference-mode batch norm, with the pre-activation recomputed instead of a gate saved."""
from __future__ import annotations

import torch

from .. import torch_private as private
from ..gates import Gate
from ..policy import policy_for
from ..surrogates import refuse_create_graph
from .flush import gate_of_scaled_, gate_times_


def relu_forward(ctx, z: torch.Tensor, inplace: bool) -> torch.Tensor:
    """The unchanged ReLU forward of the surrogates; an in-place call marks its input dirty, as autograd asks."""
    if inplace:
        ctx.mark_dirty(z)
        return torch.relu_(z)
    return torch.relu(z)


class SoftGateReLUAfterBatchNorm(torch.autograd.Function):
    """:class:`~utils.core.rules.relu.SoftGateReLU` for ``z = batch_norm(c) + a_1 + ... + a_m`` (inference-mode batch norm, then
    zero or more additions, as in a residual block), saving no gate tensor.

    The batch norm's own backward already keeps its input ``c``, its statistics and affine parameters persist
    anyway, and a residual addend is usually the block input, which the next convolution keeps. Saving
    references to them and recomputing ``z`` in the backward pass (the same batch norm on the same tensors) gives
    the same gate, up to rounding in the last bit, without the activation-sized tensor :class:`~utils.core.rules.relu.SoftGateReLU` keeps
    per call; the 1 / T goes into the fused gate-times-gradient (:func:`gate_times_`), so the backward is two or
    three tensor operations, however large the batch.
    The batch norm's tensors are saved as the plain batch norm saves them (version-checked by autograd: changed in
    place, they raise as they would for the plain gradient). The addends are not saved by a plain sum, so a model
    may change one in place after the sum: :meth:`keep_gate` (the mode calls it just before such a change)
    computes the gate while it still can, as :class:`~utils.core.rules.relu.SoftGateReLU` would have; a change made after the forward
    call, which no mode sees, is reported in the backward pass.
    """

    @staticmethod
    def forward(ctx, z, c, running_mean, running_var, weight, bias, eps: float, temperature: float, gate: Gate,
                inplace: bool, *addends):
        ctx.save_for_backward(c, running_mean, running_var, weight, bias)
        ctx.addends = tuple((a, a._version) for a in addends)  # inputs, not outputs: no reference cycle
        ctx.eps, ctx.temperature, ctx.gate, ctx.kept = eps, temperature, gate, None
        ctx.flush = policy_for(z.device).flush_subnormals
        return relu_forward(ctx, z, inplace)

    @staticmethod
    def recompute(ctx) -> torch.Tensor:
        """``z``, recomputed from the saved batch norm's tensors and the addends (which must be unchanged)."""
        c, running_mean, running_var, weight, bias = ctx.saved_tensors
        if any(a._version != version for a, version in ctx.addends):
            raise RuntimeError("a tensor added to a batch norm's output before a ReLU was changed in place after the "
                               "model's forward call, so the ReLU's soft gate cannot be recomputed: change a copy "
                               "(or compute the backward pass before changing it)")
        z = private.batch_norm_no_training(c, weight, bias, running_mean, running_var, ctx.eps)
        for a, _ in ctx.addends:
            z.add_(a)
        return z

    @staticmethod
    def keep_gate(ctx) -> None:
        """Compute and keep the gate now, before an addend changes in place (then the backward pass uses it)."""
        if ctx.kept is None:
            with torch.no_grad():
                ctx.kept = gate_of_scaled_(SoftGateReLUAfterBatchNorm.recompute(ctx).mul_(1.0 / ctx.temperature),
                                           ctx.gate, ctx.flush)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        refuse_create_graph()
        none = (None,) * (9 + len(ctx.addends))
        if ctx.kept is not None:
            return grad_out * ctx.kept, *none
        z = SoftGateReLUAfterBatchNorm.recompute(ctx)
        return gate_times_(z, ctx.gate, grad_out, 1.0 / ctx.temperature, ctx.flush), *none
