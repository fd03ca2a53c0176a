"""Excitation pullbacks: soft-gated backward passes for ReLU networks and beyond, and what we build on them."""
from .core.ascent import pullback_ascent
from .data.imagenette import paper_batch
from .core.excitation import UnsupportedNonlinearityError, soft_backward
from .core.settings import Settings
from .core.gates import GATES, soft_gate
from .models.zoo import Classifier, Normalize, PretrainedUnavailableError, load_model, paper_targets
from .core.pullback import excitation_pullback, vanilla_gradient
from .core.rules.max_pool import SoftMaxPool2d, softmax_pool2d
from .core.rules.relu import SoftGateReLU


def __getattr__(name):  # Captum, ipywidgets and the metrics are imported only when asked for
    if name == "ExcitationPullback":
        from .core.captum_attribution import ExcitationPullback

        return ExcitationPullback
    if name == "evaluate_explainers":
        from .analysis.evaluation import evaluate_explainers

        return evaluate_explainers
    if name == "explore":
        from .figures.explore import explore

        return explore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "GATES", "Classifier", "ExcitationPullback", "Normalize", "PretrainedUnavailableError", "Settings", "SoftGateReLU",
    "SoftMaxPool2d", "UnsupportedNonlinearityError", "evaluate_explainers", "excitation_pullback", "explore",
    "load_model", "paper_batch", "paper_targets", "pullback_ascent", "soft_backward", "soft_gate",
    "softmax_pool2d", "vanilla_gradient",
]
