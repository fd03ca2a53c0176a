"""The runners' skeleton (utils.experiments.runner) and its records: a part belongs to one run and one set of
items, one writer per results folder, and the command line built from a settings dataclass."""
import json
import shutil
import socket
import subprocess
import sys
import warnings

import pytest
import torch

import utils.experiments.alignment.control as control
from utils.data.imagenette import IMAGENETTE_CLASSES
from utils.experiments.alignment.control import ControlSettings
from utils.experiments.faithfulness.run import SMOKE, FaithfulnessSettings, _parser
from utils.experiments.records import (DamagedPartWarning, ForeignPartWarning, RunLockedError, WriterLock,
                                       load_csv_part, read_csv, read_lock, run_id, save_csv_part)
from utils.experiments.runner import settings_from_args
from utils.experiments.stability.run import StabilitySettings, _parser as stability_parser
from utils.models.nets import PlainNet
from utils.models.zoo import Classifier

ROWS = [{"image": i, "value": i / 3} for i in range(4)]


def test_a_part_is_tied_to_its_run_its_items_and_its_name(tmp_path):
    first, second = tmp_path / "parts" / "batch_0000.csv", tmp_path / "parts" / "batch_0001.csv"
    save_csv_part(first, ROWS, run="run-a", items=(10, 11))
    assert json.loads((tmp_path / "parts" / "batch_0000.csv.check.json").read_text())["rows"] == len(ROWS)
    assert load_csv_part(first, run="run-a", items=[10, 11]) == [{k: str(v) for k, v in r.items()} for r in ROWS]
    with pytest.warns(ForeignPartWarning, match="made by another run .run-a, this run is run-b"):
        assert load_csv_part(first, run="run-b", items=(10, 11)) is None
    with pytest.warns(ForeignPartWarning, match=r"covers items \[10, 11\], this part is for \[12, 13\]"):
        assert load_csv_part(first, run="run-a", items=(12, 13)) is None
    # a part and its check copied over another part: caught by the items, and by the name where items agree
    shutil.copy(first, second)
    shutil.copy(first.with_name(first.name + ".check.json"), second.with_name(second.name + ".check.json"))
    with pytest.warns(ForeignPartWarning, match="covers items"):
        assert load_csv_part(second, run="run-a", items=(12, 13)) is None
    with pytest.warns(ForeignPartWarning, match="was written as batch_0000.csv"):
        assert load_csv_part(second, run="run-a", items=(10, 11)) is None


def test_a_part_without_its_run_is_not_taken_for_this_one(tmp_path):
    part = tmp_path / "batch_0000.csv"
    save_csv_part(part, ROWS)  # as written before parts carried their run
    with pytest.warns(ForeignPartWarning, match="not recorded"):
        assert load_csv_part(part, run="run-a") is None
    assert issubclass(ForeignPartWarning, DamagedPartWarning)


def test_run_id_follows_every_value_of_the_identity_or_only_its_keys():
    identity = {"temperature": 0.3, "images": 4, "epochs": (0.0, 1.0), "path": "/a"}
    same = {"path": "/a", "epochs": [0.0, 1.0], "images": 4, "temperature": 0.3}  # order, tuple vs list
    assert run_id(identity) == run_id(same)
    assert len({run_id({**identity, key: 5}) for key in identity} | {run_id(identity)}) == len(identity) + 1
    keys = ("temperature", "images", "epochs")
    assert run_id(identity, keys) == run_id({**identity, "path": "/b"}, keys) != run_id({**identity, "images": 5}, keys)


@pytest.fixture
def sleeper():
    """A live process that is not this one."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process.pid
    process.kill()
    process.wait()


def _held_by(out, pid, run="their-run"):
    out.mkdir(parents=True, exist_ok=True)
    (out / WriterLock.NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "run": run,
                                                   "token": "theirs", "since": "2026-01-01T00:00:00+00:00"}))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, sleeper):
    _held_by(tmp_path / "out", sleeper)
    with pytest.raises(RunLockedError, match=f"being written by process {sleeper} on {socket.gethostname()}"):
        WriterLock(tmp_path / "out", "mine").acquire()
    with WriterLock(tmp_path / "other", "a"):  # two runs in this one process are two writers too
        with pytest.raises(RunLockedError, match="pass another --out"):
            WriterLock(tmp_path / "other", "b").acquire()
    assert not (tmp_path / "other" / WriterLock.NAME).exists()  # released on leaving the block


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path):
    dead = _dead_pid()
    _held_by(tmp_path, dead)
    with pytest.warns(UserWarning, match=f"process {dead} .* no longer runs"):
        lock = WriterLock(tmp_path, "mine").acquire()
    assert read_lock(tmp_path / WriterLock.NAME)["token"] == lock.holder["token"]
    lock.release()
    assert not (tmp_path / WriterLock.NAME).exists()


def test_a_writer_that_lost_its_folder_stops_and_leaves_the_new_lock(tmp_path):
    old = WriterLock(tmp_path / "out", "old").acquire()
    shutil.rmtree(tmp_path / "out")
    new = WriterLock(tmp_path / "out", "new").acquire()
    with pytest.raises(RunLockedError, match="lost .*held by process .* of run new"):
        old.check()
    old.release()
    assert read_lock(new.path)["run"] == "new"


def _models():
    torch.manual_seed(0)
    return {n: Classifier(PlainNet(layout=(8, "M", 16)).eval(), torch.nn.Identity(), IMAGENETTE_CLASSES, n)
            for n in ("a", "b")}


QUICK = dict(images=4, batch=2, size=32)


def _counted(monkeypatch, before=None) -> list:
    calls, real = [], control.control_rows

    def counted(*args, **kwargs):
        calls.append(1)
        if before is not None:
            before()
        return real(*args, **kwargs)

    monkeypatch.setattr(control, "control_rows", counted)
    return calls


def test_parts_of_a_run_with_other_settings_are_recomputed_after_config_is_deleted(data_root, tmp_path,
                                                                                  monkeypatch):
    out = tmp_path / "out"
    control.run(ControlSettings(**QUICK), data_root, out, models=_models(), progress=False)
    (out / "config.json").unlink()
    calls = _counted(monkeypatch)
    warm = ControlSettings(**QUICK, temperature=1.0)
    with pytest.warns(ForeignPartWarning, match="made by another run"):
        control.run(warm, data_root, out, models=_models(), progress=False)
    assert len(calls) == 2  # both parts (main: 0, the old temperature's scores under the new config)
    control.run(warm, data_root, tmp_path / "fresh", models=_models(), progress=False)
    assert read_csv(out / "scores.csv") == read_csv(tmp_path / "fresh" / "scores.csv")
    assert {r["temperature"] for r in read_csv(out / "scores.csv")} == {"1.0", ""}


def test_a_part_copied_over_another_is_recomputed(data_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    control.run(ControlSettings(**QUICK), data_root, out, models=_models(), progress=False)
    whole = read_csv(out / "scores.csv")
    for suffix in ("", ".check.json"):
        shutil.copy(out / "parts" / f"batch_0000.csv{suffix}", out / "parts" / f"batch_0001.csv{suffix}")
    calls = _counted(monkeypatch)
    with pytest.warns(ForeignPartWarning, match="batch_0001.csv covers items"):
        control.run(ControlSettings(**QUICK), data_root, out, models=_models(), progress=False)
    assert len(calls) == 1 and read_csv(out / "scores.csv") == whole  # main: image 0 and 1 twice, 2 and 3 missing


def test_a_live_writer_blocks_a_second_run_before_anything_is_written(data_root, tmp_path, sleeper, monkeypatch):
    _held_by(tmp_path / "out", sleeper)
    calls = _counted(monkeypatch)
    with pytest.raises(RunLockedError, match=f"process {sleeper}"):
        control.run(ControlSettings(**QUICK), data_root, tmp_path / "out", models=_models(), progress=False)
    assert not calls and sorted(p.name for p in (tmp_path / "out").iterdir()) == [WriterLock.NAME]


def test_a_run_whose_folder_is_taken_over_stops_before_its_next_write(data_root, tmp_path, sleeper, monkeypatch):
    """The folder is removed while the run computes its first part and another run's writer starts there:
    the first run stops instead of writing its part among the other's."""
    out = tmp_path / "out"

    def taken_over():
        shutil.rmtree(out)
        _held_by(out, sleeper, run="another")

    calls = _counted(monkeypatch, before=taken_over)
    with pytest.raises(RunLockedError, match="lost"):
        control.run(ControlSettings(**QUICK), data_root, out, models=_models(), progress=False)
    assert len(calls) == 1 and sorted(p.name for p in out.iterdir()) == [WriterLock.NAME]
    assert read_lock(out / WriterLock.NAME)["run"] == "another"


def test_a_stale_lock_does_not_block_the_run(data_root, tmp_path):
    _held_by(tmp_path / "out", _dead_pid())
    with pytest.warns(UserWarning, match="no longer runs"):
        control.run(ControlSettings(**QUICK), data_root, tmp_path / "out", models=_models(), progress=False)
    assert (tmp_path / "out" / "scores.csv").exists() and not (tmp_path / "out" / WriterLock.NAME).exists()


def test_the_command_line_is_built_from_the_settings_dataclass():
    args = _parser().parse_args(["--smoke", "--methods", "pullback", "gradient", "--size", "64", "--budget", "0.5"])
    settings = settings_from_args(FaithfulnessSettings, args, SMOKE)
    assert settings == FaithfulnessSettings(**{**SMOKE, "methods": ("pullback", "gradient"), "size": 64, "budget": 0.5})
    with pytest.raises(SystemExit), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _parser().parse_args(["--methods", "lime"])
    args = stability_parser().parse_args(["--epochs", "0 0.5,1", "--kernel-train", "20"])
    assert settings_from_args(StabilitySettings, args, {}) == StabilitySettings(epochs=(0.0, 0.5, 1.0), kernel_train=20)
