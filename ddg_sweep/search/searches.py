"""The searches a space makes, what each suggestion becomes, and the trials already on disk.

A search is one (algorithm, dataset, test env set, trial seed) with `--search-scope env`
(the default: DomainBed selects per cell and trial seed), or one (algorithm, dataset, trial
seed) with `--search-scope dataset` (a configuration is then evaluated on every test env
set of the dataset, one job after the other, and its objective is their mean). Each trial
seed is a search of its own, a replicate of the whole procedure as in DomainBed.

`search_id` hashes what a search computes: searcher, metric, scope, ranges and its slots
(the space's jobs a configuration fills, by identity). Trial k of a search is one ordinary
job per slot: the slot's hparams updated by the configuration, hparams seed
seed_hash("search", search_id, k), so a stable job id and folder that never collide with
grid or random-search runs of the same report cell. When the searcher suggests trial k, the
driver writes `search.json` into each of its job folders before anything runs; a search is
read back from those files and the folders' states and records (`read_trials`), which is
how it resumes. Nothing here imports Ray or torch.
"""
from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ddg_sweep.data.catalog import get_dataset_spec
from ddg_sweep.errors import UserError
from ddg_sweep.hparams import BY_NAME, step_or_fraction
from ddg_sweep.io import atomic_write_json
from ddg_sweep.jobs import (Job, job_dir, job_state, make_job, read_json, remaining_steps,
                            runs_dir, write_manifest)
from ddg_sweep.layout import RunFolder, read_jsonl
from ddg_sweep.search.distributions import Distribution, space_to_json
from ddg_sweep.search.objective import METRICS, trial_trajectory
from ddg_sweep.seeding import identity_id
from ddg_sweep.seeding import seed_hash

SEARCH_ID_DIGITS = 16  # hex digits of a search id (ddg_sweep.seeding.identity_id)
SEARCHERS = ("optuna", "hyperopt", "random")
SCOPES = ("env", "dataset")
SCHEDULERS = ("asha",)
PACKAGES = {"optuna": "optuna", "hyperopt": "hyperopt"}  # what each searcher imports
EXTRA = "search"  # pip install -e ".[search]"
DEFAULT_NUM_SAMPLES = 20


@dataclass(frozen=True)
class SearchOptions:
    searcher: str
    num_samples: int = DEFAULT_NUM_SAMPLES
    metric: str = "val_acc"
    scope: str = "env"
    scheduler: str | None = None
    grace_period: int = 1  # ASHA: checkpoints before a trial may be stopped
    reduction_factor: float = 2.0  # ASHA: keep the top 1/reduction_factor at each rung


def installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_installed(module: str, what: str) -> None:
    if not installed(module):
        raise UserError(f"{what} needs the {module} package, which is not installed: "
                        f"pip install -e \".[{EXTRA}]\"")


@dataclass(frozen=True)
class Search:
    name: str  # the space's name or file stem (shown, not part of the id)
    searcher: str
    metric: str
    scope: str
    ranges: tuple[tuple[str, Distribution], ...]  # sorted by name
    slots: tuple[Job, ...]

    @property
    def space(self) -> dict[str, Distribution]:
        return dict(self.ranges)

    @property
    def algorithm(self) -> str:
        return self.slots[0].algorithm

    @property
    def dataset(self) -> str:
        return self.slots[0].dataset

    @property
    def trial_seed(self) -> int:
        return self.slots[0].trial_seed

    def identity(self) -> dict:
        return {"searcher": self.searcher, "metric": self.metric, "scope": self.scope,
                "ranges": space_to_json(self.space), "slots": [slot.identity() for slot in self.slots]}

    @property
    def search_id(self) -> str:
        return identity_id(self.identity(), SEARCH_ID_DIGITS)

    @property
    def label(self) -> str:
        """The aggregate's `search` column: name, searcher, metric."""
        return f"{self.name}/{self.searcher}/{self.metric}"

    def describe(self) -> str:
        envs = " ".join(",".join(map(str, slot.test_envs)) for slot in self.slots)
        return f"{self.algorithm} {self.dataset} test envs {envs} trial seed {self.trial_seed}"

    def normalise(self, suggested: dict) -> dict:
        return {name: dist.normalise(suggested[name]) for name, dist in self.ranges}

    def trial_jobs(self, index: int, config: dict) -> list[Job]:
        seed = seed_hash("search", self.search_id, index)
        return [make_job(slot.algorithm, slot.dataset, slot.test_envs, slot.trial_seed, seed, steps=slot.steps,
                         checkpoint_freq=slot.checkpoint_freq, models=slot.hparams.get("models"),
                         overrides={**slot.hparams, **config}, draw_hparams=False) for slot in self.slots]

    def header(self, index: int, config: dict, jobs: list[Job]) -> dict:
        """What search.json holds."""
        return {"search_id": self.search_id, "name": self.name, "searcher": self.searcher, "metric": self.metric,
                "scope": self.scope, "label": self.label, "trial": index, "config": config,
                "jobs": [job.job_id for job in jobs], "ranges": space_to_json(self.space),
                "algorithm": self.algorithm, "dataset": self.dataset, "trial_seed": self.trial_seed,
                "test_envs": [list(slot.test_envs) for slot in self.slots]}


def _check_ranges(search: Search) -> None:
    """Every end of every range (every option of a choice) must make valid jobs, one-line errors else."""
    for name, dist in search.ranges:
        hparam = BY_NAME.get(name)
        if hparam is not None and search.algorithm not in hparam.algorithms:
            raise UserError(f"search range {name}: {name} does not apply to {search.algorithm} (it applies to "
                            f"{', '.join(hparam.algorithms)}); narrow with --algorithms or drop it from the space")
        if hparam is not None and hparam.convert is step_or_fraction and dist.kind != "choice" \
                and dist.kind != "randint" and not 0 <= dist.args[0] < dist.args[1] < 1:
            raise UserError(f"search range {name} {dist.describe()}: a float range of {name} is a fraction of "
                            "--steps and must lie in [0, 1); use randint for step counts")
        for value in dist.corners():
            try:
                search.trial_jobs(0, {name: value})
            except UserError as err:
                raise UserError(f"search range {name} {dist.describe()}: {err}; fix the range in the space") from None
    for end, position in (("lower", 0), ("upper", -1)):
        try:
            search.trial_jobs(0, {name: dist.corners()[position] for name, dist in search.ranges})
        except UserError as err:
            raise UserError(f"search ranges at their {end} ends: {err}") from None


def build_searches(jobs: list[Job], ranges: dict, options: SearchOptions, name: str) -> list[Search]:
    """One search per (algorithm, dataset, test env set, trial seed), or per (algorithm, dataset, trial
    seed) with scope `dataset`; every range checked against the registry."""
    if not ranges:
        raise UserError(f"--search needs ranges to draw from, and space {name} declares none: use --space "
                        "search, or a space file with SEARCH = {...} (.py) or \"search\": {...} (.json)")
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        key = (job.algorithm, job.dataset, job.trial_seed) + ((job.test_envs,) if options.scope == "env" else ())
        groups.setdefault(key, []).append(job)
    for slots in groups.values():
        envs = [slot.test_envs for slot in slots]
        if len(set(envs)) < len(envs):
            first = slots[0]
            raise UserError(f"the space gives {first.algorithm} on {first.dataset} trial seed {first.trial_seed} more "
                            "than one job per test env set (several hparams seeds?); a search fills one job per cell: "
                            "give the space one job per (algorithm, dataset, test envs, trial seed)")
    ordered = tuple(sorted(ranges.items()))
    searches = [Search(name, options.searcher, options.metric, options.scope, ordered,
                       tuple(sorted(slots, key=lambda j: j.test_envs))) for slots in groups.values()]
    for search in searches:
        _check_ranges(search)
    return searches


# ---- trials on disk -----------------------------------------------------------------------------

@dataclass
class Trial:
    index: int
    config: dict
    job_ids: list[str]
    states: list[str]
    trajectory: list[float]  # the objective after each checkpoint so far (objective.trial_trajectory)

    @property
    def state(self) -> str:
        states = set(self.states)
        if states == {"done"}:
            return "done"
        for state in ("stopped", "failed", "running"):
            if state in states:
                return state
        return "partial" if states & {"partial", "done"} else "pending"

    @property
    def objective(self) -> float | None:
        """The value the searcher is told: final for done, the last one for stopped, none otherwise."""
        return self.trajectory[-1] if self.state in ("done", "stopped") and self.trajectory else None


def scan_headers(out) -> dict[str, list[dict]]:
    """search_id -> the search.json of every job folder in OUT that a search suggested."""
    found: dict[str, list[dict]] = {}
    root = runs_dir(out)
    for path in sorted(root.glob(f"*/{RunFolder.SEARCH}")) if root.is_dir() else []:
        header = read_json(path)
        if isinstance(header, dict) and "search_id" in header and "trial" in header:
            found.setdefault(header["search_id"], []).append(header)
    return found


def read_trials(out, headers: list[dict], detect_running: bool = False) -> list[Trial]:
    """A search's trials from the search.json of its job folders, their states and records (the
    search.json says everything needed: dataset, test envs, metric, the trial's jobs in order)."""
    by_index = {int(h["trial"]): h for h in headers}
    trials = []
    for index in sorted(by_index):
        header = by_index[index]
        n_envs = get_dataset_spec(header["dataset"]).n_envs
        folders = [job_dir(out, job_id) for job_id in header["jobs"]]
        states = [job_state(folder, detect_running) for folder in folders]
        records = [(read_jsonl(RunFolder(folder).results), n_envs, tuple(envs))
                   for folder, envs in zip(folders, header["test_envs"])]
        trials.append(Trial(index, header["config"], list(header["jobs"]), states,
                            trial_trajectory(records, header["metric"])))
    return trials


def record_trial(out, search: Search, index: int, config: dict, jobs: list[Job]) -> None:
    """search.json into each job folder of a new trial, and the jobs into OUT/jobs.json (status)."""
    header = search.header(index, config, jobs)
    for job in jobs:
        atomic_write_json(RunFolder(job_dir(out, job)).search, header)
    write_manifest(out, jobs)


@dataclass
class Progress:
    """A search's trials against --num-samples: what is evaluated, what resumes, what is new."""
    search: Search
    trials: list[Trial]
    num_samples: int
    retry_failed: bool = False

    def counts(self) -> Counter:
        return Counter(trial.state for trial in self.trials)

    @property
    def evaluated(self) -> list[Trial]:
        """Fed back to the searcher before it suggests anything (done, stopped, failed and not retried)."""
        kept = ("done", "stopped") + (() if self.retry_failed else ("failed",))
        return [t for t in self.trials if t.state in kept]

    @property
    def resume(self) -> list[Trial]:
        again = ("partial", "running", "pending") + (("failed",) if self.retry_failed else ())
        return [t for t in self.trials if t.state in again]

    @property
    def to_go(self) -> int:
        return max(0, self.num_samples - len(self.trials))

    @property
    def next_index(self) -> int:
        return max((t.index for t in self.trials), default=-1) + 1

    def describe(self) -> str:
        search, counts = self.search, self.counts()
        seen = ", ".join(f"{counts[s]} {s}" for s in ("done", "stopped", "failed", "running", "partial", "pending")
                         if counts[s])
        best = self.best()
        return (f"search {search.search_id} {search.describe()} ({search.searcher}, {search.metric}): "
                f"{len(self.trials)} trial(s) in OUT" + (f" ({seen})" if seen else "")
                + f", {len(self.resume)} to resume, {self.to_go} new to reach --num-samples {self.num_samples}"
                + (f"; best so far trial {best.index}: {best.objective:.4f}" if best else ""))

    def best(self) -> Trial | None:
        done = [t for t in self.trials if t.state == "done" and t.objective is not None]
        return max(done, key=lambda t: (t.objective, -t.index)) if done else None

    def work_left(self, out) -> list[tuple[Job, int]]:
        """(slot, steps left) for the trials that resume, then each slot in full for every trial to go
        (ddg_sweep/estimate.py costs them)."""
        work = []
        for trial in self.resume:
            for job_id, slot in zip(trial.job_ids, self.search.slots):
                folder = job_dir(out, job_id)
                work.append((slot, remaining_steps(slot, folder, job_state(folder))))
        return work + [(slot, slot.steps) for _ in range(self.to_go) for slot in self.search.slots]


def progress_of(searches: list[Search], out, options: SearchOptions, retry_failed: bool = False,
                detect_running: bool = False) -> list[Progress]:
    headers = scan_headers(out)
    return [Progress(s, read_trials(out, headers.get(s.search_id, []), detect_running), options.num_samples,
                     retry_failed) for s in searches]


def check_schedule(searches: list[Search], options: SearchOptions) -> None:
    """ASHA needs a rung below a trial's last checkpoint."""
    from ddg_sweep.search.objective import checkpoints_per_job

    if options.scheduler != "asha":
        return
    for search in searches:
        total = sum(checkpoints_per_job(slot.steps, slot.checkpoint_freq) for slot in search.slots)
        if options.grace_period >= total:
            raise UserError(f"--asha-grace-period {options.grace_period} leaves ASHA nothing to stop: a trial of "
                            f"{search.describe()} has {total} checkpoints; pass a smaller grace period, more "
                            "--steps or a smaller --checkpoint-freq")


def check_options(options: SearchOptions, need_packages: bool = True) -> None:
    if options.searcher not in SEARCHERS:
        raise UserError(f"--search {options.searcher}: choose one of {', '.join(SEARCHERS)}")
    if options.num_samples <= 0:
        raise UserError(f"--num-samples must be > 0, got {options.num_samples}")
    if options.metric not in METRICS:
        raise UserError(f"--metric {options.metric}: choose one of {', '.join(METRICS)}")
    if options.scope not in SCOPES:
        raise UserError(f"--search-scope {options.scope}: choose one of {', '.join(SCOPES)}")
    if options.scheduler is not None and options.scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler {options.scheduler}: choose one of {', '.join(SCHEDULERS)}")
    if options.grace_period < 1:
        raise UserError(f"--asha-grace-period must be >= 1 checkpoint, got {options.grace_period}")
    if not options.reduction_factor > 1:
        raise UserError(f"--asha-reduction-factor must be > 1, got {options.reduction_factor:g}")
    if need_packages and options.searcher in PACKAGES:
        check_installed(PACKAGES[options.searcher], f"--search {options.searcher}")


def space_name(space: str) -> str:
    return Path(space).stem if Path(space).suffix in (".py", ".json") else space
