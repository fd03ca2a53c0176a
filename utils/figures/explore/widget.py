"""The explorer's wiring: ipywidgets controls and panels around :func:`explore_path`."""
from __future__ import annotations

import contextlib
import time
from collections import OrderedDict

from ...core.gates import GATES
from ...data.imagenette import IMAGENETTE_CLASSES, PAPER_CLASSES
from ...models.zoo import OFFLINE_DEFAULT, PAPER_MODELS, default_device, load_model
from .inputs import as_image_dict, class_options, decode_upload, default_images, same_class
from .panels import array_png, figure_png, panel_arrays, panel_figure, probability_figure
from .path import METHOD_LABELS, Exploration, explore_path

MAX_STEPS = 20
CACHE_SIZE = 16  # computed paths kept per explorer (about 3.6 MB each at 5 steps)


class Explorer:
    """The widgets, the models and a small cache of computed paths; ``widget`` is what the notebook shows.

    Settings change through the controls (or by setting their ``value`` in code); each change
    recomputes unless inside :meth:`hold`. After an update, ``result`` holds the computed path,
    ``shown`` the arrays of :func:`panel_arrays` on display, ``seconds`` how long the update took, and
    ``panels[name].value`` the PNG bytes on display (``"image"``, ``"field"``, ``"perturbation"``,
    ``"perturbed"``, ``"probability"``); :meth:`figure` draws the same as one figure. Errors (e.g. weights that cannot download) go to
    ``status`` instead of raising.
    """

    def __init__(self, model=None, images=None, device=None):
        self.device = device or (default_device() if model is None else next(model.parameters()).device)
        self.models = OrderedDict()
        if model is not None:
            self.models[model.name] = model
        names = list(dict.fromkeys([*self.models, OFFLINE_DEFAULT, *PAPER_MODELS]))
        if images is None:
            self.images, source = default_images()
        else:
            self.images, source = as_image_dict(images), "the images given"
        self.source = source
        self.cache: OrderedDict = OrderedDict()
        self.result = None
        self.shown: dict = {}
        self.seconds = None
        self._hold = 0
        self._uploads = 0

        self._build(names, source)
        with self.hold(update=False):
            self._set_model(names[0])
        for control in (self.image, self.target, self.method, self.temperature, self.gate, self.steps):
            control.observe(self._changed, names="value")
        self.model.observe(self._model_changed, names="value")
        self.upload.observe(self._uploaded, names="value")
        if self.images:
            self.update()

    def _build(self, names: list[str], source: str) -> None:
        """The controls, the panels and the widget that holds them."""
        import ipywidgets as widgets

        self.image = widgets.Dropdown(options=list(self.images), description="image")
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="upload")
        self.model = widgets.Dropdown(options=names, value=names[0], description="model")
        self.target = widgets.Dropdown(description="target")
        self.method = widgets.ToggleButtons(options=[(v, k) for k, v in METHOD_LABELS.items()], value="pullback",
                                            style={"button_width": "150px"})
        self.temperature = widgets.FloatLogSlider(value=0.3, base=10, min=-2, max=1, step=0.05, description="T",
                                                  readout_format=".2g", continuous_update=False)
        self.gate = widgets.Dropdown(options=list(GATES), value="sigmoid", description="gate")
        self.steps = widgets.IntSlider(value=5, min=0, max=MAX_STEPS, description="steps k", continuous_update=False)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="", layout={"width": "160px"})
        self.status = widgets.HTML(value=f"<i>images: {source}</i>")
        square = {"width": "224px", "height": "224px", "min_width": "224px"}
        self.panels = {name: widgets.Image(format="png", layout=square)
                       for name in ("image", "field", "perturbation", "perturbed")}
        self.panels["probability"] = widgets.Image(format="png", layout={"width": "272px", "min_width": "272px"})
        self.titles = {name: widgets.HTML(layout={"width": "272px" if name == "probability" else "224px",
                                                  "height": "40px", "margin": "0"}) for name in self.panels}
        self.output = widgets.HBox([widgets.VBox([self.titles[n], self.panels[n]], layout={"margin": "0 6px 0 0"})
                                    for n in self.panels], layout={"flex_flow": "row wrap"})
        controls = widgets.VBox([
            widgets.HBox([self.image, self.upload, self.model]),
            widgets.HBox([self.target, widgets.Label("method", layout={"margin": "0 8px 0 60px"}), self.method]),
            widgets.HBox([self.temperature, self.gate]),
            widgets.HBox([self.steps, self.progress, self.status]),
        ])
        self.widget = widgets.VBox([controls, self.output])
        self.widget.explorer = self  # reach the state from the widget the notebook holds


    # --- settings ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def hold(self, update: bool = True):
        """Change several controls, then update once (or not at all with ``update=False``)."""
        self._hold += 1
        try:
            yield self
        finally:
            self._hold -= 1
        if update and not self._hold:
            self.update()

    def settings(self) -> dict:
        return dict(model=self.model.value, image=self.image.value, target=self.target.value,
                    method=self.method.value, temperature=self.temperature.value, gate=self.gate.value,
                    steps=self.steps.value)

    def current_model(self):
        return self.models[self.model.value]

    def _set_model(self, name: str) -> None:
        """Load ``name`` (once) and point the target list at its classes, keeping the target class if it can."""
        if name not in self.models:
            self.status.value = f"loading {name} ..."
            self.models[name] = load_model(name, self.device)
        model = self.models[name]
        old = getattr(self, "_class_names", None)
        keep = same_class(self.target.value, old, model.class_names) if old is not None and self.target.value is not None else None
        self._class_names = list(model.class_names)
        if keep is None:  # first time: the church, a paper target the first example (tench) is not
            keep = same_class(PAPER_CLASSES[2], IMAGENETTE_CLASSES, model.class_names)
        self.target.options = class_options(model.class_names)
        self.target.value = keep if keep is not None else 0

    # --- events -----------------------------------------------------------------------------

    def _changed(self, change=None) -> None:
        self.temperature.disabled = self.gate.disabled = self.method.value != "pullback"
        if not self._hold:
            self.update()

    def _model_changed(self, change) -> None:
        try:
            with self.hold(update=False):
                self._set_model(change["new"])
        except Exception as error:  # e.g. PretrainedUnavailableError without internet
            self.status.value = (f"<span style='color:#b00'>could not load {change['new']}: "
                                 f"{type(error).__name__}: {error}</span>")
            with self.hold(update=False):
                self.model.value = change["old"]
            return
        self._changed()

    def _uploaded(self, change) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0] if isinstance(files, (tuple, list)) else next(iter(files.values()))
        self.add_image(item.get("name", "upload"), item["content"])
        self.upload.value = ()  # ready for the next file, even the same one again

    def add_image(self, name: str, content: bytes) -> str:
        """Decode an image file's bytes, add it to the image list and show it; returns its list name."""
        try:
            image = decode_upload(content)
        except Exception as error:
            self.status.value = f"<span style='color:#b00'>could not read {name}: {type(error).__name__}: {error}</span>"
            return ""
        self._uploads += 1
        key = f"upload {self._uploads}: {name}"
        self.images[key] = image
        with self.hold():
            self.image.options = list(self.images)
            self.image.value = key
        return key

    # --- compute and show -------------------------------------------------------------------

    def compute(self) -> Exploration:
        """The path for the current settings, from the cache when it has one at least this long."""
        s = self.settings()
        key = (s["model"], s["image"], s["target"], s["method"],
               *((s["temperature"], s["gate"]) if s["method"] == "pullback" else ()))
        cached = self.cache.get(key)
        if cached is not None and cached.steps >= s["steps"]:
            self.cache.move_to_end(key)
            return cached.upto(s["steps"])
        self.progress.max = s["steps"] + 1
        self.progress.value = 0

        def on_step(k):  # show the path so far while the rest computes
            self.progress.value = k + 1
            self.status.value = f"computing: pass {k + 1} of {s['steps'] + 1}"

        def on_partial(partial):
            self.draw(partial, min(partial.steps, s["steps"]), curve=False)

        result = explore_path(self.current_model(), self.images[s["image"]], s["target"], s["method"], s["steps"],
                              s["temperature"], s["gate"], start=cached, on_step=on_step,
                              on_partial=on_partial)
        self.cache[key] = result
        self.cache.move_to_end(key)
        while len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)
        return result

    def draw(self, result: Exploration, k: int, curve: bool = True) -> None:
        """Show ``result`` after ``k`` steps: the four image panels, and the probability curve if ``curve``."""
        self.shown = arrays = panel_arrays(result, k)
        names = self._class_names
        method, t = self.method.value, self.temperature.value
        what = METHOD_LABELS[method] + (f", T={t:.2g}" if method == "pullback" else "")
        for name, rgb, title, note in (
                ("image", arrays["original_rgb"], "image", f"model: {names[int(result.predictions[0])]}"),
                ("field", arrays["heat_rgb"], what, "channel sum; red = toward the target"),
                ("perturbation", arrays["perturbation_rgb"], f"perturbation after {k} step{'s' * (k != 1)}",
                 f"alpha={result.settings['alpha']:g}, eps={result.settings['eps']:g}"),
                ("perturbed", arrays["perturbed_rgb"], "perturbed image", f"model: {names[arrays['prediction']]}")):
            self.panels[name].value = array_png(rgb)
            self.titles[name].value = (f"<div style='line-height:1.25'><b>{title}</b><br>"
                                       f"<span style='font-size:90%;color:#555'>{note}</span></div>")
        if curve:
            self.panels["probability"].value = figure_png(probability_figure(arrays, names[self.target.value], k))
            self.titles["probability"].value = ("<div style='line-height:1.25'><b>target probability</b><br>"
                                                "<span style='font-size:90%;color:#555'>softmax along the path"
                                                "</span></div>")

    def update(self) -> None:
        """Recompute for the current settings and redraw; errors are shown in ``status``."""
        if not self.images or self.image.value is None:
            self.status.value = f"<i>{self.source}</i>"
            return
        start = time.perf_counter()
        self.progress.bar_style = "info"
        try:
            self.result = self.compute()
            self.draw(self.result, self.steps.value)
        except Exception as error:
            self.progress.bar_style = "danger"
            self.status.value = f"<span style='color:#b00'>{type(error).__name__}: {error}</span>"
            return
        self.seconds = time.perf_counter() - start
        self.progress.value = self.progress.max
        self.progress.bar_style = "success"
        p, k = self.shown["probabilities"], self.steps.value
        self.status.value = (f"p({self._class_names[self.target.value]}) {p[0]:.2f} &rarr; {p[-1]:.2f} after {k} "
                             f"step{'s' * (k != 1)} &middot; {self.seconds:.1f} s")

    def figure(self, dpi: int = 100):
        """The current view as one matplotlib figure (for saving; the widget itself shows separate panels)."""
        names = self._class_names
        return panel_figure(self.shown, names[self.target.value], names[self.shown["prediction"]], self.method.value,
                            self.temperature.value, self.steps.value, dpi=dpi)


def explore(model=None, images=None):
    """An interactive explorer of excitation pullbacks (an ``ipywidgets`` widget; display it in a notebook).

    Choose an image (or upload one), a model, a target class, the method (excitation pullback or vanilla
    gradient), the temperature, the gate and the number of ascent steps k; it shows the vector field at
    the image as a heat map, the perturbation after k steps (alpha = 20, eps = 100, as in the paper's
    figures), the perturbed image and the target's probability along the path.

    Args:
        model: a classifier from :func:`utils.load_model`; None (default) starts on the bundled model.
            The model list also offers the paper's models, loaded when chosen (an error message if their
            weights cannot download).
        images: a dict ``{name: (3, H, W)}``, a tensor (N, 3, H, W) in [-1, 1] or image file paths;
            None (default): the ten examples, one per class.

    Returns:
        The widget; its ``explorer`` attribute is the :class:`Explorer` behind it.
    """
    return Explorer(model, images).widget
