"""Ray side of searches: searchers warm-started from the job folders, one Tune experiment for
every search of a sweep, ASHA per search.

- `make_searcher`: Ray Tune's OptunaSearch (TPE) or HyperOptSearch, or `RandomSearcher`
  (each draw a function of the search and the trial index). Warm start: the configurations
  already on disk are its `points_to_evaluate`; the evaluated ones are replayed at once (the
  searcher suggests each and is told its value through `on_trial_complete`, exactly as if it
  had run it), the unfinished ones stay queued and are what the first trials of this call run.
- `Lane`: one search's live state; `SearchMux`: the one Searcher Tune sees, handing each new
  trial to the search with the fewest trials started (so every search of a sweep progresses)
  and routing results back. It writes every value a searcher is told to OUT/searches/<id>.jsonl.
- `PerSearchASHA`: Ray's AsyncHyperBandScheduler, one per search (trials of different cells
  never compete), clocked in checkpoints, seeded with the trajectories already on disk; a trial
  it stops early gets `stopped.json` in each unfinished job folder (its records stay).
"""
from __future__ import annotations

import json
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from ddg_sweep.io import append_line, atomic_write_json
from ddg_sweep.layout import RunFolder, SweepFolder
from ddg_sweep.search.objective import checkpoints_per_job
from ddg_sweep.search.searches import Progress, Search, record_trial
from ddg_sweep.seeding import seed_hash
from trainables.search_trial import CLOCK, OBJECTIVE

TO_TUNE = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}


def tune_space(search: Search) -> dict:
    return {name: tune.choice(list(d.args)) if d.kind == "choice" else TO_TUNE[d.kind](*d.args)
            for name, d in search.ranges}


class RandomSearcher(Searcher):
    """Independent draws; draw k depends only on (search, k), so a resumed search draws as a fresh one."""

    def __init__(self, search: Search, start_index: int, points: list[dict]):
        super().__init__(metric=OBJECTIVE, mode="max")
        self.search, self.index, self.points = search, start_index, [dict(p) for p in points]

    def suggest(self, trial_id: str):
        if self.points:
            return self.points.pop(0)
        rng = np.random.RandomState(seed_hash("random search", self.search.search_id, self.index))
        self.index += 1
        return {name: dist.sample(rng) for name, dist in self.search.ranges}

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
        pass


def make_searcher(search: Search, points: list[dict], start_index: int) -> Searcher:
    seed = seed_hash(search.searcher, search.search_id, start_index)  # a resumed search draws anew
    if search.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial on the driver's output
        return OptunaSearch(space=OptunaSearch.convert_search_space(tune_space(search)), metric=OBJECTIVE,
                            mode="max", points_to_evaluate=points or None, seed=seed)
    if search.searcher == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(space=HyperOptSearch.convert_search_space(tune_space(search)), metric=OBJECTIVE,
                              mode="max", points_to_evaluate=points or None, random_state_seed=seed)
    return RandomSearcher(search, start_index, points)


class Lane:
    """One search during one call: its searcher, the trials to resume, how many new ones to suggest."""

    def __init__(self, progress: Progress, out: Path, payloads: Callable[[list], list[dict]]):
        self.search, self.out, self.payloads = progress.search, out, payloads
        self.resume, self.to_go, self.next_index = list(progress.resume), progress.to_go, progress.next_index
        self.evaluated = progress.evaluated
        self.live: dict[str, int] = {}
        self.started = 0
        self.stopped: set[str] = set()  # trial ids ASHA stopped (PerSearchASHA adds them)
        points = [t.config for t in self.evaluated] + [t.config for t in self.resume]
        self.searcher = make_searcher(self.search, points, self.next_index)
        for trial in self.evaluated:  # replay: suggested and told, as if it had just run
            ghost = f"disk-{self.search.search_id}-{trial.index}"
            self.searcher.suggest(ghost)
            failed = trial.state == "failed" or trial.objective is None
            result = None if failed else {OBJECTIVE: trial.objective, CLOCK: len(trial.trajectory)}
            self.searcher.on_trial_complete(ghost, result=result, error=failed)
            self.log(trial.index, "warm start", result, failed, trial.state == "stopped")

    @property
    def open(self) -> bool:
        return bool(self.resume) or self.to_go > 0

    def next(self, trial_id: str):
        if not self.open:
            return None
        if self.resume:
            trial = self.resume.pop(0)
            self.searcher.suggest(trial_id)  # its queued copy, so that it is told how the trial ends
            index, config = trial.index, trial.config
        else:
            suggested = self.searcher.suggest(trial_id)
            if suggested is None or suggested == Searcher.FINISHED:
                return suggested
            index, config = self.next_index, self.search.normalise(suggested)
            self.next_index, self.to_go = self.next_index + 1, self.to_go - 1
        jobs = self.search.trial_jobs(index, config)
        record_trial(self.out, self.search, index, config, jobs)  # on disk before anything runs
        self.live[trial_id] = index
        self.started += 1
        search = self.search
        return {"search_id": search.search_id, "index": index, "metric": search.metric,
                "n_envs": _n_envs(search), "name": f"{search.search_id[:8]}-trial{index}",
                "label": f"{search.describe()} {search.searcher} #{index}",
                "jobs": self.payloads(jobs)}

    def complete(self, trial_id: str, result: dict | None, error: bool) -> None:
        index = self.live.pop(trial_id)
        error = error or (result or {}).get(OBJECTIVE) is None  # no value to tell: an error to the searcher
        self.searcher.on_trial_complete(trial_id, result=result, error=error)
        self.log(index, "run", result, error, trial_id in self.stopped)

    def log(self, index: int, source: str, result: dict | None, error: bool, stopped: bool) -> None:
        """What the searcher was told, one line per trial: OUT/searches/<search_id>.jsonl."""
        path = SweepFolder(self.out).search_log(self.search.search_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        append_line(path, json.dumps({
            "search_id": self.search.search_id, "label": self.search.label, "metric": self.search.metric,
            "trial": index, "source": source, "error": error, "stopped": stopped, "time": time.time(),
            OBJECTIVE: (result or {}).get(OBJECTIVE), CLOCK: (result or {}).get(CLOCK)}))


def _n_envs(search: Search) -> int:
    from ddg_sweep.data.catalog import get_dataset_spec

    return get_dataset_spec(search.dataset).n_envs


class SearchMux(Searcher):
    """The one searcher of the experiment: each new trial goes to the open search with the fewest started."""

    def __init__(self, lanes: list[Lane]):
        super().__init__(metric=OBJECTIVE, mode="max")
        self.lanes, self.owner = lanes, {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        open_lanes = [lane for lane in self.lanes if lane.open]
        if not open_lanes:
            return Searcher.FINISHED
        lane = min(open_lanes, key=lambda lane: (lane.started, self.lanes.index(lane)))
        payload = lane.next(trial_id)
        if not isinstance(payload, dict):
            return payload
        self.owner[trial_id] = lane
        return {"trial": payload}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner and result.get(OBJECTIVE) is not None:
            self.owner[trial_id].searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        lane = self.owner.pop(trial_id, None)
        if lane is not None:
            lane.complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:  # Tune's experiment state; the job folders are the truth
        Path(checkpoint_path).write_text(json.dumps({"state": f"OUT/{SweepFolder.RUNS}/*/{RunFolder.SEARCH}"}))

    def restore(self, checkpoint_path: str) -> None:
        pass


def max_checkpoints(search: Search) -> int:
    return sum(checkpoints_per_job(slot.steps, slot.checkpoint_freq) for slot in search.slots)


class PerSearchASHA(FIFOScheduler):
    """ASHA per search, its clock the trial's checkpoints; never stops a trial at its last checkpoint
    (that is its natural end: the job still writes swad.json and `done`)."""

    def __init__(self, lanes: list[Lane], grace_period: int, reduction_factor: float):
        super().__init__()
        self.lanes = {lane.search.search_id: lane for lane in lanes}
        self.max_t = {sid: max_checkpoints(lane.search) for sid, lane in self.lanes.items()}
        self.settings = {"grace_period": grace_period, "reduction_factor": reduction_factor}
        self.asha = {sid: AsyncHyperBandScheduler(time_attr=CLOCK, metric=OBJECTIVE, mode="max", max_t=max_t,
                                                  grace_period=grace_period, reduction_factor=reduction_factor,
                                                  stop_last_trials=False)
                     for sid, max_t in self.max_t.items()}
        for sid, lane in self.lanes.items():  # the rungs already reached by the trials on disk
            for trial in lane.evaluated:
                ghost = types.SimpleNamespace(trial_id=f"disk-{sid}-{trial.index}")
                self.asha[sid].on_trial_add(None, ghost)
                for clock, value in enumerate(trial.trajectory, start=1):
                    self.asha[sid].on_trial_result(None, ghost, {CLOCK: clock, OBJECTIVE: value})
                self._forget(sid, ghost)

    @staticmethod
    def _sid(trial) -> str:
        return trial.config["trial"]["search_id"]

    def on_trial_add(self, tune_controller, trial):
        self.asha[self._sid(trial)].on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        sid = self._sid(trial)
        decision = self.asha[sid].on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result.get(CLOCK, self.max_t[sid]) < self.max_t[sid]:
            self._record_stop(trial, result)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def _record_stop(self, trial, result: dict) -> None:
        payload = trial.config["trial"]
        self.lanes[payload["search_id"]].stopped.add(trial.trial_id)
        for job in payload["jobs"]:
            folder = Path(job["run_config"]["output_dir"])
            if not RunFolder(folder).done.exists():
                atomic_write_json(RunFolder(folder).stopped, {
                    "by": "asha", "search_id": payload["search_id"], "trial": payload["index"],
                    CLOCK: result.get(CLOCK), OBJECTIVE: result.get(OBJECTIVE), "of_checkpoints":
                    self.max_t[payload["search_id"]], "time": time.time(), **self.settings})

    def _forget(self, sid: str, trial) -> None:
        try:
            self.asha[sid].on_trial_remove(None, trial)
        except KeyError:  # already forgotten (ASHA drops a trial it completed)
            pass

    def on_trial_complete(self, tune_controller, trial, result):
        sid = self._sid(trial)
        try:
            self.asha[sid].on_trial_complete(tune_controller, trial, result or {})
        except KeyError:
            pass
        self._forget(sid, trial)

    def on_trial_error(self, tune_controller, trial):
        self._forget(self._sid(trial), trial)

    def on_trial_remove(self, tune_controller, trial):
        self._forget(self._sid(trial), trial)

    def debug_string(self) -> str:
        return "ASHA per search: " + "; ".join(f"{sid[:8]}: {a.debug_string()}" for sid, a in self.asha.items())
