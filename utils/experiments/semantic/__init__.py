"""The Semantic Pullbacks table reproduced: :mod:`.run` computes (``python -m utils.experiments.semantic``),
:mod:`.report` reads the results back without the explainers, :mod:`.reference` holds the paper's numbers."""
from .report import LOWER_IS_BETTER, PAIRS, load_results, paired, summary, verdicts

__all__ = ["LOWER_IS_BETTER", "PAIRS", "load_results", "paired", "summary", "verdicts"]
