"""The mismatched-target control of the alignment study: its rows against explicit formulas, its images, and
its committed results against the main study's."""
import json

import pytest
import torch

from utils.analysis.alignment import cosine
from utils import excitation_pullback, vanilla_gradient
from utils.data.imagenette import IMAGENETTE_CLASSES
from utils.experiments.alignment.control import ControlSettings, control_rows, mismatched, run
from utils.experiments.alignment.run import SIX
from utils.experiments.runner import evaluation_images
from utils.experiments.records import read_csv
from utils.models.nets import PlainNet, PoolResNet
from utils.models.zoo import Classifier
from utils.paths import RESULTS


def _classifier(net, name):
    return Classifier(net.eval(), torch.nn.Identity(), IMAGENETTE_CLASSES, name)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"pool": _classifier(PoolResNet(widths=(8, 16, 32, 64, 128)), "pool"),
            "plain": _classifier(PlainNet(layout=(16, 32)), "plain")}


def _value(rows, measure, method, model, other=""):
    return torch.tensor([r["value"] for r in rows if (r["measure"], r["method"], r["model"], r["other"])
                         == (measure, method, model, other)], dtype=torch.float64)


def test_control_rows_follow_their_formulas(models):
    torch.manual_seed(1)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    targets, others = torch.tensor([0, 2, 4]), torch.tensor([2, 4, 6])
    rows = control_rows(models, x, targets, others, temperature=0.3)
    for method, fn in (("pullback", lambda m, t: excitation_pullback(m, x, t, temperature=0.3)),
                       ("gradient", lambda m, t: vanilla_gradient(m, x, t))):
        f = {(n, k): fn(m, t) for n, m in models.items() for k, t in (("c", targets), ("o", others))}
        matched = cosine(f["pool", "c"], f["plain", "c"])
        cross = (cosine(f["pool", "c"], f["plain", "o"]) + cosine(f["pool", "o"], f["plain", "c"])) / 2
        torch.testing.assert_close(_value(rows, "agree_field", method, "pool", "plain"), matched)
        torch.testing.assert_close(_value(rows, "agree_field_mismatched", method, "pool", "plain"), cross)
        torch.testing.assert_close(_value(rows, "agree_field_specific", method, "pool", "plain"), matched - cross)
        for name in models:
            torch.testing.assert_close(_value(rows, "target_cosine", method, name), cosine(f[name, "c"], f[name, "o"]))
    # a model compared with itself agrees fully on the target, and its specific part is 1 - target_cosine
    twin = control_rows({"a": models["pool"], "b": models["pool"]}, x, targets, others, temperature=0.3)
    for method in ("pullback", "gradient"):
        torch.testing.assert_close(_value(twin, "agree_field", method, "a", "b"), torch.ones(3, dtype=torch.float64))
        torch.testing.assert_close(_value(twin, "agree_field_specific", method, "a", "b"),
                                   1 - _value(twin, "target_cosine", method, "a"))
    with pytest.raises(ValueError, match="must differ"):
        control_rows(models, x, targets, targets, temperature=0.3)


def test_mismatched_target_is_the_next_column_and_never_the_target():
    positions = range(12)
    targets = torch.tensor([SIX[k % 6] for k in positions])
    others = mismatched(targets, positions)
    assert others.tolist() == [SIX[(k + 1) % 6] for k in positions] and bool((others != targets).all())


def test_control_run_uses_the_main_studys_images_and_targets(data_root, tmp_path, models):
    settings = ControlSettings(images=4, batch=2, size=64)
    summary = run(settings, data_root, tmp_path / "control", models=models, progress=False)
    scores = read_csv(tmp_path / "control" / "scores.csv")
    assert len(scores) == 4 * 2 * (2 + 3)  # images x methods x (2 target_cosine + 3 agreement rows)
    order = {str(i): k for k, (i, _, _) in enumerate(evaluation_images(data_root, 4, 0))}
    assert set(order) == {r["image"] for r in scores}
    assert all(int(r["target"]) == SIX[order[r["image"]] % 6] for r in scores)
    paired = read_csv(tmp_path / "control" / "paired.csv")
    assert [(r["measure"], r["ours"], r["baseline"]) for r in paired] == [
        ("agree_field", "pullback", "gradient"), ("agree_field_specific", "pullback", "gradient")]
    assert {r["measure"] for r in summary} == {"agree_field", "agree_field_mismatched", "agree_field_specific",
                                               "target_cosine"}
    with pytest.raises(ValueError, match="two distinct models"):
        run(ControlSettings(models=("bundled",)), data_root, tmp_path / "none", progress=False)


def test_committed_control_recomputes_the_main_studys_agreement():
    """The committed control and main study share images, targets, models and settings: the control's
    agree_field rows are the main study's, up to float32 rounding (batches of 25 there, 10 here: different
    convolution blocking), and its mismatched rows use other targets."""
    key = lambda r: (r["image"], r["target"], r["model"], r["other"], r["method"])  # noqa: E731
    main = {key(r): float(r["value"]) for r in read_csv(RESULTS / "alignment" / "scores.csv")
            if r["measure"] == "agree_field"}
    control = read_csv(RESULTS / "alignment" / "control" / "scores.csv")
    again = {key(r): float(r["value"]) for r in control if r["measure"] == "agree_field"}
    assert set(again) == set(main) and len(main) == 500 * 3 * 2
    assert max(abs(again[k] - main[k]) for k in main) < 1e-3
    config = json.loads((RESULTS / "alignment" / "control" / "config.json").read_text())
    study = json.loads((RESULTS / "alignment" / "config.json").read_text())
    assert {k: config[k] for k in ("images_sha256", "weights_sha256", "temperature", "size", "seed")} == \
        {k: study[k] for k in ("images_sha256", "weights_sha256", "temperature", "size", "seed")}
