"""`search`: DDG's own hyperparameters for `--search optuna|hyperopt|random` (docs/sweeps.md, Searches).

The jobs are the slots a search fills: DDG at the paper's defaults, every single test
env of the paper's datasets (or of `--datasets`, DemoDigits included), trial seed 0
(`--trial-seeds` for more: each trial seed is a search of its own, a replicate of the
whole procedure as in DomainBed). A search draws, per suggestion, from SEARCH:

- `lmd`, the alignment loss's image/text mix, over [0, 1];
- `cfg_scale`, the guidance scale w, over the registry's random range [1, 7.5];
- `align_weight`, the Stage II weight of L_align, log-uniform over [0.1, 3];
- `stage1_steps`, Stage I's length as a fraction of the steps, over [0.1, 0.9].
"""
from ddg_sweep.data.catalog import PAPER_DATASETS
from ddg_sweep.search import loguniform, uniform
from search_spaces import grid

SEARCH = {
    "lmd": uniform(0.0, 1.0),
    "cfg_scale": uniform(1.0, 7.5),
    "align_weight": loguniform(0.1, 3.0),
    "stage1_steps": uniform(0.1, 0.9),
}


def jobs(options):
    return grid(options, algorithms=("DDG",), datasets=options.datasets or PAPER_DATASETS, trial_seeds=(0,))
