"""Ray trainables: with ddg_sweep/sweep.py, ddg_sweep/search/{tuner,runner}.py and the CLI, all that imports Ray."""
from trainables.ddg_trainable import GAUGES, DDGTrial, train_job, trial_label

__all__ = ["GAUGES", "DDGTrial", "train_job", "trial_label"]
