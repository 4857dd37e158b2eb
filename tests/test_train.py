import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.cli import REPO, assert_one_line_error, run_cli
from ddg_sweep.hparams import resolve_hparams, resolve_step
from ddg_sweep.models.student import load_student
from ddg_sweep.models.tiny import tiny_student_path

TRAIN = ["train", "--dataset", "DemoDigits", "--algorithm", "ERM", "--batch-size", "8"]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def without_timing(record):
    """What a run computed: everything but the wall time and where it was written."""
    args = {k: v for k, v in record["args"].items() if k != "output_dir"}
    return {k: v for k, v in record.items() if k not in ("step_time", "eval_time")} | {"args": args}


def iid_select(recs, test_env):
    """Training-domain validation, as the protocol doc states it, over one run's records."""
    n_envs = sum(1 for k in recs[0] if k.endswith("_out_acc"))
    def val(r):
        return sum(r[f"env{i}_out_acc"] for i in range(n_envs) if i != test_env) / (n_envs - 1)
    best = max(recs, key=val)
    return best[f"env{test_env}_in_acc"], best["step"]


def test_erm_run_writes_domainbed_records(tmp_path):
    run_dir = tmp_path / "RUN"
    run_cli(*TRAIN, "--test-envs", "0", "--steps", "9", "--checkpoint-freq", "4",
            "--output-dir", run_dir, check=True)
    recs = records(run_dir)
    assert [r["step"] for r in recs] == [0, 4, 8]
    for r in recs:
        assert {"args", "hparams", "step", "epoch", "loss", "step_time", "eval_time", "eval_images"} <= set(r)
        last = r is recs[-1]  # the training envs' in splits, read by no selection rule, only at the last
        for i in range(4):
            assert 0 <= r[f"env{i}_out_acc"] <= 1
            assert (f"env{i}_in_acc" in r) == (last or i == 0)
            assert 0 <= r.get(f"env{i}_in_acc", 0) <= 1
        assert r["args"]["test_envs"] == [0] and r["args"]["dataset"] == "DemoDigits"
        assert r["args"]["trial_seed"] == 0 and r["args"]["holdout_fraction"] == 0.2
        assert r["hparams"]["batch_size"] == 8 and r["hparams"]["lr"] == 1e-3  # the tiny default
    assert recs[1]["epoch"] == pytest.approx(4 / (360 / 8))  # smallest training in-split: 449 - 89
    sizes = [450, 449, 449, 449]  # DemoDigits' environments; 20 % of each held out
    assert recs[0]["eval_images"] == sum(int(n * 0.2) for n in sizes) + sizes[0] - int(sizes[0] * 0.2)
    assert recs[-1]["eval_images"] == sum(sizes)
    assert (run_dir / "done").exists() and (run_dir / "done").stat().st_size == 0
    assert not (run_dir / "checkpoint.pt").exists()
    acc, step = iid_select(recs, 0)
    assert step in (0, 4, 8) and 0 <= acc <= 1
    again = run_cli(*TRAIN, "--test-envs", "0", "--steps", "9", "--checkpoint-freq", "4",
                    "--output-dir", run_dir, check=True)
    assert "already done" in again.stdout
    assert records(run_dir) == recs

    everything = tmp_path / "ALL"
    run_cli(*TRAIN, "--test-envs", "0", "--steps", "9", "--checkpoint-freq", "4", "--eval-all-splits",
            "--output-dir", everything, check=True)
    all_splits = records(everything)
    assert all(f"env{i}_in_acc" in r for r in all_splits for i in range(4))
    for mine, theirs in zip(recs, all_splits):  # the same numbers wherever both evaluated
        assert {k: v for k, v in mine.items() if k.endswith("_acc") or k == "loss"} == {
            k: v for k, v in theirs.items() if k in mine and (k.endswith("_acc") or k == "loss")}
    assert all_splits[0]["eval_images"] == sum(sizes) and all_splits[0]["args"]["eval_all_splits"]


def test_runs_are_deterministic_and_seeds_matter(tmp_path):
    common = [*TRAIN, "--test-envs", "2", "--steps", "5", "--checkpoint-freq", "4"]
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_cli(*common, "--seed", seed, "--output-dir", tmp_path / name, check=True)
    a, b, c = (records(tmp_path / n) for n in "abc")
    assert [without_timing(r) for r in a] == [without_timing(r) for r in b]
    assert a[-1]["loss"] != c[-1]["loss"]


def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path):
    args = [*TRAIN, "--test-envs", "1", "--steps", "40", "--checkpoint-freq", "5"]
    run_cli(*args, "--output-dir", tmp_path / "whole", check=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ddg_sweep.run", *args, "--output-dir", str(killed)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (killed / "results.jsonl").exists() and len(records(killed)) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "done").exists(), "the run finished before it could be killed"
    resumed = run_cli(*args, "--output-dir", killed, check=True)
    assert "resuming" in resumed.stdout
    whole, after = records(tmp_path / "whole"), records(killed)
    steps = [r["step"] for r in after]
    assert steps == sorted(set(steps)) == [0, 5, 10, 15, 20, 25, 30, 35, 39]
    assert [without_timing(r) for r in after] == [without_timing(r) for r in whole]


def test_hparams_defaults_and_random_draws():
    defaults = resolve_hparams("ERM", "PACS", 0, 0)
    assert defaults["lr"] == 5e-5 and defaults["batch_size"] == 32 and defaults["models"] == "paper"
    assert defaults["swad_start"] == 0.625  # every algorithm has SWAD, from the paper's 5000 of 8000 steps
    ddg = resolve_hparams("DDG", "PACS", 0, 0)
    assert ddg["lmd"] == 0.5 and ddg["align_weight"] == 1.0 and ddg["stage1_steps"] == 0.625
    draw = resolve_hparams("ERM", "PACS", 3, 0)
    assert draw == resolve_hparams("ERM", "PACS", 3, 0)
    assert draw != resolve_hparams("ERM", "PACS", 3, 1) and draw["lr"] != defaults["lr"]
    assert resolve_hparams("ERM", "DemoDigits", 0, 0)["models"] == "tiny"


@pytest.mark.parametrize("value,steps,step", [(0.625, 8000, 5000), (0.625, 120, 75), (0.5, 10, 5),
                                             (5000, 8000, 5000), (0, 100, 0)])
def test_stage_lengths_are_step_counts_or_fractions_of_the_steps(value, steps, step):
    hparams = resolve_hparams("DDG", "PACS", overrides={"stage1_steps": value, "swad_start": value})
    assert resolve_step(hparams["stage1_steps"], steps) == step == resolve_step(hparams["swad_start"], steps)
    assert type(hparams["stage1_steps"]) is (float if 0 < value < 1 else int)


def test_stage_length_flags_keep_the_job_identity_of_the_same_value():
    from ddg_sweep.jobs import make_job

    as_int = make_job("DDG", "PACS", [0], steps=8000, overrides={"stage1_steps": 5000})
    as_text = make_job("DDG", "PACS", [0], steps=8000, overrides={"stage1_steps": "5000.0"})
    assert as_int.job_id == as_text.job_id
    fraction = make_job("DDG", "PACS", [0], steps=8000)
    assert fraction.hparams["stage1_steps"] == 0.625 and fraction.job_id != as_int.job_id


@pytest.mark.parametrize("backbone", ["clip_vit-b16", "vit-base", "resnet50"])
def test_tiny_student_round_trip_through_from_pretrained(backbone):
    """The shipped student loads through from_pretrained with exactly the saved weights (transformers
    may rename keys of older layouts on the way, so tensors are matched by shape and values)."""
    from safetensors.torch import load_file

    folder = Path(tiny_student_path(backbone))
    saved = sorted(load_file(str(folder / "model.safetensors")).values(), key=lambda t: (tuple(t.shape), float(t.sum())))
    loaded = load_student(backbone, str(folder)).eval()
    state = [t for t in loaded.model.state_dict().values() if t.is_floating_point()]
    state = sorted(state, key=lambda t: (tuple(t.shape), float(t.sum())))
    saved = [t for t in saved if t.is_floating_point()]
    assert len(state) == len(saved)
    for a, b in zip(state, saved):
        assert torch.equal(a, b)
    assert loaded.image_size == 32
    x = torch.randn(2, 3, 32, 32)
    assert torch.isfinite(loaded(x)).all() and loaded(x).shape == (2, loaded.n_outputs)


@pytest.mark.parametrize("extra,fragments", [
    (["--dataset", "PACS", "--data-dir", "/nonexistent/data"], ["/nonexistent/data", "--data-dir"]),
    (["--dataset", "PACS"], ["--data-dir"]),
    (["--dataset", "Imagenet"], ["unknown dataset"]),
    (["--dataset", "DemoDigits", "--test-envs", "7"], ["out of range"]),
    (["--dataset", "DemoDigits", "--steps", "0"], ["--steps"]),
    (["--dataset", "DemoDigits", "--algorithm", "SGD"], ["unknown algorithm"]),
    (["--dataset", "DemoDigits", "--lmd", "0.3"], ["lmd", "does not apply to ERM"]),
    (["--dataset", "DemoDigits", "--student-path", "/nonexistent/model"], ["/nonexistent/model"]),
    (["--dataset", "PACS", "--data-dir", "/tmp", "--models", "paper"], ["PACS"]),
])
def test_bad_train_input_is_one_line(tmp_path, extra, fragments):
    args = ["train", "--output-dir", tmp_path / "RUN", "--test-envs", "0", *extra]
    if "--test-envs" in extra[2:]:
        args = ["train", "--output-dir", tmp_path / "RUN", *extra]
    proc = run_cli(*args)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "RUN" / "results.jsonl").exists()


def test_bf16_evaluation_agrees_with_fp32_on_the_tiny_student():
    """CUDA evaluates under bf16 autocast (evaluate.evaluation_precision); on the tiny student the
    accuracies agree with fp32 to within a few images (checked here with the CPU's bf16 autocast)."""
    from ddg_sweep.data.catalog import get_dataset_spec
    from ddg_sweep.data.demo_digits import demo_data_dir
    from ddg_sweep.data.folders import read_domain_data
    from ddg_sweep.data.loaders import eval_loaders, split_environment
    from ddg_sweep.evaluate import evaluate, evaluation_precision
    from ddg_sweep.models.student import Classifier

    data = read_domain_data(get_dataset_spec("DemoDigits"), demo_data_dir(), check_images=False)
    splits = [split_environment(len(s), 0.2, 0, env) for env, s in enumerate(data.environments)]
    torch.manual_seed(0)
    student = load_student("clip_vit-b16", tiny_student_path("clip_vit-b16"))
    network = Classifier(student, torch.nn.Linear(student.n_outputs, 10))
    loaders = eval_loaders(data.environments, splits, student.image_size, 0)
    names = ["env0_in", "env1_out"]
    fp32, loss32 = evaluate(network, loaders, [1, 2, 3], torch.device("cpu"), names)
    bf16, loss16 = evaluate(network, loaders, [1, 2, 3], torch.device("cpu"), names,
                            precision=torch.autocast("cpu", dtype=torch.bfloat16))
    assert set(fp32) == {"env0_in_acc", "env1_out_acc"}
    for key in fp32:
        assert abs(fp32[key] - bf16[key]) <= 0.02, (key, fp32[key], bf16[key])
    assert loss16 == pytest.approx(loss32, rel=0.05)
    assert type(evaluation_precision(torch.device("cuda"))).__name__ == "autocast"
