"""Measure 5 of the alignment study (utils.experiments.alignment.over_training): rows per epoch, measure and
run pair, a run agreeing with itself, resuming, refused checkpoints, the first-vs-last table, and torchrun."""
import functools
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import torch

import utils.experiments.alignment.over_training as curve
from utils.data.imagenette import data_root_from_env
from utils.experiments.alignment.over_training import CURVE_COLUMNS, CurveSettings, curve_sentences, curve_table, run
from utils.experiments.alignment.run import SIX
from utils.experiments.runner import evaluation_images
from utils.experiments.records import RunMismatchError, read_csv
from utils.experiments.training.checkpoints import save_checkpoint
from utils.models.nets import ARCHITECTURES, PlainNet
from utils.paths import REPO

TINY_LAYOUT = (8, "M", 16)
EPOCHS = (0.0, 1.0, 2.0)
SETTINGS = dict(images=4, batch=2, size=64, temperatures=(0.1, 0.3), temperature=0.3, steps=2, epochs=EPOCHS)
# Registers the tiny architecture, then runs the command: what the torchrun test launches.
SCRIPT = (f"import functools, sys; from utils.models.nets import ARCHITECTURES, PlainNet; "
          f"ARCHITECTURES['tiny'] = functools.partial(PlainNet, layout={TINY_LAYOUT!r}); "
          f"from utils.experiments.alignment.over_training import main; main(sys.argv[1:])")


@pytest.fixture(scope="module")
def tiny_arch():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(ARCHITECTURES, "tiny", functools.partial(PlainNet, layout=TINY_LAYOUT))
        yield "tiny"


def _save_run(folder, seed, epochs=EPOCHS):
    """Random-initialised tiny networks saved as the checkpoints of a training run, other weights per epoch."""
    for epoch in epochs:
        torch.manual_seed(100 * seed + int(epoch))
        save_checkpoint(folder, ARCHITECTURES["tiny"](num_classes=10), epoch, seed)
    return str(folder)


@pytest.fixture(scope="module")
def smoke(tiny_arch, tmp_path_factory):
    """Runs a and b, and a again under the name a_copy (same checkpoint folder), at epochs 0, 1, 2."""
    root = data_root_from_env()
    if root is None or not (root / "val").is_dir():
        pytest.skip("no Imagenette data: set IMAGENETTE_ROOT")
    base = tmp_path_factory.mktemp("curve")
    a, b = _save_run(base / "a", 0), _save_run(base / "b", 1)
    runs = (("a", tiny_arch, a), ("b", tiny_arch, b), ("a_copy", tiny_arch, a))
    settings = CurveSettings(runs=runs, **SETTINGS)
    summary = run(settings, root, base / "out", progress=False)
    return root, base, settings, summary


def _values(scores, **match):
    return [float(r["value"]) for r in scores if all(r[k] == str(v) for k, v in match.items())]


def test_every_epoch_measure_and_pair_has_its_rows(smoke):
    root, base, settings, summary = smoke
    scores = read_csv(base / "out" / "scores.csv")
    n, names = settings.images, ("a", "b", "a_copy")
    pairs = (("a", "b"), ("a", "a_copy"), ("b", "a_copy"))
    want = Counter()
    for epoch in ("0", "1", "2"):
        for name in names:
            want.update({(epoch, "pg_field", name, "", "pullback_vs_gradient", str(t)): n for t in (0.1, 0.3)})
            want[(epoch, "pg_ascent", name, "", "pullback_vs_gradient", "0.3")] = n
        for (x, y) in pairs:
            for kind in ("agree_field", "agree_ascent"):
                want.update({(epoch, kind, x, y, "pullback", "0.3"): n, (epoch, kind, x, y, "gradient", ""): n})
    got = Counter(tuple(r[k] for k in ("epoch", "measure", "model", "other", "method", "temperature")) for r in scores)
    assert got == want
    assert list(scores[0]) == list(CURVE_COLUMNS)
    picks = evaluation_images(root, n, settings.seed)
    assert [p[0] for p in picks] == [p[0] for p in evaluation_images(root, 500, settings.seed)][:n]  # a prefix
    position = {str(p[0]): k for k, p in enumerate(picks)}
    assert all(int(r["target"]) == SIX[position[r["image"]] % 6] for r in scores)
    assert len(summary) == len(want) and all(int(r["n"]) == n for r in read_csv(base / "out" / "summary.csv"))


def test_a_run_agrees_with_itself_and_each_epoch_reads_its_own_checkpoint(smoke):
    _, base, _, _ = smoke
    scores = read_csv(base / "out" / "scores.csv")
    for measure in ("agree_field", "agree_ascent"):
        same = _values(scores, measure=measure, model="a", other="a_copy")
        assert len(same) == 3 * 2 * 4 and all(abs(v - 1) < 1e-9 for v in same)
        assert max(abs(v - 1) for v in _values(scores, measure=measure, model="a", other="b")) > 1e-3
    first, second = (_values(scores, measure="pg_field", model="a", epoch=e) for e in (0, 1))
    assert first != second


def test_rerun_computes_nothing(smoke, monkeypatch):
    root, base, settings, _ = smoke
    out = base / "out"
    timings = {p.name: p.read_text() for p in out.glob("timing_rank*.csv")}
    before = read_csv(out / "scores.csv")
    calls = []
    monkeypatch.setattr(curve, "model_fields", lambda *a, **k: calls.append(1))
    run(settings, root, out, progress=False)
    assert calls == [] and sum(t.count("\n") for t in timings.values()) == 3 * 2
    assert {p.name: p.read_text() for p in out.glob("timing_rank*.csv")} == timings
    assert read_csv(out / "scores.csv") == before


def test_missing_checkpoints_are_named_before_anything_is_written(tiny_arch, tmp_path):
    folder = _save_run(tmp_path / "short", 0, epochs=(0.0, 1.0))
    settings = CurveSettings(runs=(("short", tiny_arch, folder),), **SETTINGS)
    with pytest.raises(ValueError, match=r"epoch_02\.00\.pt.*python -m utils\.experiments\.training"):
        run(settings, tmp_path / "no-data-needed", tmp_path / "out", progress=False)
    missing = CurveSettings(runs=(("gone", tiny_arch, str(tmp_path / "gone")),), **SETTINGS)
    with pytest.raises(ValueError, match="no checkpoint folder .*gone"):
        run(missing, tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="distinct names"):
        run(CurveSettings(runs=(("x", tiny_arch, folder),) * 2, **SETTINGS), tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_one_run_has_no_agreement_and_changed_weights_are_refused(tiny_arch, data_root, tmp_path):
    folder = _save_run(tmp_path / "c", 2, epochs=(0.0, 1.0))
    settings = CurveSettings(runs=(("c", tiny_arch, folder),),
                             **{**SETTINGS, "images": 2, "size": 32, "epochs": (0.0, 1.0), "steps": 1})
    run(settings, data_root, tmp_path / "out", progress=False)
    assert {r["measure"] for r in read_csv(tmp_path / "out" / "scores.csv")} == {"pg_field", "pg_ascent"}
    torch.manual_seed(7)
    save_checkpoint(folder, ARCHITECTURES["tiny"](num_classes=10), 1.0, 2)
    with pytest.raises(RunMismatchError, match="weights_sha256"):
        run(settings, data_root, tmp_path / "out", progress=False)


def _summary_row(epoch, mean, half, measure="pg_field", model="a", other=""):
    return {"epoch": str(epoch), "measure": measure, "model": model, "other": other, "method": "m",
            "temperature": "0.3", "mean": str(mean), "ci_low": str(mean - half), "ci_high": str(mean + half), "n": "9"}


def test_curve_table_compares_the_first_epoch_with_the_last():
    summary = [_summary_row(16, 0.9, 0.05), _summary_row(0, 0.2, 0.05), _summary_row(2, 0.0, 0.5),
               _summary_row(0, 0.5, 0.1, model="b"), _summary_row(8, 0.45, 0.1, model="b"),
               _summary_row(0, 0.5, 0.01, "agree_field", "a", "b"), _summary_row(8, 0.3, 0.01, "agree_field", "a", "b"),
               {**_summary_row(0, 0.5, 0.0, model="c"), "ci_low": "nan"}, _summary_row(1, 0.9, 0.0, model="c")]
    table = curve_table(summary)
    assert [(r["model"], r["first_epoch"], r["last_epoch"], r["change"]) for r in table] == [
        ("a", "0", "16", "rose"), ("b", "0", "8", "overlap"), ("a", "0", "8", "fell"), ("c", "0", "1", "unknown")]
    assert table[0]["first_mean"] == 0.2 and abs(table[0]["difference"] - 0.7) < 1e-9
    lines = curve_sentences(table)
    assert lines[0].startswith("pg_field of a (m, T=0.3): 0.200 [0.150, 0.250] at epoch 0 -> 0.900")
    assert "rose" in lines[0] and "no clear change" in lines[1] and lines[2].startswith("agree_field of a and b")


def test_torchrun_matches_a_single_process(smoke, tmp_path):
    root, base, settings, _ = smoke
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("no torchrun next to this Python")
    script = tmp_path / "curve.py"
    script.write_text(SCRIPT)
    args = [arg for name, arch, folder in settings.runs for arg in ("--run", name, arch, folder)]
    args += ["--data", str(root), "--out", str(tmp_path / "out"), "--images", "4", "--batch", "2", "--size", "64",
             "--temperatures", "0.1", "0.3", "--steps", "2", "--epochs", "0", "1", "2"]
    command = [torchrun, "--nproc_per_node=2", "--", str(script), *args]  # "--": --run is no torchrun option
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert all((tmp_path / "out" / f"timing_rank{r}.csv").read_text().count("\n") == 3 for r in (0, 1))
    # rank 0 merges the parts in part order, so the rows match one by one, values to the last digit
    assert read_csv(tmp_path / "out" / "scores.csv") == read_csv(base / "out" / "scores.csv")
