"""Jobs: what one sweep entry computes, its stable id, its folder and its state.

A Job is (algorithm, dataset, test_envs, trial_seed, hparams_seed, resolved
hparams, steps, checkpoint_freq, protocol version); `job_id` hashes exactly
those fields, never paths, hosts or Ray ids, so the same job has the same id in
every process and on every machine. Each job owns `OUT/runs/<job_id>/`; its
state is read from that folder alone. Nothing here imports torch or Ray.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ddg_sweep import PROTOCOL_VERSION
from ddg_sweep.config import RunConfig
from ddg_sweep.data.catalog import check_test_envs, get_dataset_spec
from ddg_sweep.errors import UserError
from ddg_sweep.hparams import check_hparams, identity_hparams, resolve_hparams
from ddg_sweep.layout import RunFolder, SweepFolder, last_jsonl_record
from ddg_sweep.seeding import identity_id, seed_hash

JOB_ID_DIGITS = 20  # hex digits of a job id (ddg_sweep.seeding.identity_id)
# sweep.py and trainables/ still import these names from here
RUNNING_WINDOW_S = 300  # a job whose train.log changed this recently counts as running
STATES = ("done", "stopped", "running", "failed", "partial", "pending")

@dataclass(frozen=True, eq=True)
class Job:
    algorithm: str
    dataset: str
    test_envs: tuple[int, ...]
    trial_seed: int
    hparams_seed: int
    hparams: dict = field(hash=False)
    steps: int
    checkpoint_freq: int
    protocol: int = PROTOCOL_VERSION

    def identity(self) -> dict:
        return {"algorithm": self.algorithm, "dataset": self.dataset, "test_envs": list(self.test_envs),
                "trial_seed": self.trial_seed, "hparams_seed": self.hparams_seed,
                "hparams": self.hparams, "steps": self.steps, "checkpoint_freq": self.checkpoint_freq,
                "protocol": self.protocol}

    @property
    def job_id(self) -> str:
        return identity_id(self.identity() | {"hparams": identity_hparams(self.hparams)}, JOB_ID_DIGITS)

    @property
    def seed(self) -> int:
        """The run seed, a function of the identity alone (DomainBed's seed_hash)."""
        return seed_hash(self.job_id)

    def to_json(self) -> dict:
        return {"job_id": self.job_id, **self.identity()}

    @classmethod
    def from_json(cls, obj: dict) -> "Job":
        fields = {k: obj[k] for k in ("algorithm", "dataset", "trial_seed", "hparams_seed",
                                      "hparams", "steps", "checkpoint_freq")}
        return cls(test_envs=tuple(obj["test_envs"]), protocol=obj.get("protocol", PROTOCOL_VERSION),
                   **fields)

    def describe(self) -> str:
        envs = ",".join(map(str, self.test_envs))
        return (f"{self.job_id} {self.algorithm} {self.dataset} test_envs={envs} "
                f"trial={self.trial_seed} hp={self.hparams_seed}")


def make_job(algorithm: str, dataset: str, test_envs, trial_seed: int = 0, hparams_seed: int = 0,
             steps: int | None = None, checkpoint_freq: int | None = None, models: str | None = None,
             overrides: dict | None = None, draw_hparams: bool = True) -> Job:
    """A job with fully resolved hparams.

    `draw_hparams=False` keeps the defaults (plus overrides) whatever the hparams_seed:
    grid spaces number their grid points with hparams_seed so that reports tell them apart.
    """
    spec = get_dataset_spec(dataset)
    envs = check_test_envs(spec, test_envs)
    if trial_seed < 0 or hparams_seed < 0:
        raise UserError(f"trial and hparams seeds must be >= 0, got {trial_seed} and {hparams_seed}")
    hparams = resolve_hparams(algorithm, dataset, hparams_seed if draw_hparams else 0, trial_seed,
                              models, overrides)
    steps = int(steps if steps is not None else spec.default_steps)
    checkpoint_freq = int(checkpoint_freq if checkpoint_freq is not None else spec.checkpoint_freq)
    if steps <= 0 or checkpoint_freq <= 0:
        raise UserError(f"steps and checkpoint_freq must be > 0, got {steps} and {checkpoint_freq}")
    check_hparams(hparams, steps=steps)
    return Job(algorithm, dataset, envs, int(trial_seed), int(hparams_seed), hparams, steps, checkpoint_freq)


def applicable_overrides(algorithm: str, overrides: dict) -> dict:
    """The user's hparam flags that apply to this algorithm (a sweep mixes algorithms)."""
    from ddg_sweep.hparams import BY_NAME

    return {k: v for k, v in overrides.items() if v is not None and algorithm in BY_NAME[k].algorithms}


# ---- folders and states -------------------------------------------------------------------------

def runs_dir(output_dir) -> Path:
    return SweepFolder(Path(output_dir).resolve()).runs


def job_dir(output_dir, job: Job | str) -> Path:
    return runs_dir(output_dir) / (job if isinstance(job, str) else job.job_id)


def run_config(job: Job, output_dir, locations: dict | None = None) -> RunConfig:
    """The RunConfig of a job: its identity, its folder, and where data and weights are."""
    return RunConfig(
        dataset=job.dataset, algorithm=job.algorithm, test_envs=job.test_envs, steps=job.steps,
        hparams=dict(job.hparams), output_dir=str(job_dir(output_dir, job)),
        checkpoint_freq=job.checkpoint_freq, trial_seed=job.trial_seed, hparams_seed=job.hparams_seed,
        seed=job.seed, extra_args={"job_id": job.job_id, "protocol_version": job.protocol},
        **{k: v for k, v in (locations or {}).items() if v is not None},
    )


def validate_job(job: Job, output_dir, locations: dict | None = None, need_data: bool = True) -> RunConfig:
    """Every check that needs no data and no weights (and, with need_data, that --data-dir is given)."""
    config = run_config(job, output_dir, locations)
    checked = config if need_data else dataclasses.replace(config, data_dir=config.data_dir or ".")
    checked.validate()
    return config


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def job_state(folder: Path, detect_running: bool = False, now: float | None = None) -> str:
    """done | stopped | running | failed | partial | pending, from the job's folder alone."""
    folder = RunFolder(folder)
    if folder.done.exists():
        return "done"
    if folder.stopped.exists():
        return "stopped"
    log_time = _mtime(folder.log)
    error_time = _mtime(folder.error)
    if detect_running and log_time is not None:
        recent = (now or time.time()) - log_time < RUNNING_WINDOW_S
        if recent and (error_time is None or log_time > error_time):
            return "running"
    if error_time is not None:
        return "failed"
    if folder.results.exists() or folder.checkpoint.exists():
        return "partial"
    return "pending"


def last_record(folder: Path) -> dict | None:
    """The last record of a job's results.jsonl (ddg_sweep.layout.read_jsonl's rule)."""
    return last_jsonl_record(RunFolder(folder).results)


# ---- the plan -----------------------------------------------------------------------------------

@dataclass
class Plan:
    """A sweep's jobs and their states; what they have left costs is ddg_sweep/estimate.py."""

    jobs: list[Job]
    states: dict[str, str]  # job_id -> state

    def counts(self) -> dict:
        by_dataset: dict[str, Counter] = {}
        by_algorithm: dict[str, Counter] = {}
        for job in self.jobs:
            state = self.states[job.job_id]
            by_dataset.setdefault(job.dataset, Counter())[state] += 1
            by_algorithm.setdefault(job.algorithm, Counter())[state] += 1
        total = Counter(self.states[j.job_id] for j in self.jobs)
        as_dict = lambda c: {s: c.get(s, 0) for s in STATES if c.get(s, 0)} | {"total": sum(c.values())}
        return {"total": as_dict(total),
                "by_dataset": {k: as_dict(v) for k, v in by_dataset.items()},
                "by_algorithm": {k: as_dict(v) for k, v in by_algorithm.items()}}

    def to_run(self, retry_failed: bool) -> list[Job]:
        wanted = {"pending", "partial", "running"} | ({"failed"} if retry_failed else set())
        return [j for j in self.jobs if self.states[j.job_id] in wanted]

    def to_json(self) -> dict:
        jobs = [{"job_id": j.job_id, "algorithm": j.algorithm, "dataset": j.dataset,
                 "test_envs": list(j.test_envs), "trial_seed": j.trial_seed, "hparams_seed": j.hparams_seed,
                 "hparams": j.hparams, "steps": j.steps, "state": self.states[j.job_id]} for j in self.jobs]
        return {"jobs": jobs, "counts": self.counts()}


def check_distinct_runs(jobs: list[Job]) -> None:
    """Reports key a run by (dataset, algorithm, test_envs, trial_seed, hparams_seed): keep it unique."""
    seen: dict[tuple, Job] = {}
    for job in jobs:
        key = (job.dataset, job.algorithm, job.test_envs, job.trial_seed, job.hparams_seed)
        other = seen.setdefault(key, job)
        if other.job_id != job.job_id:
            raise UserError(f"jobs {other.job_id} and {job.job_id} are both {job.algorithm} on {job.dataset} "
                            f"test_envs {list(job.test_envs)} trial {job.trial_seed} hparams_seed "
                            f"{job.hparams_seed} but differ in hparams or steps; give each hparams "
                            "configuration its own hparams_seed")


def remaining_steps(job: Job, folder: Path, state: str) -> int:
    if state in ("done", "stopped"):
        return 0
    record = last_record(folder) if state in ("partial", "running", "failed") else None
    done_steps = int(record["step"]) + 1 if record and "step" in record else 0
    return max(job.steps - done_steps, 0)


def steps_left(plan: Plan, output_dir, jobs: list[Job] | None = None) -> list[tuple[Job, int]]:
    """(job, steps left) for every job of the plan (or of `jobs`), in order."""
    return [(job, remaining_steps(job, job_dir(output_dir, job), plan.states[job.job_id]))
            for job in (plan.jobs if jobs is None else jobs)]


def build_plan(jobs: list[Job], output_dir, detect_running: bool = False) -> Plan:
    now = time.time()
    return Plan(jobs, {job.job_id: job_state(job_dir(output_dir, job), detect_running, now) for job in jobs})


# ---- the manifest: every job planned into OUT ---------------------------------------------------

def write_manifest(output_dir, jobs: list[Job]) -> Path:
    from ddg_sweep.io import atomic_write_json

    path = SweepFolder(Path(output_dir).resolve()).manifest
    path.parent.mkdir(parents=True, exist_ok=True)
    known = {j["job_id"]: j for j in (read_json(path) or {}).get("jobs", [])}
    known.update({j.job_id: j.to_json() for j in jobs})
    atomic_write_json(path, {"jobs": list(known.values())})
    return path


def read_manifest(output_dir) -> list[Job]:
    """Jobs of the manifest plus any job folder that has a config.json the manifest lacks."""
    out = SweepFolder(output_dir)
    jobs = {}
    for obj in (read_json(out.manifest) or {}).get("jobs", []):
        try:
            jobs[obj["job_id"]] = Job.from_json(obj)
        except (KeyError, TypeError):
            continue
    root = out.runs
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in jobs):
            config = read_json(RunFolder(folder).config)
            if config:
                try:
                    jobs[folder.name] = Job(config["algorithm"], config["dataset"], tuple(config["test_envs"]),
                                            config["trial_seed"], config["hparams_seed"], config["hparams"],
                                            config["steps"], config["checkpoint_freq"])
                except (KeyError, TypeError):
                    continue
    return list(jobs.values())


def log_progress(folder: Path) -> tuple[int | None, float | None]:
    """(latest logged step, steps per second over the last logged interval) from train.log."""
    path = RunFolder(folder).log
    try:
        lines = path.read_text().splitlines()[-50:]
    except OSError:
        return None, None
    points = []
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) >= 4 and parts[2] == "step":
            try:
                stamp = time.mktime(time.strptime(f"{parts[0]} {parts[1]}", "%Y-%m-%d %H:%M:%S"))
                points.append((int(parts[3].split(":", 1)[0]), stamp))
            except ValueError:
                continue
    if not points:
        return None, None
    step, stamp = points[-1]
    rate = None
    if len(points) >= 2 and stamp > points[-2][1] and step > points[-2][0]:
        rate = (step - points[-2][0]) / (stamp - points[-2][1])
    return step, rate


def node_of(folder: Path) -> dict | None:
    return read_json(RunFolder(folder).node)
