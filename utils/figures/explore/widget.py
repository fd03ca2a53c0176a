"""The explorer's wiring: pullback and gradient side by side for the controls' settings (ipywidgets)."""
from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import html
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import torch

from ...data.imagenette import IMAGENETTE_CLASSES, PAPER_CLASSES
from ...models.integrity import WeightsFileError
from ...models.zoo import OFFLINE_DEFAULT, PretrainedUnavailableError, default_device, load_model
from .inputs import UploadError, as_image_dict, class_options, default_images, loadable_models, read_upload, same_class
from .drawing import Drawing
from .panels import CurvePlot
from .path import METHOD_LABELS, Exploration, explore_path
from .view import METHODS, PANEL, build_page
from .worker import Cancelled, Updates

CACHE_SIZE = 32  # computed paths kept per explorer (about 3.6 MB each at 5 steps)
PANEL_SIZE = 224  # px: uploads are resized to the examples' size


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (where a thread can compute while the kernel takes messages)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def error_html(text: str) -> str:
    return f"<span style='color:#b00'>{html.escape(text)}</span>"


def load_error_text(name: str, error: Exception) -> str:
    """Why ``name`` did not load, for a person (no exception reprs, no Python advice)."""
    if isinstance(error, PretrainedUnavailableError):
        return (f"{name} needs its ImageNet weights, and they could not be downloaded (is this computer offline?). "
                f"The models trained on Imagenette, such as {OFFLINE_DEFAULT}, work without internet.")
    if isinstance(error, (FileNotFoundError, WeightsFileError)):
        return f"the weights of {name} are missing or damaged in this copy of the repository."
    return f"{name} could not be loaded ({type(error).__name__})."


def method_threads() -> int:
    """The intra-op threads each method's thread uses in the background: half of this process's (at least one).

    Intra-op threads wait for each other at every operation's barrier, which burns time on a busy CPU; two
    methods in two threads with half the threads each keep the CPU as busy with less waiting. The thread count
    is part of the computation: another count sums the floats in another order, and a vanilla gradient's
    ascent path (whose hard gates flip) can amplify that difference within a few steps.
    """
    return max(1, torch.get_num_threads() // 2)


class Explorer(Drawing):
    """The widgets, the models and a cache of computed paths; ``widget`` is what the notebook shows.

    Settings change through the controls (or by setting their ``value`` in code); each change requests an
    update (none inside :meth:`hold`). With ``background=True`` updates run in a thread and a newer change
    cancels an older one between ascent steps (:class:`~.worker.Updates`; :meth:`wait` waits for the last);
    the two methods then compute at once, in two threads with half the CPU threads each (intra-op threads
    waiting at every operation's barrier are slow on a busy CPU), the gradient on a copy of the model.
    After an update, ``results[method]`` holds each computed path, ``shown[method]`` the arrays of
    :func:`panel_arrays` on display, ``top`` the image's top 3 as (class, probability), ``seconds`` how long
    it took, ``pngs[name]`` the PNG bytes of each panel and ``download_png`` the composite offered for
    download. Errors (weights that cannot download, unreadable uploads) go to ``status`` instead of raising.
    """

    def __init__(self, model=None, images=None, device=None, background: bool | None = None, models=None):
        self.device = device or (default_device() if model is None else next(model.parameters()).device)
        self.models = OrderedDict()
        if model is not None:
            self.models[model.name] = model
        names = list(models) if models is not None else loadable_models(model.name if model is not None else None)
        if images is None:
            self.images, self.source = default_images()
        else:
            self.images, self.source = as_image_dict(images), "the images given"
        self.cache: OrderedDict = OrderedDict()
        self._cache_lock = threading.Lock()
        self._draw_lock = threading.Lock()  # widget state is changed by one thread at a time
        self._pool = None
        self._replicas: dict = {}
        self.results: dict = {}
        self.shown: dict = {}
        self.pngs: dict = {}
        self.top: list = []
        self.seconds = None
        self.download_png = None
        self.curve = CurvePlot()
        self._hold = 0
        self._uploads = 0
        build_page(self, names)
        # In a thread only with models of its own: a caller's model may be in use by the notebook's next cells.
        background = in_kernel() and model is None if background is None else background
        self.updates = Updates(self._run, background)
        with self.hold(update=False):
            self._set_model(names[0])
        for control in (self.image, self.target, self.temperature, self.gate, self.steps):
            control.observe(self._changed, names="value")
        self.model.observe(self._model_changed, names="value")
        self.upload.observe(self._uploaded, names="value")
        for button, name in zip(self.thumbnails, self.images):
            button.on_click(lambda _, name=name: setattr(self.image, "value", name))
        self._changed()

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
                    temperature=self.temperature.value, gate=self.gate.value, steps=self.steps.value)

    def current_model(self):
        return self.models[self.model.value]

    def _set_model(self, name: str) -> None:
        """Load ``name`` (once) and point the target list at its classes, keeping the target class if it can."""
        if name not in self.models:
            self.status.value = f"loading {html.escape(name)} ..."
            self.models[name] = load_model(name, self.device)
        model = self.models[name]
        old = getattr(self, "_class_names", None)
        known = old is not None and self.target.value is not None
        keep = same_class(self.target.value, old, model.class_names) if known else None
        self._class_names = list(model.class_names)
        if keep is None:  # first time: the church, a paper target the first example (tench) is not
            keep = same_class(PAPER_CLASSES[2], IMAGENETTE_CLASSES, model.class_names)
        self.target.options = class_options(model.class_names)
        self.target.value = keep if keep is not None else 0

    # --- events -----------------------------------------------------------------------------

    def _changed(self, change=None) -> None:
        if not self._hold:
            self.update()

    def _model_changed(self, change) -> None:
        try:
            with self.hold(update=False):
                self._set_model(change["new"])
        except Exception as error:  # e.g. PretrainedUnavailableError without internet
            self.status.value = error_html(load_error_text(change["new"], error))
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
        """Decode an image file's bytes, add it to the image list and show it; returns its list name
        ("" if it could not be read: the reason goes to ``upload_note``)."""
        try:
            image, (height, width) = read_upload(content, name, PANEL_SIZE)
        except UploadError as error:
            self.upload_note.value = error_html(str(error))
            return ""
        self._uploads += 1
        key = f"upload {self._uploads}: {name}"
        self.images[key] = image
        crop = (f" ({width} x {height} px: the centre square was kept and resized to {PANEL_SIZE} x {PANEL_SIZE})"
                if width != height else f" (resized from {width} x {height} px)" if width != PANEL_SIZE else "")
        self.upload_note.value = f"added <b>{html.escape(name)}</b>{html.escape(crop)}"
        with self.hold():
            self.image.options = list(self.images)
            self.image.value = key
        return key

    # --- compute and show -------------------------------------------------------------------

    def update(self) -> None:
        """Request an update for the current settings (computed now, or in the background thread)."""
        if not self.images or self.image.value is None:
            self.status.value = f"<i>{html.escape(self.source)}</i>"
            return
        self.updates.request()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the last requested update is done (at once without a background thread)."""
        return self.updates.wait(timeout)

    def _run(self, generation: int) -> None:
        """One update: both methods' paths (from the cache where it has them), drawn as they come."""
        s, start = self.settings(), time.perf_counter()
        self._drawing = s
        total = len(METHODS) * (s["steps"] + 1)
        self.progress.max, self.progress.value, self.progress.bar_style = total, 0, "info"
        for panel in self.panels.values():
            panel.add_class("pb-stale")
        try:
            self.results = self._both_paths(s, generation)
            self._draw_final(s, generation)
        except Cancelled:
            raise
        except Exception as error:
            self.updates.check(generation)  # a stale update's error (e.g. the model changed under it) is moot
            self.progress.bar_style = "danger"
            self.status.value = error_html(f"the update failed: {error}")
            return
        self.seconds = time.perf_counter() - start
        self.progress.value, self.progress.bar_style = total, "success"
        p = {m: self.shown[m]["probabilities"] for m in METHODS}
        k = s["steps"]
        names = self.models[s["model"]].class_names
        self.status.value = (f"p({html.escape(names[s['target']])}): pullback {p['pullback'][0]:.2f} "
                             f"&rarr; {p['pullback'][-1]:.2f}, gradient {p['gradient'][0]:.2f} &rarr; "
                             f"{p['gradient'][-1]:.2f} after {k} step{'s' * (k != 1)} &middot; {self.seconds:.1f} s")

    def _both_paths(self, s: dict, generation: int) -> dict:
        """Both methods' paths, each drawn when done: at once in two threads in the background (each with
        its own copy of the model and half the CPU threads), else one after the other."""
        self._passes = {method: 0 for method in METHODS}
        if not self.updates.background:
            return {method: self._method_update(s, method, generation) for method in METHODS}
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(METHODS), "explorer-method", torch.set_num_threads,
                                            (method_threads(),))
        # The gradient's replica is copied here, before either thread starts: a copy taken while the pullback's
        # thread is inside soft_backward would carry the hooks that block put on the model.
        self._model_for(s["model"], "gradient")
        futures = {method: self._pool.submit(self._method_update, s, method, generation) for method in METHODS}
        concurrent.futures.wait(futures.values())  # both stop before the next update may start
        return {method: future.result() for method, future in futures.items()}

    def _method_update(self, s: dict, method: str, generation: int) -> Exploration:
        result = self._path(s, method, generation)
        with self._draw_lock:
            self._draw_method(method, result, s["steps"], generation)
        return result

    def _model_for(self, name: str, method: str):
        """The model ``name`` for ``method``: the gradient's runs on a copy when the two run at once."""
        if method == "pullback" or not self.updates.background:
            return self.models[name]
        if (name, method) not in self._replicas:
            self._replicas[name, method] = copy.deepcopy(self.models[name])
        return self._replicas[name, method]

    def _path(self, s: dict, method: str, generation: int) -> Exploration:
        """The path of ``method`` for settings ``s``, from the cache when it has one at least this long;
        stale (a newer change arrived) between any two steps."""
        key = (s["model"], s["image"], s["target"], method,
               *((s["temperature"], s["gate"]) if method == "pullback" else ()))
        with self._cache_lock:
            cached = self.cache.get(key)
            if cached is not None and cached.steps >= s["steps"]:
                self.cache.move_to_end(key)
                return cached.upto(s["steps"])

        def on_step(k):
            self.updates.check(generation)
            with self._draw_lock:
                self._passes[method] = k + 1
                self.progress.value = sum(self._passes.values())
                self.status.value = "computing: " + ", ".join(
                    f"{m} pass {n} of {s['steps'] + 1}" for m, n in self._passes.items() if n)

        def on_partial(partial):  # show the path so far while the rest computes
            with self._draw_lock:
                self._draw_method(method, partial, partial.steps, generation)

        result = explore_path(self._model_for(s["model"], method), self.images[s["image"]], s["target"], method,
                              s["steps"], s["temperature"], s["gate"], start=cached, on_step=on_step,
                              on_partial=on_partial)
        with self._cache_lock:
            self.cache[key] = result
            self.cache.move_to_end(key)
            while len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
        return result

def explore(model=None, images=None, device=None, background: bool | None = None):
    """An interactive explorer of excitation pullbacks (an ``ipywidgets`` widget; display it in a notebook).

    Choose an image (click a thumbnail or upload one), a model, a target class, the temperature T and gate
    of the pullback and the number of ascent steps k. The excitation pullback and the vanilla gradient are
    shown side by side: each one's field at the image as a heat map with a colour bar, its perturbation
    after k steps (alpha = 20, eps = 100, as in the paper's figures) and the perturbed image with the
    model's prediction; the target's probability along both paths on one plot; the image's top 3.

    Args:
        model: a classifier from :func:`utils.load_model`; None (default) starts on
            :data:`~utils.models.zoo.OFFLINE_DEFAULT`. The list offers only models that can load
            (:func:`loadable_models`): the paper's ImageNet models when their weights are cached or
            downloadable.
        images: a dict ``{name: (3, H, W)}``, a tensor (N, 3, H, W) in [-1, 1] or image file paths;
            None (default): the ten examples, one per class.
        device: where models chosen in the list load (default: the model's device, else CUDA if present).
        background: compute in a thread, a newer change cancelling an older one (default: inside a
            Jupyter kernel when ``model`` is None, so that the thread uses models no other code holds).

    Returns:
        The widget (an ``ipywidgets.VBox``; the last line of a notebook cell displays it); its ``explorer``
        attribute is the :class:`Explorer` behind it, whose controls (``image``, ``model``, ``target``,
        ``temperature``, ``gate``, ``steps``) can be set from code and whose ``results`` and ``shown`` hold what
        was computed and drawn.

    Raises:
        FileNotFoundError: ``model`` is None and the weights of :data:`~utils.models.zoo.OFFLINE_DEFAULT` are
            missing from the checkout (then pass a model, e.g. ``load_model("bundled")``).
        utils.models.integrity.WeightsFileError: ``model`` is None and those weights are damaged.
        OSError: an image path in ``images`` cannot be read (the message names it).
        AttributeError: ``model`` is a bare network without ``name`` and ``class_names`` (wrap it in a
            :class:`~utils.models.zoo.Classifier`).

        Errors while computing or loading a model chosen in the list do not raise: they show in the status line.

    Example:
        >>> from utils import explore, load_model, paper_batch
        >>> images = paper_batch(size=64, classes=(0, 2))[0]  # two images, 64 px to keep it quick
        >>> widget = explore(load_model("bundled", "cpu"), images, background=False)  # computes the first view
        >>> explorer = widget.explorer
        >>> sorted(explorer.results), explorer.steps.value
        (['gradient', 'pullback'], 5)
        >>> explorer.shown["pullback"]["field"].shape  # the pullback at the image, shaped like it
        torch.Size([3, 64, 64])
        >>> with explorer.hold():  # set several controls, then update once
        ...     explorer.steps.value = 2
        ...     explorer.temperature.value = 1.0
        >>> len(explorer.shown["pullback"]["probabilities"])  # the target's probability at steps 0, 1, 2
        3
    """
    return Explorer(model, images, device, background).widget
