"""The notebook's configuration from the environment: the download switch, and where the data come from."""
import pytest

import utils.config
from utils.config import Config, choose_data
from utils.paths import REPO


def no_network(*args, **kwargs):
    raise AssertionError("tried to download Imagenette")


@pytest.mark.parametrize("value, expected", [("0", False), ("false", False), ("Off", False), ("no", False),
                                             ("1", True), ("yes", True), ("", True)])
def test_pullback_download_reads_yes_and_no(monkeypatch, value, expected):
    monkeypatch.setenv("PULLBACK_DOWNLOAD", value)
    assert Config.from_env().download is expected


def test_pullback_download_refuses_other_values(monkeypatch):
    monkeypatch.setenv("PULLBACK_DOWNLOAD", "maybe")
    with pytest.raises(ValueError, match="PULLBACK_DOWNLOAD='maybe': set it to 1 or 0"):
        Config.from_env()


def test_choose_data_without_download_uses_the_examples_and_never_the_network(examples, monkeypatch):
    monkeypatch.setattr(utils.config, "download_imagenette", no_network)
    root, reason = choose_data(Config(data_root=None, download=False))
    assert root == examples and "PULLBACK_DOWNLOAD=0" in reason and "example images" in reason


def test_choose_data_names_folders_inside_the_clone_relative_to_it(monkeypatch):
    """No machine paths in the notebook's output: the examples' folder is named as the repository sees it."""
    monkeypatch.setattr(utils.config.imagenette, "EXAMPLES", REPO / "data" / "examples")
    reason = choose_data(Config(data_root=None, download=False))[1]
    assert "in data/examples " in reason and str(REPO) not in reason


def test_config_shows_folders_inside_the_clone_relative_and_others_as_given(tmp_path):
    text = repr(Config(media=REPO / "media", data_root=tmp_path / "imagenette"))
    assert "media='media'" in text and f"data_root='{tmp_path / 'imagenette'}'" in text and str(REPO) not in text
    assert "download=True" in text and "temperature=0.3" in text
