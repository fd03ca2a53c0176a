"""Figures: plot primitives and one module per figure family."""
