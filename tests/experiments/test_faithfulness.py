"""The faithfulness evaluation command (utils.experiments.faithfulness): resumable, sharded, and its records
cannot silently go wrong (damaged parts, another data root, bad settings, unreadable images)."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import utils.experiments.faithfulness.run as evaluate
from utils.data.imagenette import IMAGENETTE_WNIDS, imagenette_files
from utils.experiments.faithfulness import RANDOMISATION, compare, metric_key, paired_difference, summarise
from utils.experiments.faithfulness.run import SMOKE, FaithfulnessSettings as Settings, run
from utils.experiments.runner import evaluation_images
from utils.experiments.records import DamagedPartWarning, RunMismatchError, read_csv
from utils.paths import REPO

# Two methods, one randomisation stage image: every code path of a run, in a few seconds per batch.
QUICK = dict(SMOKE, images=4, batch=2, size=64, methods=("pullback", "gradient"), randomisation_images=1)


def _smoke(out, **changes):
    return Settings(**{**SMOKE, "images": 4, "batch": 2, "size": 64, **changes}), out


def _counted(monkeypatch, interrupt_at=None) -> list:
    """Count (and optionally interrupt) the batches the runner scores."""
    calls, real = [], evaluate.batch_scores

    def counted(*args, **kwargs):
        calls.append(1)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "batch_scores", counted)
    return calls


def test_evaluation_resumes_without_recomputing(data_root, tmp_path, monkeypatch):
    settings, out = _smoke(tmp_path / "run")
    calls = _counted(monkeypatch, interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        run(settings, data_root, out, progress=False)
    assert len(list((out / "parts").glob("batch_*.csv"))) == 1
    summary = run(settings, data_root, out, progress=False)
    assert len(calls) == 3  # 1 done + 1 interrupted + 1 resumed: the finished batch was not recomputed
    scores = read_csv(out / "scores.csv")
    assert {r["method"] for r in scores} == set(Settings().methods) | {"random"}
    keys = {metric_key(r) for r in scores}
    assert {"deletion_auc", "insertion_auc", "faithfulness_correlation", "infidelity"} <= {k[0] for k in keys}
    stages = sorted(int(k[1]) for k in keys if k[0] == RANDOMISATION)
    layers = {int(k[2]) for k in keys if k[0] == RANDOMISATION}
    assert len(stages) == SMOKE["randomisation_stages"] and [stages[-1]] == list(layers)  # the last stage: all
    assert {int(r["image"]) for r in scores} == {i for i, _, _ in evaluation_images(data_root, 4)}
    # an uninterrupted run gives the same numbers
    fresh = run(settings, data_root, tmp_path / "fresh", progress=False)
    assert read_csv(tmp_path / "fresh" / "scores.csv") == scores and fresh == summary
    with pytest.raises(RunMismatchError, match="steps: stored 4, now 3"):
        run(Settings(**{**vars(settings), "steps": 3}), data_root, out, progress=False)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One complete quick run on the real data, copied by the tests that damage it."""
    root = os.environ.get("IMAGENETTE_ROOT")
    if not root or not os.path.isdir(os.path.join(root, "val")):
        pytest.skip("no Imagenette data: set IMAGENETTE_ROOT")
    out = tmp_path_factory.mktemp("quick") / "run"
    run(Settings(**QUICK), root, out, progress=False)
    return root, out


DAMAGE = {
    "cut at a line break": lambda data: data[:data.rindex(b"\n", 0, len(data) // 2) + 1],
    "emptied": lambda data: b"",
    "header only": lambda data: data[:data.index(b"\n") + 1],
    "cut mid-line": lambda data: data[:len(data) // 2 + 3],
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_part_is_recomputed_with_a_warning(quick_run, tmp_path, monkeypatch, damage):
    root, done = quick_run
    out = tmp_path / "run"
    shutil.copytree(done, out)
    part = out / "parts" / "batch_0001.csv"
    part.write_bytes(DAMAGE[damage](part.read_bytes()))
    calls = _counted(monkeypatch)
    with pytest.warns(DamagedPartWarning, match=re.escape(str(part))):
        run(Settings(**QUICK), root, out, progress=False)
    assert len(calls) == 1  # only the damaged batch
    scores, whole = read_csv(out / "scores.csv"), read_csv(done / "scores.csv")
    # 4 images x 3 methods (with the control) x 4 metrics, and the first image's randomisation stages
    assert len(scores) == 4 * 3 * 4 + 1 * 2 * QUICK["randomisation_stages"] == len(whole)
    assert scores == whole


def test_part_without_its_check_file_is_recomputed(quick_run, tmp_path, monkeypatch):
    root, done = quick_run
    shutil.copytree(done, tmp_path / "run")
    (tmp_path / "run" / "parts" / "batch_0000.csv.check.json").unlink()
    calls = _counted(monkeypatch)
    with pytest.warns(DamagedPartWarning, match="batch_0000.csv has no valid check file"):
        run(Settings(**QUICK), root, tmp_path / "run", progress=False)
    assert len(calls) == 1 and read_csv(tmp_path / "run" / "scores.csv") == read_csv(done / "scores.csv")


def _small_imagenette(root, source, per_class=1):
    """A copy of the first ``per_class`` val images of each class of ``source`` (train/ empty but present)."""
    files = imagenette_files(source, "val")
    for wnid in IMAGENETTE_WNIDS:
        (root / "train" / wnid).mkdir(parents=True)
        (root / "val" / wnid).mkdir(parents=True)
    for label, wnid in enumerate(IMAGENETTE_WNIDS):
        for path, _ in [f for f in files if f[1] == label][:per_class]:
            shutil.copy(path, root / "val" / wnid)
    return root


def test_another_data_root_is_refused_naming_it(data_root, tmp_path, monkeypatch):
    first = _small_imagenette(tmp_path / "a", data_root)
    second = tmp_path / "b"
    shutil.copytree(first, second)  # the same images elsewhere: still another run
    settings = Settings(**{**QUICK, "images": 2})
    run(settings, first, tmp_path / "out", progress=False)
    calls = _counted(monkeypatch)
    with pytest.raises(RunMismatchError) as error:
        run(settings, second, tmp_path / "out", progress=False)
    message = str(error.value)
    assert f"data_root: stored {json.dumps(str(first.resolve()))}, now {json.dumps(str(second.resolve()))}" in message
    assert "delete" in message and "--out" in message and not calls


@pytest.mark.parametrize("bad, error", [({"temperature": 0.0}, ValueError), ({"model": "resnet5"}, ValueError),
                                        ({"methods": ("lime",)}, ValueError), ("no data", FileNotFoundError)])
def test_bad_settings_leave_no_record_and_the_corrected_run_proceeds(data_root, tmp_path, bad, error):
    out = tmp_path / "out"
    settings = Settings(**{**QUICK, "images": 2})
    wrong_root = tmp_path / "nowhere" if bad == "no data" else data_root
    with pytest.raises(error):
        run(settings if bad == "no data" else Settings(**{**QUICK, "images": 2, **bad}), wrong_root, out,
            progress=False)
    assert not (out / "config.json").exists()
    summary = run(settings, data_root, out, progress=False)
    assert {r["method"] for r in summary} == {"pullback", "gradient", "random"}
    assert json.loads((out / "config.json").read_text())["data_root"] == str(data_root.resolve())


def test_truncated_image_error_names_the_file(data_root, tmp_path):
    root = _small_imagenette(tmp_path / "data", data_root)
    broken = sorted((root / "val").rglob("*.JPEG"))[3]
    broken.write_bytes(broken.read_bytes()[:2000])
    with pytest.raises(OSError, match=re.escape(str(broken))):
        run(Settings(**{**QUICK, "images": 10, "batch": 5}), root, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "scores.csv").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")
def test_torchrun_shards_give_the_same_scores(data_root, tmp_path):
    settings, _ = _smoke(None, methods=("pullback", "gradient"), randomisation_images=3)
    single = tmp_path / "single"
    run(settings, data_root, single, progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m",
           "utils.experiments.faithfulness", "--data", str(data_root), "--out", str(tmp_path / "sharded"), "--smoke",
           "--images", "4", "--batch", "2", "--size", "64", "--methods", "pullback", "gradient",
           "--randomisation-images", "3"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, cwd=REPO, env=env, capture_output=True, timeout=300)
    # Same rows in the same order; numbers agree to float32 rounding (one thread per rank vs two in this process).
    for name in ("scores.csv", "summary.csv"):
        _assert_same_rows(read_csv(tmp_path / "sharded" / name), read_csv(single / name))


def _assert_same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for key in g:
            try:
                assert float(g[key]) == pytest.approx(float(w[key]), rel=1e-4, abs=1e-4), (key, g, w)
            except ValueError:
                assert g[key] == w[key]


def test_summary_drops_nan_and_keeps_randomisation_stages_apart():
    rows = [{"method": "a", "metric": "deletion_auc", "value": v} for v in (0.1, 0.2, float("nan"))]
    rows += [{"method": "a", "metric": RANDOMISATION, "randomised_layers": k, "layers": 8, "value": v}
             for k, v in ((4, 0.5), (4, 0.7), (8, 0.1), (8, 0.3))]
    deletion, *stages = summarise(rows)
    assert deletion["n"] == 2 and deletion["mean"] == pytest.approx(0.15) and deletion["better"] == "lower"
    assert [(s["randomised_layers"], s["layers"], s["n"]) for s in stages] == [("4", "8", 2), ("8", "8", 2)]
    assert [s["mean"] for s in stages] == pytest.approx([0.6, 0.2]) and {s["better"] for s in stages} == {"lower"}


def test_compare_uses_paired_differences():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(60, generator=g, dtype=torch.float64)  # large image-to-image spread
    noise = 0.01 * torch.randn(60, generator=g, dtype=torch.float64)
    rows = []
    for metric in ("deletion_auc", "insertion_auc"):
        for method, values in (("ours", spread - 0.05 + noise), ("base", spread), ("same", spread + noise)):
            rows += [{"image": str(i), "method": method, "metric": metric, "value": str(v.item())}
                     for i, v in enumerate(values)]
    rows.append({"image": "0", "method": "base", "metric": "infidelity", "value": "1.0"})  # one pair only
    mean, low, high, n = paired_difference(rows, "ours", "base", "deletion_auc")
    assert n == 60 and mean == pytest.approx((noise - 0.05).mean().item()) and low < mean < high < 0
    # Each method's own interval is ~±0.25 wide, so unpaired intervals would overlap; the paired CI does not.
    lines = compare(rows, "ours", ["base", "same"])
    assert lines[0].startswith("ours on deletion_auc: better than base (-0.05")  # lower deletion is better
    assert "worse than base (-0.05" in lines[1] and "no clear difference" not in lines[1].split("same")[0]
    assert len(lines) == 2 and all("than same" in line for line in lines)  # 'same' differs by -0.05 too
    same = compare(rows, "same", ["base"])
    assert len(same) == 2 and all("no clear difference from base" in line for line in same)


def test_committed_results_read_without_the_compute_modules():
    code = ("import sys; from utils.experiments.faithfulness import load_results, format_summary, compare; "
            "r = load_results()['bundled']; print(format_summary(r['summary'], ['randomisation_spearman'])); "
            "assert not [m for m in sys.modules if 'captum' in m or m.endswith('attribution')], 'compute imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rand. top 31/31" in done.stdout and "pullback_x_input" in done.stdout


@pytest.mark.parametrize("flags, message", [(["--size", "0"], "size must be at least 41 px"),
                                            (["--size", "7"], "size must be at least 41 px"),
                                            (["--budget", "0"], r"budget must be a fraction in \(0, 1\]"),
                                            (["--infidelity-sigma", "0"], "infidelity_sigma > 0"),
                                            (["--ig-steps", "0"], "ig_steps must be >= 1")])
def test_every_setting_is_checked_before_config_is_written(data_root, tmp_path, flags, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        evaluate.main(["--data", str(data_root), "--out", str(out), "--smoke", *flags])
    assert not out.exists()  # main wrote config.json first, so the corrected rerun was refused
