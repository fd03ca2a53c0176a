"""The path-stability study: :mod:`.run` computes (``python -m utils.experiments.stability``), :mod:`.tables`
keeps its checked pieces and assembles the CSVs, :mod:`.report` reads committed results back without the
compute modules; the figures are :func:`utils.figures.stability.plot_study`."""
from .report import KERNELS, KNN_K, findings, load_study

__all__ = ["KERNELS", "KNN_K", "findings", "load_study"]
