"""`--tracker tensorboard|mlflow|wandb`: after one narrowed sweep, each tracker's own reader finds
one run per job with the job's hyperparameters and its checkpoint metrics at the training steps.

MLflow is read with `mlflow.search_runs` from the default store in OUT/mlruns; TensorBoard with
its EventAccumulator and HParams plugin data; W&B's offline run files (`WANDB_MODE=offline`, no
login, no network) with W&B's own record schema (`wandb.proto`), since its reader of local files
is an interactive terminal UI.
"""
import glob
import json
import os
import struct
import sys
from pathlib import Path

import pytest

from helpers.cli import run_cli
from ddg_sweep.run import main

STEPS, FREQ = 40, 20
RECORDED = [0, 20, 39]
METRICS = ("step", "loss", "held_out_acc", "val_acc", "images_per_s", "stage")


@pytest.fixture(scope="module")
def tracked_sweep(tmp_path_factory, ray_address):
    tmp = tmp_path_factory.mktemp("tracking")
    space = tmp / "space.json"
    space.write_text(json.dumps({"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0], [1]],
                                          "steps": STEPS, "checkpoint_freq": FREQ, "hparams": {"batch_size": 8}}}))
    out = tmp / "OUT"
    with pytest.MonkeyPatch.context() as env:  # a user who never logged in to W&B, no MLflow server
        for name in ("WANDB_MODE", "WANDB_API_KEY", "MLFLOW_TRACKING_URI"):
            env.delenv(name, raising=False)
        env.setenv("RAY_AUTH_TOKEN_PATH", os.environ.get("RAY_AUTH_TOKEN_PATH")
                   or str(Path.home() / ".ray" / "auth_token"))
        env.setenv("HOME", str(tmp))  # no ~/.netrc with a W&B login
        proc = run_cli("sweep", "--space", space, "--output-dir", out, "--address", ray_address,
                       "--tracker", "tensorboard", "--tracker", "mlflow", "--tracker", "wandb",
                       check=True, timeout=600)
    assert "sweep finished: 2/2 jobs done" in proc.stdout
    jobs = {j["job_id"]: j for j in json.loads((out / "jobs.json").read_text())["jobs"]}
    records = {job_id: [json.loads(line) for line in (out / "runs" / job_id / "results.jsonl").read_text().splitlines()]
               for job_id in jobs}
    assert all([r["step"] for r in rs] == RECORDED for rs in records.values())
    sweep = next((out / "ray_results").iterdir()).name
    return {"out": out, "stdout": proc.stdout, "jobs": jobs, "records": records, "sweep": sweep}


def held_out(record: dict, job: dict) -> float:
    envs = job["test_envs"]
    return sum(record[f"env{e}_in_acc"] for e in envs) / len(envs)


def test_mlflow_lists_one_run_per_job_with_its_hparams_and_metrics_under_one_parent(tracked_sweep):
    import mlflow

    out = tracked_sweep["out"]
    uri = f"sqlite:///{out.resolve() / 'mlruns' / 'mlflow.db'}"
    assert f"MLflow experiment ddg-sweep, parent run {tracked_sweep['sweep']}, at {uri}" in tracked_sweep["stdout"]
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["ddg-sweep"])
    (parent,) = runs[runs["tags.mlflow.runName"] == tracked_sweep["sweep"]]["run_id"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent]
    assert sorted(children["tags.mlflow.runName"]) == sorted(tracked_sweep["jobs"])  # the job id as run name
    client = mlflow.MlflowClient()
    for _, run in children.iterrows():
        job = tracked_sweep["jobs"][run["tags.mlflow.runName"]]
        assert run["status"] == "FINISHED"
        assert run["params.algorithm"] == "ERM" and run["params.dataset"] == "DemoDigits"
        assert run["params.test_envs"] == ",".join(map(str, job["test_envs"]))
        assert all(run[f"params.{name}"] == str(value) for name, value in job["hparams"].items())
        assert all(f"metrics.{m}" in run for m in METRICS)
        history = client.get_metric_history(run["run_id"], "held_out_acc")
        records = tracked_sweep["records"][job["job_id"]]
        assert [h.step for h in history] == RECORDED
        assert [h.value for h in history] == pytest.approx([held_out(r, job) for r in records])
        assert [h.value for h in client.get_metric_history(run["run_id"], "loss")] == pytest.approx(
            [r["loss"] for r in records])
    assert not list(out.parent.glob("mlruns")) and not Path("mlruns").exists()  # nothing outside OUT


def test_tensorboard_event_files_hold_the_metrics_and_the_hparams_per_job(tracked_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    folder = tracked_sweep["out"] / "tensorboard" / tracked_sweep["sweep"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(tracked_sweep["jobs"])
    for job_id, job in tracked_sweep["jobs"].items():
        events = EventAccumulator(str(folder / job_id))
        events.Reload()
        assert set(events.Tags()["scalars"]) == set(METRICS)
        records = tracked_sweep["records"][job_id]
        assert [e.step for e in events.Scalars("held_out_acc")] == RECORDED
        assert [e.value for e in events.Scalars("held_out_acc")] == pytest.approx(
            [held_out(r, job) for r in records], rel=1e-6)
        start = plugin_data_pb2.HParamsPluginData.FromString(
            events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content).session_start_info
        hparams = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
        assert hparams["job_id"] == job_id and hparams["algorithm"] == "ERM"
        assert hparams["lr"] == pytest.approx(job["hparams"]["lr"]) and hparams["batch_size"] == 8


def wandb_records(path: Path):
    """The records of a .wandb file (W&B's LevelDB-style log of `wandb.proto` Records)."""
    from wandb.proto import wandb_internal_pb2

    raw, block = path.read_bytes(), 32768
    assert raw[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if length == 0 and kind == 0:  # the rest of a block is padding
            pos += left
            continue
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        pending = data if kind in (1, 2) else pending + data
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def test_wandb_offline_runs_one_per_job_in_the_sweeps_group_with_hparams_and_history(tracked_sweep):
    out = tracked_sweep["out"]
    assert "W&B project ddg-sweep" in tracked_sweep["stdout"] and "offline" in tracked_sweep["stdout"]
    files = sorted(glob.glob(str(out / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len(files) == 2
    seen = set()
    for path in files:
        records = list(wandb_records(Path(path)))
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        job = tracked_sweep["jobs"][run.display_name]  # the job id as run name
        seen.add(job["job_id"])
        assert run.run_group == tracked_sweep["sweep"] and run.project == "ddg-sweep"
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert config["job_id"] == job["job_id"] and config["lr"] == job["hparams"]["lr"]
        history = [{item.nested_key[0] if item.nested_key else item.key: json.loads(item.value_json)
                    for item in r.history.item} for r in records if r.WhichOneof("record_type") == "history"]
        assert [h["_step"] for h in history] == RECORDED
        assert [h["held_out_acc"] for h in history] == pytest.approx(
            [held_out(r, job) for r in tracked_sweep["records"][job["job_id"]]])
        assert all(set(METRICS) <= set(h) for h in history)
        assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [0]
    assert seen == set(tracked_sweep["jobs"])


def test_a_tracker_whose_package_is_missing_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))
    code = main(["sweep", "--space", "demo", "--output-dir", str(tmp_path / "OUT"), "--tracker", "mlflow"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: --tracker mlflow needs mlflow-skinny") and 'pip install -e ".[tracking]"' in err[0]
    assert not (tmp_path / "OUT").exists() and not (tmp_path / "ray").exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
