"""utils.experiments.training: the checkpoints the path-stability study reads, and an exact --resume."""
import shutil

import numpy as np
import torch
from PIL import Image

from utils.data.imagenette import IMAGENETTE_WNIDS
from utils.experiments.training import main as train


def _fake_imagenette(root):
    g = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for wnid in IMAGENETTE_WNIDS:
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(g.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(root / split / wnid / f"{i}.JPEG")
    return root


def _run(data, checkpoints, out, *extra):
    train(["--data", str(data), "--resolutions", "32", "32", "32", "--batch-size", "6", "--threads", "1",
           "--checkpoints", str(checkpoints), "--out", str(out), *extra])


def test_checkpoints_and_exact_resume(tmp_path):
    data = _fake_imagenette(tmp_path / "data")
    _run(data, tmp_path / "ck", tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "ck").glob("epoch_*.pt"))
    # Every quarter of the first two epochs, then every epoch (5 steps per epoch: quarters at steps 1, 2, 3).
    assert names == [f"epoch_{e:05.2f}.pt" for e in (0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 3)]

    # Interrupted after epoch 1: resuming gives the same weights, bit for bit, as the uninterrupted run.
    shutil.copytree(tmp_path / "ck", tmp_path / "ck2", ignore=shutil.ignore_patterns("epoch_02.00.pt", "epoch_03.00.pt"))
    _run(data, tmp_path / "ck2", tmp_path / "out2", "--resume")
    whole = torch.load(tmp_path / "ck" / "epoch_03.00.pt")
    resumed = torch.load(tmp_path / "ck2" / "epoch_03.00.pt")
    assert resumed["epoch"] == 3.0 and [r["epoch"] for r in resumed["log"]] == [1, 2, 3]
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    start = torch.load(tmp_path / "ck" / "epoch_00.00.pt")["model"]
    assert any(not torch.equal(v, whole["model"][k]) for k, v in start.items() if v.is_floating_point())


def test_checkpoint_files_name_list_and_load(tmp_path):
    from utils.experiments.training.checkpoints import (checkpoint_epoch, checkpoint_name, last_whole_epoch,
                                                        list_checkpoints, load_checkpoint, save_checkpoint)
    from utils.models.nets import PlainNet

    assert [checkpoint_name(e) for e in (0, 0.25, 12)] == ["epoch_00.00.pt", "epoch_00.25.pt", "epoch_12.00.pt"]
    assert checkpoint_epoch(tmp_path / "epoch_01.75.pt") == 1.75 and checkpoint_epoch("epoch_1.pt.partial") is None
    torch.manual_seed(0)
    model = PlainNet().eval()
    for epoch in (0.0, 0.5, 1.0, 2.0):
        save_checkpoint(tmp_path, model, epoch, seed=3)
    (tmp_path / ".epoch_03.00.pt.1.partial").write_bytes(b"half")  # an interrupted write: never listed
    assert [e for e, _ in list_checkpoints(tmp_path)] == [0.0, 0.5, 1.0, 2.0]
    assert last_whole_epoch(tmp_path).name == "epoch_02.00.pt"
    loaded = load_checkpoint(tmp_path / "epoch_00.50.pt", arch="plain")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, tmp_path / "w.pt")
    assert next(load_checkpoint(tmp_path / "w.pt", arch="plain").parameters()).dtype == torch.float32


def test_run_names_keep_the_bundled_model_for_the_default_run_only():
    """Each run writes its own weights, log and checkpoint folder; the zoo finds the weights under that name."""
    from utils.experiments.training.checkpoints import default_folder
    from utils.models.zoo import TRAINED, trained_stem, trained_weights

    assert trained_stem("poolresnet", 0) == "bundled_imagenette"
    assert trained_stem("poolresnet", 1) == "poolresnet_seed1_imagenette"
    assert trained_stem("plain", 0) == "plain_seed0_imagenette"
    assert len({default_folder(arch, seed) for arch, seed in TRAINED.values()}) == len(TRAINED)
    assert default_folder("poolresnet", 1).name == "seed1"  # the path-stability study's control run
    assert trained_weights("bundled_plain").name == "plain_seed0_imagenette.pt"
