"""The Semantic Pullbacks study: its part order, its verdicts, the paper's numbers, and the online command at n = 2
with random weights (no download: the weights are injected, the val folder is fake)."""
import csv
import json
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from utils.experiments.pages import semantic_page
from utils.experiments.semantic import reference, report, run as semantic
from utils.paths import REPO

SHARED = REPO.parent / "shared" / "reference" / "semantic-pullbacks"


def test_parts_run_in_proportion_and_each_once():
    settings = semantic.SemanticSettings(images=8, smooth_images=2, mosaics=4)
    order = semantic.part_order(settings)
    assert sorted(order) == sorted([("single", k) for k in range(8)] + [("smooth", k) for k in range(2)]
                                   + [("focus", k) for k in range(4)])
    # after the first half of the parts, every kind is half done
    half = order[:7]
    assert {kind: sum(1 for k, _ in half if k == kind) for kind in semantic.KINDS} == \
        {"single": 4, "smooth": 1, "focus": 2}


def rows(a, b, metric, values_a, values_b, kind="single"):
    return [{"kind": kind, "item": str(i), "explainer": name, "metric": metric, "value": str(v)}
            for name, values in ((a, values_a), (b, values_b)) for i, v in enumerate(values)]


def test_verdicts_follow_the_paper_ordering_and_the_interval():
    n = 20
    better = rows("SoftPullback", "Gradient", "Infidelity", [1.0 + 0.01 * i for i in range(n)],
                  [5.0 + 0.02 * i for i in range(n)])
    worse = rows("SoftPullback", "Gradient", "Faith.Corr", [0.1] * n, [0.5 + 0.001 * i for i in range(n)])
    noisy = rows("SoftPullback", "Gradient", "Max.Sens", [(-1) ** i for i in range(n)], [0.0] * n)
    few = rows("PullbackAscent", "GradientAscent", "Infidelity", [1.0, 2.0, 3.0], [4.0, 5.0, 7.0])
    unpublished = rows("PullbackShap", "GradientShap", "Mono.Corr", [0.9] * n, [0.1 + 0.001 * i for i in range(n)])
    # the paper's ResNet50 gives SmoothPullback and SmoothGrad the same Faith.Est mean (0.321): no ordering claimed
    assert reference.TABLE["resnet50"]["SmoothPullback"]["Faith.Est"][0] == \
        reference.TABLE["resnet50"]["SmoothGrad"]["Faith.Est"][0]
    tie = rows("SmoothPullback", "SmoothGrad", "Faith.Est", [0.1] * n, [0.5 + 0.001 * i for i in range(n)], "smooth")
    found = {(v["a"], v["metric"]): v["outcome"]
             for v in report.verdicts("resnet50_imagenette", better + worse + noisy + few + unpublished + tie)}
    assert found == {("SoftPullback", "Infidelity"): "holds", ("SoftPullback", "Faith.Corr"): "reversed",
                     ("SoftPullback", "Max.Sens"): "unresolved", ("PullbackAscent", "Infidelity"): "too few images",
                     ("PullbackShap", "Mono.Corr"): "better", ("SmoothPullback", "Faith.Est"): "worse"}
    mean, std, count = report.summary(better)[("Gradient", "Infidelity")]
    values = torch.tensor([5.0 + 0.02 * i for i in range(n)], dtype=torch.float64)
    assert count == n and mean == pytest.approx(values.mean().item())
    assert std == pytest.approx(values.std(correction=0).item())


@pytest.mark.skipif(not SHARED.is_dir(), reason="the authors' published CSVs are not beside the repository")
def test_reference_numbers_are_the_published_ones():
    for model, name in (("resnet50", "resnet_df_20_50.csv"), ("vgg11_bn", "vgg_df_20_50.csv"),
                        ("pvt_v2_b1", "pvt_df_20_50.csv")):
        with open(SHARED / name) as f:
            table = list(csv.reader(f))
        for row in table[1:]:
            for metric, cell in zip(table[0][1:], row[1:]):
                assert reference.TABLE[model][row[0]][metric] == tuple(map(float, cell.split("±")))
    for model in ("resnet50", "pvt_v2_b1"):
        with open(SHARED / f"focus_model_name={model}_summary.csv") as f:
            for row in csv.DictReader(f):
                assert reference.FOCUS[model][row["explainer"]][0] == pytest.approx(float(row["mean"]), abs=1e-4)


def fake_imagenet_val(root: Path) -> Path:
    """1,000 synset folders, two of them with one image each (classes 3 and 7)."""
    for i in range(1000):
        (root / f"n{i:08d}").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in (3, 7):
        pixels = torch.randint(0, 256, (80, 96, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"n{i:08d}" / f"val_{i}.JPEG")
    return root


@pytest.fixture
def random_weights(monkeypatch):
    """torchvision's and timm's pretrained loading, with random weights instead of a download."""
    import timm.models._builder

    def state_from_url(url, *args, **kwargs):
        arch = Path(url).name.split("-")[0]
        return torchvision.models.get_model(arch, weights=None).state_dict()
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", state_from_url)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", lambda *args, **kwargs: None)


@pytest.mark.parametrize("model", ["resnet50", "vgg11_bn", "pvt_v2_b1"])
def test_online_command_at_two_images_with_random_weights(model, tmp_path, random_weights, one_thread):
    data = fake_imagenet_val(tmp_path / "val")
    out = tmp_path / "out" / model
    semantic.main(["--model", model, "--data", str(data), "--out", str(out), "--images", "2", "--smooth-images",
                   "0", "--mosaics", "1", "--size", "64", "--explainers", "SoftPullback", "Gradient",
                   "--metrics", "Faith.Corr", "Rand.Logit"])
    scores = list(csv.DictReader(open(out / "scores.csv")))
    assert len(scores) == 2 * 2 * 2 + 2  # images x explainers x metrics, and Focus on one mosaic
    assert {r["label"] for r in scores if r["kind"] == "single"} == {"3", "7"}
    assert {r["metric"] for r in scores} == {"Faith.Corr", "Rand.Logit", "Focus"}
    assert all(-1 <= float(r["value"]) <= 1 for r in scores)
    timing = list(csv.DictReader(open(out / "timing.csv")))
    assert {r["explainer"] for r in timing} >= {"SoftPullback", "Gradient", "metric:Faith.Corr"}
    page = semantic_page(tmp_path / "out")
    assert f"## {model}" in page and "SoftPullback − Gradient" in page
    assert f"The paper's `{model}`" in page  # the authors' numbers for the same model beside ours
    assert "leaves out Infidelity, Faith.Est, Mono.Corr, Max.Sens (`--metrics`)" in page
    # a stopped run: its finished parts are merged by --collect, which says how far it got
    (out / "parts" / "focus_0000.csv").unlink()
    semantic.main(["--collect", "--out", str(out)])
    assert json.loads((out / "progress.json").read_text()) == {"complete": False, "parts_done": 2, "parts": 3}
    assert len(list(csv.DictReader(open(out / "scores.csv")))) == 2 * 2 * 2
    assert "2 of 3 parts" in semantic_page(tmp_path / "out")
