"""The alignment study (issue 15): :mod:`.run` computes (``python -m utils.experiments.alignment``),
:mod:`.report` reads committed results back without importing the attribution methods."""
from .report import PAIRS, format_summary, headline, load_results, mean_ci, paired, paired_with_control, summarise, tally, verdicts

__all__ = ["PAIRS", "format_summary", "headline", "load_results", "mean_ci", "paired", "paired_with_control", "summarise", "tally", "verdicts"]
