"""`stage1_steps` ablation: how long Stage I (alignment only) lasts, as a fraction of the steps.

hparams_seed k = the k-th fraction; 0 is the paper's 5000 of 8000 steps (0.625), and the
fractions keep their meaning under `--steps`. SWAD keeps its default start.
"""
from ddg_sweep.data.catalog import PAPER_DATASETS
from search_spaces import grid

FRACTIONS = (0.625, 0.0, 0.25, 0.875)


def jobs(options):
    return grid(options, algorithms=("DDG",), datasets=PAPER_DATASETS, trial_seeds=(0, 1, 2),
                values=[{"stage1_steps": f} for f in FRACTIONS])
