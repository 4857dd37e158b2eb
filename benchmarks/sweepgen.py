"""Synthetic DomainBed sweeps for benchmarks/bench_aggregate.py and the tests (deterministic).

`make_sweep(root, n_records)` writes run folders whose `results.jsonl` look like
DomainBed's (or ddg-sweep's) output: several datasets, algorithms, trial seeds,
hparams seeds, single- and two-test-env runs, one record per checkpoint.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from pathlib import Path

ENV_COUNTS = {"PACS": 4, "VLCS": 4, "OfficeHome": 4, "TerraIncognita": 4, "DomainNet": 6}
BASE_ACCURACY = {"PACS": 0.95, "VLCS": 0.82, "OfficeHome": 0.86, "TerraIncognita": 0.6,
                 "DomainNet": 0.62}


def _test_env_choices(n_envs: int) -> list[list[int]]:
    singles = [[i] for i in range(n_envs)]
    pairs = [list(p) for p in itertools.combinations(range(n_envs), 2)]
    return singles + pairs


def _run_specs(datasets, algorithms, n_trials):
    """Endless stream of (dataset, algorithm, test_envs, hparams_seed, trial_seed)."""
    for hparams_seed in itertools.count():
        for trial_seed in range(n_trials):
            for dataset in datasets:
                for algorithm in algorithms:
                    for test_envs in _test_env_choices(ENV_COUNTS.get(dataset, 4)):
                        yield dataset, algorithm, test_envs, hparams_seed, trial_seed


def _hparams(algorithm: str, hparams_seed: int) -> dict:
    rng = random.Random(f"hp-{algorithm}-{hparams_seed}")
    hparams = {
        "batch_size": 32, "class_balanced": False, "data_augmentation": True,
        "lr": 5e-5 if hparams_seed == 0 else 10 ** rng.uniform(-5, -3.5),
        "weight_decay": 0.0 if hparams_seed == 0 else 10 ** rng.uniform(-6, -2),
        "nonlinear_classifier": False, "resnet_dropout": 0.0,
    }
    if algorithm == "DDG":
        hparams.update({
            "lmd": 0.5 if hparams_seed == 0 else rng.choice([0.1, 0.5, 1.0]),
            "cfg_scale": 1.0 if hparams_seed == 0 else rng.choice([1.0, 3.0, 7.5]),
            "stage1_steps": 5000 if hparams_seed == 0 else rng.choice([2000, 5000]),
            "negative": "domain", "backbone": "clip_vit-b16",
            "guidance_form": ("prediction", "target", "interpolate")[hparams_seed % 3],  # draws no rng
        })
    return hparams


def make_sweep(root, n_records: int, *, datasets=("PACS", "VLCS", "OfficeHome", "TerraIncognita"),
               algorithms=("ERM", "DDG"), n_trials: int = 3, records_per_run: int = 20,
               checkpoint_freq: int = 200, layout: str = "domainbed", with_swad: bool = False,
               seed: int = 0) -> dict:
    """Write a sweep of exactly `n_records` records below `root`.

    layout "domainbed": `root/<hash>/results.jsonl` (+ `done`);
    layout "ddg": `root/runs/<job_id>/results.jsonl` with `job_id` and `stage` keys.
    Returns {"n_records", "n_runs", "run_dirs"}.
    """
    if layout not in ("domainbed", "ddg"):
        raise ValueError(f"unknown layout {layout!r}")
    root = Path(root)
    runs_root = root / "runs" if layout == "ddg" else root
    runs_root.mkdir(parents=True, exist_ok=True)
    run_dirs: list[Path] = []
    remaining = n_records
    for dataset, algorithm, test_envs, hparams_seed, trial_seed in _run_specs(
            datasets, algorithms, n_trials):
        if remaining <= 0:
            break
        n_run_records = min(records_per_run, remaining)
        remaining -= n_run_records
        key = f"{seed}-{dataset}-{algorithm}-{test_envs}-{hparams_seed}-{trial_seed}"
        run_hash = hashlib.md5(key.encode()).hexdigest()
        run_dir = runs_root / run_hash
        run_dir.mkdir(exist_ok=True)
        run_dirs.append(run_dir)
        lines = _run_lines(run_dir, run_hash, dataset, algorithm, test_envs, hparams_seed,
                           trial_seed, n_run_records, records_per_run, checkpoint_freq, layout,
                           seed)
        (run_dir / "results.jsonl").write_text("".join(lines))
        (run_dir / "done").write_text("done")
        if with_swad and len(test_envs) == 1 and algorithm != "ERM":  # as in our runs: ERM has no SWAD
            _write_swad(run_dir, dataset, algorithm, test_envs, hparams_seed, trial_seed,
                        records_per_run * checkpoint_freq, seed)
    return {"n_records": n_records - max(remaining, 0), "n_runs": len(run_dirs),
            "run_dirs": run_dirs}


def _args(run_dir, dataset, algorithm, test_envs, hparams_seed, trial_seed, steps, seed):
    return {
        "algorithm": algorithm, "checkpoint_freq": None, "data_dir": "/data", "dataset": dataset,
        "holdout_fraction": 0.2, "hparams": None, "hparams_seed": hparams_seed,
        "output_dir": run_dir.name, "save_model_every_checkpoint": False,
        "seed": (hash((seed, hparams_seed, trial_seed)) & 0x7FFFFFFF), "skip_model_save": True,
        "steps": steps, "task": "domain_generalization", "test_envs": test_envs,
        "trial_seed": trial_seed, "uda_holdout_fraction": 0,
    }


def _accuracy(rng, dataset, algorithm, hparams_seed, progress, env):
    base = BASE_ACCURACY.get(dataset, 0.7) + (0.01 if algorithm == "DDG" else 0.0)
    base -= 0.02 * ((hparams_seed * 7 + env) % 3)
    return max(0.0, min(1.0, base * (0.4 + 0.6 * progress ** 0.5) + rng.gauss(0, 0.01)))


def _run_lines(run_dir, run_hash, dataset, algorithm, test_envs, hparams_seed, trial_seed,
               n_run_records, records_per_run, checkpoint_freq, layout, seed):
    steps = records_per_run * checkpoint_freq
    head = {"args": _args(run_dir, dataset, algorithm, test_envs, hparams_seed, trial_seed,
                          steps, seed),
            "hparams": _hparams(algorithm, hparams_seed)}
    if layout == "ddg":
        head["job_id"] = run_hash
    head_json = json.dumps(head)[:-1]  # reopened below to append per-record keys
    rng = random.Random(f"acc-{run_hash}")
    n_envs = ENV_COUNTS.get(dataset, 4)
    stage1_steps = head["hparams"].get("stage1_steps", 0)
    lines = []
    for index in range(n_run_records):
        step = index * checkpoint_freq
        progress = (index + 1) / records_per_run
        accs = "".join(
            f', "env{env}_in_acc": {_accuracy(rng, dataset, algorithm, hparams_seed, progress, env)!r}'
            f', "env{env}_out_acc": {_accuracy(rng, dataset, algorithm, hparams_seed, progress, env)!r}'
            for env in range(n_envs))
        extra = ""
        if layout == "ddg":
            stage = "align" if step < stage1_steps else "distill"
            extra = f', "stage": "{stage}", "loss_diff": {rng.random()!r}, "loss_align": {-rng.random()!r}'
        lines.append(f'{head_json}{accs}, "epoch": {step / 100.0!r}, "loss": {rng.random()!r}, '
                     f'"step": {step}, "step_time": {rng.uniform(0.1, 0.3)!r}{extra}}}\n')
    return lines


def _write_swad(run_dir, dataset, algorithm, test_envs, hparams_seed, trial_seed, steps, seed):
    rng = random.Random(f"swad-{run_dir.name}")
    result = {"args": _args(run_dir, dataset, algorithm, test_envs, hparams_seed, trial_seed,
                            steps, seed),
              "hparams": _hparams(algorithm, hparams_seed),
              "swad_start_step": steps // 2, "swad_end_step": steps - 200, "n_averaged": 12}
    for env in range(ENV_COUNTS.get(dataset, 4)):
        result[f"env{env}_in_acc"] = _accuracy(rng, dataset, algorithm, hparams_seed, 1.0, env)
        result[f"env{env}_out_acc"] = _accuracy(rng, dataset, algorithm, hparams_seed, 1.0, env)
    tmp = run_dir / "swad.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, run_dir / "swad.json")
