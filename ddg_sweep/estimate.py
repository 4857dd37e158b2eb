"""What the jobs left will cost: GPU-hours and wall time, from training, evaluation and startup.

Per job (`job_cost`), for what it has left:
- training: each stage's steps left x seconds per step;
- evaluation: the images its checkpoints left evaluate (ddg_sweep/splits.py: what selection reads,
  every split at the last one, and every split once more for SWAD's averaged model) / images per s;
- startup: once per run that has anything left: data listing, model loading, checkpoint writes,
  the SWAD average; a fresh worker process also imports torch and friends first (`worker start`).
Every figure is measured from this sweep folder's runs where they hold it (`measure`), else a
constant below, named with the card and the doc it comes from. Wall time hands the jobs, in
order, to `concurrency` slots as Tune does, plus the start of a local Ray cluster.
Nothing here imports torch or Ray.
"""
from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ddg_sweep.config import RunConfig
from ddg_sweep.data.catalog import get_dataset_spec
from ddg_sweep.hparams import frozen_passes, resolve_step
from ddg_sweep.jobs import Job, read_json, runs_dir
from ddg_sweep.layout import RunFolder, SweepFolder, read_jsonl
from ddg_sweep.splits import checkpoint_steps, evaluated_splits, split_sizes

# Seconds per training step by model family, algorithm and stage. "paper": one H100 at the
# paper's settings (32 images x 3 domains, SD at 512 px); DDG's measured by `bench --models
# paper-arch` (docs/performance.md: Stage I 666 img/s, Stage II 47 img/s with UNet checkpointing,
# which 512 px needs on 80 GB), ERM and VL2V estimated from the same student and CLIP passes.
# "tiny": the demo's batch (16 images x 3 domains) in a narrowed demo sweep, two trials on this
# project's shared 2-core machine, data loading included (docs/performance.md).
STEP_SECONDS = {
    "paper": {"ERM": {None: 0.08}, "VL2V": {"align": 0.144, "align_backbone": 0.20},
              "DDG": {"align": 0.144, "diffusion": 2.03}},
    "tiny": {"ERM": {None: 0.13}, "VL2V": {"align": 0.12, "align_backbone": 0.12},
             "DDG": {"align": 0.07, "diffusion": 0.57}},
}
STEP_IMAGES = {"paper": 96, "tiny": 48}  # the batch each was measured at; a step scales with its images
# Stage II = Stage I's work (student, CLIP teacher) + UNet passes, in forward-pass units: the
# student's pass 3 (a backward costs about two forwards), 4 under UNet checkpointing (the paper
# models at 512 px), each no-grad pass 1. Both figures ran `prediction` at w = 3: one no-grad pass.
UNET_GRAD_UNITS = {"paper": 4, "tiny": 3}
MEASURED_FROZEN_PASSES = 1
PAPER_CARD = "one NVIDIA H100 80GB"  # where the paper figures were measured (docs/performance.md)
# Not measured on a GPU yet, estimates derived in docs/performance.md ("What plan counts"):
# evaluation is bound by JPEG decoding in a trial's 7 loader workers (~240 images/s per core),
# the student's bf16 forward would manage ~5,000; startup is imports, data listing, loading
# SD v1.4 + CLIP ViT-L/14 + the student, and ~1 GB checkpoint writes. The tiny figures were
# measured with the tiny step times above.
EVAL_IMAGES_PER_S = {"paper": 1700.0, "tiny": 3000.0}
STARTUP_SECONDS = {"paper": 60.0, "tiny": 2.0}
WORKER_START_SECONDS = {"paper": 10.0, "tiny": 20.0}
# The 28 s that narrowed demo sweep spent outside any trial: the local cluster's start and stop;
# of them about 6 s after its last trial (measured from the folder: the rest, `launch` below).
LAUNCH_SECONDS = 30.0
TEARDOWN_SECONDS = 6.0
FIGURES = ("steps", "evaluation", "startup")


def _family(hparams: dict) -> str:
    return "tiny" if hparams.get("models") == "tiny" else "paper"


def _unet_passes(algorithm: str, hparams: dict, stage) -> tuple[int, int]:
    """(no-grad UNet passes, noise draws) of a Stage II step; (0, 0) for every other step."""
    if algorithm != "DDG" or stage != "diffusion":
        return 0, 0
    passes = frozen_passes(hparams.get("guidance_form", "prediction"), float(hparams.get("cfg_scale", 3.0)))
    return len(passes), int(hparams.get("n_noise", 1))


def step_key(dataset: str, algorithm: str, test_envs, hparams: dict, stage) -> tuple:
    """What a step's time depends on: one key for a job's stage and for a record alike."""
    images = int(hparams.get("batch_size", 32)) * (get_dataset_spec(dataset).n_envs - len(test_envs))
    return (dataset, algorithm, stage, _family(hparams), images, _unet_passes(algorithm, hparams, stage))


def constant_step_seconds(job: Job, stage) -> float:
    family = _family(job.hparams)
    images = job.hparams.get("batch_size", 32) * (get_dataset_spec(job.dataset).n_envs - len(job.test_envs))
    seconds = STEP_SECONDS[family][job.algorithm][stage]
    frozen, noise = _unet_passes(job.algorithm, job.hparams, stage)
    if noise:  # the UNet's share, rescaled to this step's passes and noise draws
        base, grad = STEP_SECONDS[family]["DDG"]["align"], UNET_GRAD_UNITS[family]
        seconds = base + (seconds - base) * noise * (grad + frozen) / (grad + MEASURED_FROZEN_PASSES)
    return seconds * images / STEP_IMAGES[family]


@dataclass
class Measured:
    """Sums over this folder's records: steps, evaluation, and each finished run's startup."""

    steps: dict = field(default_factory=dict)  # step_key -> [seconds, steps]
    evaluation: dict = field(default_factory=dict)  # (dataset, family) -> [seconds, images]
    startup: dict = field(default_factory=dict)  # (algorithm, family) -> [seconds per run]
    worker_start: dict = field(default_factory=dict)  # family -> [seconds per fresh worker]
    launch: float | None = None  # the last sweep's start (jobs.json written) to its first trial's
    records: int = 0
    runs: int = 0

    def step_seconds(self, key) -> float | None:
        seconds, steps = self.steps.get(key, (0.0, 0))
        return seconds / steps if steps else None

    def images_per_s(self, key) -> float | None:
        seconds, images = self.evaluation.get(key, (0.0, 0))
        return images / seconds if seconds > 0 else None

    def startup_seconds(self, key) -> float | None:
        """(algorithm, family): that algorithm's runs, else every run of the family."""
        values = self.startup.get(key) or [v for (_, family), vs in self.startup.items() if family == key[1]
                                           for v in vs]
        return sum(values) / len(values) if values else None

    def worker_start_seconds(self, family) -> float | None:
        values = self.worker_start.get(family)
        return sum(values) / len(values) if values else None


def measure(output_dir) -> Measured:
    """Every figure this folder's runs measured. A record's `step_time` is the mean over the steps
    since the previous record; `eval_time` and `eval_images` are its evaluation's. A run that
    finished in one attempt also gives its startup: its wall time (node.json's start to `done`)
    less its steps and evaluations (SWAD's at the run's own rate). A worker process's first run
    also started the worker: the difference to the others' startup is the worker start."""
    measured, runs, first = Measured(), [], {}
    root = runs_dir(output_dir)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        run = _read_run(folder, measured)
        if run is not None:
            runs.append(run)
        node = read_json(RunFolder(folder).node)  # every trial counts for its worker's first, measured or not
        if isinstance(node, dict) and isinstance(node.get("time"), (int, float)):
            worker = (node.get("hostname"), node.get("pid"))
            first[worker] = min(first.get(worker, node["time"]), node["time"])
    measured.runs = len(runs)
    _split_startup(runs, measured, first)
    measured.launch = _launch(Path(output_dir), root)
    return measured


def _launch(out: Path, root: Path) -> float | None:
    """Seconds from the last sweep's start (it writes jobs.json first) to its first trial's start
    (node.json): the local cluster's start, Tune's setup and the sweep's own preparation."""
    try:
        began = SweepFolder(out).manifest.stat().st_mtime
    except OSError:
        return None
    starts = [float(node["time"]) for node in (read_json(p) for p in root.glob(f"*/{RunFolder.NODE}"))
              if isinstance(node, dict) and isinstance(node.get("time"), (int, float)) and node["time"] >= began]
    return min(starts) - began if starts else None


def _read_run(folder: Path, measured: Measured) -> tuple | None:
    """Adds the run's records to `measured`; (worker, start, (algorithm, family), startup seconds)
    for a run that finished in one attempt, else None."""
    previous, trained, evaluated, images, run = -1, 0.0, 0.0, 0, None
    folder = RunFolder(folder)
    for record in read_jsonl(folder.results):
        try:
            args, hparams, step = record["args"], record.get("hparams") or {}, int(record["step"])
            key = step_key(args["dataset"], args["algorithm"], args.get("test_envs", ()), hparams,
                           record.get("stage"))
            seconds = float(record["step_time"]) * (step - previous)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if step <= previous:
            continue
        measured.records += 1
        run = run or (args["algorithm"], _family(hparams), args["dataset"])
        entry = measured.steps.setdefault(key, [0.0, 0])
        entry[0], entry[1] = entry[0] + seconds, entry[1] + step - previous
        trained, previous = trained + seconds, step
        eval_time, eval_images = record.get("eval_time"), record.get("eval_images")
        if isinstance(eval_time, (int, float)) and isinstance(eval_images, int) and eval_images > 0:
            entry = measured.evaluation.setdefault((args["dataset"], _family(hparams)), [0.0, 0])
            entry[0], entry[1] = entry[0] + eval_time, entry[1] + eval_images
            evaluated, images = evaluated + eval_time, images + eval_images
    node, done = read_json(folder.node), folder.done
    if not (run and node and done.exists() and node.get("attempt") == 1 and evaluated > 0):
        return None
    swad = sum(get_dataset_spec(run[2]).images) * evaluated / images
    try:
        wall = done.stat().st_mtime - float(node["time"])
    except (KeyError, TypeError, ValueError, OSError):
        return None
    return ((node.get("hostname"), node.get("pid")), float(node["time"]), run[:2],
            max(wall - trained - evaluated - swad, 0.0))


def _split_startup(runs: list[tuple], measured: Measured, first: dict) -> None:
    """Startup per (algorithm, family) from the runs that were not their worker's first (`first`:
    each worker's first trial start); worker
    start per family from the first ones, less the startup of their algorithm (else family).
    Where every run of a family was a worker's first (Tune starts a worker per trial unless it
    reuses them), their startup is theirs less the worker start constant."""
    firsts = {index for index, (worker, start, _, _) in enumerate(runs) if start <= first[worker]}
    for index, (_, _, key, seconds) in enumerate(runs):
        if index not in firsts:
            measured.startup.setdefault(key, []).append(seconds)
    usual = {key: measured.startup_seconds(key) for _, _, key, _ in runs}
    only_firsts = []
    for index in sorted(firsts):
        _, _, key, seconds = runs[index]
        if usual[key] is not None:
            measured.worker_start.setdefault(key[1], []).append(max(seconds - usual[key], 0.0))
        else:
            only_firsts.append((key, seconds))
    for key, seconds in only_firsts:
        worker = measured.worker_start_seconds(key[1])
        worker = WORKER_START_SECONDS[key[1]] if worker is None else worker
        measured.startup.setdefault(key, []).append(max(seconds - worker, 0.0))


# ---- the cost of what is left -------------------------------------------------------------------

HOLDOUT_FRACTION = next(f.default for f in fields(RunConfig) if f.name == "holdout_fraction")


@dataclass
class JobCost:
    """Seconds one job has left, by part, and which figures were measured or constants."""

    train: float = 0.0
    evaluation: float = 0.0
    startup: float = 0.0
    measured: set = field(default_factory=set)
    constants: set = field(default_factory=set)

    @property
    def seconds(self) -> float:
        return self.train + self.evaluation + self.startup


def stage_steps_left(job: Job, steps_left: int) -> dict:
    """Remaining steps per stage: Stage I then Stage II for VL2V and DDG; one stage for ERM."""
    stages = list(STEP_SECONDS["paper"][job.algorithm])
    if len(stages) == 1:
        return {stages[0]: steps_left}
    done = job.steps - steps_left
    stage1 = min(resolve_step(job.hparams.get("stage1_steps", 0), job.steps), job.steps)
    first = max(stage1 - done, 0)
    return {stages[0]: first, stages[1]: steps_left - first}


def images_left(job: Job, steps_left: int, eval_all_splits: bool = False) -> int:
    """Images the checkpoints in the last `steps_left` steps evaluate, plus SWAD's model's evaluation
    of every split at the end."""
    spec = get_dataset_spec(job.dataset)
    sizes = split_sizes(spec.images, HOLDOUT_FRACTION)
    images = sum(spec.images) if steps_left > 0 else 0
    for step in checkpoint_steps(job.steps - steps_left, job.steps, job.checkpoint_freq):
        splits = evaluated_splits(spec.n_envs, job.test_envs, step == job.steps - 1, eval_all_splits)
        images += sum(sizes[name] for name in splits)
    return images


def job_cost(job: Job, steps_left: int, measured: Measured, eval_all_splits: bool = False) -> JobCost:
    cost = JobCost()
    if steps_left <= 0:
        return cost

    def figure(name: str, value: float | None, constant: float) -> float:
        (cost.constants if value is None else cost.measured).add(name)
        return constant if value is None else value

    for stage, steps in stage_steps_left(job, steps_left).items():
        if steps:
            key = step_key(job.dataset, job.algorithm, job.test_envs, job.hparams, stage)
            cost.train += steps * figure("steps", measured.step_seconds(key), constant_step_seconds(job, stage))
    family = _family(job.hparams)
    rate = figure("evaluation", measured.images_per_s((job.dataset, family)), EVAL_IMAGES_PER_S[family])
    cost.evaluation = images_left(job, steps_left, eval_all_splits) / rate
    cost.startup = figure("startup", measured.startup_seconds((job.algorithm, family)), STARTUP_SECONDS[family])
    return cost


def default_concurrency(jobs: list[Job]) -> int:
    """What a local cluster runs at once: one trial per CPU for tiny jobs on CPUs, else one per GPU,
    and `plan` knows of one GPU (sweep.trial_resources)."""
    if jobs and all(_family(job.hparams) == "tiny" for job in jobs):
        return os.cpu_count() or 1
    return 1


@dataclass
class Estimate:
    costs: list[tuple[Job, JobCost]]
    concurrency: int
    concurrency_given: bool
    measured: Measured
    worker_start: float  # seconds per fresh worker process
    workers_started: int
    launch: float  # seconds a sweep spends outside its trials (a local cluster's start and stop)
    wall_seconds: float  # launch + the jobs handed out in order to `concurrency` slots

    def part(self, name: str) -> float:
        return sum(getattr(cost, name) for _, cost in self.costs)

    @property
    def startup_seconds(self) -> float:
        return self.part("startup") + self.workers_started * self.worker_start

    @property
    def gpu_seconds(self) -> float:
        return self.part("train") + self.part("evaluation") + self.startup_seconds

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600

    def figures(self, kind: str) -> list[str]:
        used = set().union(*(getattr(cost, kind) for _, cost in self.costs)) if self.costs else set()
        measured_workers = all(self.measured.worker_start_seconds(f) is not None for f in self.families())
        if self.workers_started and kind == ("measured" if measured_workers else "constants"):
            used.add("startup")
        return [name for name in FIGURES if name in used]

    def families(self) -> set[str]:
        return {_family(job.hparams) for job, cost in self.costs if cost.seconds}

    @property
    def source(self) -> str:
        measured, constants = bool(self.figures("measured")), bool(self.figures("constants"))
        return {(True, False): "measured", (False, True): "constants", (True, True): "measured+constants",
                (False, False): "nothing left"}[(measured, constants)]

    def to_json(self) -> dict:
        hours = lambda seconds: round(seconds / 3600, 4)  # noqa: E731
        return {"gpu_hours": round(self.gpu_hours, 3), "gpu_hours_source": self.source,
                "gpu_hours_by_part": {"train": hours(self.part("train")), "evaluation": hours(self.part("evaluation")),
                                      "startup": hours(self.startup_seconds)},
                "wall_seconds": round(self.wall_seconds, 1), "wall_hours": hours(self.wall_seconds),
                "concurrency": self.concurrency,
                "launch_seconds": round(self.launch, 1) if self.wall_seconds else 0.0,
                "figures": {"measured": self.figures("measured"), "constants": self.figures("constants"),
                            "records": self.measured.records, "runs": self.measured.runs}}


def estimate(work: list[tuple[Job, int]], output_dir, concurrency: int | None = None,
             eval_all_splits: bool = False, measured: Measured | None = None) -> Estimate:
    """The cost of `work`, (job, steps left) in the order a sweep hands the jobs to Tune."""
    measured = measure(output_dir) if measured is None else measured
    jobs = [job for job, _ in work]
    slots = concurrency or default_concurrency(jobs)
    costs = [(job, job_cost(job, left, measured, eval_all_splits)) for job, left in work]
    families = {_family(job.hparams) for job, cost in costs if cost.seconds}
    reuse = families == {"tiny"}  # sweep.py reuses workers when every job is tiny
    worker_start = max((WORKER_START_SECONDS[f] if measured.worker_start_seconds(f) is None
                        else measured.worker_start_seconds(f)) for f in families) if families else 0.0
    free = [(0.0, slot, False) for slot in range(slots)]  # (free from, slot, has a worker)
    started = 0
    for _, cost in costs:
        if not cost.seconds:
            continue
        at, slot, has_worker = heapq.heappop(free)
        fresh = not (reuse and has_worker)
        started += fresh
        heapq.heappush(free, (at + cost.seconds + (worker_start if fresh else 0.0), slot, True))
    launch = LAUNCH_SECONDS if measured.launch is None else measured.launch + TEARDOWN_SECONDS
    wall = launch + max(at for at, _, _ in free) if started else 0.0
    return Estimate(costs, slots, concurrency is not None, measured, worker_start, started, launch, wall)
