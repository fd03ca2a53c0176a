"""Training the Imagenette models: :mod:`.run` (``python -m utils.experiments.training``) and the checkpoint
files it writes (:mod:`.checkpoints`)."""
from .checkpoints import checkpoint_epoch, checkpoint_name, list_checkpoints, load_checkpoint, save_checkpoint
from .run import main

__all__ = ["checkpoint_epoch", "checkpoint_name", "list_checkpoints", "load_checkpoint", "main", "save_checkpoint"]
