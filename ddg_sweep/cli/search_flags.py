"""The search flags of `plan`, `sweep` and `full-benchmark`, and what `plan --search` prints.

Imports neither Ray nor torch: `plan --search` reads the trials from the job folders alone.
"""
from __future__ import annotations

import argparse
import json

from ddg_sweep.errors import UserError
from ddg_sweep.search.objective import METRIC_WORDS, METRICS
from ddg_sweep.search.searches import DEFAULT_NUM_SAMPLES, SCHEDULERS, SCOPES, SEARCHERS, SearchOptions

ONLY_WITH_SEARCH = (("num_samples", "--num-samples"), ("metric", "--metric"), ("search_scope", "--search-scope"),
                    ("scheduler", "--scheduler"), ("asha_grace_period", "--asha-grace-period"),
                    ("asha_reduction_factor", "--asha-reduction-factor"))


def add_search_flags(parser: argparse.ArgumentParser, scheduler: bool) -> None:
    group = parser.add_argument_group("search (a space with ranges, e.g. --space search; docs/sweeps.md)")
    group.add_argument("--search", choices=SEARCHERS, help="draw configurations with Optuna's TPE, HyperOpt's TPE "
                                                           "or at random (optuna, hyperopt: the search extra)")
    group.add_argument("--num-samples", type=int, help="trials per search, counting those already in OUT "
                                                       f"(default {DEFAULT_NUM_SAMPLES})")
    group.add_argument("--metric", choices=METRICS, help="what the searcher maximises: val_acc (default; "
                                                         f"{METRIC_WORDS['val_acc']}) or oracle "
                                                         "(test-domain validation, labelled ORACLE everywhere)")
    group.add_argument("--search-scope", choices=SCOPES, help="one search per (dataset, test env set), the "
                                                              "default, or per dataset (objective: the mean "
                                                              "over its test env sets)")
    if scheduler:
        group.add_argument("--scheduler", choices=SCHEDULERS, help="stop unpromising trials early (ASHA, per "
                                                                   "search; its clock: checkpoints)")
        group.add_argument("--asha-grace-period", type=int, help="checkpoints before ASHA may stop a trial "
                                                                 "(default 1)")
        group.add_argument("--asha-reduction-factor", type=float, help="ASHA keeps the top 1/factor at each "
                                                                      "rung (default 2)")


def search_options(args, need_packages: bool = True) -> SearchOptions | None:
    """The search the flags ask for, checked; None without --search (other search flags refused then)."""
    from ddg_sweep.search.searches import check_options

    if not args.search:
        given = [flag for attr, flag in ONLY_WITH_SEARCH if getattr(args, attr, None) is not None]
        if given:
            raise UserError(f"{given[0]} only applies to a search: add --search {'|'.join(SEARCHERS)}")
        return None
    grace, factor = getattr(args, "asha_grace_period", None), getattr(args, "asha_reduction_factor", None)
    options = SearchOptions(
        searcher=args.search, num_samples=args.num_samples if args.num_samples is not None else DEFAULT_NUM_SAMPLES,
        metric=args.metric or "val_acc", scope=args.search_scope or "env", scheduler=getattr(args, "scheduler", None),
        grace_period=1 if grace is None else grace, reduction_factor=2.0 if factor is None else factor)
    for value, flag in ((grace, "--asha-grace-period"), (factor, "--asha-reduction-factor")):
        if value is not None and options.scheduler is None:
            raise UserError(f"{flag} only applies with --scheduler asha")
    check_options(options, need_packages)
    return options


def searches_for(args, jobs, options: SearchOptions | None):
    """The searches of the command (None for a sweep of fixed jobs); a space with ranges needs --search."""
    from ddg_sweep.search.searches import build_searches, check_schedule, space_name
    from search_spaces import space_ranges

    ranges = space_ranges(args.space, args.space_flag)
    if options is None:
        if ranges:
            raise UserError(f"{args.space_flag} {args.space} declares search ranges ({', '.join(sorted(ranges))}): "
                            f"pass --search {'|'.join(SEARCHERS)} and --num-samples N")
        return None
    if getattr(args, "tracker", None):
        raise UserError("--tracker is not supported with --search yet; drop --tracker (the search's own log is "
                        "OUT/searches/<search_id>.jsonl)")
    searches = build_searches(jobs, ranges, options, space_name(args.space))
    check_schedule(searches, options)
    return searches


def print_search_plan(searches, options: SearchOptions, args, fmt: str) -> None:
    from ddg_sweep.cli.status import describe
    from ddg_sweep.estimate import estimate

    out = args.output_dir
    progress = _progress(searches, options, out)
    cost = estimate([work for p in progress for work in p.work_left(out)], out, args.max_concurrent,
                    bool(args.eval_all_splits))
    if fmt == "json":
        print(json.dumps({"searches": [_as_json(p) for p in progress]} | cost.to_json(), indent=1))
        return
    print(f"objective: {options.metric} ({METRIC_WORDS[options.metric]})")
    for entry in progress:
        print(entry.describe())
    totals = {state: sum(p.counts()[state] for p in progress)
              for state in ("done", "running", "partial", "pending", "stopped", "failed")}
    print(f"trials: {', '.join(f'{n} {s}' for s, n in totals.items())}, {sum(p.to_go for p in progress)} to go "
          f"(--num-samples {options.num_samples} per search, {len(searches)} search(es))")
    print("\n".join(describe(cost)))


def _progress(searches, options, out):
    from ddg_sweep.search.searches import progress_of

    return progress_of(searches, out, options, detect_running=True)


def _as_json(progress) -> dict:
    search, best = progress.search, progress.best()
    return {"search_id": search.search_id, "label": search.label, "algorithm": search.algorithm,
            "dataset": search.dataset, "test_envs": [list(s.test_envs) for s in search.slots],
            "trial_seed": search.trial_seed, "searcher": search.searcher, "metric": search.metric,
            "scope": search.scope, "num_samples": progress.num_samples, "counts": dict(progress.counts()),
            "to_go": progress.to_go, "best": None if best is None else {"trial": best.index, "objective": best.objective,
                                                                        "config": best.config},
            "trials": [{"trial": t.index, "state": t.state, "objective": t.objective, "config": t.config,
                        "jobs": t.job_ids} for t in progress.trials]}
