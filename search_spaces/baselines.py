"""`baselines`: ERM and VL2V under the same protocol as `paper` (132 jobs)."""
from ddg_sweep.data.catalog import PAPER_DATASETS
from search_spaces import grid


def jobs(options):
    return grid(options, algorithms=("ERM", "VL2V"), datasets=PAPER_DATASETS, trial_seeds=(0, 1, 2))
