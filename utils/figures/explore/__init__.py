"""An interactive explorer: pick an image, a model and a target class, and see the excitation pullback
and the vanilla gradient side by side: each one's field, its ascent perturbation after k steps, the
perturbed image, and the target's probability along both paths.

Three halves: :func:`explore_path` and :func:`panel_arrays` compute (settings in, tensors out; no
widgets), :class:`Explorer` wires them to ipywidgets, and :mod:`.server` serves the page (``make app``).
:func:`explore` builds one.
"""
from .inputs import (MAX_UPLOAD_PIXELS, UploadError, as_image_dict, class_options, decode_upload, default_images,
                     loadable_models, read_upload, same_class)
from .panels import (CurvePlot, array_png, composite_png, field_heat, figure_png, heat_rgb, panel_arrays,
                     panel_figure)
from .path import METHOD_LABELS, Exploration, direction_and_logits, explore_path
from .view import MAX_STEPS
from .widget import CACHE_SIZE, Explorer, explore
from .worker import Cancelled, Updates

__all__ = ["CACHE_SIZE", "MAX_STEPS", "MAX_UPLOAD_PIXELS", "METHOD_LABELS", "Cancelled", "CurvePlot", "Exploration",
           "Explorer", "UploadError", "Updates", "array_png", "as_image_dict", "class_options", "composite_png",
           "decode_upload", "default_images", "direction_and_logits", "explore", "explore_path", "field_heat",
           "figure_png", "heat_rgb", "loadable_models", "panel_arrays", "panel_figure", "read_upload", "same_class"]
