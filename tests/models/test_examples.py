"""The ten example images, the offline data fallback, clear errors for missing or broken data."""
import filecmp
import re
from pathlib import Path

import pytest
import torch

from utils import paper_batch
from utils.config import Config, choose_data
from utils.data import imagenette
from utils.data.examples import choose_examples
from utils.data.imagenette import (EXAMPLE_MAX_BYTES, EXAMPLE_NAMES, IMAGENETTE_WNIDS, PAPER_CLASSES, class_batch,
                                   example_files, first_per_class, load_image, read_rgb, require_imagenette)


def test_example_files_one_per_class_in_class_order(examples):
    files = example_files()
    assert [label for _, label in files] == list(range(10))
    assert [Path(p).name for p, _ in files] == list(EXAMPLE_NAMES)
    assert [Path(p).parent.name for p, _ in files] == list(IMAGENETTE_WNIDS)
    assert all(Path(p).stat().st_size <= EXAMPLE_MAX_BYTES for p, _ in files)
    assert all(load_image(p).shape == (3, 224, 224) for p, _ in files)


def test_paper_batch_without_root_reads_the_paper_five_from_the_examples(examples):
    images, labels, paths = paper_batch()
    assert labels.tolist() == list(PAPER_CLASSES) and images.shape == (5, 3, 224, 224)
    assert paths == [example_files()[c][0] for c in PAPER_CLASSES]
    assert images.min() >= -1 and images.max() <= 1
    assert paper_batch(size=64)[0].shape == (5, 3, 64, 64)
    with pytest.raises(ValueError, match="seed 314"):
        paper_batch(seed=315)


def test_examples_are_the_seeded_picks_copied_byte_for_byte(examples, example_source, data_root):
    """Reproducible choice, identical files (when real), identical tensors to paper_batch on the full split."""
    chosen = choose_examples(data_root)
    assert [Path(p).name for p, _ in chosen] == list(EXAMPLE_NAMES)
    assert not any(skipped for _, skipped in chosen)  # every first pick is small enough
    assert [p for p, _ in chosen if Path(p).parent.name in [IMAGENETTE_WNIDS[c] for c in PAPER_CLASSES]] == \
        first_per_class(data_root, PAPER_CLASSES, 1, 314)
    if example_source[1] != "placeholders":
        assert all(filecmp.cmp(src, dst, shallow=False) for (src, _), (dst, _) in zip(chosen, example_files()))
        full, offline = paper_batch(data_root), paper_batch()
        assert torch.equal(full[0], offline[0]) and torch.equal(full[1], offline[1])
        assert [Path(p).name for p in full[2]] == [Path(p).name for p in offline[2]]


def test_class_batch_gives_what_each_root_has(examples):
    images, labels, paths = class_batch(None, PAPER_CLASSES, per_class=2)
    assert labels.tolist() == list(PAPER_CLASSES) and len(paths) == 5 and images.shape == (5, 3, 224, 224)
    assert first_per_class(examples, PAPER_CLASSES, per_class=2) == paths
    images, labels, _ = class_batch(examples, range(10), size=32)
    assert labels.tolist() == list(range(10)) and images.shape == (10, 3, 32, 32)


def test_missing_examples_say_how_to_make_them(tmp_path, monkeypatch):
    monkeypatch.setattr(imagenette, "EXAMPLES", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="python -m utils.data.examples"):
        example_files()
    with pytest.raises(FileNotFoundError, match="ten example images"):
        paper_batch()


def test_choose_data_falls_back_to_the_examples_offline(examples, tmp_path, monkeypatch):
    import utils.config

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(utils.config, "download_imagenette", offline)
    root, reason = choose_data(Config(data_root=None))
    assert root == examples and "example images" in reason and "could not be downloaded" in reason
    assert paper_batch(root)[2] == paper_batch()[2]  # a root like any other, val/ only
    monkeypatch.setattr(imagenette, "EXAMPLES", tmp_path / "none")
    with pytest.raises(RuntimeError, match="could not be downloaded.*example images are missing"):
        choose_data(Config(data_root=None))
    assert choose_data(Config(data_root=tmp_path))[0] == tmp_path  # IMAGENETTE_ROOT wins, no download


def test_require_imagenette_says_what_needs_it(tmp_path, monkeypatch, examples):
    monkeypatch.delenv("IMAGENETTE_ROOT", raising=False)
    expected = ("the faithfulness evaluation needs the full Imagenette (train/ and val/): set IMAGENETTE_ROOT or "
                "pass --data; the ten examples in data/examples are enough only for the figures (")
    for root in (None, tmp_path, examples):  # nothing, an empty folder, the examples (val/ only)
        with pytest.raises(FileNotFoundError) as error:
            require_imagenette(root, "the faithfulness evaluation")
        assert str(error.value).startswith(expected)
    for split in ("train", "val"):
        (tmp_path / split / IMAGENETTE_WNIDS[0]).mkdir(parents=True)
    assert require_imagenette(tmp_path, "training") == tmp_path
    assert require_imagenette(str(tmp_path), "training") == tmp_path
    monkeypatch.setenv("IMAGENETTE_ROOT", str(tmp_path))
    assert require_imagenette(None, "the study") == tmp_path


def test_unreadable_images_name_the_file(examples, tmp_path):
    source = Path(example_files()[0][0])
    truncated = tmp_path / "truncated.JPEG"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    garbage = tmp_path / "garbage.JPEG"
    garbage.write_bytes(b"not a jpeg at all" * 10)
    for path in (truncated, garbage, tmp_path / "missing.JPEG"):
        for read in (read_rgb, load_image):
            with pytest.raises(OSError, match=re.escape(str(path))):
                read(path)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.JPEG")
