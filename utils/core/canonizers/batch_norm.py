"""Batch-norm recipes: which tensors are an inference-mode batch norm's output (plus residual addends), so that
the ReLU after one recomputes its pre-activation in the backward pass instead of saving a gate
(:class:`~utils.core.optimised.batch_norm_relu.SoftGateReLUAfterBatchNorm`).

A canonizer in Zennit's sense: it changes no gradient, only recognises a pattern in the model's calls. The notes
are short-lived and valid while the version counters of every tensor involved say they are unchanged.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..optimised.batch_norm_relu import SoftGateReLUAfterBatchNorm


class Recipe(NamedTuple):
    """How a tensor can be recomputed in the backward pass instead of saved."""
    tensor: torch.Tensor
    version: int  # of ``tensor`` when the recipe was made
    batch_norm: dict  # the inference-mode batch_norm call's arguments
    addends: tuple  # tensors added to the batch norm's output since
    inputs: tuple  # (tensor, version) of every tensor used: a recipe is valid while none of them changed


_BATCH_NORM_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_BATCH_NORM_DEFAULTS = dict(weight=None, bias=None, training=False, momentum=0.1, eps=1e-5)
_INPLACE_ADDS = (torch.Tensor.__iadd__, torch.Tensor.add_)
_ADDS = (*_INPLACE_ADDS, torch.Tensor.__add__, torch.Tensor.add, torch.add)


class BatchNormRecipes:
    """The recipe-keeping half of :class:`~utils.core.mode.ExcitationMode` (a mixin): ``batch_norm`` and ``+``
    calls noted, :meth:`recipe_of` for the ReLU rule, :meth:`watch` and :meth:`_before_write` for addends changed in
    place. ``recipes=False``: none kept (for calls run again in the backward pass, which must save what the first
    run saved)."""

    RECIPES_KEPT = 4
    """How many recent batch-norm outputs stay recomputable: a residual block may run its shortcut's convolution
    and batch norm between its last batch norm and the addition (torchvision's Bottleneck with downsample)."""

    def recipe_handlers(self, recipes: bool) -> dict:
        self.recipes: dict[int, Recipe] = {}  # id of a recent tensor -> its recipe
        self.watched: list[tuple] = []  # (addend, its version, node): residual addends of recomputed gates
        self.use_recipes = recipes
        return {F.batch_norm: self._batch_norm, **{fn: self._add for fn in _ADDS}}

    # -- batch-norm recipes (the ReLU rule's memory saving) --------------------------------------------------------
    def _batch_norm(self, func, args, kwargs):
        out = func(*args, **kwargs)
        if torch.is_grad_enabled() and out.requires_grad:
            bound = {**_BATCH_NORM_DEFAULTS, **dict(zip(_BATCH_NORM_ARGS, args)), **kwargs}
            if not bound["training"] and bound["running_mean"] is not None:  # running statistics: recomputable
                inputs = [bound[k] for k in ("input", "running_mean", "running_var", "weight", "bias")]
                self._remember(out, bound, (), tuple((t, t._version) for t in inputs if t is not None))
        return out

    def _add(self, func, args, kwargs):
        twice_relu = self.abs_sum(func, args, kwargs, func in _INPLACE_ADDS)
        if twice_relu is not None:
            return twice_relu
        extended = None  # (recipe of the batch-norm side, addend), looked up before an in-place add changes it
        if len(args) == 2 and not kwargs and all(isinstance(a, torch.Tensor) for a in args):
            # an out-of-place sum may have the batch norm on either side, an in-place one only on the left
            pairs = [(args[0], args[1])] if func in _INPLACE_ADDS else [(args[0], args[1]), (args[1], args[0])]
            for base, addend in pairs:
                recipe = self._valid_recipe(base) if addend is not base else None
                if recipe is not None:
                    extended = (recipe, addend)
                    break
        out = func(*args, **kwargs)
        if extended is not None and torch.is_grad_enabled() and isinstance(out, torch.Tensor) and out.requires_grad:
            recipe, addend = extended
            if out.shape == recipe.tensor.shape and out.dtype == recipe.tensor.dtype:
                self._remember(out, recipe.batch_norm, recipe.addends + (addend,),
                               recipe.inputs + ((addend, addend._version),))
        return out

    def _remember(self, out, batch_norm, addends, inputs):
        self.recipes.pop(id(out), None)
        self.recipes[id(out)] = Recipe(out, out._version, batch_norm, addends, inputs)
        while len(self.recipes) > self.RECIPES_KEPT:
            del self.recipes[next(iter(self.recipes))]

    def _valid_recipe(self, z: torch.Tensor):
        """The recipe of ``z`` if neither ``z`` nor any tensor it was computed from changed since; else None."""
        recipe = self.recipes.get(id(z))
        if recipe is None or recipe.tensor is not z or z._version != recipe.version:
            return None
        if any(t._version != version for t, version in recipe.inputs):
            return None
        return recipe

    def recipe_of(self, z: torch.Tensor) -> Recipe | None:
        """The :class:`Recipe` of ``z`` if ``z`` is, unchanged since, an inference-mode batch norm's output plus
        addends, made by recent calls from inputs that did not change since; else None (the gate itself is then
        saved). Used once: the recipe is forgotten."""
        if not self.use_recipes or self.in_checkpoint:
            return None
        recipe = self._valid_recipe(z)
        self.recipes.pop(id(z), None)
        return recipe

    def watch(self, addends: tuple, out: torch.Tensor) -> None:
        node = out.grad_fn
        if node is not None:
            self.watched.extend((a, a._version, node) for a in addends)

    def _before_write(self, written: torch.Tensor) -> None:
        """An in-place call is about to write ``written``: a recomputed gate whose addend shares its memory is
        computed now, while the addend still holds what was added (autograd's plain sum saves nothing to break)."""
        storage = written.untyped_storage().data_ptr()
        kept = []
        for a, version, node in self.watched:
            if a._version != version:
                continue  # changed already (its node kept its gate then)
            if a.untyped_storage().data_ptr() == storage:
                SoftGateReLUAfterBatchNorm.keep_gate(node)
            else:
                kept.append((a, version, node))
        self.watched = kept
