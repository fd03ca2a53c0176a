"""Excitation pullbacks: soft-gated backward passes for ReLU networks, and what we build on them."""
from .core.ascent import pullback_ascent
from .data.imagenette import paper_batch
from .core.excitation import UnsupportedNonlinearityError, soft_backward
from .core.gates import GATES, soft_gate
from .models.zoo import Classifier, Normalize, PretrainedUnavailableError, load_model, paper_targets
from .core.pullback import excitation_pullback, vanilla_gradient
from .core.surrogates import SoftGateReLU, SoftMaxPool2d, softmax_pool2d

__all__ = [
    "GATES", "Classifier", "Normalize", "PretrainedUnavailableError", "SoftGateReLU", "SoftMaxPool2d",
    "UnsupportedNonlinearityError", "excitation_pullback", "load_model", "paper_batch", "paper_targets",
    "pullback_ascent", "soft_backward", "soft_gate", "softmax_pool2d", "vanilla_gradient",
]
