"""The study command (utils.experiments.stability): its tables agree with the library, it resumes exactly,
and its records cannot silently go wrong (damaged pieces, another data root, bad settings)."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import utils.experiments.stability.run as study
from conftest import randomize_batchnorm
from utils.analysis.cross_gating import cross_gating_matrices
from utils.analysis.overlap import jaccard_matrix
from utils.data.imagenette import IMAGENETTE_WNIDS, load_image
from utils.experiments.records import DamagedPartWarning, ForeignPartWarning, RunMismatchError, read_csv
from utils.experiments.stability import KERNELS, findings
from utils.experiments.training.checkpoints import checkpoint_name, load_checkpoint
from utils.models.nets import PoolResNet

SETTINGS = dict(images=12, epochs=(0, 1, 2), kernel_epochs=(0, 2), kernel_train=10, resolution=32, chunk_size=6,
                progress=False)


def _checkpoints(folder: Path, seed: int, epochs) -> Path:
    """utils.experiments.training-style checkpoints: one random PoolResNet drifting further from its start at each epoch."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = randomize_batchnorm(PoolResNet(), seed)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(seed + 100)
    for e in epochs:
        state = {k: v + 0.4 * e * v.std() * torch.randn(v.shape, generator=g) if v.is_floating_point() and v.ndim == 4
                 else v for k, v in start.items()}
        torch.save({"model": state, "epoch": e}, folder / checkpoint_name(e))
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    g = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 2)):
        for wnid in IMAGENETTE_WNIDS:
            (root / "data" / split / wnid).mkdir(parents=True)
            for i in range(n):
                pixels = g.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "data" / split / wnid / f"{wnid}_{i}.JPEG")
    return {"data": root / "data", "main": _checkpoints(root / "seed0", 0, (0, 1, 2)),
            "control": _checkpoints(root / "seed1", 1, (0, 1))}  # a partial control run


@pytest.fixture(scope="module")
def baseline(setup, tmp_path_factory):
    """One uninterrupted run, with figures."""
    root = tmp_path_factory.mktemp("baseline")
    return root / "out", root / "media", _run(setup, root / "out", media=root / "media")


def _run(setup, out, media=None, **kw):
    return study.run_study(setup["data"], setup["main"], setup["control"], out, media=media, **{**SETTINGS, **kw})


def _files(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_tables_match_the_library_and_their_invariants(setup, baseline):
    out, media, st = baseline
    S = 3
    hard, soft, c = st["cross"]["hard"], st["cross"]["soft"], st["controls"]
    assert hard["accuracy"].shape == soft["pearson"].shape == st["jaccard"].shape == (S, S)
    # Own hard gates reproduce each network exactly: the diagonal is its own accuracy, bit for bit.
    assert np.array_equal(np.diag(hard["accuracy"]), c["own_accuracy"])
    assert np.array_equal(np.diag(hard["agreement"]), np.ones(S))
    np.testing.assert_allclose(np.diag(hard["pearson"]), 1, atol=1e-6)
    assert np.array_equal(np.diag(st["jaccard"]), np.ones(S)) and np.array_equal(st["jaccard"], st["jaccard"].T)
    assert (st["jaccard"][~np.eye(S, dtype=bool)] < 1).all() and st["jaccard"][0, 2] < st["jaccard"][0, 1]

    # Against the library on the same images, recomputed here: rows are gate sources, columns weights.
    cfg = st["config"]
    rows = read_csv(out / "val_images.csv")
    x = torch.stack([load_image(setup["data"] / r["path"], 32) for r in rows])
    y = torch.tensor([int(r["label"]) for r in rows])
    models = [load_checkpoint(setup["main"] / checkpoint_name(e)) for e in cfg["epochs"]]
    for kind, temperature in (("hard", None), ("soft", 0.3)):
        ref = cross_gating_matrices(models, x, y, temperature)
        np.testing.assert_allclose(st["cross"][kind]["accuracy"], ref["accuracy"].numpy(), atol=1e-6)
        np.testing.assert_allclose(st["cross"][kind]["pearson"], ref["correlation"].numpy(), atol=1e-6)
    assert not np.allclose(soft["pearson"], hard["pearson"])
    np.testing.assert_allclose(st["jaccard"], jaccard_matrix(models, x).numpy(), atol=1e-6)

    # Partial control run: controls at epochs 0 and 1 only; random gates everywhere.
    assert np.isfinite(c["control_hard_accuracy"][:2]).all() and np.isnan(c["control_hard_accuracy"][2])
    assert (0 < c["control_jaccard"][:2]).all() and (c["control_jaccard"][:2] < 1).all()
    assert np.isfinite(c["random_hard_pearson"]).all() and (c["random_hard_pearson"] < 0.99).all()
    assert ((0 < c["active_fraction"]) & (c["active_fraction"] < 1)).all()

    knn = st["kernel_knn"]
    assert len(knn) == 2 * 4 * 3 and {r["kernel"] for r in knn} == set(KERNELS)
    assert len({r["accuracy"] for r in knn if r["kernel"] == "input" and r["k"] == 1}) == 1  # no epoch in it
    assert len(st["summary"]) == S and st["summary"][-1]["jaccard_vs_final"] == 1.0
    assert st["summary"][-1]["hard_final_gates_accuracy"] == st["summary"][-1]["own_accuracy"]
    assert sorted(p.name for p in media.iterdir()) == [
        "controls.png", "cross_gating.png", "jaccard.png", "kernel_knn.png"]


def _count_calls(monkeypatch, names=("cross_gating_rows", "cross_gated_predictions", "jaccard_matrix",
                                     "excitation_kernels", "penultimate_features", "load_checkpoint", "load_image")):
    calls = dict.fromkeys(names, 0)
    for name in names:
        def counted(*args, _name=name, _fn=getattr(study, name), **kwargs):
            calls[_name] += 1
            return _fn(*args, **kwargs)
        monkeypatch.setattr(study, name, counted)
    return calls


def test_second_run_recomputes_nothing_and_changes_nothing(setup, baseline, tmp_path, monkeypatch):
    shutil.copytree(baseline[0], tmp_path / "out")
    before = _files(tmp_path / "out")
    calls = _count_calls(monkeypatch)
    _run(setup, tmp_path / "out")
    assert calls == dict.fromkeys(calls, 0)
    assert _files(tmp_path / "out") == before


def test_interrupted_run_resumes_to_the_uninterrupted_result(setup, baseline, tmp_path, monkeypatch):
    real, calls = study.cross_gated_predictions, []

    def dies_on_second(*args, **kwargs):  # in the random-gate control, after the rows and the Jaccard piece
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(study, "cross_gated_predictions", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        _run(setup, tmp_path / "resumed")
    parts = tmp_path / "resumed" / "parts"
    assert len(list(parts.glob("row_*.npz"))) == 3 and len(list(parts.glob("random_*.npz"))) == 1
    assert not list(parts.glob("*.partial")) and not (tmp_path / "resumed" / "summary.csv").exists()
    monkeypatch.setattr(study, "cross_gated_predictions", real)
    _run(setup, tmp_path / "resumed")
    whole, resumed = _files(baseline[0]), _files(tmp_path / "resumed")
    del whole["timing_rank0.csv"], resumed["timing_rank0.csv"]
    assert whole == resumed


def test_control_epochs_added_later_and_settings_guarded(setup, tmp_path, monkeypatch):
    control = _checkpoints(tmp_path / "seed1", 1, (0,))
    st = study.run_study(setup["data"], setup["main"], control, tmp_path / "out", media=None, **SETTINGS)
    assert np.isnan(st["controls"]["control_hard_accuracy"][1:]).all()
    _checkpoints(control, 1, (0, 1, 2))  # the control run went on training
    calls = _count_calls(monkeypatch)
    st = study.run_study(setup["data"], setup["main"], control, tmp_path / "out", media=None, **SETTINGS)
    assert np.isfinite(st["controls"]["control_hard_accuracy"]).all()
    assert calls["cross_gating_rows"] == calls["jaccard_matrix"] == 2  # only the two new control pieces
    assert calls["cross_gated_predictions"] == calls["excitation_kernels"] == 0
    with pytest.raises(RunMismatchError, match="resolution: stored 32, now 64"):
        study.run_study(setup["data"], setup["main"], control, tmp_path / "out", media=None,
                        **{**SETTINGS, "resolution": 64})
    assert json.loads((tmp_path / "out" / "config.json").read_text())["resolution"] == 32


def test_findings_are_read_from_the_tables(baseline):
    import copy
    st = baseline[2]
    lines = findings(st)
    hard, c = st["cross"]["hard"], st["controls"]
    # SETTINGS epochs (0, 1, 2): "early" is epoch 1, the final is epoch 2.
    assert f"1: {st['summary'][1]['jaccard_vs_final']:.2f}" in lines[0]
    assert f"top-1 {hard['accuracy'][2, 1]:.1%} against {c['own_accuracy'][1]:.1%}" in lines[2]
    assert f"seed-1 run's gates {c['control_hard_accuracy'][1]:.1%}" in lines[2]
    assert f"top-1 {hard['accuracy'][1, 2]:.1%}" in lines[3]
    assert sum(line.startswith("1-NN with the kernels of epoch") for line in lines) == 2
    # Change one table entry: the sentence follows it.
    changed = copy.deepcopy(st)
    changed["cross"]["hard"]["accuracy"][2, 1] = 0.123
    assert "top-1 12.3% against" in findings(changed)[2]


@pytest.mark.parametrize("damage", ["cut short", "emptied", "check file missing"])
def test_damaged_piece_is_recomputed_with_a_warning(setup, baseline, tmp_path, monkeypatch, damage):
    shutil.copytree(baseline[0], tmp_path / "out")
    piece = tmp_path / "out" / "parts" / "row_s01.00.npz"
    if damage == "check file missing":
        piece.with_name(piece.name + ".check.json").unlink()
    else:
        piece.write_bytes(piece.read_bytes()[:len(piece.read_bytes()) // 2] if damage == "cut short" else b"")
    calls = _count_calls(monkeypatch)
    with pytest.warns(DamagedPartWarning, match=re.escape(str(piece))):
        _run(setup, tmp_path / "out")
    assert calls["cross_gating_rows"] == 1 and calls["excitation_kernels"] == 0  # that piece alone
    whole, again = _files(baseline[0]), _files(tmp_path / "out")
    del whole["timing_rank0.csv"], again["timing_rank0.csv"]
    assert whole == again


def test_another_data_root_is_refused_naming_it(setup, baseline, tmp_path, monkeypatch):
    shutil.copytree(baseline[0], tmp_path / "out")
    moved = tmp_path / "elsewhere"
    shutil.copytree(setup["data"], moved)  # the same images in another folder
    calls = _count_calls(monkeypatch)
    with pytest.raises(RunMismatchError) as error:
        study.run_study(moved, setup["main"], setup["control"], tmp_path / "out", media=None, **SETTINGS)
    assert f'data_root: stored "{setup["data"].resolve()}", now "{moved.resolve()}"' in str(error.value)
    assert "delete" in str(error.value) and calls == dict.fromkeys(calls, 0)


@pytest.mark.parametrize("bad", ["temperature 0", "missing checkpoint", "no data"])
def test_bad_settings_leave_no_record_and_the_corrected_run_proceeds(setup, baseline, tmp_path, bad):
    out = tmp_path / "out"
    changes = {"temperature 0": {"temperature": 0.0}, "missing checkpoint": {"epochs": (0, 1, 3)}}.get(bad, {})
    data = tmp_path / "nowhere" if bad == "no data" else setup["data"]
    with pytest.raises((ValueError, FileNotFoundError)):
        study.run_study(data, setup["main"], setup["control"], out, media=None, **{**SETTINGS, **changes})
    assert not (out / "config.json").exists()
    st = _run(setup, out)
    np.testing.assert_array_equal(st["cross"]["hard"]["accuracy"], baseline[2]["cross"]["hard"]["accuracy"])


def test_pieces_of_other_settings_are_recomputed_after_config_is_deleted(setup, baseline, tmp_path, monkeypatch):
    shutil.copytree(baseline[0], tmp_path / "out")
    (tmp_path / "out" / "config.json").unlink()
    calls = _count_calls(monkeypatch)
    with pytest.warns(ForeignPartWarning, match="made by another run"):
        st = _run(setup, tmp_path / "out", temperature=0.5)
    # every piece again (main: none, and the soft-gate tables of T = 0.3 under a config saying 0.5):
    # 3 rows and 2 seed controls cross-gate, the 2 kernel epochs take their kernels
    assert calls["cross_gating_rows"] == 3 + 2 and calls["excitation_kernels"] == 2
    assert st["config"]["temperature"] == 0.5
    assert not np.allclose(st["cross"]["soft"]["pearson"], baseline[2]["cross"]["soft"]["pearson"])
