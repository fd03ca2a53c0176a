"""Our Semantic Pullbacks evaluation against the authors' Quantus pipeline: same CPU, images, explainers and metrics.

    python benchmarks/semantic_speed.py                      # resnet50_imagenette, 2 images, 3 explainers, 224 px
    python benchmarks/semantic_speed.py --size 112 --explainers SoftPullback Gradient
    python benchmarks/semantic_speed.py --device cuda --images 8           # on a GPU, where batching pays

The authors' pipeline (github.com/314-Foundation/SemanticPullbacks, ``lib/evaluator.py``; no code taken) is rebuilt
here from Quantus 0.6's metric classes with the paper's settings: ``FaithfulnessEstimate``,
``MonotonicityCorrelation``, ``MaxSensitivity`` and ``RandomLogit`` as they are, and the two subclasses the paper
defines, optimal-scaling Infidelity and grid Faithfulness Correlation, written from their definitions (Quantus'
own loops: one perturbed batch a grid cell, kept perturbed across the sweep). Explainers go in as Quantus
``explain_func``s on numpy arrays: Gradient and IntegratedGradients through ``quantus.explain`` (Captum), the
pullback rows through our explainers (the same attribution both sides, so the ratio measures the pipelines).
Ours is :func:`utils.evaluate_explainers`. Each pipeline runs once on the same images (their first call is
timed: both load nothing more after it); the ratio is Quantus' seconds over ours.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import quantus  # noqa: E402
from quantus.helpers import utils as qutils  # noqa: E402

from utils import evaluate_explainers  # noqa: E402
from utils.analysis.explainers import EXPLAINERS  # noqa: E402
from utils.data.imagenette import data_root_from_env, first_per_class, load_image  # noqa: E402
from utils.models.zoo import load_model  # noqa: E402

CAPTUM = {"Gradient": "Gradient", "IntegratedGradients": "IntegratedGradients"}


def predicted(model, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The target logits of a batch, through Quantus' model wrapper (as its metrics call the model)."""
    return model.predict(x)[np.arange(len(x)), targets]


class OptimalScalingInfidelity(quantus.Infidelity):
    """The paper's Infidelity: per sample and patch size, every cell of the edge-padded grid replaced by U(-1, 1) in
    turn (cumulatively, as Quantus sweeps); ``a = sum(attr (x - x~))``, ``b = f(x) - f(x~)``,
    ``beta = sum(ab) / sum(a^2)``, score ``mean (beta a - b)^2``."""

    def evaluate_batch(self, model, x_batch, y_batch, a_batch, **kwargs):
        n, (h, w) = len(x_batch), x_batch.shape[-2:]
        base = predicted(model, x_batch, y_batch)
        a_terms, b_terms = [], []
        for _ in range(self.n_perturb_samples):
            for patch in self.perturb_patch_sizes:
                pad = ((0, 0), (0, 0), qutils.get_padding_size(h, patch), qutils.get_padding_size(w, patch))
                padded = np.pad(x_batch, pad, mode="edge")
                top, left = pad[2][0], pad[3][0]
                for cells in qutils.get_block_indices(padded, patch):
                    padded = self.perturb_func(arr=padded.reshape(n, -1), indices=cells).reshape(padded.shape)
                    x_tilde = np.ascontiguousarray(padded[:, :, top:top + h, left:left + w])
                    b_terms.append(base - predicted(model, x_tilde, y_batch))
                    a_terms.append((a_batch * (x_batch - x_tilde)).reshape(n, -1).sum(1))
        a, b = np.stack(a_terms, 1).astype(np.float64), np.stack(b_terms, 1).astype(np.float64)
        beta = (a * b).sum(1) / np.maximum((a * a).sum(1), 1e-30)
        return ((beta[:, None] * a - b) ** 2).mean(1).tolist()


class GridFaithfulnessCorrelation(quantus.FaithfulnessCorrelation):
    """The paper's Faithfulness Correlation: each cell of a 56 px grid (edge-padded) set to 0 on its own; Pearson
    correlation across cells of the cell's summed attribution and the logit drop."""

    def evaluate_batch(self, model, x_batch, y_batch, a_batch, patch: int = 56, **kwargs):
        n, (h, w) = len(x_batch), x_batch.shape[-2:]
        pad = ((0, 0), (0, 0), qutils.get_padding_size(h, patch), qutils.get_padding_size(w, patch))
        padded, a_padded = np.pad(x_batch, pad, mode="edge"), np.pad(a_batch, pad, mode="edge").reshape(n, -1)
        top, left = pad[2][0], pad[3][0]
        base = predicted(model, x_batch, y_batch)
        drops, sums = [], []
        for cells in qutils.get_block_indices(padded, patch):
            x_tilde = self.perturb_func(arr=padded.reshape(n, -1), indices=cells).reshape(padded.shape)
            drops.append(base - predicted(model, np.ascontiguousarray(x_tilde[:, :, top:top + h, left:left + w]),
                                          y_batch))
            sums.append(np.take_along_axis(a_padded, cells, 1).sum(1))
        return self.similarity_func(a=np.stack(sums, 1), b=np.stack(drops, 1), batched=True).tolist()


def quantus_metrics(classes: int) -> dict:
    """The paper's ``default_metrics``, Quantus 0.6 classes with its settings."""
    uniform = {"uniform_low": -1.0, "uniform_high": 1.0}
    quiet = dict(disable_warnings=True, display_progressbar=False)
    return {
        "Infidelity": OptimalScalingInfidelity(perturb_baseline="uniform", perturb_func_kwargs=uniform,
                                               n_perturb_samples=5, perturb_patch_sizes=[112, 56], **quiet),
        "Faith.Corr": GridFaithfulnessCorrelation(perturb_baseline=0.0, abs=True, return_aggregate=False, **quiet),
        "Faith.Est": quantus.FaithfulnessEstimate(features_in_step=3136, perturb_baseline=0.0, abs=True, **quiet),
        "Mono.Corr": quantus.MonotonicityCorrelation(nr_samples=10, features_in_step=3136, perturb_baseline="uniform",
                                                     perturb_func_kwargs=uniform, abs=True, eps=1e-12, **quiet),
        "Max.Sens": quantus.MaxSensitivity(nr_samples=10, lower_bound=0.02, **quiet),
        "Rand.Logit": quantus.RandomLogit(num_classes=classes, seed=42, **quiet,
                                          similarity_func=quantus.similarity_func.correlation_pearson),
    }


def explain_func(name: str, device: str):
    """A Quantus ``explain_func`` (numpy in, numpy out) for the explainer ``name``, computed on ``device``."""
    def explain(model, inputs, targets, **kwargs):
        if name in CAPTUM:
            return quantus.explain(model, inputs, targets, method=CAPTUM[name], reduce_axes=(), device=device)
        x = torch.as_tensor(inputs, dtype=torch.float32, device=device)
        return EXPLAINERS[name](model, x, torch.as_tensor(targets, device=device).long()).cpu().numpy()
    return explain


def quantus_pipeline(model, images: torch.Tensor, targets: torch.Tensor, names, device: str) -> dict:
    """The authors' evaluator: every explainer's attributions first, then every metric for every explainer."""
    x, y = images.cpu().numpy(), targets.cpu().numpy()
    attributions = {n: explain_func(n, device)(model, x, y) for n in names}
    with torch.no_grad():
        classes = model(images[:1]).shape[1]
    return {m: {n: metric(model=model, x_batch=x, y_batch=y, a_batch=attributions[n], device=device,
                          explain_func=explain_func(n, device), channel_first=True) for n in names}
            for m, metric in quantus_metrics(classes).items()}


def synchronized(run, device: str):
    """``run()``, waiting for the device's queued work before the clock stops."""
    result = run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50_imagenette")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, help="a multiple of 112 (the paper's largest patch)")
    parser.add_argument("--explainers", nargs="+", default=["SoftPullback", "Gradient", "IntegratedGradients"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both pipelines run there)")
    args = parser.parse_args(argv)
    root = data_root_from_env()
    if root is None:
        sys.exit("set IMAGENETTE_ROOT to the Imagenette folder (val images are scored)")
    files = first_per_class(root, classes=tuple(range(10)), per_class=1)[:args.images]
    images = torch.stack([load_image(p, args.size) for p in files]).to(args.device)
    # channels_last, as the study runs it (on a CPU, convolutions run about 1.4 times faster in it), for both
    model = load_model(args.model, args.device).to(memory_format=torch.channels_last)
    with torch.no_grad():
        targets = model(images).argmax(1)
    EXPLAINERS["Gradient"](model, images[:1], targets[:1])  # a first backward pass, so neither side pays set-up
    timings = {}
    for label, run in (("ours", lambda: evaluate_explainers(model, images, targets, args.explainers)),
                       ("quantus", lambda: quantus_pipeline(model, images, targets, args.explainers, args.device))):
        began = time.perf_counter()
        scores = synchronized(run, args.device)
        timings[label] = time.perf_counter() - began
        print(f"{label}: {timings[label]:.1f} s")
        for metric, by_name in scores.items():
            print(f"  {metric:<11}" + "  ".join(f"{n} {np.mean(np.asarray(v, dtype=float)):+.3f}"
                                                for n, v in by_name.items()))
    where = f"{torch.get_num_threads()} threads" if args.device == "cpu" else args.device
    print(f"{args.model}, {args.images} images at {args.size} px, {', '.join(args.explainers)}, six metrics, "
          f"{where}: Quantus pipeline / ours = {timings['quantus'] / timings['ours']:.1f}x")


if __name__ == "__main__":
    main()
