"""Hyperparameter searches inside DomainBed's protocol (`sweep --search ...`, docs/sweeps.md).

Ray-free: ranges (`distributions`), the objective (`objective`), the searches a space
makes and their trials on disk (`searches`). The Ray side is in `trainables/`:
`search_tuner.py` (searchers, the ASHA scheduler per search), `search_trial.py` (the
trainable), `driver.py` (`run_search`, beside the grid's `run_sweep`).

A space file imports its ranges from here:

    from ddg_sweep.search import choice, loguniform, randint, uniform
    SEARCH = {"lmd": uniform(0, 1), "lr": loguniform(1e-5, 1e-3)}
"""
from ddg_sweep.search.distributions import Distribution, choice, loguniform, randint, uniform

__all__ = ["Distribution", "choice", "loguniform", "randint", "uniform"]
