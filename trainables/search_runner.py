"""`sweep --search`: run a sweep's searches as one Ray Tune experiment (Ray side).

Like a sweep of jobs, the job folders are the truth: each call reads every search's trials
from OUT (search.json, states, records), feeds the evaluated ones to a fresh searcher,
resumes the unfinished ones first and suggests only what `--num-samples` still allows, so
running the same command again never reruns a finished trial, and a driver killed
mid-search loses only the steps since the running jobs' last checkpoints.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from ray import tune

from ddg_sweep.jobs import validate_job
from ddg_sweep.search.objective import METRIC_WORDS
from ddg_sweep.search.searches import Progress, Search, SearchOptions, progress_of
from trainables.search_tuner import Lane, PerSearchASHA, SearchMux
from ddg_sweep.sweep import (ProgressLines, SweepOptions, SweepResult, fit_saying, job_payload, locked, preflight,
                             ray_cluster, trial_name)
from trainables.search_trial import CLOCK, OBJECTIVE


class SearchProgressLines(ProgressLines):
    """The sweep's lines, and each finished trial's objective (or that ASHA stopped it)."""

    def __init__(self, total: int, say: Callable[[str], None], stopped: Callable[[str], bool]):
        super().__init__(total, say)
        self.stopped = stopped

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished += 1
        result = trial.last_result or {}
        value = f"{result[OBJECTIVE]:.4f}" if OBJECTIVE in result else "?"
        what = (f"stopped by ASHA after {result.get(CLOCK)} checkpoint(s)" if self.stopped(trial.trial_id)
                else "done")
        self.say(f"[{self.finished}/{self.total}] {what} {self._name(trial)}: objective {value}")


def run_search(searches: list[Search], output_dir, locations: dict, options: SweepOptions,
               search_options: SearchOptions, say: Callable[[str], None] = print) -> SweepResult:
    out = Path(output_dir).resolve()
    preflight([slot for s in searches for slot in s.slots], out, locations, options)
    with locked(out, say):
        return _run_locked(searches, out, locations, options, search_options, say)


def _run_locked(searches, out: Path, locations: dict, options: SweepOptions, search_options: SearchOptions,
                say: Callable[[str], None]) -> SweepResult:
    say(f"objective: {search_options.metric} ({METRIC_WORDS[search_options.metric]})")
    progress = progress_of(searches, out, search_options, options.retry_failed)
    for entry in progress:
        say(entry.describe())
    total = sum(len(p.resume) + p.to_go for p in progress)
    failed_before = sum(p.counts()["failed"] for p in progress) if not options.retry_failed else 0
    say(f"{len(searches)} search(es): {total} trials to run"
        + (f" ({failed_before} failed trial(s) kept as failed: pass --retry-failed to rerun them)"
           if failed_before else ""))
    if total:
        slots = [slot for s in searches for slot in s.slots]
        with ray_cluster(out, options, slots, say) as resources:
            _fit(progress, out, locations, resources, options, search_options, say, total)
    final = progress_of(searches, out, search_options, options.retry_failed)
    failed = []
    for entry in final:
        best = entry.best()
        say(f"search {entry.search.search_id}: " + ", ".join(f"{n} {s}" for s, n in sorted(entry.counts().items()))
            + (f"; best trial {best.index} ({best.objective:.4f} {entry.search.metric}): {best.config}" if best else ""))
        failed += [f"{entry.search.search_id} trial {t.index}: jobs {', '.join(t.job_ids)}"
                   for t in entry.trials if t.state == "failed"]
    done = sum(entry.counts()["done"] for entry in final)
    return SweepResult(total, done, failed if total else [], failed_before)


def _fit(progress: list[Progress], out: Path, locations: dict, resources: dict, options: SweepOptions,
         search_options: SearchOptions, say: Callable[[str], None], total: int) -> None:
    from trainables.search_trial import SearchTrial

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C: KeyboardInterrupt, as in a sweep

    def payloads(jobs) -> list[dict]:
        return [job_payload(job, validate_job(job, out, locations, need_data=True), resources) for job in jobs]

    lanes = [Lane(entry, out, payloads) for entry in progress if entry.resume or entry.to_go]
    scheduler = None
    if search_options.scheduler == "asha":
        scheduler = PerSearchASHA(lanes, search_options.grace_period, search_options.reduction_factor)
    trainable = tune.with_resources(SearchTrial, resources)
    trainable.__name__ = trainable.__qualname__ = "DDGSearchTrial"
    name = f"search-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    stopped = lambda trial_id: any(trial_id in lane.stopped for lane in lanes)
    tuner = tune.Tuner(
        trainable, param_space={},
        tune_config=tune.TuneConfig(search_alg=SearchMux(lanes), scheduler=scheduler, num_samples=total,
                                    max_concurrent_trials=options.max_concurrent, reuse_actors=False,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(name=name, storage_path=str(out / "ray_results"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=options.max_failures),
                                  callbacks=[SearchProgressLines(total, say, stopped)]))
    fit_saying(tuner, f"running {total} trials ...", say,
               "interrupted: run the same command again; finished trials are kept and fed to the searcher, "
               "unfinished ones resume from their checkpoints")
