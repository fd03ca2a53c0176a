"""Named settings of the excitation pullback: the paper's first version and the Semantic Pullbacks version.

``preset="paper"`` or ``preset="semantic"`` is accepted wherever the settings keywords are (``soft_backward``,
``excitation_pullback``, ``pullback_ascent``, ``ExcitationPullback``); keywords given beside it with a value other
than their default override the preset's. ``preset_settings(name)`` is the :class:`~utils.core.settings.Settings`.

=================  ==========================================  ================================================
nonlinearity       ``"paper"`` (arXiv:2507.22832 v1; default)  ``"semantic"`` (v5/v6, *Semantic Pullbacks*)
=================  ==========================================  ================================================
ReLU               ``sigmoid(z / 0.3)``                        ``Phi(z / 0.6)``, the normal CDF
max-pool (2-D)     softmax-pool gradient at 0.3                softmax weights at 0.3, held constant
                                                               (``pool="detached"``)
SiLU               ``sigmoid(z / 1.6)``                        ``sigmoid(z / 1.6)``
GELU               ``Phi(z / 1.0)``                            ``Phi(z / 1.0)``
LayerNorm          mean and variance held                      mean and variance held
attention          ``softmax(QK^T / (sqrt(d) 1.5)) V``         ``softmax(QK^T / (sqrt(d) 1.0)) V``
LeakyReLU,         the ReLU's temperature                      the ReLU's temperature (0.6; the authors leave
Hardtanh, ...                                                  these exact)
=================  ==========================================  ================================================

Where our rules differ from the authors' surrogates (github.com/314-Foundation/SemanticPullbacks,
``lib/surrogates.py``, read for settings only):

* **Attention.** Theirs (timm's PVT ``Attention``) holds the attention weights ``softmax(QK^T / T)`` constant
  in the backward pass, so the gradient reaches the input only through the values ``V``; at T = 1 that is the
  exact forward's weights, detached. Ours back-propagates through the (softened) weights too, into ``Q`` and
  ``K``. For ``nn.MultiheadAttention`` theirs divides both query and key by T (logits by T squared) and lets
  gradient through the weights; ours divides the logits by T once. None of our offline models has attention.
* **LayerNorm.** The same rule (mean and biased variance held constant). Theirs replaces ``nn.LayerNorm``
  and torchvision's ``LayerNorm2d`` modules; ours intercepts every ``layer_norm`` call, functional ones included.
* **Where the rules apply.** Theirs swaps module classes (``nn.ReLU``, ``nn.MaxPool2d``, ...), so functional
  calls (``F.relu`` in a ``forward``) keep their exact backward; ours softens every call of the function.
* **Max-pool padding.** Their softmax pool unfolds the input with zero padding, so padded zeros get softmax
  weight; ours never gives a padded slot weight (as ``max_pool2d`` never picks one). They differ only in
  windows at the border (ResNet50's stem pool has padding 1; its inputs are ReLU outputs, >= 0).
"""
from __future__ import annotations

PRESETS: dict[str, dict] = {
    "paper": {},
    "semantic": dict(temperature=0.6, gate="normal_cdf", pool="detached", pool_temperature=0.3,
                     silu_temperature=1.6, gelu_temperature=1.0, layer_norm="held", attention_temperature=1.0),
}
"""Preset name -> the :class:`~utils.core.settings.Settings` fields it sets ("paper": the defaults)."""


def preset_settings(name: str):
    """The :class:`~utils.core.settings.Settings` of preset ``name`` (a ValueError naming the presets for an unknown
    one)."""
    from .settings import Settings

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    return Settings(**PRESETS[name])
