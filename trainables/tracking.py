"""Tune callbacks for `--tracker`: Ray's own TensorBoard, MLflow and W&B loggers, told what a job is.

Ray's loggers log a trial's whole Tune config and every number Tune adds to a result; here
each trial logs the job's identity and resolved hparams (`ddg_sweep.trackers.job_params`)
and its checkpoint metrics (step, loss, held-out and validation accuracy, images/s, stage)
at the training step, under the job id as run name. One sweep is one parent: a TensorBoard
folder OUT/tensorboard/<sweep>, an MLflow parent run (children tagged mlflow.parentRunId),
a W&B group.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TRAINING_ITERATION

from ddg_sweep.layout import SweepFolder
from ddg_sweep.trackers import TrackingOptions, job_params, mlflow_store, tracked_metrics, wandb_mode

WANDB_RUNS = "wandb"  # the subfolder W&B itself makes in the folder it is given

def _params(trial) -> dict:
    return job_params(trial.config["job"])


class TensorBoardTracker(TBXLoggerCallback):
    """Event files in OUT/tensorboard/<sweep>/<job_id>/: one scalar per metric at the training step,
    and the job's hparams (TensorBoard's HParams tab) when the trial ends."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = Path(folder)

    def log_trial_start(self, trial):
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        self._trial_writer[trial] = self._summary_writer_cls(str(self.folder / str(trial)), flush_secs=30)
        self._trial_result[trial] = {}

    def log_trial_result(self, iteration, trial, result):
        metrics = tracked_metrics(result)
        if "step" not in metrics:
            return
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        writer, step = self._trial_writer[trial], int(metrics["step"])
        logged = {name: value for name, value in metrics.items() if not math.isnan(value)}
        for name, value in logged.items():
            writer.add_scalar(name, value, global_step=step)
        self._trial_result[trial] = logged  # the metrics next to the hparams when the trial ends
        writer.flush()

    def _try_log_hparams(self, trial, result):
        from tensorboardX.summary import hparams

        writer = self._trial_writer[trial].file_writer
        for summary in hparams(hparam_dict=_params(trial), metric_dict=result):
            writer.add_summary(summary)


class MLflowTracker(MLflowLoggerCallback):
    """One MLflow run per job (run name: the job id) under one parent run per sweep."""

    def __init__(self, tracking_uri: str, artifact_location: str | None, experiment: str, sweep: str):
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment, tags={"ddg_sweep.sweep": sweep})
        self.artifact_location, self.sweep, self.parent_id = artifact_location, sweep, None

    def setup(self, *args, **kwargs):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment_name)
        experiment_id = (experiment.experiment_id if experiment else
                         client.create_experiment(self.experiment_name, artifact_location=self.artifact_location))
        self.parent_id = client.create_run(experiment_id, run_name=self.sweep,
                                           tags={"ddg_sweep.sweep": self.sweep}).info.run_id
        self.tags = {**self.tags, "mlflow.parentRunId": self.parent_id}
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial):
        if trial not in self._trial_runs:
            tags = {**self.tags, "trial_name": str(trial), "job_id": trial.config["job"]["job_id"]}
            self._trial_runs[trial] = self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
        self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=_params(trial))

    def log_trial_result(self, iteration, trial, result):
        metrics = tracked_metrics(result)
        if "step" in metrics:
            self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=metrics,
                                         step=int(metrics["step"]))

    def on_experiment_end(self, trials, **info):
        self.mlflow_util.end_run(run_id=self.parent_id, status="FINISHED")


class WandbTracker(WandbLoggerCallback):
    """One W&B run per job (name: the job id) in a group per sweep; offline unless logged in."""

    def log_trial_start(self, trial):
        kwargs = dict(id=trial.trial_id, name=str(trial), resume=False, reinit=True, allow_val_change=True,
                      group=self.group, project=self.project, config=_params(trial))
        kwargs.update(self.kwargs)
        self._start_logging_actor(trial, list(self._exclude_results) + ["config"], **kwargs)

    def log_trial_result(self, iteration, trial, result):
        metrics = tracked_metrics(result)
        if "step" in metrics:  # W&B's step axis is the training step
            super().log_trial_result(iteration, trial, {**metrics, TRAINING_ITERATION: int(metrics["step"])})


def tracker_callbacks(options: TrackingOptions, out: Path, sweep: str, say: Callable[[str], None]) -> list:
    callbacks = []
    for name in options.trackers:
        if name == "tensorboard":
            folder = SweepFolder(out).tensorboard / sweep
            callbacks.append(TensorBoardTracker(folder))
            say(f"tracking: TensorBoard event files in {folder} (tensorboard --logdir {SweepFolder(out).tensorboard})")
        elif name == "mlflow":
            uri, artifacts = mlflow_store(out, options.mlflow_uri)
            callbacks.append(MLflowTracker(uri, artifacts, options.project, sweep))
            say(f"tracking: MLflow experiment {options.project}, parent run {sweep}, at {uri}"
                + (f" (mlflow ui --backend-store-uri {uri})" if artifacts else ""))
        elif name == "wandb":
            mode = wandb_mode()
            if mode in ("offline", "disabled"):
                os.environ.setdefault("WANDB_MODE", mode)  # Ray's W&B callback then asks for no API key
            folder = SweepFolder(Path(out).resolve()).wandb
            folder.mkdir(parents=True, exist_ok=True)
            callbacks.append(WandbTracker(project=options.project, group=sweep, mode=mode, dir=str(folder)))
            say(f"tracking: W&B project {options.project}, group {sweep}, {mode}"
                + (f": runs in {folder / WANDB_RUNS} (upload later with `wandb sync`)" if mode == "offline" else ""))
    return callbacks
