"""Where the repository keeps things: one definition for every module."""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"  # downloads and checkpoints (git-ignored) and the bundled examples
CHECKPOINTS = DATA / "checkpoints"
MEDIA = REPO / "media"  # figures
RESULTS = REPO / "results"  # committed experiment results
WEIGHTS = Path(__file__).resolve().parent / "models" / "weights"  # the bundled models' weights and logs


def shown(path) -> str:
    """How to print a path the user will look for: relative to the repository when inside it, else as given.

    Output folders are user-chosen (``PULLBACK_MEDIA``, ``--out``) and may lie outside the clone, so
    ``path.relative_to(REPO)`` alone would raise there.
    """
    absolute = Path(path).resolve()  # a relative path counts from the working directory
    return absolute.relative_to(REPO).as_posix() if absolute.is_relative_to(REPO) else str(path)
