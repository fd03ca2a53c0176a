"""The README's code runs as printed: offline, with nothing beside the clone."""
import re

import pytest
import torch

from utils.data import imagenette
from utils.data.examples import examples_for_tests
from utils.paths import REPO


def python_blocks(section: str | None = None) -> list[str]:
    """The ```python blocks of README.md, or of one ``## section`` of it."""
    text = (REPO / "README.md").read_text()
    if section is not None:
        text = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


@pytest.fixture
def examples(tmp_path, monkeypatch):
    root, _ = examples_for_tests(tmp_path / "examples")  # data/examples, or copies / stand-ins in tmp_path
    monkeypatch.setattr(imagenette, "EXAMPLES", root)
    monkeypatch.delenv("IMAGENETTE_ROOT", raising=False)
    monkeypatch.chdir(REPO)
    return root


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: on a busy 2-core machine, faster


def run(block: str) -> dict:
    namespace = {"__name__": "__readme__"}
    exec(compile(block, str(REPO / "README.md"), "exec"), namespace)
    return namespace


def test_first_python_block_runs_as_written(examples, capsys):
    first = python_blocks()[0]
    assert "paper_batch()" in first and 'load_model("bundled"' in first
    ns = run(first)
    out = capsys.readouterr().out
    assert ns["labels"].tolist() == [0, 2, 4, 6, 8] and ns["images"].shape == (5, 3, 224, 224)
    assert ns["field"].shape == ns["vanilla"].shape == ns["images"].shape
    assert ns["path"].shape == (6, 5, 3, 224, 224) and torch.equal(ns["path"][0], ns["images"])
    assert "target 'church'; after 5 steps:" in out
    assert "same field as excitation_pullback: True" in out


def test_own_model_block_runs_as_written(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    block = python_blocks("Using it on your own model")[0]  # the next one needs ImageNet weights (a download)
    ns = run(block)
    assert ns["field"].shape == ns["x"].shape == (2, 3, 224, 224)
    torch.testing.assert_close(ns["x"].grad, ns["field"])


def results_sections() -> dict[str, str]:
    """The README's ``### study`` summaries under ``## Results``, keyed by the study whose page each links."""
    text = (REPO / "README.md").read_text().split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    sections = {}
    for part in text.split("\n### ")[1:]:
        linked = re.findall(r"\(results/(\w+)/README\.md\)", part)
        assert len(linked) == 1, f"each summary links one study page: {part.splitlines()[0]}"
        sections[linked[0]] = part
    return sections


def test_results_summary_quotes_only_numbers_from_the_study_pages():
    """A number in a study's summary that its generated page does not show is stale or invented."""
    sections = results_sections()
    assert set(sections) == {"faithfulness", "stability", "alignment", "semantic"}
    for study, summary in sections.items():
        page = (REPO / "results" / study / "README.md").read_text()
        numbers = re.findall(r"[+-]?\d+\.\d+%?", summary)
        assert numbers, study
        missing = [n for n in numbers if n not in page]
        assert not missing, f"results/{study}/README.md does not show {missing}"
