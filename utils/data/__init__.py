"""Imagenette: class tables, image files, the paper's seeded batch."""
