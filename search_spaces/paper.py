"""`paper`: DDG at the paper's defaults, every single test env of the five datasets, trial seeds 0-2.

(4 + 4 + 4 + 4 + 6) test envs x 3 seeds = 66 jobs.
"""
from ddg_sweep.data.catalog import PAPER_DATASETS
from search_spaces import grid


def jobs(options):
    return grid(options, algorithms=("DDG",), datasets=PAPER_DATASETS, trial_seeds=(0, 1, 2))
