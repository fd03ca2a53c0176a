"""The faithfulness evaluation: :mod:`.run` computes (``python -m utils.experiments.faithfulness``),
:mod:`.report` reads committed results back without importing the attribution methods."""
from .report import (CONTROL, LOWER_IS_BETTER, RANDOMISATION, compare, format_summary, load_results, metric_key,
                     metric_label, paired_difference, summarise)

__all__ = ["CONTROL", "LOWER_IS_BETTER", "RANDOMISATION", "compare", "format_summary", "load_results", "metric_key",
           "metric_label", "paired_difference", "summarise"]
