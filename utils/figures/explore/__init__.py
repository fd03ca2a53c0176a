"""An interactive explorer for the notebook: pick an image, a model, a target class and the backward
pass, and see the vector field, the ascent perturbation after k steps, the perturbed image and the
target's probability along the path.

Two halves: :func:`explore_path` and :func:`panel_arrays` compute (settings in, tensors out; no
widgets), and :class:`Explorer` wires them to ipywidgets. :func:`explore` builds one.
"""
from .inputs import as_image_dict, class_options, decode_upload, default_images, same_class
from .panels import array_png, figure_png, heat_rgb, panel_arrays, panel_figure, probability_figure
from .path import METHOD_LABELS, Exploration, direction_and_logits, explore_path
from .widget import CACHE_SIZE, MAX_STEPS, Explorer, explore

__all__ = ["CACHE_SIZE", "MAX_STEPS", "METHOD_LABELS", "Exploration", "Explorer", "array_png", "as_image_dict",
           "class_options", "decode_upload", "default_images", "direction_and_logits", "explore", "explore_path",
           "figure_png", "heat_rgb", "panel_arrays", "panel_figure", "probability_figure", "same_class"]
