"""`tables --importance`: how much each searched hyperparameter mattered, per search.

The finished trials of search_trials.parquet (their configuration and objective) become an
in-memory Optuna study, whatever searcher ran them, and `optuna.importance` (fANOVA, seeded)
apportions the objective's variance among the hyperparameters. Optuna is needed only here
(the search extra).
"""
from __future__ import annotations

import json
from pathlib import Path

from ddg_sweep.errors import UserError
from ddg_sweep.report.aggregate_folder import SEARCH_TRIALS_PARQUET
from ddg_sweep.search.objective import METRIC_WORDS
from ddg_sweep.search.searches import check_installed

MIN_TRIALS = 2


def _distributions(ranges: dict):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    made = {}
    for name, spec in ranges.items():
        (kind, args), = spec.items()
        if kind == "choice":
            made[name] = CategoricalDistribution(args)
        elif kind == "randint":
            made[name] = IntDistribution(args[0], args[1] - 1)
        else:
            made[name] = FloatDistribution(args[0], args[1], log=kind == "loguniform")
    return made


def _value(distribution, value):
    from optuna.distributions import IntDistribution

    if hasattr(value, "item"):
        value = value.item()
    return int(value) if isinstance(distribution, IntDistribution) else value


def importances(group) -> dict[str, float] | str:
    """{hparam: importance} over a search's finished trials, or why there is none."""
    import optuna

    done = group[(group["state"] == "done") & group["objective"].notna()]
    if len(done) < MIN_TRIALS:
        return f"too few finished trials for an importance (needs {MIN_TRIALS})"
    if done["objective"].nunique() < 2:
        return "every finished trial has the same objective: nothing to apportion"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = _distributions(json.loads(group["ranges"].iloc[0]))
    study = optuna.create_study(direction="maximize")
    study.add_trials([optuna.trial.create_trial(
        params={name: _value(d, row[f"hp_{name}"]) for name, d in distributions.items()},
        distributions=distributions, value=float(row["objective"])) for _, row in done.iterrows()])
    return optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))


def render_importance(agg_dir) -> str:
    import pandas as pd

    path = Path(agg_dir) / SEARCH_TRIALS_PARQUET
    if not path.is_file():
        raise UserError(f"{agg_dir} holds no search trials ({SEARCH_TRIALS_PARQUET} missing): run a search "
                        "(sweep --search ...), then aggregate its folder, and pass --input that aggregate")
    check_installed("optuna", "tables --importance")
    trials = pd.read_parquet(path)
    out = []
    for search_id, group in trials.groupby("search_id", sort=True):
        first = group.iloc[0]
        n_done = int(((group["state"] == "done") & group["objective"].notna()).sum())
        out.append(f"search {search_id} ({first['search']}: {first['algorithm']} {first['dataset']} test envs "
                   f"{first['test_envs']} trial seed {first['trial_seed']}), objective {first['metric']} "
                   f"({METRIC_WORDS[first['metric']]}), {n_done} finished trial(s) of {len(group)}\n")
        values = importances(group)
        if isinstance(values, str):
            out.append(f"  {values}\n")
            continue
        out += [f"  {name:16} {value:.3f}\n" for name, value in values.items()]
    return "".join(out)
