"""`cfg_scale` ablation: the domain-debiasing guidance w; hparams_seed k = the k-th value (0: the paper's 3.0).

w = 1 is plain diffusion distillation (no debiasing).
"""
from ddg_sweep.data.catalog import PAPER_DATASETS
from search_spaces import grid

VALUES = (3.0, 1.0, 2.0, 5.0, 7.5)


def jobs(options):
    return grid(options, algorithms=("DDG",), datasets=PAPER_DATASETS, trial_seeds=(0, 1, 2),
                values=[{"cfg_scale": v} for v in VALUES])
