"""The cost estimate of `plan` and `status`: its arithmetic, never a time. No Ray, no torch."""
import json
import os

import pytest

from helpers.cli import assert_one_line_error, run_cli
from ddg_sweep.data.catalog import DATASETS
from ddg_sweep.estimate import (EVAL_IMAGES_PER_S, LAUNCH_SECONDS, STARTUP_SECONDS, STEP_SECONDS,
                                TEARDOWN_SECONDS, WORKER_START_SECONDS, constant_step_seconds, estimate, images_left, job_cost,
                                measure)
from ddg_sweep.jobs import job_dir, make_job, write_manifest
from ddg_sweep.layout import RunFolder, SweepFolder
from search_spaces import SpaceOptions, space_jobs

DEMO_SIZES = (450, 449, 449, 449)
OUTS = 90 + 89 + 89 + 89  # int(0.2 n) of each DemoDigits environment


def demo_erm(test_env: int):
    return make_job("ERM", "DemoDigits", [test_env], steps=9, checkpoint_freq=4)


def test_images_each_checkpoint_evaluates_match_a_hand_count():
    assert DATASETS["DemoDigits"].images == DEMO_SIZES and sum(DEMO_SIZES) == 1797
    job = demo_erm(0)  # checkpoints at steps 0, 4, 8 (the last)
    selection = OUTS + (450 - 90)  # every out split + the test env's in split
    swad = 1797  # SWAD's averaged model, every split once at the end
    assert images_left(job, 9) == 2 * selection + 1797 + swad
    assert images_left(job, 5) == selection + 1797 + swad  # steps 4..8 left: checkpoints 4 and 8
    assert images_left(job, 1) == 1797 + swad and images_left(job, 0) == 0
    assert images_left(job, 9, eval_all_splits=True) == 3 * 1797 + swad
    pacs = make_job("DDG", "PACS", [3])  # 8000 steps, a checkpoint every 200: 40 + the last
    outs = sum(int(n * 0.2) for n in (2048, 2344, 1670, 3929))
    assert images_left(pacs, 8000) == 40 * (outs + 3929 - int(3929 * 0.2)) + 2 * 9991


def test_stage_two_costs_follow_the_unet_passes():
    prediction, target, plain = (make_job("DDG", "PACS", [0], overrides=o) for o in (
        {}, {"guidance_form": "target"}, {"guidance_form": "prediction", "cfg_scale": 1.0}))
    stage1, stage2 = STEP_SECONDS["paper"]["DDG"]["align"], STEP_SECONDS["paper"]["DDG"]["diffusion"]
    unet = stage2 - stage1  # measured with one no-grad pass beside the student's 4 units (checkpointing)
    assert constant_step_seconds(prediction, "diffusion") == pytest.approx(stage2)
    assert constant_step_seconds(target, "diffusion") == pytest.approx(stage1 + unet * 6 / 5)
    assert constant_step_seconds(plain, "diffusion") == pytest.approx(stage1 + unet * 4 / 5)
    assert constant_step_seconds(target, "align") == constant_step_seconds(plain, "align") == pytest.approx(stage1)
    domainnet = make_job("DDG", "DomainNet", [0])  # five training domains: 160 images a step
    assert constant_step_seconds(domainnet, "diffusion") == pytest.approx(stage2 * 5 / 3)


def test_a_paper_run_counts_evaluation_and_startup_not_only_steps(tmp_path):
    job = make_job("DDG", "DomainNet", [0])
    cost = job_cost(job, job.steps, measure(tmp_path))
    steps_only = 5000 * STEP_SECONDS["paper"]["DDG"]["align"] * 5 / 3 + 3000 * STEP_SECONDS["paper"]["DDG"]["diffusion"] * 5 / 3
    assert cost.train == pytest.approx(steps_only)
    sizes = DATASETS["DomainNet"].images
    selection = sum(int(n * 0.2) for n in sizes) + sizes[0] - int(sizes[0] * 0.2)
    assert cost.evaluation == pytest.approx((8 * selection + 2 * sum(sizes)) / EVAL_IMAGES_PER_S["paper"])
    assert cost.startup == STARTUP_SECONDS["paper"] and cost.constants == {"steps", "evaluation", "startup"}
    assert cost.seconds > steps_only
    paper = space_jobs("paper", SpaceOptions())
    whole = estimate([(j, j.steps) for j in paper], tmp_path)
    assert whole.part("train") / 3600 == pytest.approx(147.5, abs=0.05)  # what plan said before: steps only
    assert whole.gpu_hours > 147.5 + whole.part("evaluation") / 3600 - 1e-9
    # one GPU: the jobs one after another, each in a fresh worker, plus the cluster's start
    assert whole.workers_started == 66 and whole.concurrency == 1
    assert whole.wall_seconds == pytest.approx(LAUNCH_SECONDS + whole.gpu_seconds)
    four = estimate([(j, j.steps) for j in paper], tmp_path, concurrency=4)
    assert four.gpu_seconds == pytest.approx(whole.gpu_seconds) and four.wall_seconds < whole.wall_seconds / 3


def _record(job, step, step_time, eval_time, eval_images):
    return {"args": {"dataset": job.dataset, "algorithm": job.algorithm, "test_envs": list(job.test_envs)},
            "hparams": job.hparams, "step": step, "step_time": step_time, "eval_time": eval_time,
            "eval_images": eval_images}


def _write_run(out, job, records, node=None, done_after=None):
    folder = job_dir(out, job)
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if node is not None:
        (folder / RunFolder.NODE).write_text(json.dumps({"pid": node[0], "hostname": "h", "attempt": 1, "time": node[1]}))
    if done_after is not None:
        (folder / "done").touch()
        os.utime(folder / "done", (node[1] + done_after, node[1] + done_after))


def test_a_half_done_sweep_costs_what_its_own_records_measured(tmp_path):
    out = tmp_path / "out"
    first, second, half, pending = (demo_erm(env) for env in range(4))
    selection = OUTS + 360
    whole = [_record(first, 0, 0.1, 0.5, selection), _record(first, 4, 0.2, 0.5, selection),
             _record(first, 8, 0.3, 1.0, 1797)]  # 0.1 + 4 x 0.2 + 4 x 0.3 = 2.1 s of steps, 2.0 s evaluating
    t0 = 1_000_000.0
    _write_run(out, first, whole, node=(7, t0), done_after=30.0)  # the worker's first run
    _write_run(out, second, [dict(r, args=dict(r["args"], test_envs=[1])) for r in whole],
               node=(7, t0 + 30.0), done_after=10.0)
    _write_run(out, half, [dict(r, args=dict(r["args"], test_envs=[2])) for r in whole[:2]])  # steps 0-4 done
    measured = measure(out)
    per_step = (2.1 + 2.1 + 0.9) / (9 + 9 + 5)
    rate = (2 * (2 * selection + 1797) + 2 * selection) / (2.0 + 2.0 + 1.0)  # images / s over every record
    swad = 1797 * 2.0 / (2 * selection + 1797)  # SWAD's evaluation at the run's own rate
    startup = 10.0 - 2.1 - 2.0 - swad  # the second run of the worker
    worker_start = (30.0 - 2.1 - 2.0 - swad) - startup
    assert measured.records == 8 and measured.runs == 2
    assert measured.step_seconds(("DemoDigits", "ERM", None, "tiny", 48, (0, 0))) == pytest.approx(per_step)
    assert measured.images_per_s(("DemoDigits", "tiny")) == pytest.approx(rate)
    assert measured.startup_seconds(("ERM", "tiny")) == pytest.approx(startup)
    assert measured.worker_start_seconds("tiny") == pytest.approx(worker_start)

    half_cost = 4 * per_step + (1797 + 1797) / rate + startup  # step 8 left, then SWAD
    pending_cost = 9 * per_step + (2 * selection + 1797 + 1797) / rate + startup
    jobs = [first, second, half, pending]
    one = estimate([(first, 0), (second, 0), (half, 4), (pending, 9)], out, concurrency=1)
    assert one.costs[2][1].seconds == pytest.approx(half_cost) and one.costs[3][1].seconds == pytest.approx(pending_cost)
    assert one.costs[2][1].measured == {"steps", "evaluation", "startup"} and not one.costs[2][1].constants
    # tiny jobs reuse their worker: one worker start per slot used
    assert one.wall_seconds == pytest.approx(LAUNCH_SECONDS + worker_start + half_cost + pending_cost)
    assert one.gpu_seconds == pytest.approx(worker_start + half_cost + pending_cost)
    two = estimate([(first, 0), (second, 0), (half, 4), (pending, 9)], out, concurrency=2)
    assert two.wall_seconds == pytest.approx(LAUNCH_SECONDS + worker_start + pending_cost)
    assert two.gpu_seconds == pytest.approx(2 * worker_start + half_cost + pending_cost)
    assert two.source == "measured" and two.to_json()["figures"]["records"] == 8

    plan = json.loads(run_cli("plan", "--space", _space(tmp_path, jobs), "--output-dir", out, "--format", "json",
                              "--max-concurrent", "2", check=True).stdout)
    assert [j["state"] for j in plan["jobs"]] == ["done", "done", "partial", "pending"]
    assert plan["wall_seconds"] == pytest.approx(two.wall_seconds, abs=0.1)
    assert plan["gpu_hours_by_part"]["train"] == pytest.approx(13 * per_step / 3600, abs=1e-4)
    assert plan["concurrency"] == 2 and plan["gpu_hours_source"] == "measured"
    text = run_cli("plan", "--space", _space(tmp_path, jobs), "--output-dir", out, "--max-concurrent", "2",
                   check=True).stdout.splitlines()
    assert text[-3].startswith("estimated GPU-hours left: ") and "evaluation" in text[-3]
    assert text[-2].startswith("estimated wall time left: ") and "2 job(s) at once (--max-concurrent)" in text[-2]
    assert text[-1].startswith("figures: measured in this folder (8 records, 2 runs")
    write_manifest(out, jobs)  # what `sweep` writes; status reads the jobs from it
    status = json.loads(run_cli("status", out, "--format", "json", "--max-concurrent", "2", check=True).stdout)
    assert status["estimate"]["gpu_hours"] == plan["gpu_hours"]  # the same estimate, the same code
    assert_one_line_error(run_cli("plan", "--space", "demo", "--max-concurrent", "0"), "--max-concurrent")
    # the sweep that ran them wrote jobs.json 12 s before its first trial started: its launch
    os.utime(out / SweepFolder.MANIFEST, (t0 - 12.0, t0 - 12.0))
    launched = estimate([(half, 4), (pending, 9)], out, concurrency=2)
    assert launched.launch == pytest.approx(12.0 + TEARDOWN_SECONDS)
    assert launched.wall_seconds == pytest.approx(two.wall_seconds - LAUNCH_SECONDS + 12.0 + TEARDOWN_SECONDS)


def _space(tmp_path, jobs):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"jobs": [{"algorithm": j.algorithm, "dataset": j.dataset, "test_envs": list(j.test_envs),
                                          "steps": j.steps, "checkpoint_freq": j.checkpoint_freq} for j in jobs]}))
    return path


def test_constants_name_the_card_and_say_what_is_estimated(tmp_path):
    last = run_cli("plan", "--preset", "paper", "--datasets", "PACS", "--output-dir", tmp_path,
                   check=True).stdout.strip().splitlines()
    assert last[-3].startswith("estimated GPU-hours left: ")
    assert "with 1 job(s) at once (one GPU; --max-concurrent N for N GPUs)" in last[-2]
    assert "step times measured on one NVIDIA H100 80GB" in last[-1] and "docs/performance.md" in last[-1]
    assert f"{EVAL_IMAGES_PER_S['paper']:,.0f} images/s" in last[-1] and "estimates for" in last[-1]
    assert f"+ {WORKER_START_SECONDS['paper']:.0f} s per worker" in last[-1]
