"""A sweep's preflight: every model and dataset its jobs need, checked once, before Ray starts.

The driver (`sweep`, `full-benchmark`) calls `preflight` after the jobs' configurations are
validated and before a cluster is started or a GPU reserved: a missing or incomplete model
(`models/sources.py`: configs and safetensors headers, no weight read) or a dataset with a
bad layout or an unreadable image (`data/folders.py`, `data/verify.py`) is one line naming
the path or repo and the fix. The image check is remembered per class folder, so the trials
that read the same folders afterwards do not decode them again. `plan` prints the same
problems and does not fail.

The tiny models are not checked here: the driver builds and checks them (`build_local_assets`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ddg_sweep.errors import UserError

MODEL_FLAGS = ("student_path", "clip_path", "sd_path")


def model_problems(jobs, locations: dict) -> list[str]:
    """One line per problem with the models of the jobs that load pretrained weights."""
    from ddg_sweep.models.sources import check_model_sources

    paths = {flag: locations.get(flag) for flag in MODEL_FLAGS}
    problems: list[str] = []
    seen = set()
    for job in jobs:
        if job.hparams.get("models") == "tiny" and not any(paths.values()):
            continue
        key = (job.algorithm, job.hparams["backbone"], job.hparams.get("models"))
        if key in seen:
            continue
        seen.add(key)
        for line in check_model_sources(job.algorithm, job.hparams, **paths):
            if line not in problems:
                problems.append(line)
    return problems


def _on_disk(jobs) -> list:
    from ddg_sweep.data.catalog import get_dataset_spec

    specs = (get_dataset_spec(dataset) for dataset in sorted({job.dataset for job in jobs}))
    return [spec for spec in specs if not spec.builtin]


def folder_problems(jobs, data_dir) -> list[str]:
    """Each on-disk dataset's folder exists under --data-dir (cheap: checked first)."""
    if data_dir is None:
        return [f"{spec.name} needs --data-dir: the folder that holds {spec.folder}/" for spec in _on_disk(jobs)]
    return [f"{Path(data_dir) / spec.folder} does not exist: --data-dir must hold the {spec.name} folder "
            f"{spec.folder}/" for spec in _on_disk(jobs) if not (Path(data_dir) / spec.folder).is_dir()]


def data_problems(jobs, data_dir) -> list[str]:
    """Layout and every image of each on-disk dataset whose folder exists (remembered per class folder)."""
    from ddg_sweep.data.folders import check_dataset

    if data_dir is None:
        return []
    return [line for spec in _on_disk(jobs) if (Path(data_dir) / spec.folder).is_dir()
            for line in check_dataset(spec, data_dir)]


def sweep_problems(jobs, locations: dict, with_data: bool = True) -> list[str]:
    """Every problem, cheapest checks first: dataset folders, models, then the datasets' images."""
    if not with_data:
        return model_problems(jobs, locations)
    data_dir = locations.get("data_dir")
    return folder_problems(jobs, data_dir) + model_problems(jobs, locations) + data_problems(jobs, data_dir)


def preflight(jobs, locations: dict, say: Callable[[str], None] = print) -> None:
    """Raise one line (the first problem, and how many more) if any model or dataset is not fine."""
    began = time.time()
    problems = sweep_problems(jobs, locations)
    if problems:
        more = (f" (and {len(problems) - 1} more problems; `plan` with the same flags lists them all)"
                if len(problems) > 1 else "")
        raise UserError(problems[0] + more)
    from ddg_sweep.data.catalog import get_dataset_spec

    datasets = sorted({job.dataset for job in jobs})
    pretrained = any(job.hparams.get("models") != "tiny" for job in jobs)
    if pretrained or not all(get_dataset_spec(dataset).builtin for dataset in datasets):
        say(f"preflight: models and data of {len(jobs)} jobs ({', '.join(datasets)}) checked in "
            f"{time.time() - began:.1f} s")
