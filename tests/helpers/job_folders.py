"""What a sweep left in its job folders: records, checkpoints, and whether a killed sweep resumed each job right."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from helpers.cli import run_cli
from helpers.processes import kill_group, wait_until_gone


def read_steps(folder: Path) -> list[int]:
    """Steps of a results.jsonl's complete lines (a torn last line, from a kill mid-write, is skipped)."""
    steps = []
    try:
        lines = (folder / "results.jsonl").read_text().splitlines()
    except OSError:
        return steps
    for line in lines:
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:
            break
    return steps


def expected_steps(folder: Path) -> list[int]:
    config = json.loads((folder / "config.json").read_text())
    steps, freq = config["steps"], config["checkpoint_freq"]
    return [s for s in range(steps) if s % freq == 0 or s == steps - 1]


def snapshot(folder: Path) -> dict:
    """Every file below `folder`: its bytes and mtime."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def job_folders(out: Path) -> list[Path]:
    return sorted(p for p in (out / "runs").iterdir() if p.is_dir())


def checkpoint_step(folder: Path) -> int:
    import torch

    return int(torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)["step"])


def steps_redone(checkpoint_step: int, checkpoint_time: float, recorded: list[int], step_time: float,
                 freq: int, killed_at: float, dead_at: float) -> tuple[int, int]:
    """(low, high): steps trained before the kill that the resumed run trains again.

    A record past the checkpoint means the kill came while that step's checkpoint was being
    saved: exactly those steps. Otherwise the worker trained on from its checkpoint until it
    died (between the kill and when it was seen gone), at its measured step time.
    """
    past = max(recorded, default=checkpoint_step) - checkpoint_step
    if past > 0:
        return past, past
    low = int(max(0.0, killed_at - checkpoint_time) / step_time)
    high = int(max(0.0, dead_at - checkpoint_time) / step_time)
    return min(low, freq - 1), min(high, freq - 1)


def state_at_kill(out: Path) -> dict:
    """Per job: done (with its folder's snapshot) or partial (checkpoint step and time, records)."""
    states = {}
    for folder in job_folders(out):
        if (folder / "done").exists():
            states[folder.name] = {"done": True, "files": snapshot(folder)}
        elif (folder / "checkpoint.pt").exists():
            lines = (folder / "results.jsonl").read_text().splitlines()
            records = lines[:len(read_steps(folder))]  # without a torn last line
            step = checkpoint_step(folder)
            states[folder.name] = {"done": False, "checkpoint_step": step,
                                   "checkpoint_time": (folder / "checkpoint.pt").stat().st_mtime,
                                   "kept": [r for r in records if json.loads(r)["step"] <= step],
                                   "recorded": read_steps(folder),
                                   "step_time": json.loads(records[-1])["step_time"]}
        else:
            states[folder.name] = {"done": False, "checkpoint_step": None}
    return states


def check_every_job_finished_once(out: Path, before: dict, killed_at: float, dead_at: float) -> list[dict]:
    """Done jobs untouched, partial ones resumed from their checkpoint, no step twice; returns
    per resumed job what was redone."""
    redone = []
    for folder in job_folders(out):
        assert (folder / "done").exists(), folder
        assert read_steps(folder) == expected_steps(folder), folder.name  # complete, no step twice
        log = (folder / "train.log").read_text()
        assert log.count(" done: ") == 1, log  # trained to the end exactly once
        was = before.get(folder.name)
        if was is None:
            continue
        if was["done"]:
            assert snapshot(folder) == was["files"], f"{folder.name} was done before the kill and changed"
        elif was["checkpoint_step"] is not None:
            resumed = [int(n) for n in re.findall(r"resuming \S+ at step (\d+) of", log)]
            assert resumed and resumed[0] == was["checkpoint_step"] + 1, (resumed, was["checkpoint_step"])
            text = (folder / "results.jsonl").read_text()
            assert text.startswith("".join(line + "\n" for line in was["kept"]))  # earlier records kept
            freq = json.loads((folder / "config.json").read_text())["checkpoint_freq"]
            redone.append({"job": folder.name, "resumed_at": resumed[0],
                           "records_redone": sum(1 for s in was["recorded"] if s > was["checkpoint_step"]),
                           "redone": steps_redone(was["checkpoint_step"], was["checkpoint_time"], was["recorded"],
                                                  was["step_time"], freq, killed_at, dead_at)})
    return redone


def kill_when(driver, out, ray_root, ready):
    """Run `ready()` (waits and checks), SIGKILL the driver's process group, wait for its Ray to go.

    The driver never outlives a failed `ready`. Returns (killed_at, dead_at, seconds until its
    Ray processes were gone, survivors, the job folders' state at the kill).
    """
    try:
        ready()
        killed_at, dead_at = kill_group(driver, out)
    finally:
        if driver.poll() is None:
            kill_group(driver)
    gone_s, survivors = wait_until_gone(ray_root, 30)
    return killed_at, dead_at, gone_s, survivors, state_at_kill(out)


def rerun(args, env, root):
    started = time.time()
    proc = run_cli(*args, env=env, check=True)
    wall = time.time() - started
    _, left = wait_until_gone(root, 20)
    assert not left, f"the rerun left Ray processes running: {left}"
    return proc, wall
