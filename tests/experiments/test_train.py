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


def test_random_resized_crops_of_the_whole_image_are_the_image_or_its_mirror():
    """Area 100% and aspect 1: the affine grid samples every pixel centre exactly, flipped in about half."""
    from utils.experiments.training.batched import random_resized_crops

    images = torch.randint(0, 256, (32, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    crops = random_resized_crops(images, 12, torch.Generator().manual_seed(1), scale=(1, 1), ratio=(1, 1))
    scaled = images.float() / 127.5 - 1
    same = [torch.allclose(c, x, atol=1e-5) for c, x in zip(crops, scaled)]
    mirrored = [torch.allclose(c, x.flip(-1), atol=1e-5) for c, x in zip(crops, scaled)]
    assert all(s != m for s, m in zip(same, mirrored)) and 8 <= sum(mirrored) <= 24


def test_random_resized_crops_cover_the_drawn_area():
    """On a horizontal ramp (pixel value = column), a crop of width fraction w spans w of the columns."""
    from utils.experiments.training.batched import random_resized_crops

    ramp = torch.arange(64, dtype=torch.float32).mul(4).expand(8, 3, 64, 64).to(torch.uint8)
    crops = random_resized_crops(ramp, 16, torch.Generator().manual_seed(0), scale=(0.25, 0.25), ratio=(1, 1))
    columns = (crops[:, 0, 0] + 1) * 127.5 / 4  # (N, 16) input column at each output pixel
    span = (columns.max(1).values - columns.min(1).values) * 16 / 15  # 16 samples of a 32-pixel-wide window
    torch.testing.assert_close(span, torch.full((8,), 32.0), atol=0.05, rtol=0)


def test_the_batched_recipe_lowers_the_loss_of_a_small_net():
    """train() on an easy two-class set (reddish vs bluish noise): the mean loss of the last epoch is below the first's."""
    from utils.experiments.training.batched import parser, train as batched_train

    args = parser().parse_args(["--data", "-", "--arch", "resnet50", "--size", "16", "--batch-size", "16",
                                "--epochs", "8", "--lr", "0.1"])
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 128, (32, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.arange(32) % 2
    images[labels == 0, 0] += 127  # red channel up for class 0, blue for class 1
    images[labels == 1, 2] += 127
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    rows = batched_train(args, net, optimizer, images, labels, torch.device("cpu"))
    assert [r["epoch"] for r in rows] == list(range(1, 9)) and [r["crop"] for r in rows] == [12] * 5 + [14] * 2 + [16]
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]


def test_torchvision_architectures_train_on_the_cpu_and_load_through_the_zoo(tmp_path):
    """``--arch resnet50`` runs the batched recipe; its float16 weights load as the zoo's resnet50_imagenette."""
    from utils.models.nets import resnet50
    from utils.models.zoo import bundled_model

    data = _fake_imagenette(tmp_path / "data")
    path = train(["--data", str(data), "--arch", "resnet50", "--size", "32", "--val-size", "32", "--batch-size", "8",
                  "--epochs", "2", "--threads", "1", "--out", str(tmp_path / "out")])
    assert path == tmp_path / "out" / "resnet50_imagenette.pt"
    log = (tmp_path / "out" / "resnet50_imagenette_log.csv").read_text().splitlines()
    assert log[0] == "epoch,crop,train_loss,elapsed_s,val_acc,val_resolution" and len(log) == 3
    assert log[-1].startswith("2,26,") and log[-1].endswith(",32")  # 80% of 32 px, rounded to even; val at 32 px
    saved = torch.load(path, weights_only=True)
    model = bundled_model(path, "resnet50_imagenette")
    for key, value in model.net.state_dict().items():
        assert torch.equal(value, saved[key].float() if saved[key].is_floating_point() else saved[key]), key
    torch.manual_seed(0)
    start = resnet50()
    assert any(not torch.equal(v, start.state_dict()[k].half().float()) for k, v in model.net.state_dict().items()
               if v.is_floating_point())
