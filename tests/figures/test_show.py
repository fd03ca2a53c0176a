"""Showing figures: paths named for any output folder, reading-size copies, the paper's figure captions."""
import io
from types import SimpleNamespace

from PIL import Image

from utils.figures.grids import figure_path, paper_figures
from utils.figures.show import reading_copy, weights_note
from utils.paths import REPO, shown


def test_shown_is_relative_inside_the_clone_and_as_given_outside(tmp_path, monkeypatch):
    assert shown(REPO / "media" / "pullback_diff" / "a.jpg") == "media/pullback_diff/a.jpg"
    outside = tmp_path / "figures" / "alignment" / "pg.png"
    assert shown(outside) == str(outside)  # path.relative_to(REPO) raised ValueError here
    monkeypatch.chdir(REPO)
    assert shown("media/x.png") == "media/x.png"
    monkeypatch.chdir(tmp_path)
    assert shown("x.png") == "x.png"


def test_reading_copy_is_a_jpeg_no_wider_than_asked_with_transparency_on_white(tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("RGBA", (2000, 500), (255, 0, 0, 0)).save(wide)  # fully transparent
    copy = Image.open(io.BytesIO(reading_copy(wide, width=900)))
    assert copy.format == "JPEG" and copy.size == (900, 225) and copy.mode == "RGB"
    assert min(copy.getpixel((450, 100))) >= 250  # white, not red or black
    small = tmp_path / "small.png"
    Image.new("RGB", (300, 200), (0, 0, 255)).save(small)
    assert Image.open(io.BytesIO(reading_copy(small, width=900))).size == (300, 200)  # never enlarged


def test_paper_figures_name_each_figure_with_the_file_ascent_figures_writes(tmp_path):
    figures = paper_figures(tmp_path, "resnet50", steps=(1, 5, 10))
    assert [c.split(" of the paper")[0] for c, _ in figures] == ["Figure 1", "Figure 2", "Figure 2", "Figure 3",
                                                                 "Figure 4"]
    assert [p for _, p in figures] == [figure_path(tmp_path, "pullback", "diff", "resnet50", 20.0, 5),
                                       figure_path(tmp_path, "gradient", "diff", "resnet50", 20.0, 1),
                                       figure_path(tmp_path, "pullback", "diff", "resnet50", 20.0, 1),
                                       figure_path(tmp_path, "pullback", "image", "resnet50", 20.0, 10),
                                       figure_path(tmp_path, "gradient", "image", "resnet50", 20.0, 10)]
    assert "(ResNet50 there)" in figures[0][0] and "VGG11_BN" in figures[1][0]
    only_five = paper_figures(tmp_path, "bundled", steps=(5,), temperature=1.0)
    assert len(only_five) == 1 and only_five[0][1].name == "bundled_temperature_1_alpha_20_steps_5.jpg"
    assert only_five[0][0].endswith("T = 1")


def test_weights_note_follows_the_loaded_model():
    paper = SimpleNamespace(name="resnet50", class_names=["c"] * 1000)
    ours = SimpleNamespace(name="resnet50_imagenette", class_names=["c"] * 10)
    assert "resnet50, torchvision IMAGENET1K_V1 weights (ImageNet, 1000 classes)" in weights_note(paper)
    assert weights_note(ours) == "resnet50_imagenette, trained here on Imagenette (10 classes)"
