"""`lmd` ablation: DDG's alignment weight in Stage II; hparams_seed k = the k-th value (0: the paper's 0.5)."""
from ddg_sweep.data.catalog import PAPER_DATASETS
from search_spaces import grid

VALUES = (0.5, 0.0, 0.1, 1.0, 2.0)


def jobs(options):
    return grid(options, algorithms=("DDG",), datasets=PAPER_DATASETS, trial_seeds=(0, 1, 2),
                values=[{"lmd": v} for v in VALUES])
