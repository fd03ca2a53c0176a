"""The alignment study command (utils.experiments.alignment): every measure, its limits (T -> 0, identical
models), resuming, damaged parts, guarded settings, and a report that needs no attribution code."""
import copy
import json
import subprocess
import sys
import warnings

import pytest
import torch

import utils.experiments.alignment.run as study
from utils.data.imagenette import IMAGENETTE_CLASSES, data_root_from_env
from utils.experiments.alignment import headline, verdicts
from utils.experiments.alignment.run import SIX, SMOKE, AlignmentSettings as Settings, main, run
from utils.experiments.runner import evaluation_images
from utils.experiments.records import DamagedPartWarning, RunMismatchError, read_csv
from utils.models.nets import PlainNet, PoolResNet
from utils.models import zoo
from utils.models.zoo import Classifier, load_model
from utils.paths import REPO

TINY_T = 1e-6


def _classifier(net, name):
    return Classifier(net.eval(), torch.nn.Identity(), IMAGENETTE_CLASSES, name)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke run at 64 px on the bundled model and two random ones; the plain one has no max-pools, so
    its pullback at T -> 0 is exactly its gradient (max-pool ties on flat image regions would split)."""
    root = data_root_from_env()  # the module-wide twin of the data_root fixture
    if root is None or not (root / "val").is_dir():
        pytest.skip("no Imagenette data: set IMAGENETTE_ROOT")
    torch.manual_seed(0)
    models = {"bundled": load_model("bundled", "cpu"),
              "pool": _classifier(PoolResNet(widths=(8, 16, 32, 64, 128)), "pool"),
              "plain": _classifier(PlainNet(layout=(16, 32)), "plain")}
    settings = Settings(**{**SMOKE, "temperatures": (TINY_T, 0.3)})
    out = tmp_path_factory.mktemp("alignment") / "run"
    summary = run(settings, root, out, models=models, progress=False)
    return root, out, settings, summary


def _values(scores, **match):
    return [float(r["value"]) for r in scores if all(r[k] == str(v) for k, v in match.items())]


def test_every_measure_has_its_rows_and_the_six_column_targets(smoke):
    root, out, settings, summary = smoke
    scores = read_csv(out / "scores.csv")
    n, m, k = settings.images, 3, len(settings.temperatures)
    counts = {"pg_field": n * m * k, "pg_ascent": n * m * k, "agree_field": n * 3 * 2, "agree_ascent": n * 3 * 2,
              "transfer_logp": n * 6 * 2, "transfer_became": n * 6 * 2,
              "focus": settings.mosaics * 4 * m * len(study.FOCUS_METHODS)}
    assert {measure: sum(r["measure"] == measure for r in scores) for measure in counts} == counts
    assert len(scores) == sum(counts.values())
    picks = evaluation_images(root, n, settings.seed)
    order = {str(index): position for position, (index, _, _) in enumerate(picks)}
    for r in scores:
        if r["measure"] != "focus":
            assert int(r["target"]) == SIX[order[r["image"]] % 6]
        else:  # a mosaic quadrant's target is its own class
            assert r["target"] == r["label"] and r["file"].startswith("mosaic")
    assert {(r["model"], r["other"]) for r in scores if r["measure"] == "transfer_logp"} == {
        (a, b) for a in ("bundled", "pool", "plain") for b in ("bundled", "pool", "plain") if a != b}
    became = _values(scores, measure="transfer_became")
    assert set(v for v in became if v == v) <= {0.0, 1.0}
    focus = [v for v in _values(scores, measure="focus") if v == v]
    assert focus and all(0.0 <= v <= 1.0 for v in focus)
    config = json.loads((out / "config.json").read_text())
    assert "six-column scheme" in config["targets"] and set(config["weights_sha256"]) == {"bundled", "pool", "plain"}
    paired = read_csv(out / "paired.csv")
    assert len(paired) == 3 * 2 + 6 * 2 + 3 * 2  # agree pairs x 2, ordered transfer pairs x 2, focus 2 per model
    assert len(summary) == len(read_csv(out / "summary.csv"))


def test_pullback_at_tiny_temperature_is_the_gradient(smoke):
    _, out, _, _ = smoke
    scores = read_csv(out / "scores.csv")
    tiny = _values(scores, measure="pg_field", model="plain", temperature=TINY_T)
    assert len(tiny) == 6 and min(tiny) > 1 - 1e-5
    assert min(_values(scores, measure="pg_ascent", model="plain", temperature=TINY_T)) > 1 - 1e-3
    for model in ("bundled", "pool", "plain"):  # and moves away from it at T = 0.3
        cold = sum(_values(scores, measure="pg_field", model=model, temperature=TINY_T))
        warm = sum(_values(scores, measure="pg_field", model=model, temperature=0.3))
        assert warm < cold - 0.05


def _pair_run(root, out, steps=1):
    """A quick run on a tiny network and an identical copy of it."""
    torch.manual_seed(1)
    net = _classifier(PlainNet(layout=(8, "M", 16)), "a")
    settings = Settings(**{**SMOKE, "temperatures": (0.3,), "steps": steps, "mosaics": 1, "size": 32})
    return run(settings, root, out, models={"a": net, "copy": copy.deepcopy(net)}, progress=False)


def test_a_model_agrees_with_its_identical_copy(data_root, tmp_path):
    root = data_root
    _pair_run(root, tmp_path / "pair")
    scores = read_csv(tmp_path / "pair" / "scores.csv")
    for measure in ("agree_field", "agree_ascent"):
        for method in ("pullback", "gradient"):
            values = _values(scores, measure=measure, method=method)
            assert len(values) == 6 and all(abs(v - 1) < 1e-9 for v in values)
    focus = {m: _values(scores, measure="focus", model=m) for m in ("a", "copy")}
    torch.testing.assert_close(torch.tensor(focus["a"]), torch.tensor(focus["copy"]), equal_nan=True, rtol=0, atol=0)


def test_resume_recomputes_nothing_and_a_damaged_part_only(data_root, tmp_path, monkeypatch):
    root = data_root
    out = tmp_path / "pair"
    _pair_run(root, out)
    before = read_csv(out / "scores.csv")
    calls = []
    for name in ("batch_scores", "mosaic_scores"):
        real = getattr(study, name)
        monkeypatch.setattr(study, name, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedPartWarning)
        _pair_run(root, out)
    assert calls == []
    part = out / "parts" / "batch_0001.csv"
    part.write_bytes(part.read_bytes()[:len(part.read_bytes()) // 2])
    with pytest.warns(DamagedPartWarning, match="batch_0001"):
        _pair_run(root, out)
    assert len(calls) == 1 and read_csv(out / "scores.csv") == before
    with pytest.raises(RunMismatchError, match="steps: stored 1, now 2"):
        _pair_run(root, out, steps=2)


def test_unknown_model_or_bad_settings_leave_no_record(data_root, tmp_path, monkeypatch):
    root = data_root
    with pytest.raises(ValueError, match="cannot load model 'no_such_model': unknown model"):
        run(Settings(models=("bundled", "no_such_model"), images=6, mosaics=1), root, tmp_path / "a", progress=False)
    assert not (tmp_path / "a" / "config.json").exists()
    # A trained model whose weights are absent (a clone without them) is refused before anything is written.
    monkeypatch.setattr(zoo, "WEIGHTS", tmp_path / "no_weights")
    with pytest.raises(ValueError, match="cannot load model 'bundled': no weights for 'bundled' at .*train them"):
        run(Settings(models=("bundled", "bundled_seed1"), images=6, mosaics=1), root, tmp_path / "d", progress=False)
    assert not (tmp_path / "d" / "config.json").exists()
    with pytest.raises(ValueError, match="at least two distinct models"):
        run(Settings(models=("bundled",)), root, tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="temperature"):
        run(Settings(temperatures=(0.3, 0.0)), root, tmp_path / "c", progress=False)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_command_without_data_names_the_study(tmp_path):
    with pytest.raises(FileNotFoundError, match="the alignment study"):
        main(["--data", str(tmp_path / "nowhere"), "--smoke", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_verdicts_follow_the_paired_intervals():
    row = {"measure": "agree_field", "model": "a", "other": "b", "ours": "pullback", "baseline": "gradient",
           "temperature": "0.3", "n": 50}
    paired = [{**row, "mean": 0.2, "ci_low": 0.1, "ci_high": 0.3},
              {**row, "measure": "transfer_logp", "mean": -0.2, "ci_low": -0.3, "ci_high": -0.1},
              {**row, "measure": "focus", "other": "", "mean": 0.01, "ci_low": -0.02, "ci_high": 0.04}]
    summary = [{"measure": "pg_field", "model": "a", "other": "", "method": "pullback_vs_gradient",
                "temperature": "0.3", "mean": 0.8, "ci_low": 0.7, "ci_high": 0.9, "n": 50}]
    lines = verdicts(summary, paired)
    assert lines[0].startswith("Pullback vs gradient of a: field cosine 0.80 at T=0.3")
    assert lines[1].startswith("Pullbacks beat gradients on field agreement of a and b")
    assert lines[2].startswith("Gradients beat pullbacks on log-probability rise after transfer from a to b")
    assert lines[3].startswith("No clear difference between pullbacks and gradients on Focus of a")


def test_headline_tallies_the_paired_comparisons_per_measure():
    def row(measure, mean, low, high, ours="pullback", baseline="gradient"):
        return {"measure": measure, "model": "a", "other": "b", "ours": ours, "baseline": baseline,
                "temperature": "0.3", "mean": str(mean), "ci_low": str(low), "ci_high": str(high), "n": "50"}
    lines = headline([row("agree_field", 0.25, 0.125, 0.375), row("agree_field", -0.5, -0.75, -0.25),
                      row("agree_field", 0.0625, -0.125, 0.25),
                      row("focus", 0.125, 0.0625, 0.25, "pullback_x_input", "gradient_x_input")])
    assert lines == ["field agreement (pullback vs gradient): pullbacks better in 1 of 3 comparisons, worse in 1, "
                     "no clear difference in 1; mean differences -0.500 to +0.250.",
                     "Focus (pullback_x_input vs gradient_x_input): pullbacks better in 1 of 1 comparisons, worse "
                     "in 0, no clear difference in 0; mean differences +0.125 to +0.125."]

def test_report_imports_no_attribution_code():
    code = ("import sys; import utils.experiments.alignment.report; "
            "bad = [m for m in ('captum', 'utils.analysis.attribution') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
