"""The Ray Tune driver of `sweep` and `full-benchmark`: a grid of jobs, one trial each
(`run_sweep`), or a sweep's searches as one experiment (`run_search`), through one fit loop.

The job folders are the truth, not Tune's experiment state: done jobs are filtered out
before Tune starts (so nothing finished is ever rerun), partial ones resume from their
checkpoint.pt, and Tune's own storage is a fresh experiment under OUT/ray_results on every
call (never restored). A search reads every trial from OUT (search.json, states, records),
feeds the evaluated ones to a fresh searcher, resumes the unfinished ones first and suggests
only what `--num-samples` still allows, so a driver killed mid-search loses only the steps
since the running jobs' last checkpoints.

The callers (the CLI) have validated every job (`ddg_sweep.jobs.validate_job`) before any
of this is imported; a search trial's jobs, drawn here, are validated as their payloads
are built.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ray import tune

from ddg_sweep.jobs import Job, build_plan, job_dir, read_json, validate_job, write_manifest
from ddg_sweep.layout import RunFolder, SweepFolder
from ddg_sweep.test_hooks import hook_value
from trainables.cluster import SweepOptions, check_reachable, local_gpu_count, locked, ray_cluster, trial_resources
from trainables.ddg_trainable import FAULT_AFTER_STEP

if TYPE_CHECKING:  # the search side's modules are imported by the search functions, not by a grid
    from ddg_sweep.search.searches import Progress, Search, SearchOptions

FORWARDED_ENV = ("DDG_SWEEP_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HOME")


@dataclass
class SweepResult:
    ran: int
    done: int
    failed: list[str]  # "job_id: message" (a search: "search_id trial N: jobs ...")
    skipped_failed: int


def trial_payload(trial) -> dict:
    """What a trial runs: one job (`config["job"]`) or a search trial (`config["trial"]`)."""
    return trial.config.get("job") or trial.config["trial"]


def trial_name(trial) -> str:
    return trial_payload(trial)["name"]


class ProgressLines(tune.Callback):
    """One concise line per checkpoint, completion, retry and failure."""

    def __init__(self, total: int, say: Callable[[str], None]):
        self.total, self.finished, self.say = total, 0, say

    def _name(self, trial) -> str:
        return trial_payload(trial)["label"]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "held_out_acc" in result:
            self.say(f"  {self._name(trial)}: step {result['step']}/{result['steps']}, held-out "
                     f"{result['held_out_acc']:.3f}, val {result['val_acc']:.3f}, "
                     f"{result['images_per_s']:.0f} img/s")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished += 1
        self.say(f"[{self.finished}/{self.total}] done {self._name(trial)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.say(f"  retrying {self._name(trial)} from its checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finished += 1
        self.say(f"[{self.finished}/{self.total}] FAILED {self._name(trial)}")


class SearchProgressLines(ProgressLines):
    """The sweep's lines, and each finished trial's objective (or that ASHA stopped it)."""

    def __init__(self, total: int, say: Callable[[str], None], stopped: Callable[[str], bool]):
        super().__init__(total, say)
        self.stopped = stopped

    def on_trial_complete(self, iteration, trials, trial, **info):
        from trainables.search_trial import CLOCK, OBJECTIVE

        self.finished += 1
        result = trial.last_result or {}
        value = f"{result[OBJECTIVE]:.4f}" if OBJECTIVE in result else "?"
        what = (f"stopped by ASHA after {result.get(CLOCK)} checkpoint(s)" if self.stopped(trial.trial_id)
                else "done")
        self.say(f"[{self.finished}/{self.total}] {what} {self._name(trial)}: objective {value}")


def preflight(jobs: list[Job], locations: dict, options: SweepOptions) -> None:
    """The checks left before OUT is created, once the jobs are validated and their models and data
    checked (ddg_sweep/preflight.py): the address, or the means of a local cluster."""
    if options.address:
        check_reachable(options.address)
    else:  # refuse impossible requests before starting anything
        trial_resources(options, [float(options.num_cpus or os.cpu_count())], [float(local_gpu_count())])


def job_payload(job: Job, config, resources: dict) -> dict:
    """What a trial's worker gets for one job: its id, RunConfig JSON, threads and environment."""
    payload = {"job_id": job.job_id, "name": job.job_id, "label": job.describe(), "run_config": config.to_json(),
               "threads": int(resources["cpu"]),
               "env": {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}}
    fault_after_step = hook_value("fault_after_step")
    if fault_after_step is not None:
        payload[FAULT_AFTER_STEP] = fault_after_step
    return payload


def run_sweep(jobs: list[Job], configs: dict, output_dir, locations: dict, options: SweepOptions,
              say: Callable[[str], None] = print) -> SweepResult:
    """Run every job not yet done (`configs`: {job_id: RunConfig}, validated); one sweep at a time per OUT."""
    out = Path(output_dir).resolve()
    preflight(jobs, locations, options)
    with locked(out, say):
        return _run_sweep_locked(jobs, out, configs, options, say)


def _run_sweep_locked(jobs: list[Job], out: Path, configs: dict, options: SweepOptions,
                      say: Callable[[str], None]) -> SweepResult:
    plan = build_plan(jobs, out)
    to_run = plan.to_run(options.retry_failed)
    skipped_failed = 0 if options.retry_failed else sum(1 for s in plan.states.values() if s == "failed")
    counts = plan.counts()["total"]
    say(f"{len(jobs)} jobs: " + ", ".join(f"{counts[s]} {s}" for s in counts if s != "total")
        + f"; {len(to_run)} jobs to run"
        + (f" ({skipped_failed} failed skipped: pass --retry-failed to rerun them)" if skipped_failed else ""))
    write_manifest(out, jobs)
    if not to_run:
        return SweepResult(0, counts.get("done", 0), [], skipped_failed)
    with ray_cluster(out, options, to_run, say) as resources:
        _fit_grid(to_run, configs, resources, out, options, say)
    final = build_plan(jobs, out)
    failed = [f"{j.job_id}: {(read_json(RunFolder(job_dir(out, j)).error) or {}).get('error', 'unknown error')}"
              for j in to_run if final.states[j.job_id] != "done"]
    done = sum(1 for s in final.states.values() if s == "done")
    say(f"sweep finished: {done}/{len(jobs)} jobs done" + (f", {len(failed)} failed" if failed else ""))
    for line in failed:
        say(f"  failed {line}")
    return SweepResult(len(to_run), done, failed, skipped_failed)


def run_search(searches: list[Search], output_dir, locations: dict, options: SweepOptions,
               search_options: SearchOptions, say: Callable[[str], None] = print) -> SweepResult:
    """Run the searches' trials `--num-samples` still allows; one sweep at a time per OUT."""
    out = Path(output_dir).resolve()
    preflight([slot for s in searches for slot in s.slots], locations, options)
    with locked(out, say):
        return _run_search_locked(searches, out, locations, options, search_options, say)


def _run_search_locked(searches: list[Search], out: Path, locations: dict, options: SweepOptions,
                       search_options: SearchOptions, say: Callable[[str], None]) -> SweepResult:
    from ddg_sweep.search.objective import METRIC_WORDS
    from ddg_sweep.search.searches import progress_of

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
            _fit_search(progress, out, locations, resources, options, search_options, say, total)
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


def _fit_grid(to_run: list[Job], configs: dict, resources: dict, out: Path, options: SweepOptions,
              say: Callable[[str], None]) -> None:
    from trainables import DDGTrial

    name = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    trackers = []
    if options.tracking.trackers:
        from trainables.tracking import tracker_callbacks

        trackers = tracker_callbacks(options.tracking, out, name, say)
    payloads = [job_payload(job, configs[job.job_id], resources) for job in to_run]
    reuse = options.reuse_workers
    if reuse is None:  # a tiny job trains in seconds; a fresh worker spends ~9 s importing first
        reuse = all(job.hparams.get("models") == "tiny" for job in to_run)
    _fit(DDGTrial, "DDGTrial", name, resources, out, options, say,
         param_space={"job": tune.grid_search(payloads)}, reuse_actors=reuse,
         callbacks=[ProgressLines(len(to_run), say), *trackers], starting=f"running {len(to_run)} jobs ...",
         interrupted="interrupted: run the same command again; done jobs are kept, partial ones resume from "
                     "their checkpoint (ignore Tune's Tuner.restore hint: the job folders are the state)")


def _fit_search(progress: list[Progress], out: Path, locations: dict, resources: dict, options: SweepOptions,
                search_options: SearchOptions, say: Callable[[str], None], total: int) -> None:
    from trainables.search_trial import SearchTrial
    from trainables.search_tuner import Lane, PerSearchASHA, SearchMux

    def payloads(jobs) -> list[dict]:  # a trial's jobs, drawn just now: validated here, once
        return [job_payload(job, validate_job(job, out, locations, need_data=True), resources) for job in jobs]

    lanes = [Lane(entry, out, payloads) for entry in progress if entry.resume or entry.to_go]
    scheduler = None
    if search_options.scheduler == "asha":
        scheduler = PerSearchASHA(lanes, search_options.grace_period, search_options.reduction_factor)
    stopped = lambda trial_id: any(trial_id in lane.stopped for lane in lanes)  # noqa: E731
    _fit(SearchTrial, "DDGSearchTrial", f"search-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}", resources,
         out, options, say, param_space={}, reuse_actors=False, search_alg=SearchMux(lanes), scheduler=scheduler,
         num_samples=total, callbacks=[SearchProgressLines(total, say, stopped)],
         starting=f"running {total} trials ...",
         interrupted="interrupted: run the same command again; finished trials are kept and fed to the "
                     "searcher, unfinished ones resume from their checkpoints")


def _fit(trial_class, class_name: str, name: str, resources: dict, out: Path, options: SweepOptions,
         say: Callable[[str], None], param_space: dict, reuse_actors: bool, callbacks: list, starting: str,
         interrupted: str, search_alg=None, scheduler=None, num_samples: int = 1) -> None:
    """The one fit loop: `tuner.fit()` between a starting line and its duration; on Ctrl-C, say how to
    resume, then re-raise."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C is a KeyboardInterrupt here (below), not Tune's graceful stop that returns as if the
    # sweep had ended and would report its unfinished jobs as failed.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    trainable = tune.with_resources(trial_class, resources)
    trainable.__name__ = trainable.__qualname__ = class_name  # the class the dashboard's Actors page lists
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                    max_concurrent_trials=options.max_concurrent, reuse_actors=reuse_actors,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(name=name, storage_path=str(SweepFolder(out).ray_results), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=options.max_failures),
                                  callbacks=callbacks))
    started = time.time()
    say(starting)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        say(interrupted)
        raise
    say(f"tune finished in {time.time() - started:.0f} s")
