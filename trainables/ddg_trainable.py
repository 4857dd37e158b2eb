"""The Ray Tune function trainable: one job through `ddg_sweep.train.run`.

`train_job(config)` gets `config["job"]`: the job's id and RunConfig JSON (plus
the environment the run needs). The run folder's checkpoint.pt is the truth:
on a retry Tune hands back the last reported checkpoint (which only records the
job and its step) and `run()` resumes from checkpoint.pt by itself. An
exception writes `error.json` (message, attempt count) into the job folder and
is re-raised, so Tune records it and retries up to FailureConfig.max_failures.
Per-trial gauges (step, images/s, stage, held-out and validation accuracy),
tagged by job_id, go to Ray's metrics (`/metrics` of each node, Grafana).

`DDGTrial` is the class Tune runs: `train_job` wrapped as Tune does it, with a repr
that names the job (algorithm, dataset, test envs, seeds, job id), so that the Ray
dashboard's Actors page and Ray's log prefixes tell trials apart.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from ray import tune

from ddg_sweep.config import RunConfig
from ddg_sweep.io import append_line, atomic_write_json
from ddg_sweep.layout import RunFolder

STAGE_NUMBER = {"align": 1, "diffusion": 2}  # DDG's stages; 0 for algorithms without stages
# Payload key of the fault_after_step test hook (ddg_sweep/test_hooks.py): raise once, on the first attempt.
FAULT_AFTER_STEP = "fault_after_step"

# Ray metric names of the per-trial gauges (Prometheus adds the `ray_` prefix).
GAUGES = {"step": "ddg_sweep_step", "images_per_s": "ddg_sweep_images_per_second", "stage": "ddg_sweep_stage",
          "held_out_acc": "ddg_sweep_held_out_acc", "val_acc": "ddg_sweep_val_acc"}
_gauges: dict | None = None


def _trial_gauges() -> dict:
    """Created once per worker process (Ray registers a metric by name)."""
    global _gauges
    if _gauges is None:
        from ray.util.metrics import Gauge

        described = {"step": "latest training step of the job", "images_per_s": "training images per second",
                     "stage": "DDG stage (1 align, 2 diffusion; 0 none)",
                     "held_out_acc": "accuracy on the held-out env(s), in split",
                     "val_acc": "mean out-split accuracy of the training envs"}
        _gauges = {key: Gauge(GAUGES[key], text, tag_keys=("job_id",)) for key, text in described.items()}
    return _gauges


def checkpoint_metrics(record: dict, config: RunConfig) -> dict:
    """The numbers a trial reports at each checkpoint, from one DomainBed record."""
    # every checkpoint evaluates every out split (training envs' in splits only at the last)
    n_envs = sum(1 for key in record if key.startswith("env") and key.endswith("_out_acc"))
    train_envs = [e for e in range(n_envs) if e not in config.test_envs]
    held_out = [record[f"env{e}_in_acc"] for e in config.test_envs]
    val = [record[f"env{e}_out_acc"] for e in train_envs]
    step_time = float(record.get("step_time") or 0.0)
    images = config.hparams.get("batch_size", 0) * len(train_envs)
    return {
        "step": int(record["step"]),
        "steps": config.steps,
        "loss": float(record.get("loss", float("nan"))),
        "stage": STAGE_NUMBER.get(record.get("stage"), 0),
        "images_per_s": images / step_time if step_time > 0 else 0.0,
        "held_out_acc": sum(held_out) / len(held_out),
        "val_acc": sum(val) / len(val) if val else float("nan"),
    }


def _write_node_file(run_dir: Path, job_id: str, attempt: int) -> None:
    import ray

    context = ray.get_runtime_context()
    atomic_write_json(RunFolder(run_dir).node, {
        "job_id": job_id, "node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
        "hostname": os.uname().nodename, "pid": os.getpid(), "attempt": attempt,
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "time": time.time(),
    })


def _previous_attempts(run_dir: Path) -> int:
    """Attempts so far: error.json counts those that raised, node.json also those whose worker was
    killed (they write no error.json)."""
    counts = [0]
    for name, key in ((RunFolder.ERROR, "attempts"), (RunFolder.NODE, "attempt")):
        try:
            counts.append(int(json.loads((run_dir / name).read_text()).get(key, 0)))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return max(counts)


def _write_error(run_dir: Path, job_id: str, err: BaseException, attempts: int) -> None:
    message = f"{type(err).__name__}: {err}".splitlines()[0] if str(err) else type(err).__name__
    atomic_write_json(RunFolder(run_dir).error, {"job_id": job_id, "error": message, "attempts": attempts,
                                             "time": time.time(), "hostname": os.uname().nodename})


def _own_checkpoint(job_id: str):
    """Tune's last checkpoint if it is this job's (a search trial runs several jobs), else None."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        marker = json.loads(Path(folder, "job.json").read_text())
    return marker if marker.get("job_id") == job_id else None


def train_job(config: dict, extra: Callable[[], dict] | None = None) -> None:
    """Tune function trainable: `config["job"]` = {"job_id", "run_config", "env", "threads"}.

    `extra` (a search trial's): more numbers for every report, computed after the record is written."""
    job = config["job"]
    os.environ.update(job.get("env", {}))
    run_config = RunConfig.from_json(job["run_config"])
    job_id = job["job_id"]
    run_dir = Path(run_config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tune_checkpoint = _own_checkpoint(job_id)
    attempt = _previous_attempts(run_dir) + 1
    _write_node_file(run_dir, job_id, attempt)

    import torch

    torch.set_num_threads(max(1, int(job.get("threads", 1))))
    gauges = _trial_gauges()
    tags = {"job_id": job_id}
    fault_after = job.get(FAULT_AFTER_STEP)
    first_try = tune_checkpoint is None and attempt == 1

    def on_checkpoint(record: dict, folder: Path) -> None:
        metrics = checkpoint_metrics(record, run_config)
        for name in GAUGES:
            gauges[name].set(metrics[name], tags=tags)
        with tempfile.TemporaryDirectory(prefix="ddg-ckpt-") as marker:
            # The Tune checkpoint only points at the job; checkpoint.pt in the job folder is the state.
            Path(marker, "job.json").write_text(json.dumps({"job_id": job_id, "step": metrics["step"],
                                                            "run_dir": str(folder)}))
            tune.report({"job_id": job_id, **metrics, **(extra() if extra else {})},
                        checkpoint=tune.Checkpoint.from_directory(marker))
        if fault_after is not None and first_try and metrics["step"] >= fault_after:
            raise RuntimeError(f"injected fault after step {metrics['step']} (test)")

    from ddg_sweep.train import run

    try:
        if tune_checkpoint is not None:
            _log(run_dir, f"retry {attempt}: Tune's last checkpoint was step {tune_checkpoint.get('step')}; "
                          "resuming from this folder's checkpoint.pt")
        outcome = run(run_config, on_checkpoint=on_checkpoint, log=lambda message: None)
    except (SystemExit, KeyboardInterrupt):
        raise  # stopped (Ctrl-C, Tune shutting down), not failed: the next sweep resumes the job
    except BaseException as err:
        _write_error(run_dir, job_id, err, attempt)
        raise
    if outcome.status == "already-done":
        tune.report({"job_id": job_id, "step": run_config.steps - 1, "steps": run_config.steps,
                     **(extra() if extra else {})})


def _log(run_dir: Path, message: str) -> None:
    append_line(RunFolder(run_dir).log, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}")


def trial_label(job: dict) -> str:
    """`DDG DemoDigits test_envs=[0] trial 0 hp 0 job 1a2b3c...`: what the dashboard shows for a trial."""
    config = job.get("run_config", {})
    envs = ",".join(map(str, config.get("test_envs", [])))
    return (f"{config.get('algorithm')} {config.get('dataset')} test_envs=[{envs}] trial {config.get('trial_seed')} "
            f"hp {config.get('hparams_seed')} job {job.get('job_id')}")


def trial_class(function: Callable[[dict], None], name: str, key: str, label: Callable[[dict], str]):
    """Tune's function trainable for `function`, named `name`, whose repr (Ray records it once the actor
    is created: the dashboard's Actors page, log prefixes) is `label(config[key])`."""
    from ray.tune.trainable.function_trainable import wrap_function

    class Trial(wrap_function(function)):
        def __repr__(self):
            payload = (getattr(self, "config", None) or {}).get(key)
            return label(payload) if isinstance(payload, dict) else name

    Trial.__name__ = Trial.__qualname__ = name
    return Trial


DDGTrial = trial_class(train_job, "DDGTrial", "job", trial_label)
