"""Ray trainables: the only place, besides ddg_sweep/sweep.py and the CLI, that imports Ray."""
from trainables.ddg_trainable import GAUGES, DDGTrial, train_job, trial_label

__all__ = ["GAUGES", "DDGTrial", "train_job", "trial_label"]
