"""`plan`, `sweep` and `full-benchmark`: sweeps of jobs on Ray Tune (`status` is cli/status.py).

`plan` never imports Ray, and imports torch only to check the weights of a pretrained model
found in the cache (built on the meta device); `sweep` imports Ray (the driver,
trainables/driver.py) only once every job's configuration, model and dataset is checked.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ddg_sweep.cli.search_flags import add_search_flags, print_search_plan, search_options, searches_for
from ddg_sweep.cli.status import add_concurrency_flag, check_concurrency, describe
from ddg_sweep.cli.train import add_hparam_flags, add_location_flags, hparam_overrides
from ddg_sweep.errors import UserError
from ddg_sweep.layout import SweepFolder
from ddg_sweep.test_hooks import hook_value
from ddg_sweep.trackers import DEFAULT_PROJECT, EXTRA, TRACKERS, TrackingOptions, check_trackers

DEFAULT_OUTPUT_DIR = "sweep_out"


class _SpaceFlag(argparse.Action):
    """--space and --preset set the same thing; messages name the flag the user typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.space, namespace.space_flag = values, option_string.lstrip("-")


def _add_job_flags(parser: argparse.ArgumentParser, default_space: str | None) -> None:
    from search_spaces import SPACES

    parser.add_argument("--space", "--preset", dest="space", action=_SpaceFlag, default=default_space,
                        required=not default_space, metavar="NAME|FILE",
                        help=f"{', '.join(SPACES)}, or a .py/.json space file"
                             + (f" (default {default_space})" if default_space else ""))
    parser.set_defaults(space_flag="preset" if default_space else "space")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help=f"sweep folder (default {DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--datasets", nargs="+", help="only these datasets")
    parser.add_argument("--algorithms", nargs="+", help="only these algorithms")
    parser.add_argument("--test-envs", type=int, nargs="+", help="only jobs whose test envs are among these")
    parser.add_argument("--trial-seeds", type=int, nargs="+", help="trial seeds (default: the space's)")
    parser.add_argument("--n-hparams", type=int, help="random space: hparams seeds 1..N (default 20)")
    parser.add_argument("--with-pairs", action="store_true",
                        help="random space: add the two-test-env jobs leave-one-domain-out selection needs")
    parser.add_argument("--steps", type=int, help="training steps of every job (default: the space's)")
    parser.add_argument("--checkpoint-freq", type=int, help="evaluate every K steps (default: the space's)")
    add_location_flags(parser)
    add_hparam_flags(parser)


def _add_ray_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray")
    group.add_argument("--address", help="attach to a running cluster: auto, HOST:PORT or ray://HOST:PORT "
                                         "(default: start a local one)")
    group.add_argument("--gpus-per-trial", type=float, help="default 1 when the cluster has GPUs, else 0")
    group.add_argument("--cpus-per-trial", type=int, help="default 1 on CPUs, else the CPUs per GPU (<= 8)")
    group.add_argument("--max-concurrent", type=int, help="at most this many jobs at once (default: as "
                                                          "resources allow)")
    group.add_argument("--max-failures", type=int, default=2, help="retries of a failing job (default 2)")
    group.add_argument("--retry-failed", action="store_true", help="rerun jobs that failed in earlier sweeps")
    group.add_argument("--num-cpus", type=int, help="CPUs of the local cluster (default: all)")
    group.add_argument("--reuse-workers", action=argparse.BooleanOptionalAction, default=None,
                       help="run one trial after another in the same worker process, saving each trial the "
                            "seconds of importing torch, transformers and diffusers (default: on when every "
                            "job uses the tiny models, off otherwise; the dashboard then names a worker by "
                            "its first trial)")
    group.add_argument("--no-dashboard", action="store_true", help="start the local cluster without dashboard")
    group.add_argument("--dashboard-host", default="127.0.0.1", help="dashboard bind address (default 127.0.0.1)")
    group.add_argument("--dashboard-port", type=int, help="dashboard port (default Ray's, 8265)")
    group.add_argument("--tracker", action="append", choices=TRACKERS, default=None,
                       help="also log every trial (hparams, checkpoint metrics) to this tracker; repeatable. "
                            f"Needs the {EXTRA} extra: pip install -e \".[{EXTRA}]\"")
    group.add_argument("--mlflow-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a SQLite "
                                            "store in OUT/mlruns, no server needed)")
    group.add_argument("--tracking-project", default=DEFAULT_PROJECT,
                       help=f"MLflow experiment and W&B project (default {DEFAULT_PROJECT})")
    group.add_argument("--device", default="auto", help="device of each run: auto, cpu or cuda")
    group.add_argument("--num-workers", type=int, help="data loader workers per environment")


def register(subparsers) -> None:
    plan = subparsers.add_parser("plan", help="dry run: every job, its state, counts, a GPU-hour estimate",
                                 description="List a sweep's jobs and their states; needs no data, no weights.")
    _add_job_flags(plan, default_space=None)
    add_search_flags(plan, scheduler=False)
    plan.add_argument("--format", choices=("text", "json"), default="text")
    add_concurrency_flag(plan)
    plan.set_defaults(func=run_plan)

    sweep = subparsers.add_parser("sweep", help="run a space's jobs on Ray Tune, one trial per job",
                                  description="Run every job of a space that is not done yet.")
    _add_job_flags(sweep, default_space=None)
    add_search_flags(sweep, scheduler=True)
    _add_ray_flags(sweep)
    sweep.set_defaults(func=run_sweep_command)

    bench = subparsers.add_parser("full-benchmark", help="sweep, aggregate and tables in one command",
                                  description="Sweep, then aggregate into OUT/aggregate, then write the "
                                              "tables (markdown, LaTeX) into OUT/tables.")
    _add_job_flags(bench, default_space="paper")
    add_search_flags(bench, scheduler=True)
    _add_ray_flags(bench)
    bench.set_defaults(func=run_full_benchmark)


def _locations(args) -> dict:
    keys = ("data_dir", "student_path", "clip_path", "sd_path", "device", "num_workers", "eval_all_splits")
    return {k: getattr(args, k, None) for k in keys if getattr(args, k, None) is not None}


def _jobs(args):
    from search_spaces import SpaceOptions, space_jobs

    options = SpaceOptions(
        datasets=tuple(args.datasets) if args.datasets else None,
        algorithms=tuple(args.algorithms) if args.algorithms else None,
        test_envs=tuple(args.test_envs) if args.test_envs is not None else None,
        trial_seeds=tuple(args.trial_seeds) if args.trial_seeds is not None else None,
        n_hparams=args.n_hparams, with_pairs=args.with_pairs, steps=args.steps,
        checkpoint_freq=args.checkpoint_freq, models=args.models, overrides=hparam_overrides(args))
    if args.steps is not None and args.steps <= 0:
        raise UserError(f"--steps must be > 0, got {args.steps}")
    if any(seed < 0 for seed in args.trial_seeds or ()):
        raise UserError(f"--trial-seeds must be >= 0, got {' '.join(map(str, args.trial_seeds))}")
    return space_jobs(args.space, options, kind=args.space_flag)


def run_plan(args) -> int:
    from ddg_sweep.estimate import estimate
    from ddg_sweep.jobs import build_plan, steps_left, validate_job

    check_concurrency(args)
    options = search_options(args, need_packages=False)
    jobs = _jobs(args)
    for job in jobs:
        validate_job(job, args.output_dir, _locations(args), need_data=False)
    searches = searches_for(args, jobs, options)
    problems = _plan_problems(jobs, args)
    if searches:
        print_search_plan(searches, options, args, args.format)
        _print_problems(problems, jobs, args)
        return 0
    plan = build_plan(jobs, args.output_dir)
    cost = estimate(steps_left(plan, args.output_dir), args.output_dir, args.max_concurrent,
                    bool(args.eval_all_splits))
    if args.format == "json":
        print(json.dumps(plan.to_json() | cost.to_json() | {"problems": problems}, indent=1))
        return 0
    print(f"{'job_id':20}  {'algorithm':9} {'dataset':14} {'test_envs':9} {'trial':>5} {'hp':>3}  state")
    for job in jobs:
        print(f"{job.job_id:20}  {job.algorithm:9} {job.dataset:14} {','.join(map(str, job.test_envs)):9} "
              f"{job.trial_seed:>5} {job.hparams_seed:>3}  {plan.states[job.job_id]}")
    _print_problems(problems, jobs, args)
    _print_counts(plan.counts())
    print("\n".join(describe(cost)))
    return 0


def _plan_problems(jobs, args) -> list[str]:
    """What the sweep's preflight would refuse; the datasets only when --data-dir is given."""
    from ddg_sweep.preflight import sweep_problems

    locations = _locations(args)
    return sweep_problems(jobs, locations, with_data="data_dir" in locations)


def _print_problems(problems: list[str], jobs, args) -> None:
    if args.format == "json":
        return
    if not problems:
        if not args.data_dir and all(job.hparams.get("models") == "tiny" for job in jobs):
            return  # nothing to check: the tiny models and DemoDigits are built by the sweep
        checked = "the models and data" if args.data_dir else "the models (datasets: give --data-dir)"
        print(f"preflight: no problem with {checked}")
        return
    print(f"preflight: {len(problems)} problem(s) a sweep would refuse:")
    for line in problems:
        print(f"  {line}")


def _print_counts(counts: dict) -> None:
    def line(c: dict) -> str:
        return ", ".join(f"{v} {k}" for k, v in c.items() if k != "total") + f" (of {c['total']})"

    print(f"jobs: {line(counts['total'])}")
    for title in ("by_dataset", "by_algorithm"):
        for name, c in counts[title].items():
            print(f"  {name:14} {line(c)}")


def _sweep_options(args, trackers: tuple[str, ...]):
    from trainables.cluster import SweepOptions

    for flag in ("max_concurrent", "num_cpus"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise UserError(f"--{flag.replace('_', '-')} must be > 0, got {value}")
    if args.max_failures < 0:
        raise UserError(f"--max-failures must be >= 0, got {args.max_failures}")
    return SweepOptions(address=args.address, gpus_per_trial=args.gpus_per_trial,
                        cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent,
                        max_failures=args.max_failures, retry_failed=args.retry_failed,
                        dashboard=not args.no_dashboard, dashboard_host=args.dashboard_host,
                        dashboard_port=args.dashboard_port, num_cpus=args.num_cpus,
                        reuse_workers=args.reuse_workers,
                        tracking=TrackingOptions(trackers, args.mlflow_uri, args.tracking_project))


RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the entrypoint of a submitted Ray Job


def ray_job_id() -> str | None:
    """The submission id when this process is the entrypoint of `ray job submit`, else None."""
    try:
        config = json.loads(os.environ.get(RAY_JOB_ENV) or "{}")
    except ValueError:
        return None
    return ((config.get("metadata") or {}) if isinstance(config, dict) else {}).get("job_submission_id")


def _as_ray_job(args) -> None:
    """A Ray Job's entrypoint attaches to the job's cluster and writes OUT where it outlives the job."""
    job = ray_job_id()
    if not job:
        return
    if not Path(args.output_dir).is_absolute():
        raise UserError(f"--output-dir {args.output_dir} is relative, and Ray Job {job} runs in a temporary copy "
                        "of its --working-dir that Ray deletes; pass an absolute --output-dir on storage every "
                        "node shares")
    if not args.address:
        args.address = "auto"
        print(f"running as Ray Job {job}: attaching to its cluster (--address auto)", flush=True)


def _sweep(args):
    _as_ray_job(args)
    trackers = check_trackers(args.tracker)  # a missing optional package is refused before anything else
    options = search_options(args)
    jobs = _jobs(args)
    from ddg_sweep.jobs import validate_job

    configs = {job.job_id: validate_job(job, args.output_dir, _locations(args), need_data=True)
               for job in jobs}  # one-line errors before Ray is even imported; the jobs' only validation
    searches = searches_for(args, jobs, options)
    say = lambda line: print(line, flush=True)  # noqa: E731
    from ddg_sweep.preflight import preflight

    preflight(jobs, _locations(args), say=say)  # every model and dataset, before any cluster or GPU
    if searches:
        from trainables.driver import run_search

        return run_search(searches, args.output_dir, _locations(args), _sweep_options(args, trackers), options,
                          say=say)
    from trainables.driver import run_sweep

    return run_sweep(jobs, configs, args.output_dir, _locations(args), _sweep_options(args, trackers), say=say)


def run_sweep_command(args) -> int:
    result = _sweep(args)
    return 1 if result.failed else 0


def run_full_benchmark(args) -> int:
    started = time.time()
    result = _sweep(args)
    out = SweepFolder(args.output_dir)
    from ddg_sweep.report.aggregate import make_aggregate
    from ddg_sweep.report.plots.figures import make_plots

    from search_spaces import space_rows

    made = make_aggregate(out.runs, out.aggregate, rows_by=space_rows(args.space, args.space_flag))
    print(f"aggregate: {made.summary.get('runs', '?')} runs -> {out.aggregate}", flush=True)
    pause = hook_value("aggregate_pause")  # tests only: a window to kill full-benchmark mid-aggregation
    if pause is not None:
        time.sleep(pause)
    # one rendering pass, from memory: AGG/tables.txt and OUT/tables/
    written = made.write_tables(out.path, formats=("markdown", "latex"), include_search=bool(args.search))
    print("tables: " + ", ".join(str(p) for p in written))
    figures, _ = make_plots(out.aggregate, out.plots)
    print("plots: " + ", ".join(str(p) for p in figures))
    print(f"full-benchmark finished in {time.time() - started:.0f} s")
    return 1 if result.failed else 0
