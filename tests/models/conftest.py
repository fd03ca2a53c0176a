import pytest

from utils.data import imagenette
from utils.data.examples import examples_for_tests


@pytest.fixture(scope="session")
def example_source(tmp_path_factory):
    """``(root, kind)``: data/examples if present, else copies from $IMAGENETTE_ROOT, else stand-ins."""
    return examples_for_tests(tmp_path_factory.mktemp("examples"))


@pytest.fixture
def examples(example_source, monkeypatch):
    """The examples folder, installed as ``data/examples`` for the test's duration."""
    root, _ = example_source
    monkeypatch.setattr(imagenette, "EXAMPLES", root)
    return root
