"""`random`: DomainBed's random search, hparams seeds 1..N (`--n-hparams`, default 20).

`--with-pairs` adds the jobs holding out two environments at once, which
leave-one-domain-out cross-validation needs.
"""
from ddg_sweep.data.catalog import PAPER_DATASETS
from ddg_sweep.errors import UserError
from search_spaces import grid, pair_test_envs, single_test_envs

DEFAULT_N_HPARAMS = 20


def jobs(options):
    n_hparams = options.n_hparams if options.n_hparams is not None else DEFAULT_N_HPARAMS
    if n_hparams <= 0:
        raise UserError(f"--n-hparams must be > 0, got {n_hparams}")

    def test_envs(dataset):
        return single_test_envs(dataset) + (pair_test_envs(dataset) if options.with_pairs else [])

    return grid(options, algorithms=("ERM", "VL2V", "DDG"), datasets=PAPER_DATASETS, trial_seeds=(0, 1, 2),
                hparams_seeds=range(1, n_hparams + 1), test_envs=test_envs)
