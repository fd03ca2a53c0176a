"""Experiments run from the command line: training, faithfulness, path stability; and their on-disk records."""
