"""Named sweeps: one small module each, exposing `jobs(options) -> list[Job]`.

`space_jobs(name_or_file, options)` loads a named space, a user's `.py` file
(defining `jobs(options)`) or a `.json` file (see docs/sweeps.md), then narrows
the jobs to `--datasets`, `--algorithms`, `--test-envs` and `--trial-seeds` and
drops duplicates. `space_ranges(name_or_file)` is what a space lets `--search` draw
(a module's `SEARCH` dict, a JSON file's `"search"` object; see ddg_sweep/search).
`space_rows(name_or_file)` is the hparams whose values make table rows of their own (a
module's `ROWS`, a JSON file's `"rows"`; ddg_sweep/report/select/variants.py).
Nothing here imports torch or Ray.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ddg_sweep.data.catalog import get_dataset_spec
from ddg_sweep.errors import UserError
from ddg_sweep.hparams import ALGORITHMS
from ddg_sweep.jobs import Job, applicable_overrides, check_distinct_runs, make_job

SPACES = ("paper", "baselines", "lmd", "stage1_steps", "cfg_scale", "guidance", "random", "demo", "search")
MODULES = {"random": "random_search"}  # a module named `random` would shadow the standard library's


@dataclass
class SpaceOptions:
    """What the command line says about the jobs; None: the space's own choice."""

    datasets: tuple[str, ...] | None = None
    algorithms: tuple[str, ...] | None = None
    test_envs: tuple[int, ...] | None = None
    trial_seeds: tuple[int, ...] | None = None
    n_hparams: int | None = None
    with_pairs: bool = False
    steps: int | None = None
    checkpoint_freq: int | None = None
    models: str | None = None
    overrides: dict = field(default_factory=dict)  # --lr, --cfg-scale, ...: under the space's own values


def single_test_envs(dataset: str) -> list[tuple[int]]:
    return [(env,) for env in range(get_dataset_spec(dataset).n_envs)]


def pair_test_envs(dataset: str) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(get_dataset_spec(dataset).n_envs), 2))


def grid(options: SpaceOptions, algorithms, datasets, trial_seeds, values: list[dict] | None = None,
         hparams_seeds=(0,), test_envs: Callable[[str], list] = single_test_envs,
         steps: int | None = None, checkpoint_freq: int | None = None) -> list[Job]:
    """Every (algorithm, dataset, test envs, trial seed, hparams seed, grid point).

    `--trial-seeds` replaces the space's seeds; `--datasets`, `--algorithms` and `--test-envs`
    narrow afterwards (`narrow`).

    `values` are hparam grid points (dicts); point k gets hparams_seed k and the defaults
    otherwise, so point 0 should be the paper's defaults. Without `values`, each hparams seed
    draws DomainBed-style (seed 0: the defaults).
    """
    jobs = []
    points = list(enumerate(values)) if values else [(seed, {}) for seed in hparams_seeds]
    for algorithm, dataset in itertools.product(algorithms, datasets):
        for envs, trial_seed, (hparams_seed, point) in itertools.product(
                test_envs(dataset), options.trial_seeds or trial_seeds, points):
            overrides = applicable_overrides(algorithm, options.overrides) | point
            jobs.append(make_job(algorithm, dataset, envs, trial_seed, hparams_seed,
                                 steps=options.steps or steps,
                                 checkpoint_freq=options.checkpoint_freq or checkpoint_freq,
                                 models=options.models, overrides=overrides, draw_hparams=not values))
    return jobs


@functools.lru_cache(maxsize=None)
def _python_module(path: Path):
    """A user's .py space, executed once per process however often it is asked for."""
    spec = importlib.util.spec_from_file_location(f"ddg_user_space_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a user's file: any error is theirs to fix
        raise UserError(f"space file {path} does not load: {type(err).__name__}: {err}") from None
    return module


def _space_from_python(path: Path) -> Callable[[SpaceOptions], list[Job]]:
    module = _python_module(path.resolve())
    if not callable(getattr(module, "jobs", None)):
        raise UserError(f"space file {path} must define `jobs(options) -> list[Job]`")
    return module.jobs


JSON_JOB_KEYS = {"algorithm", "dataset", "test_envs", "trial_seed", "hparams_seed", "steps",
                 "checkpoint_freq", "hparams", "models"}


def _job_from_json(entry: dict, options: SpaceOptions, draw: bool) -> Job:
    unknown = set(entry) - JSON_JOB_KEYS
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(sorted(unknown))} in a job; known: "
                        f"{', '.join(sorted(JSON_JOB_KEYS))}")
    overrides = applicable_overrides(entry["algorithm"], options.overrides) | dict(entry.get("hparams", {}))
    envs = entry["test_envs"]
    return make_job(entry["algorithm"], entry["dataset"], [envs] if isinstance(envs, int) else envs,
                    entry.get("trial_seed", 0), entry.get("hparams_seed", 0),
                    steps=options.steps or entry.get("steps"),
                    checkpoint_freq=options.checkpoint_freq or entry.get("checkpoint_freq"),
                    models=options.models or entry.get("models"), overrides=overrides, draw_hparams=draw)


def _expand_json_grid(spec: dict, options: SpaceOptions) -> list[Job]:
    """`{"grid": {...}}`: list-valued fields multiply; `hparams` lists make grid points."""
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in spec.items() if k != "hparams"}
    if "test_envs" not in axes or axes["test_envs"] == ["single"]:
        axes.pop("test_envs", None)
    hparam_axes = {k: (v if isinstance(v, list) else [v]) for k, v in spec.get("hparams", {}).items()}
    points = [dict(zip(hparam_axes, combo)) for combo in itertools.product(*hparam_axes.values())]
    jobs = []
    for combo in itertools.product(*axes.values()):
        entry = dict(zip(axes, combo))
        envs_list = [entry.pop("test_envs")] if "test_envs" in entry else single_test_envs(entry["dataset"])
        for envs in envs_list:
            for index, point in enumerate(points):
                jobs.append(_job_from_json({**entry, "test_envs": envs, "hparams_seed": index,
                                            "hparams": point}, options, draw=False))
    return jobs


def _space_from_json(path: Path) -> Callable[[SpaceOptions], list[Job]]:
    try:
        spec = json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"space file {path} is not valid JSON: {err}") from None
    if not isinstance(spec, dict) or not ({"jobs", "grid"} & set(spec)):
        raise UserError(f"space file {path} must be an object with \"jobs\": [...] and/or \"grid\": {{...}}")
    unknown = set(spec) - {"jobs", "grid", "search", "rows"}
    if unknown:
        raise UserError(f"space file {path}: unknown key(s) {', '.join(sorted(unknown))}; "
                        "known: jobs, grid, search, rows")

    def jobs(options: SpaceOptions) -> list[Job]:
        try:
            listed = [_job_from_json(e, options, draw=True) for e in spec.get("jobs", [])]
            return listed + (_expand_json_grid(spec["grid"], options) if "grid" in spec else [])
        except UserError as err:
            raise UserError(f"space file {path}: {err}") from None
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise UserError(f"space file {path} is malformed: {type(err).__name__}: {err}") from None
    return jobs


def load_space(name_or_file: str, kind: str = "space") -> Callable[[SpaceOptions], list[Job]]:
    """`kind` names the flag in messages: "space" (--space) or "preset" (--preset)."""
    if name_or_file in SPACES:
        return importlib.import_module(f"search_spaces.{MODULES.get(name_or_file, name_or_file)}").jobs
    path = Path(name_or_file)
    if path.suffix in (".py", ".json"):
        if not path.is_file():
            raise UserError(f"space file {path} does not exist")
        return _space_from_python(path) if path.suffix == ".py" else _space_from_json(path)
    raise UserError(f"unknown {kind} {name_or_file!r}; choose one of {', '.join(SPACES)} "
                    "or pass a .py or .json space file")


def _declared(name_or_file: str, kind: str, attribute: str, key: str, default):
    """What a space declares beside its jobs: a module's `attribute`, a JSON file's `key`."""
    load_space(name_or_file, kind)  # the same one-line errors for a missing or broken file
    path = Path(name_or_file)
    if name_or_file in SPACES:
        module = importlib.import_module(f"search_spaces.{MODULES.get(name_or_file, name_or_file)}")
        return getattr(module, attribute, default)
    if path.suffix == ".py":
        return getattr(_python_module(path.resolve()), attribute, default)
    return json.loads(path.read_text()).get(key, default)


def space_ranges(name_or_file: str, kind: str = "space") -> dict:
    """{hparam: Distribution} a space lets a search draw from; {} for a space of fixed jobs."""
    from ddg_sweep.search.distributions import as_distribution

    raw = _declared(name_or_file, kind, "SEARCH", "search", {})
    where = f"{kind} {name_or_file}"
    if not isinstance(raw, dict) or not all(isinstance(name, str) for name in raw):
        raise UserError(f"{where}: its search ranges must be a mapping from hyperparameter name to range")
    ranges = {}
    for name, value in raw.items():
        try:
            ranges[name] = as_distribution(value)
        except UserError as err:
            raise UserError(f"{where}: search range {name}: {err}") from None
    return ranges


def space_rows(name_or_file: str, kind: str = "space") -> tuple[str, ...]:
    """The hparams a space's table rows are split by (its variants), () for most spaces."""
    from ddg_sweep.report.select.variants import check_rows_by

    raw = _declared(name_or_file, kind, "ROWS", "rows", ())
    if isinstance(raw, str) or not all(isinstance(name, str) for name in raw):
        raise UserError(f"{kind} {name_or_file}: its rows must be a list of hyperparameter names")
    try:
        return check_rows_by(raw)
    except UserError as err:
        raise UserError(f"{kind} {name_or_file}: {err}") from None


def narrow(jobs: list[Job], options: SpaceOptions) -> list[Job]:
    keep = []
    for job in jobs:
        if options.datasets and job.dataset not in options.datasets:
            continue
        if options.algorithms and job.algorithm not in options.algorithms:
            continue
        if options.test_envs is not None and not set(job.test_envs) <= set(options.test_envs):
            continue
        if options.trial_seeds is not None and job.trial_seed not in options.trial_seeds:
            continue
        keep.append(job)
    return keep


def _check_test_envs_exist(jobs: list[Job], options: SpaceOptions) -> None:
    """A --test-envs index no dataset of the sweep has is a typo, not an empty selection."""
    datasets = sorted(set(options.datasets or ()) or {job.dataset for job in jobs})
    for env in options.test_envs or ():
        specs = [get_dataset_spec(d) for d in datasets]
        if specs and not any(0 <= env < spec.n_envs for spec in specs):
            ranges = ", ".join(f"{spec.name} 0..{spec.n_envs - 1}" for spec in specs)
            raise UserError(f"--test-envs {env} is out of range: {ranges}")


def space_jobs(name_or_file: str, options: SpaceOptions, kind: str = "space") -> list[Job]:
    """The space's jobs, narrowed by the options, unique by job_id, in a stable order."""
    for dataset in options.datasets or ():
        get_dataset_spec(dataset)
    for algorithm in options.algorithms or ():
        if algorithm not in ALGORITHMS:
            raise UserError(f"--algorithms: unknown algorithm {algorithm!r}; "
                            f"choose among {', '.join(ALGORITHMS)}")
    produced = load_space(name_or_file, kind)(options)
    if not isinstance(produced, (list, tuple)) or not all(isinstance(j, Job) for j in produced):
        raise UserError(f"{kind} {name_or_file} must return a list of ddg_sweep.jobs.Job")
    _check_test_envs_exist(produced, options)
    unique = list({job.job_id: job for job in narrow(list(produced), options)}.values())
    if not unique:
        raise UserError(f"{kind} {name_or_file} has no jobs for these --datasets/--algorithms/"
                        "--test-envs/--trial-seeds")
    check_distinct_runs(unique)
    return unique
