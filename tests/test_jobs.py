"""Jobs, spaces, plan and status: no Ray, no torch, no data, no weights."""
import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from helpers.cli import REPO, assert_one_line_error, run_cli
from ddg_sweep.jobs import Job, build_plan, job_dir, make_job, run_config
from search_spaces import SPACES, SpaceOptions, space_jobs

PROBE = ("from ddg_sweep.jobs import make_job; "
         "print(make_job('DDG', 'PACS', [1], trial_seed=2, hparams_seed=3).job_id)")


def demo_job(**changes) -> Job:
    return make_job("ERM", "DemoDigits", changes.pop("test_envs", [0]), steps=changes.pop("steps", 20),
                    checkpoint_freq=10, **changes)


def plan_json(*args, out):
    proc = run_cli("plan", *args, "--format", "json", "--output-dir", out, check=True)
    return json.loads(proc.stdout)


def test_job_id_is_stable_across_processes_and_ignores_paths():
    job = make_job("DDG", "PACS", [1], trial_seed=2, hparams_seed=3)
    other_process = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                   check=True, env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert other_process == job.job_id and len(job.job_id) == 20
    a = run_config(job, "/mnt/a", {"data_dir": "/data/x", "device": "cuda:0"})
    b = run_config(job, "/elsewhere/b", {"data_dir": "/other", "num_workers": 8})
    assert a.output_dir.endswith(job.job_id) and b.output_dir.endswith(job.job_id)
    assert a.identity() == b.identity() and a.seed == b.seed == job.seed
    assert a.extra_args["job_id"] == job.job_id


@pytest.mark.parametrize("change", [
    {"algorithm": "VL2V"}, {"dataset": "VLCS"}, {"test_envs": (2,)}, {"test_envs": (1, 2)},
    {"trial_seed": 0}, {"hparams_seed": 4}, {"steps": 100}, {"checkpoint_freq": 50}, {"protocol": 1},
    {"hparams": "lr"},
])
def test_every_identity_field_changes_the_job_id(change):
    job = make_job("DDG", "PACS", [1], trial_seed=2, hparams_seed=3)
    if change == {"hparams": "lr"}:
        change = {"hparams": {**job.hparams, "lr": job.hparams["lr"] * 2}}
    changed = dataclasses.replace(job, **change)
    assert changed.job_id != job.job_id and changed.seed != job.seed
    assert Job.from_json(json.loads(json.dumps(job.to_json()))).job_id == job.job_id


def test_plan_paper_lists_66_unique_jobs_without_data_weights_torch_or_ray(tmp_path):
    env = {"DDG_SWEEP_CACHE": str(tmp_path / "empty_cache")}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ddg_sweep.run", "plan", "--preset",
                           "paper", "--format", "json", "--output-dir", tmp_path / "out"],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, **env}, check=True)
    plan = json.loads(proc.stdout)
    ids = [j["job_id"] for j in plan["jobs"]]
    assert len(ids) == 66 and len(set(ids)) == 66
    assert {j["dataset"] for j in plan["jobs"]} == {"OfficeHome", "TerraIncognita", "VLCS", "PACS", "DomainNet"}
    assert all(j["algorithm"] == "DDG" and len(j["test_envs"]) == 1 and j["state"] == "pending"
               and j["hparams"]["cfg_scale"] == 3.0 and j["hparams_seed"] == 0 for j in plan["jobs"])
    assert {j["trial_seed"] for j in plan["jobs"]} == {0, 1, 2}
    assert plan["counts"]["by_dataset"]["DomainNet"] == {"pending": 18, "total": 18}
    assert plan["gpu_hours"] > 0 and plan["gpu_hours_source"] == "constants"
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not {m for m in imported if m.split(".")[0] in ("torch", "ray")}
    assert not (tmp_path / "empty_cache").exists() and not (tmp_path / "out").exists()


def test_space_sizes_and_narrowing():
    counts = {name: len(space_jobs(name, SpaceOptions(n_hparams=2))) for name in SPACES}
    assert counts == {"paper": 66, "baselines": 132, "lmd": 330, "stage1_steps": 264, "cfg_scale": 330,
                      "random": 132 * 2 + 66 * 2, "demo": 72, "search": 22, "guidance": 264}
    pairs = space_jobs("random", SpaceOptions(n_hparams=1, with_pairs=True, datasets=("PACS",),
                                              algorithms=("ERM",), trial_seeds=(0,)))
    assert sorted(j.test_envs for j in pairs) == [(0,), (0, 1), (0, 2), (0, 3), (1,), (1, 2), (1, 3), (2,),
                                                   (2, 3), (3,)]
    narrow = space_jobs("paper", SpaceOptions(datasets=("PACS",), test_envs=(0, 2), trial_seeds=(1,)))
    assert sorted(j.test_envs for j in narrow) == [(0,), (2,)] and {j.trial_seed for j in narrow} == {1}
    demo = space_jobs("demo", SpaceOptions())
    ddg = sorted((j.test_envs, j.hparams_seed, j.hparams["guidance_form"], j.hparams["cfg_scale"])
                 for j in demo if j.algorithm == "DDG")
    assert ddg[::3][:4] == [((0,), 0, "prediction", 3.0), ((0,), 1, "prediction", 1.0), ((0,), 2, "target", 3.0),
                            ((0,), 3, "interpolate", 3.0)]  # three trial seeds each
    assert {j.algorithm for j in demo} == {"ERM", "VL2V", "DDG"} and {j.trial_seed for j in demo} == {0, 1, 2}
    assert all(j.hparams["swad_start"] == 0.625 for j in demo)  # the paper's proportions, SWAD for all


def test_user_space_files(tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "steps": 10,
                                         "checkpoint_freq": 5, "hparams": {"lr": [0.001, 0.01]}}}))
    plan = plan_json("--space", grid, out=tmp_path / "o")
    assert len(plan["jobs"]) == 8 and {j["hparams_seed"] for j in plan["jobs"]} == {0, 1}
    py = tmp_path / "space.py"
    py.write_text("from ddg_sweep.jobs import make_job\n"
                  "def jobs(options):\n    return [make_job('ERM', 'DemoDigits', [e], steps=5) for e in (0, 1)]\n")
    assert len(plan_json("--space", py, out=tmp_path / "o")["jobs"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_one_line_error(run_cli("plan", "--space", bad), "not valid JSON")
    bad.write_text(json.dumps({"jobs": [{"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [9]}]}))
    assert_one_line_error(run_cli("plan", "--space", bad), "out of range")
    bad.write_text(json.dumps({"jobs": [{"algorithm": "ERM"}]}))
    assert_one_line_error(run_cli("plan", "--space", bad), "malformed")
    broken = tmp_path / "broken.py"
    broken.write_text("def jobs(options):\n    return [\n")
    assert_one_line_error(run_cli("plan", "--space", broken), "does not load")
    assert_one_line_error(run_cli("plan", "--space", "nope"), "unknown space")
    assert_one_line_error(run_cli("plan", "--space", "paper", "--datasets", "Nope"), "unknown dataset")
    assert_one_line_error(run_cli("plan", "--space", "demo", "--datasets", "PACS"), "no jobs")


def write_records(folder, steps, step_time=0.5, hparams=None):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": s, "step_time": step_time, "hparams": hparams or {},
                         "args": {"dataset": "DemoDigits", "algorithm": "ERM", "test_envs": [0]}}) for s in steps]
    (folder / "results.jsonl").write_text("\n".join(lines) + "\n")


def test_plan_and_status_read_states_from_job_folders(tmp_path):
    out = tmp_path / "out"
    jobs = space_jobs("demo", SpaceOptions(algorithms=("ERM",), steps=60, trial_seeds=(0,)))  # four jobs
    done, partial, failed, running = (job_dir(out, j) for j in jobs)
    write_records(done, [0, 20, 40, 59], hparams=jobs[0].hparams)
    (done / "done").touch()
    write_records(partial, [0, 20], hparams=jobs[0].hparams)
    failed.mkdir(parents=True)
    (failed / "error.json").write_text(json.dumps({"error": "RuntimeError: boom", "attempts": 3}))
    os.utime(failed / "error.json", (time.time(), time.time()))
    plan = plan_json("--space", "demo", "--algorithms", "ERM", "--steps", "60", "--trial-seeds", "0", out=out)
    states = {j["job_id"]: j["state"] for j in plan["jobs"]}
    assert [states[j.job_id] for j in jobs] == ["done", "partial", "failed", "pending"]
    assert plan["counts"]["total"] == {"done": 1, "failed": 1, "partial": 1, "pending": 1, "total": 4}
    # measured: 0.5 s/step; 39 + 60 + 60 steps left (evaluation and startup: constants, no record has them)
    assert plan["gpu_hours_source"] == "measured+constants" and plan["figures"]["measured"] == ["steps"]
    assert plan["gpu_hours_by_part"]["train"] == pytest.approx((39 + 60 + 60) * 0.5 / 3600, abs=1e-4)

    # status: the jobs the sweep planned (jobs.json) + a running one (its log just changed)
    from ddg_sweep.jobs import write_manifest
    write_manifest(out, jobs)
    write_records(running, [0, 20])
    now = time.time()
    stamp = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    (running / "train.log").write_text(f"{stamp(now - 20)} step 0: loss 1\n{stamp(now - 10)} step 20: loss 1\n")
    proc = run_cli("status", out, check=True)
    assert "running" in proc.stdout and "step 20/60" in proc.stdout and "ETA 0m20s" in proc.stdout
    status = json.loads(run_cli("status", out, "--format", "json", check=True).stdout)
    assert status["counts"]["total"] == {"done": 1, "running": 1, "failed": 1, "partial": 1, "total": 4}
    assert build_plan(jobs, out, detect_running=True).states[jobs[3].job_id] == "running"
    assert_one_line_error(run_cli("status", tmp_path / "missing"), "does not exist")


def test_bad_flags_are_one_line_errors(tmp_path):
    assert_one_line_error(run_cli("plan", "--space", "demo", "--steps", "0"), "--steps")
    assert_one_line_error(run_cli("plan", "--space", "demo", "--steps", "10", "--stage1-steps", "20"),
                          "beyond --steps")
    assert_one_line_error(run_cli("plan", "--space", "random", "--n-hparams", "0"), "--n-hparams")
    assert_one_line_error(run_cli("sweep", "--space", "paper", "--datasets", "PACS", "--output-dir",
                                  tmp_path / "o"), "--data-dir")
    assert_one_line_error(run_cli("sweep", "--space", "paper", "--datasets", "PACS", "--data-dir",
                                  tmp_path, "--output-dir", tmp_path / "o"), "does not exist")
    assert not (tmp_path / "o").exists()


def test_runs_share_no_report_key(tmp_path):
    """Two hparams configurations with one hparams_seed would merge in the report: refused."""
    space = tmp_path / "dup.json"
    space.write_text(json.dumps({"jobs": [
        {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [0], "hparams": {"lr": 0.1}},
        {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [0], "hparams": {"lr": 0.2}}]}))
    assert_one_line_error(run_cli("plan", "--space", space), "own hparams_seed")
    assert REPO.is_dir()
