"""Where the repository keeps things: one definition for every module."""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"  # downloads and checkpoints (git-ignored) and the bundled examples
CHECKPOINTS = DATA / "checkpoints"
MEDIA = REPO / "media"  # figures
RESULTS = REPO / "results"  # committed experiment results
WEIGHTS = Path(__file__).resolve().parent / "models" / "weights"  # the bundled models' weights and logs
