"""The Tune trainable of a search trial: one configuration, its jobs one after the other.

`config["trial"]` (built by the driver when the searcher suggests it): the search, the trial
index, the metric, the dataset's environment count and one job payload per slot, each run by
`train_job` exactly as a sweep runs it (same folders, resume, retries, error.json). Every
report adds `objective` (ddg_sweep.search.objective: training-domain validation, or the
oracle when the search was asked for it) and `checkpoints` (how many checkpoints the trial
has so far, ASHA's clock), both computed from the job folders' results.jsonl, the records
the report itself reads, so a resumed or retried trial reports what an uninterrupted one would.
"""
from __future__ import annotations

from pathlib import Path

from ddg_sweep.search.objective import trial_trajectory
from ddg_sweep.layout import RunFolder, read_jsonl
from trainables.ddg_trainable import train_job, trial_class

OBJECTIVE = "objective"  # the metric every searcher and the ASHA scheduler read
CLOCK = "checkpoints"  # ASHA's time attribute


def trial_numbers(trial: dict, upto: int) -> dict:
    """`objective` and `checkpoints` of the trial's first `upto` + 1 jobs, from their records."""
    jobs = []
    for payload in trial["jobs"][:upto + 1]:
        folder = Path(payload["run_config"]["output_dir"])
        jobs.append((read_jsonl(RunFolder(folder).results), trial["n_envs"],
                     tuple(payload["run_config"]["test_envs"])))
    trajectory = trial_trajectory(jobs, trial["metric"])
    if not trajectory:
        return {}
    return {OBJECTIVE: trajectory[-1], CLOCK: len(trajectory), "search_trial": trial["index"]}


def search_trial(config: dict) -> None:
    trial = config["trial"]
    for position, payload in enumerate(trial["jobs"]):
        train_job({"job": payload}, extra=lambda position=position: trial_numbers(trial, position))


def search_label(trial: dict) -> str:
    """`DDG DemoDigits test_envs=[0] trial 0 search optuna #3`: what the dashboard shows for a trial."""
    return trial.get("label", "search trial")


SearchTrial = trial_class(search_trial, "DDGSearchTrial", "trial", search_label)
