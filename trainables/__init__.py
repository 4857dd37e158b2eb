"""Ray trainables: the only place, besides ddg_sweep/sweep.py and the CLI, that imports Ray."""
from trainables.ddg_trainable import train_job

__all__ = ["train_job"]
