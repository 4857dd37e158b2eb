"""Ray trainables and Tune adapters (search_tuner, search_runner): with ddg_sweep/sweep.py and the CLI, all that
imports Ray."""
from trainables.ddg_trainable import GAUGES, DDGTrial, train_job, trial_label

__all__ = ["GAUGES", "DDGTrial", "train_job", "trial_label"]
