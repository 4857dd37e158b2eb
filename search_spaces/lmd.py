"""`lmd` ablation: DDG's alignment-loss mix a (image term vs class-text term, VL2V-ADiP's --lmd).

hparams_seed k = the k-th value; 0 is the paper's 0.5. 0 aligns with the class text alone,
1 with the CLIP image embedding alone.
"""
from ddg_sweep.data.catalog import PAPER_DATASETS
from search_spaces import grid

VALUES = (0.5, 0.0, 0.25, 0.75, 1.0)


def jobs(options):
    return grid(options, algorithms=("DDG",), datasets=PAPER_DATASETS, trial_seeds=(0, 1, 2),
                values=[{"lmd": v} for v in VALUES])
