"""evaluate_explainers: per-image scores by metric and explainer, seeded, each metric independent of the others."""
import pytest
import torch

import utils
from utils.analysis.explainers import EXPLAINERS

from .test_explainers import Tiny


def setup():
    model = Tiny().eval()
    g = torch.Generator().manual_seed(0)
    return model, torch.rand(3, 3, 64, 64, generator=g) * 2 - 1, torch.tensor([0, 3, 4])


def test_scores_by_metric_and_explainer(one_thread):
    model, x, t = setup()
    names = ["SoftPullback", "Gradient", "GradientShap"]
    scores = utils.evaluate_explainers(model, x, t, explainers=names, seed=1)
    assert list(scores) == ["Infidelity", "Faith.Corr", "Faith.Est", "Mono.Corr", "Max.Sens", "Rand.Logit"]
    for by_name in scores.values():
        assert list(by_name) == names
        assert all(v.shape == (3,) and v.dtype == torch.float64 and v.device.type == "cpu" for v in by_name.values())
    again = utils.evaluate_explainers(model, x, t, explainers=names, seed=1)
    assert all(torch.equal(scores[m][n], again[m][n]) for m in scores for n in names)
    # one metric alone, or fewer explainers, draws the same numbers (Rand.Logit calls GradientShap after Max.Sens)
    for metric in ("Max.Sens", "Rand.Logit", "Infidelity"):
        alone = utils.evaluate_explainers(model, x, t, explainers=["GradientShap"], metrics=[metric], seed=1)
        assert torch.equal(alone[metric]["GradientShap"], scores[metric]["GradientShap"]), metric
    other = utils.evaluate_explainers(model, x, t, explainers=names, metrics=["Max.Sens"], seed=2)
    assert not torch.equal(other["Max.Sens"]["GradientShap"], scores["Max.Sens"]["GradientShap"])


def test_callables_and_bad_names(one_thread):
    model, x, t = setup()
    scores = utils.evaluate_explainers(model, x, t, explainers={"mine": EXPLAINERS["Gradient"]}, metrics="Faith.Corr")
    reference = utils.evaluate_explainers(model, x, t, explainers=["Gradient"], metrics="Faith.Corr")
    assert torch.equal(scores["Faith.Corr"]["mine"], reference["Faith.Corr"]["Gradient"])
    with pytest.raises(ValueError, match="unknown explainers"):
        utils.evaluate_explainers(model, x, t, explainers=["Saliency"])
    with pytest.raises(ValueError, match="unknown metrics"):
        utils.evaluate_explainers(model, x, t, metrics=["AUC"])
