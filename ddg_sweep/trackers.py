"""Experiment trackers a sweep can log to (`--tracker`): names, what each needs, where it writes.

Nothing here imports Ray or a tracker; the Tune callbacks are `trainables/tracking.py`.
The trackers are optional: `pip install -e ".[tracking]"` installs them, and asking for one
that is missing is a one-line error naming that extra, before anything runs.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ddg_sweep.errors import UserError
from ddg_sweep.layout import SweepFolder

TRACKERS = ("tensorboard", "mlflow", "wandb")
EXTRA = "tracking"
# tracker -> (modules it imports, the pip names that provide them)
REQUIRES = {
    "tensorboard": (("tensorboardX",), "tensorboardX"),
    "mlflow": (("mlflow", "sqlalchemy", "alembic"), "mlflow-skinny, sqlalchemy and alembic"),
    "wandb": (("wandb",), "wandb"),
}
# What each trial logs: the metrics of every checkpoint report (trainables/ddg_trainable.py).
METRICS = ("step", "loss", "held_out_acc", "val_acc", "images_per_s", "stage")
DEFAULT_PROJECT = "ddg-sweep"  # MLflow experiment and W&B project


@dataclass(frozen=True)
class TrackingOptions:
    trackers: tuple[str, ...] = ()
    mlflow_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else a SQLite store in OUT/mlruns
    project: str = DEFAULT_PROJECT


def check_trackers(trackers) -> tuple[str, ...]:
    """The trackers asked for, each once, in order; one-line errors for unknown or missing ones."""
    chosen = tuple(dict.fromkeys(trackers or ()))
    for name in chosen:
        if name not in TRACKERS:
            raise UserError(f"unknown --tracker {name!r}; choose among {', '.join(TRACKERS)}")
        modules, packages = REQUIRES[name]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(f"--tracker {name} needs {packages} ({', '.join(missing)} not installed): "
                            f"pip install -e \".[{EXTRA}]\" (or pip install \"ddg-sweep[{EXTRA}]\")")
    return chosen


def mlflow_store(out: Path, uri: str | None) -> tuple[str, str | None]:
    """(tracking URI, artifact location or None for the server's own): the flag, then
    $MLFLOW_TRACKING_URI, then a SQLite store in OUT/mlruns that needs no server and no network."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    folder = SweepFolder(Path(out).resolve()).mlruns
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def wandb_mode() -> str:
    """$WANDB_MODE if set; online when the user has logged in (API key or netrc); else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return "online" if "api.wandb.ai" in netrc.read_text() else "offline"
    except OSError:
        return "offline"


def job_params(job: dict) -> dict:
    """A trial's hyperparameters as trackers take them: the job's identity and its resolved hparams,
    flat, with scalar values (test envs as text, e.g. "0" or "0,1")."""
    config = job["run_config"]
    params = {"job_id": job["job_id"], "algorithm": config["algorithm"], "dataset": config["dataset"],
              "test_envs": ",".join(map(str, config["test_envs"])), "trial_seed": config["trial_seed"],
              "hparams_seed": config["hparams_seed"], "steps": config["steps"],
              "checkpoint_freq": config["checkpoint_freq"]}
    for name, value in config["hparams"].items():
        params[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return params


def tracked_metrics(result: dict) -> dict:
    return {k: result[k] for k in METRICS if isinstance(result.get(k), (int, float))}
