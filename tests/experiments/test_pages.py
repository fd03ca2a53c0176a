"""The per-study pages (results/<study>/README.md) are what the committed results give, and the README points
to each of them."""
import re

import pytest

from utils.experiments.pages import PAGES, faithfulness_table, main, page_path
from utils.paths import REPO


@pytest.mark.parametrize("study", sorted(PAGES))
def test_each_page_is_generated_from_the_committed_results(study):
    """Regenerate the page and compare it with the committed file, character for character."""
    committed = page_path(study).read_text()
    assert PAGES[study]() == committed, f"results/{study}/README.md is stale: run python -m utils.experiments.pages"


def test_the_readme_links_every_page():
    readme = (REPO / "README.md").read_text()
    linked = set(re.findall(r"\(results/(\w+)/README\.md\)", readme))
    assert linked == set(PAGES)


def summary_row(method, metric, mean, low, high, randomised="", layers=""):
    return {"method": method, "metric": metric, "randomised_layers": randomised, "layers": layers,
            "mean": str(mean), "ci_low": str(low), "ci_high": str(high), "n": "5"}


def test_faithfulness_table_puts_first_and_last_randomisation_stage_beside_the_metrics():
    summary = [summary_row("pullback", "deletion_auc", 0.25, 0.125, 0.375),
               summary_row("gradient", "deletion_auc", 0.5, 0.375, 0.625),
               summary_row("pullback", "randomisation_spearman", 0.75, 0.5, 1.0, "16", "31"),
               summary_row("pullback", "randomisation_spearman", 0.5, 0.25, 0.75, "8", "31"),
               summary_row("pullback", "randomisation_spearman", 0.0, -0.25, 0.25, "31", "31")]
    lines = faithfulness_table(summary, ["pullback", "gradient", "random"]).splitlines()
    assert lines[0] == "| method | deletion AUC ↓ | randomised top 8/31 ↓ | randomised top 31/31 ↓ |"
    assert lines[2] == "| **pullback** | 0.250 [0.125, 0.375] | 0.500 [0.250, 0.750] | 0.000 [-0.250, 0.250] |"
    assert lines[3] == "| gradient | 0.500 [0.375, 0.625] | – | – |"
    assert len(lines) == 4  # random has no row: it has no score here


def test_check_reports_a_stale_page_without_writing_it(monkeypatch, tmp_path, capsys):
    import utils.experiments.pages as pages

    monkeypatch.setattr(pages, "PAGES", {"demo": lambda: "new\n"})
    monkeypatch.setattr(pages, "RESULTS", tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "README.md").write_text("old\n")
    monkeypatch.setattr(pages, "page_path", lambda study: tmp_path / study / "README.md")
    assert main(["--check"]) == 1 and (tmp_path / "demo" / "README.md").read_text() == "old\n"
    assert main([]) == 0 and (tmp_path / "demo" / "README.md").read_text() == "new\n"
    assert main(["--check"]) == 0
