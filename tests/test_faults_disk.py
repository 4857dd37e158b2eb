"""A full or failing output folder: a clear error, and earlier results intact and resumable."""
import errno
import json
import subprocess

import pytest

from helpers.cli import assert_one_line_error, run_cli
from helpers.tmpfs import mounted_tmpfs
from ddg_sweep import train as train_module
from ddg_sweep.config import RunConfig
from ddg_sweep.errors import UserError
from ddg_sweep.hparams import resolve_hparams

ARGS = ["train", "--dataset", "DemoDigits", "--algorithm", "ERM", "--batch-size", "8", "--test-envs", "0",
        "--steps", "13", "--checkpoint-freq", "4"]


def steps_of(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_failing_checkpoint_write_keeps_earlier_results(tmp_path, monkeypatch):
    config = RunConfig(dataset="DemoDigits", algorithm="ERM", test_envs=(0,), steps=13, checkpoint_freq=4,
                       hparams=resolve_hparams("ERM", "DemoDigits", overrides={"batch_size": 8}),
                       output_dir=str(tmp_path / "RUN"))
    real_save, calls = train_module._save_checkpoint, []

    def save_then_fill_disk(state, path, torch):
        calls.append(state["step"])
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(state, path, torch)

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_fill_disk)
    with pytest.raises(UserError) as err:
        train_module.run(config, log=lambda m: None)
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    run_dir = tmp_path / "RUN"
    assert steps_of(run_dir)[:2] == [0, 4]  # the step-8 record may be there; its checkpoint is not
    assert not (run_dir / "done").exists()
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)
    train_module.run(config, log=lambda m: None)
    assert steps_of(run_dir) == [0, 4, 8, 12]
    assert "resuming" in (run_dir / "train.log").read_text()


@pytest.fixture
def small_tmpfs(tmp_path):
    yield from mounted_tmpfs(tmp_path / "small", "1200k")


def test_full_disk_is_a_one_line_error_and_the_run_resumes(small_tmpfs):
    run_dir = small_tmpfs / "RUN"
    proc = run_cli(*ARGS, "--output-dir", run_dir)
    assert_one_line_error(proc, "No space left on device", "intact")
    kept = steps_of(run_dir)
    assert kept and kept == sorted(set(kept))
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    run_cli(*ARGS, "--output-dir", run_dir, check=True)
    assert steps_of(run_dir) == [0, 4, 8, 12]
    assert (run_dir / "done").exists()
