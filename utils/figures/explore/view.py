"""The explorer's page: controls, hints, thumbnails and panel slots (ipywidgets), no computation."""
from __future__ import annotations

import html

import numpy as np

from ...core.gates import GATES
from .panels import array_png, data_url

MAX_STEPS = 20
PANEL = 200  # px on the page; the PNGs keep the image's own size
METHODS = ("pullback", "gradient")
COLUMNS = ("field", "perturbation", "perturbed")
THUMB = 60
HINTS = (
    ("T", "the gates' temperature: each ReLU's step 1[z > 0] becomes sigmoid(z / T) in the backward pass. "
          "Low T (0.01) approaches the vanilla gradient; high T (10) lets nearly every unit pass half its signal."),
    ("gate", "the smooth stand-in for the step: sigmoid (the paper) or the normal CDF. T and gate change only the "
             "pullback; the forward pass is the model's own."),
    ("steps k", "ascent steps toward the target: each moves the image by alpha = 20 (L2 norm, pixels in [-1, 1]) "
                "along the method's field, kept within eps = 100 of the image. k = 0 shows the fields alone."),
    ("field", "the direction at the image, summed over the colour channels: red raises the target's logit, "
              "blue lowers it (the colour bar's ends are the 99.5th percentile of |value|)."),
)
STYLE = """<style>
.pb-thumb { padding: %(top)dpx 2px 2px 2px !important; font-size: 10px !important; line-height: 1.15 !important;
  white-space: normal !important; overflow: hidden; background-repeat: no-repeat !important;
  background-position: center 3px !important; background-size: %(thumb)dpx %(thumb)dpx !important; }
.pb-thumb.mod-active, .pb-thumb:focus { outline: 2px solid #1976d2; }
.pb-stale img { opacity: 0.35; }
.pb-panel { font-size: 12px; line-height: 1.3; }
.pb-panel .pb-note { color: #555; font-size: 11px; }
.pb-hints { color: #555; font-size: 11.5px; line-height: 1.35; max-width: 1180px; }
%(thumbs)s
</style>"""


def thumbnail_css(images: dict) -> str:
    """A ``<style>`` block: every :func:`thumbnail_buttons` button gets its image as background."""
    thumbs = []
    for i, image in enumerate(images.values()):
        small = image[:, ::max(1, image.shape[1] // THUMB), ::max(1, image.shape[2] // THUMB)]
        rgb = ((small.permute(1, 2, 0).numpy() + 1) / 2).astype(np.float64)
        thumbs.append(f".pb-thumb-{i} {{ background-image: url({data_url(array_png(rgb))}) !important; }}")
    return STYLE % {"top": THUMB + 5, "thumb": THUMB, "thumbs": "\n".join(thumbs)}


def thumbnail_buttons(names):
    """One button per example image, its picture above its name (the picture comes from :func:`thumbnail_css`)."""
    import ipywidgets as widgets

    buttons = []
    for i, name in enumerate(names):
        button = widgets.Button(description=name, tooltip=f"show the example image '{name}'",
                                layout={"width": f"{THUMB + 16}px", "height": f"{THUMB + 34}px", "margin": "0 4px 0 0"})
        button.add_class("pb-thumb")
        button.add_class(f"pb-thumb-{i}")
        buttons.append(button)
    return buttons


def hints_html() -> str:
    return "<div class='pb-hints'>" + "<br>".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in HINTS) \
        + "</div>"


def build_controls(ex, names: list[str]) -> None:
    """The controls, as attributes of ``ex`` (an :class:`Explorer`)."""
    import ipywidgets as widgets

    narrow = {"description_width": "56px"}
    ex.image = widgets.Dropdown(options=list(ex.images), description="image", style=narrow)
    ex.upload = widgets.FileUpload(accept="image/*", multiple=False, description="upload an image",
                                   layout={"width": "170px"})
    ex.upload_note = widgets.HTML()
    ex.model = widgets.Dropdown(options=names, value=names[0], description="model", style=narrow)
    ex.target = widgets.Dropdown(description="target", style=narrow)
    ex.temperature = widgets.FloatLogSlider(value=0.3, base=10, min=-2, max=1, step=0.05, description="T",
                                            readout_format=".2g", continuous_update=False, style=narrow)
    ex.gate = widgets.Dropdown(options=list(GATES), value="sigmoid", description="gate", style=narrow,
                               layout={"width": "200px"})
    ex.steps = widgets.IntSlider(value=5, min=0, max=MAX_STEPS, description="steps k", continuous_update=False,
                                 style=narrow)
    ex.progress = widgets.IntProgress(value=0, min=0, max=1, layout={"width": "140px"})
    ex.status = widgets.HTML(value=f"<i>images: {html.escape(ex.source)}</i>")
    ex.download = widgets.HTML()
    ex.thumbnails = thumbnail_buttons(list(ex.images))


def build_panels(ex) -> None:
    """The panel slots (HTML widgets, so that each ``<img>`` carries alt text), as ``ex.panels[name]``."""
    import ipywidgets as widgets

    slot = {"width": f"{PANEL + 4}px", "margin": "0 6px 8px 0"}
    ex.panels = {"image": widgets.HTML(layout=slot)}
    for method in METHODS:
        for column in COLUMNS:
            ex.panels[f"{method}_{column}"] = widgets.HTML(
                layout={**slot, "width": f"{PANEL + 64}px"} if column == "field" else slot)
    ex.panels["probability"] = widgets.HTML(layout={"width": "300px"})
    for panel in ex.panels.values():
        panel.add_class("pb-panel")


def build_page(ex, names: list[str]) -> None:
    """Controls, hints and panels of ``ex`` in one widget, ``ex.widget``."""
    import ipywidgets as widgets

    build_controls(ex, names)
    build_panels(ex)
    rows = [widgets.HBox([ex.panels[f"{m}_{c}"] for c in COLUMNS]) for m in METHODS]
    ex.output = widgets.HBox([ex.panels["image"], widgets.VBox(rows), ex.panels["probability"]],
                             layout={"flex_flow": "row wrap", "align_items": "flex-start", "margin": "8px 0 0 0"})
    wrap = {"flex_flow": "row wrap", "align_items": "center"}
    controls = widgets.VBox([
        widgets.HTML(thumbnail_css(ex.images)),
        widgets.HBox([*ex.thumbnails, widgets.VBox([ex.upload, ex.upload_note], layout={"width": "260px"})],
                     layout=wrap),
        widgets.HBox([ex.image, ex.model, ex.target], layout=wrap),
        widgets.HBox([ex.steps, ex.temperature, ex.gate], layout=wrap),
        widgets.HTML(hints_html()),
        widgets.HBox([ex.progress, ex.status, ex.download], layout={**wrap, "grid_gap": "12px"}),
    ])
    ex.widget = widgets.VBox([controls, ex.output])
    ex.widget.explorer = ex  # reach the state from the widget the notebook holds
