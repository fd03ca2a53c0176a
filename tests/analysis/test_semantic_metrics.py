"""The Semantic Pullbacks paper's metrics (utils.analysis.metrics) against Quantus 0.6 on small cases, and the
properties they must have whatever Quantus does.

Where a metric draws nothing at random it must equal Quantus to 1e-4. Where it does, Quantus is handed the very
values our generator drew (``np.random.uniform`` replaced by a feed of our draws, in the order Quantus asks for
them). The paper's two Quantus subclasses are rebuilt here from issue 30's definitions."""
import numpy as np
import pytest
import torch
from torch import nn

quantus = pytest.importorskip("quantus")

from quantus.helpers import utils as qutils  # noqa: E402
from quantus.helpers.enums import ScoreDirection  # noqa: E402

from utils.analysis.metrics import (METRICS, QUADRANTS, faithfulness_correlation, faithfulness_estimate,  # noqa: E402
                                    focus, infidelity, make_mosaics, max_sensitivity, monotonicity_correlation,
                                    other_classes, random_logit)
from utils.analysis.metrics import common, ordering, patches, sensitivity  # noqa: E402
from utils.analysis.metrics.common import average_ranks, correlation_spearman  # noqa: E402

CLASSES = 5


def gradient(model, images, targets):
    """The plain gradient of the target logit: an explainer of the (model, images, targets) kind."""
    images = images.detach().requires_grad_(True)
    return torch.autograd.grad(model(images).gather(1, targets[:, None]).sum(), images)[0]


def gradient_x_input(model, images, targets):
    return gradient(model, images, targets) * images


def as_quantus(explainer):
    """Our explainer as a Quantus ``explain_func`` (numpy in, numpy out)."""
    def explain(model, inputs, targets, **kwargs):
        return explainer(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()
    return explain


@pytest.fixture(scope="module")
def net():
    """A small random conv net with 5 classes; Softplus keeps its gradients free of exact zeros (no ties)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Softplus(), nn.AvgPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), nn.Softplus(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, CLASSES)).eval()


def batch(size=32, n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    return images, torch.arange(n) % CLASSES


def maps(net, images, targets, seed=2):
    """Two continuous maps: the gradient and a random one."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return {"gradient": gradient(net, images, targets), "random": noise}


class Draws:
    """Records the uniform draws the metrics make, and feeds them to Quantus in place of ``np.random.uniform``."""

    def __init__(self, monkeypatch):
        self.monkeypatch, self.made, self.fed = monkeypatch, [], []
        for module in (patches, ordering, sensitivity):
            monkeypatch.setattr(module, "uniform", self.record)

    def record(self, *args, **kwargs):
        draw = common.uniform(*args, **kwargs)
        self.made.append(draw)
        return draw

    def feed(self, rows):
        """Quantus' next ``np.random.uniform`` calls return ``rows`` (each the shape Quantus asks for)."""
        self.fed = [np.asarray(r, dtype=np.float64) for r in rows]

        def uniform(low=0.0, high=1.0, size=None):
            assert self.fed, "Quantus drew more values than our metric"
            value = self.fed.pop(0)
            assert value.shape == np.empty(size).shape, (value.shape, size)
            assert np.all((value >= low) & (value <= high))
            return value
        self.monkeypatch.setattr(np.random, "uniform", uniform)


def quantus_scores(metric, net, images, targets, a, **kwargs):
    scores = metric(model=net, x_batch=images.numpy(), y_batch=targets.numpy(), a_batch=a.numpy(), device="cpu",
                    channel_first=True, **kwargs)
    return torch.tensor(np.asarray(scores, dtype=np.float64))


def _logits(model, x, shape, targets):
    return model.predict(model.shape_input(x, shape, channel_first=True, batched=True))[np.arange(len(x)), targets]


class OptimalScalingInfidelity(quantus.Infidelity):
    """Issue 30's Infidelity on Quantus' own perturbation: for each sample and patch size the grid's cells are
    replaced one after another (by ``perturb_func``, staying replaced, as in Quantus' loop), ``a = sum(attr * (x -
    x~))``, ``b = f(x) - f(x~)``; over all perturbations ``beta = sum(ab) / sum(a^2)`` and the score is
    ``mean (beta a - b)^2``. Sizes must be multiples of the patch sizes (as Quantus' Infidelity needs)."""

    def evaluate_batch(self, model, x_batch, y_batch, a_batch, **kwargs):
        n = len(x_batch)
        flat_x, flat_a = x_batch.reshape(n, -1), np.broadcast_to(a_batch, x_batch.shape).reshape(n, -1)
        y = _logits(model, x_batch, x_batch.shape, y_batch)
        a_terms, b_terms = [], []
        for _ in range(self.n_perturb_samples):
            for patch in self.perturb_patch_sizes:
                assert x_batch.shape[-1] % patch == 0 and x_batch.shape[-2] % patch == 0
                perturbed = flat_x
                for cells in qutils.get_block_indices(x_batch, patch):
                    perturbed = self.perturb_func(arr=perturbed, indices=cells)
                    b_terms.append(y - _logits(model, perturbed.reshape(x_batch.shape), x_batch.shape, y_batch))
                    a_terms.append((flat_a * (flat_x - perturbed)).sum(1))
        a, b = np.stack(a_terms, 1).astype(np.float64), np.stack(b_terms, 1).astype(np.float64)
        a2 = (a * a).sum(1)
        beta = (a * b).sum(1) / np.where(a2 != 0, a2, 1.0)
        return ((beta[:, None] * a - b) ** 2).mean(1)


class GridFaithfulnessCorrelation(quantus.FaithfulnessCorrelation):
    """Issue 30's Faithfulness Correlation: every cell of a ``patch`` px grid over the edge-padded image set to the
    baseline in turn; Pearson correlation across cells of the summed (padded, preprocessed) attribution and the
    logit drop."""

    def __init__(self, patch, **kwargs):
        super().__init__(**kwargs)
        self.patch = patch

    def evaluate_batch(self, model, x_batch, y_batch, a_batch, **kwargs):
        n, (h, w) = len(x_batch), x_batch.shape[-2:]
        pad = ((0, 0), (0, 0), qutils.get_padding_size(h, self.patch), qutils.get_padding_size(w, self.patch))
        x_pad = np.pad(x_batch, pad, mode="edge")
        a_pad = np.pad(np.broadcast_to(a_batch, x_batch.shape), pad, mode="edge").reshape(n, -1)
        top, left = pad[2][0], pad[3][0]
        y = _logits(model, x_batch, x_batch.shape, y_batch)
        drops, sums = [], []
        for cells in qutils.get_block_indices(x_pad, self.patch):
            perturbed = self.perturb_func(arr=x_pad.reshape(n, -1), indices=cells).reshape(x_pad.shape)
            perturbed = np.ascontiguousarray(perturbed[:, :, top:top + h, left:left + w])
            drops.append(y - _logits(model, perturbed, x_batch.shape, y_batch))
            sums.append(np.take_along_axis(a_pad, cells, 1).sum(1))
        return self.similarity_func(a=np.stack(sums, 1), b=np.stack(drops, 1), batched=True).tolist()


def test_infidelity_equals_quantus_with_the_same_noise(net, monkeypatch):
    images, targets = batch()
    a = maps(net, images, targets)
    draws = Draws(monkeypatch)
    ours = infidelity(net, images, targets, a, generator=torch.Generator().manual_seed(0), samples=2,
                      patch_sizes=(16, 8))
    (noise,) = draws.made
    assert noise.shape == (2 * (4 + 16), 3)
    metric = OptimalScalingInfidelity(perturb_baseline="uniform", perturb_patch_sizes=[16, 8], n_perturb_samples=2,
                                      perturb_func_kwargs={"uniform_low": -1.0, "uniform_high": 1.0},
                                      disable_warnings=True)
    for name, attribution in a.items():
        draws.feed(noise.numpy())
        theirs = quantus_scores(metric, net, images, targets, attribution)
        assert not draws.fed
        torch.testing.assert_close(ours[name], theirs, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("size", [32, 36])  # 36 px: a grid over the edge-padded image
def test_faithfulness_correlation_equals_quantus(net, size):
    images, targets = batch(size)
    a = maps(net, images, targets)
    ours = faithfulness_correlation(net, images, targets, a, patch=8)
    metric = GridFaithfulnessCorrelation(8, perturb_baseline=0.0, abs=True, return_aggregate=False,
                                         disable_warnings=True)
    for name, attribution in a.items():
        torch.testing.assert_close(ours[name], quantus_scores(metric, net, images, targets, attribution),
                                   rtol=0, atol=1e-4)


def test_faithfulness_estimate_equals_quantus(net):
    images, targets = batch()
    a = maps(net, images, targets)
    ours = faithfulness_estimate(net, images, targets, a, features_in_step=64)
    metric = quantus.FaithfulnessEstimate(features_in_step=64, perturb_baseline=0.0, abs=True, disable_warnings=True)
    for name, attribution in a.items():
        torch.testing.assert_close(ours[name], quantus_scores(metric, net, images, targets, attribution),
                                   rtol=0, atol=1e-4)


def test_monotonicity_correlation_equals_quantus_with_the_same_noise(net, monkeypatch):
    images, targets = batch()
    a = maps(net, images, targets)
    draws = Draws(monkeypatch)
    ours = monotonicity_correlation(net, images, targets, a, generator=torch.Generator().manual_seed(0), samples=3,
                                    features_in_step=64)
    (noise,) = draws.made
    assert noise.shape == (48, 3, 3)  # (steps, samples, images): 3 * 32 * 32 / 64 steps
    metric = quantus.MonotonicityCorrelation(nr_samples=3, features_in_step=64, perturb_baseline="uniform",
                                             perturb_func_kwargs={"uniform_low": -1.0, "uniform_high": 1.0},
                                             abs=True, eps=1e-12, disable_warnings=True)
    for name, attribution in a.items():
        draws.feed(noise.flatten(0, 1).numpy())
        theirs = quantus_scores(metric, net, images, targets, attribution)
        assert not draws.fed
        torch.testing.assert_close(ours[name], theirs, rtol=0, atol=1e-4)


def test_max_sensitivity_equals_quantus_with_the_same_noise(net, monkeypatch):
    images, targets = batch()
    explainers = {"gradient": gradient, "gradient_x_input": gradient_x_input}
    a = {name: e(net, images, targets) for name, e in explainers.items()}
    draws = Draws(monkeypatch)
    ours = max_sensitivity(net, images, targets, a, explainers=explainers, generator=torch.Generator().manual_seed(0),
                           samples=3, radius=0.02)
    assert len(draws.made) == 3 and all(d.shape == images.shape for d in draws.made)
    for name, explainer in explainers.items():
        draws.feed([d.flatten(1).numpy() for d in draws.made])
        metric = quantus.MaxSensitivity(nr_samples=3, lower_bound=0.02, disable_warnings=True)
        theirs = quantus_scores(metric, net, images, targets, a[name], explain_func=as_quantus(explainer))
        assert not draws.fed
        torch.testing.assert_close(ours[name], theirs, rtol=1e-4, atol=1e-7)


def test_random_logit_equals_quantus_with_the_same_classes(net, monkeypatch):
    images, targets = batch(n=4)
    explainers = {"gradient": gradient, "gradient_x_input": gradient_x_input}
    a = {name: e(net, images, targets) for name, e in explainers.items()}
    ours = random_logit(net, images, targets, a, explainers=explainers, generator=torch.Generator().manual_seed(3),
                        num_classes=CLASSES)
    index = torch.randint(0, CLASSES - 1, (4,), generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(np.random, "randint", lambda low, high, size: index.numpy())
    for name, explainer in explainers.items():
        metric = quantus.RandomLogit(num_classes=CLASSES, similarity_func=quantus.similarity_func.correlation_pearson,
                                     disable_warnings=True)
        theirs = quantus_scores(metric, net, images, targets, a[name], explain_func=as_quantus(explainer))
        torch.testing.assert_close(ours[name], theirs, rtol=0, atol=1e-4)


def test_focus_equals_quantus(net):
    images, targets = batch(n=4)
    quadrants = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 1], [0, 0, 1, 1]], dtype=torch.bool)
    a = maps(net, images, targets)
    ours = focus(a, images, quadrants)
    metric = quantus.Focus(abs=False, normalise=False, return_aggregate=False, disable_warnings=True)
    for name, attribution in a.items():
        theirs = quantus_scores(metric, net, images, targets, images * attribution,
                                custom_batch=quadrants.long().numpy())
        torch.testing.assert_close(ours[name], theirs, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def linear():
    """A linear classifier: the gradient is the exact first-order (and only) term of every logit change."""
    torch.manual_seed(4)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, CLASSES)).eval()


@pytest.mark.parametrize("size", [32, 30])  # 30 px: cells of the edge-padded grid cut by the border
def test_infidelity_is_zero_for_the_exact_attribution_of_a_linear_model_at_any_scale(size):
    torch.manual_seed(4)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, CLASSES)).eval()
    images, targets = batch(size)
    g = gradient(linear, images, targets)
    scores = infidelity(linear, images, targets, {"gradient": g, "scaled": -3 * g, "x_input": g * images},
                        generator=torch.Generator().manual_seed(0), samples=2, patch_sizes=(16, 8))
    drop_scale = linear[1].weight.abs().sum() ** 2  # squared logit units
    assert scores["gradient"].max() < 1e-9 * drop_scale and scores["scaled"].max() < 1e-9 * drop_scale
    assert scores["x_input"].min() > 1e-4


def test_deletion_metrics_are_one_for_exact_nonnegative_contributions(linear):
    """Gradient x input of a linear model, on inputs where every contribution is >= 0: each cell's or step's
    summed |attribution| is exactly its logit drop (baseline 0), so both Pearson correlations are 1."""
    images, targets = batch()
    w = linear[1].weight[targets].view_as(images).detach()
    images = images.abs() * w.sign()
    a = {"exact": gradient_x_input(linear, images, targets)}
    assert (a["exact"] >= 0).all()
    for scores in (faithfulness_correlation(linear, images, targets, a, patch=8),
                   faithfulness_estimate(linear, images, targets, a, features_in_step=64)):
        torch.testing.assert_close(scores["exact"], torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(METRICS))
def test_scores_do_not_depend_on_the_other_explainers(net, name):
    images, targets = batch(n=2)
    explainers = {"gradient": gradient, "gradient_x_input": gradient_x_input}
    a = {k: e(net, images, targets) for k, e in explainers.items()}
    small = dict(patch_sizes=(16, 8), samples=2) if name == "Infidelity" else (
        dict(patch=8) if name == "Faith.Corr" else dict(features_in_step=64) if name == "Faith.Est" else (
            dict(features_in_step=64, samples=2) if name == "Mono.Corr" else (
                dict(samples=2) if name == "Max.Sens" else {})))

    def run(subset):
        return METRICS[name](net, images, targets, {k: a[k] for k in subset}, explainers=explainers,
                             generator=torch.Generator().manual_seed(5), **small)
    both, alone = run(["gradient_x_input", "gradient"]), run(["gradient"])
    assert set(both) == {"gradient", "gradient_x_input"} and set(alone) == {"gradient"}
    assert both["gradient"].dtype == torch.float64 and both["gradient"].shape == (2,)
    assert torch.isfinite(both["gradient"]).all()
    torch.testing.assert_close(alone["gradient"], both["gradient"], rtol=0, atol=0)


def test_forward_chunks_default_to_the_cpu_batch_and_do_not_change_scores(net):
    images, targets = batch(n=3)
    a = {"gradient": gradient(net, images, targets)}
    sizes = []
    hook = net.register_forward_hook(lambda module, inputs, output: sizes.append(len(inputs[0])))
    try:
        chunked = faithfulness_estimate(net, images, targets, a, features_in_step=64)
        along = sizes[1:]  # after the unperturbed pass: 3 images x 48 steps in chunks of CPU_BATCH
        whole = faithfulness_estimate(net, images, targets, a, features_in_step=64, batch_size=1000)
    finally:
        hook.remove()
    assert common.CPU_BATCH == 16 and along == [16] * 9
    torch.testing.assert_close(chunked["gradient"], whole["gradient"], rtol=0, atol=1e-6)


def test_registry_directions_are_quantus_ones():
    classes = {"Infidelity": quantus.Infidelity, "Faith.Corr": quantus.FaithfulnessCorrelation,
               "Faith.Est": quantus.FaithfulnessEstimate, "Mono.Corr": quantus.MonotonicityCorrelation,
               "Max.Sens": quantus.MaxSensitivity, "Rand.Logit": quantus.RandomLogit}
    assert list(METRICS) == list(classes)
    for name, cls in classes.items():
        assert METRICS[name].lower_is_better == (cls.score_direction == ScoreDirection.LOWER), name
    assert [n for n, spec in METRICS.items() if spec.needs_explainers] == ["Max.Sens", "Rand.Logit"]
    with pytest.raises(ValueError, match="explainers"):
        METRICS["Max.Sens"](None, torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.long), {})


def test_bad_inputs_are_refused_with_clear_errors(net):
    images, targets = batch()
    a = maps(net, images, targets)
    with pytest.raises(ValueError, match="targets must be"):
        faithfulness_estimate(net, images, targets.float(), a)
    with pytest.raises(ValueError, match="shaped like the images"):
        faithfulness_correlation(net, images, targets, {"gradient": a["gradient"][:, :1]})
    with pytest.raises(KeyError, match="no explainer"):
        random_logit(net, images, targets, a, explainers={"gradient": gradient}, generator=torch.Generator())
    with pytest.raises(ValueError, match="features_in_step"):
        monotonicity_correlation(net, images, targets, a, generator=torch.Generator(), features_in_step=0)


def test_spearman_ranks_ties_as_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(6)
    a = torch.randint(0, 4, (5, 12), generator=g).double()  # many ties
    b = torch.randn(5, 12, generator=g, dtype=torch.float64)
    b[:, :3] = 0.5
    expected = [scipy_stats.spearmanr(x, y)[0] for x, y in zip(a.numpy(), b.numpy())]
    torch.testing.assert_close(correlation_spearman(a, b), torch.tensor(expected, dtype=torch.float64))
    np.testing.assert_allclose(average_ranks(a).numpy(), np.stack([scipy_stats.rankdata(r) for r in a.numpy()]))


def test_max_sensitivity_and_random_logit_on_known_explainers(net):
    images, targets = batch()
    fixed = torch.randn(images.shape, generator=torch.Generator().manual_seed(7))
    explainers = {"fixed": lambda m, x, t: fixed, "input": lambda m, x, t: x.clone()}
    a = {name: e(net, images, targets) for name, e in explainers.items()}
    sens = max_sensitivity(net, images, targets, a, explainers=explainers, generator=torch.Generator().manual_seed(0),
                           samples=4, radius=0.1)
    assert (sens["fixed"] == 0).all()
    # The map is the input: its relative change is the noise's norm over the image's, which is below
    # radius * sqrt(features) / ||x|| and, for 4 samples of 3072 values, well above half of it.
    bound = 0.1 * images[0].numel() ** 0.5 / images.flatten(1).norm(dim=1).double()
    assert ((sens["input"] < bound) & (sens["input"] > bound / 2)).all()
    logit = random_logit(net, images, targets, a, explainers=explainers, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logit["fixed"], torch.ones(3, dtype=torch.float64))


def test_other_classes_are_uniform_over_the_other_classes():
    targets = torch.arange(4).repeat(2000)
    drawn = other_classes(targets, 4, torch.Generator().manual_seed(8))
    assert (drawn != targets).all() and drawn.min() >= 0 and drawn.max() <= 3
    for t in range(4):
        counts = torch.bincount(drawn[targets == t], minlength=4).double()
        assert counts[t] == 0 and ((counts[torch.arange(4) != t] / 2000 - 1 / 3).abs() < 0.04).all()


def test_focus_is_one_when_all_positive_relevance_is_in_the_target_quadrants():
    images = torch.ones(2, 3, 16, 16)
    quadrants = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)
    relevance = -torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))  # negative outside
    for i, q in enumerate(quadrants):
        for k in range(4):
            if q[k]:
                rows, cols = slice(0, 8) if k < 2 else slice(8, 16), slice(0, 8) if k % 2 == 0 else slice(8, 16)
                relevance[i, :, rows, cols] *= -1
    torch.testing.assert_close(focus(relevance, images, quadrants), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(focus(relevance.abs(), None, quadrants, times_input=False),
                               torch.full((2,), 0.5, dtype=torch.float64), atol=0.05, rtol=0)
    torch.testing.assert_close(focus(images, images, quadrants), torch.full((2,), 0.5, dtype=torch.float64))


def test_mosaics_put_the_target_in_two_quadrants_and_other_classes_elsewhere():
    """A pool whose every image is one constant value (its index), so each tile tells which image it shows."""
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4])
    pool = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()
    mosaics, targets, quadrants = make_mosaics(pool, labels, torch.Generator().manual_seed(10), 200, tile=4)
    assert mosaics.shape == (200, 3, 8, 8) and quadrants.shape == (200, 4) and len(QUADRANTS) == 4
    assert (quadrants.sum(1) == 2).all()
    tiles = mosaics.view(200, 3, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(200, 4, -1)
    assert (tiles == tiles[..., :1]).all()  # resizing a constant image keeps it constant
    shown = tiles[..., 0].long()  # (200, 4) pool index per quadrant
    for m in range(200):
        target_tiles, other_tiles = shown[m][quadrants[m]], shown[m][~quadrants[m]]
        assert target_tiles[0] == target_tiles[1] and labels[target_tiles[0]] == targets[m]
        assert (labels[other_tiles] != targets[m]).all()
    assert set(targets.tolist()) == set(labels.tolist())  # every class gets to be the target
    assert quadrants.double().mean(0).sub(0.5).abs().max() < 0.1  # each quadrant holds the target about half the time
