"""How the explorer shows a result: its panels' HTML (images with alt text), the captions and the download."""
from __future__ import annotations

import html

from .panels import array_png, colorbar_html, composite_png, data_url, img_html, panel_arrays, panel_figure
from .path import METHOD_LABELS, Exploration
from .view import METHODS, PANEL

NOTES = {"field": "the field at the image (channel sum)", "perturbation": "x_k - x, scaled to its range",
         "perturbed": "the image after k steps"}


def panel_html(png: bytes, title: str, note: str, alt: str, name: str, side: str = "") -> str:
    image = img_html(png, alt, PANEL).replace("<img ", f"<img data-panel='{name}' ", 1)
    body = f"<div style='display:flex;gap:4px'>{image}{side}</div>" if side else image
    return (f"<div><b>{html.escape(title)}</b><br><span class='pb-note'>{html.escape(note)}</span></div>{body}")


class Drawing:
    """The drawing half of :class:`~.widget.Explorer` (it holds the widgets and the results)."""

    def _method_title(self, method: str) -> str:
        if method == "pullback":
            return f"{METHOD_LABELS[method]}, T = {self._drawing['temperature']:.2g} ({self._drawing['gate']})"
        return METHOD_LABELS[method]

    def _draw_method(self, method: str, result: Exploration, k: int, generation: int) -> None:
        """Show one method's field, perturbation and perturbed image after ``k`` steps (and, the first time
        in an update, the image with the model's top 3)."""
        self.updates.check(generation)
        self.shown[method] = a = panel_arrays(result, k)
        names = self.models[self._drawing["model"]].class_names  # the update's own settings, not the controls'
        target = names[self._drawing["target"]]
        what, steps = self._method_title(method), f"{k} step{'s' * (k != 1)}"
        p_k = a["all_probabilities"][min(k, len(a["all_probabilities"]) - 1)]
        panels = {
            "field": (a["heat_rgb"], what, NOTES["field"],
                      f"{what}: the field toward {target}, red where it raises the target",
                      colorbar_html(a["heat_scale"], PANEL)),
            "perturbation": (a["perturbation_rgb"], f"perturbation after {steps}", f"{NOTES['perturbation']}",
                             f"{METHOD_LABELS[method]}: the perturbation after {steps} toward {target}", ""),
            "perturbed": (a["perturbed_rgb"], f"prediction: {names[a['prediction']]}",
                          f"after {steps}; p({target}) = {p_k:.2f}",
                          f"{METHOD_LABELS[method]}: the image after {steps} toward {target}", ""),
        }
        drawn = self.__dict__.setdefault("_fields_drawn", {})
        if drawn.get(method) is result.field:  # the field of a path does not change along it: drawn already
            del panels["field"]
        drawn[method] = result.field
        self.panels[f"{method}_field"].remove_class("pb-stale")
        for column, (rgb, title, note, alt, side) in panels.items():
            name = f"{method}_{column}"
            self.pngs[name] = array_png(rgb)
            self.panels[name].value = panel_html(self.pngs[name], title, note, alt, name, side)
            self.panels[name].remove_class("pb-stale")
        if result.first is not None and "pb-stale" in self.panels["image"]._dom_classes:
            self._draw_image(a["original_rgb"], result.first)

    def _draw_image(self, rgb, probabilities) -> None:
        names = self.models[self._drawing["model"]].class_names
        p, top = probabilities.topk(min(3, len(probabilities)))
        self.top = [(names[int(i)], float(q)) for q, i in zip(p, top)]
        (first, q), rest = self.top[0], self.top[1:]
        note = " &middot; ".join(f"{html.escape(n)} {q_:.2f}" for n, q_ in rest)
        self.pngs["image"] = array_png(rgb)
        name = str(self._drawing["image"])
        image = img_html(self.pngs["image"], f"the image: {name}", PANEL)
        self.panels["image"].value = (
            f"<div><b>image</b><br><span class='pb-note'>{html.escape(name)}</span></div>{image}"
            f"<div style='margin-top:4px'><b>prediction: {html.escape(first)} (p = {q:.2f})</b></div>"
            f"<div class='pb-note'>next: {note}</div>")
        self.panels["image"].remove_class("pb-stale")

    def _draw_final(self, s: dict, generation: int) -> None:
        """The probability curves of both methods on one plot, and the PNG offered for download."""
        self.updates.check(generation)
        names = self.models[s["model"]].class_names
        target = names[s["target"]]
        self.pngs["probability"] = png = self.curve.png(self.shown, target, s["steps"])
        self.panels["probability"].value = (
            "<div><b>target probability</b><br><span class='pb-note'>softmax along each path</span></div>"
            + img_html(png, f"the probability of {target} along the pullback's and the gradient's paths", 0)
            .replace(" width='0' height='0'", ""))
        self.panels["probability"].remove_class("pb-stale")
        rows = {METHOD_LABELS[m]: [("field", self.shown[m]["heat_rgb"]),
                                   (f"perturbation, k = {s['steps']}", self.shown[m]["perturbation_rgb"]),
                                   (f"prediction: {names[self.shown[m]['prediction']]}",
                                    self.shown[m]["perturbed_rgb"])] for m in METHODS}
        header = (f"{s['image']} -> {target} on {s['model']}; pullback T = {s['temperature']:.2g} ({s['gate']}); "
                  f"alpha = 20, eps = 100")
        notes = [f"{i}. {name} (p = {q:.2f})" for i, (name, q) in enumerate(self.top, start=1)]
        self.download_png = composite_png(self.shown["pullback"]["original_rgb"], rows, png, header,
                                          ["prediction:", *notes])
        stem = "".join(c if c.isalnum() else "-" for c in f"{s['image']}-{target}")[:60]
        self.download.value = (f"<a download='explorer-{stem}.png' href='{data_url(self.download_png)}' "
                               f"style='text-decoration:underline'>download these panels (PNG)</a>")

    def figure(self, dpi: int = 100):
        """The current view as one matplotlib figure (both methods; the widget itself shows separate panels)."""
        names = self._class_names
        return panel_figure(self.shown, names[self.target.value], names, self.temperature.value, self.steps.value,
                            dpi=dpi)
