"""Searches without a cluster: ranges, trial jobs, the objective, warm start, `plan --search`."""
import json
import os
import subprocess
import sys

import pytest

from helpers.cli import run_cli
from ddg_sweep.jobs import job_dir, make_job
from ddg_sweep.search import choice, loguniform, randint, uniform
from ddg_sweep.search.objective import trial_trajectory
from ddg_sweep.search.searches import (Progress, SearchOptions, Trial, build_searches, read_trials, record_trial,
                                       scan_headers)
from search_spaces import SpaceOptions, space_jobs, space_ranges

ERM_SPACE = {"grid": {"algorithm": "ERM", "dataset": "DemoDigits", "test_envs": [[0]], "steps": 9,
                      "checkpoint_freq": 4},
             "search": {"lr": {"loguniform": [1e-5, 1e-2]}, "batch_size": {"randint": [4, 17]},
                        "weight_decay": {"choice": [0.0, 1e-4]}}}


def erm_search(tmp_path, searcher="optuna", metric="val_acc"):
    path = tmp_path / "erm.json"
    path.write_text(json.dumps(ERM_SPACE))
    jobs = space_jobs(str(path), SpaceOptions())
    (search,) = build_searches(jobs, space_ranges(str(path)), SearchOptions(searcher, 3, metric), "erm")
    return search


def record(step, out_accs, in_accs):
    return {"step": step, **{f"env{i}_out_acc": a for i, a in enumerate(out_accs)},
            **{f"env{i}_in_acc": a for i, a in enumerate(in_accs)}}


def write_trial(out, search, index, config, records, done=True):
    """A trial as a finished (or partial) search left it: search.json, records, done."""
    jobs = search.trial_jobs(index, config)
    record_trial(out, search, index, config, jobs)
    for job in jobs:
        fill(out, job.job_id, records, done)
    return jobs


def test_ranges_from_the_search_space_a_python_file_and_a_json_file(tmp_path):
    assert space_ranges("search") == {"lmd": uniform(0.0, 1.0), "cfg_scale": uniform(1.0, 7.5),
                                      "align_weight": loguniform(0.1, 3.0), "stage1_steps": uniform(0.1, 0.9)}
    assert space_ranges("paper") == {}
    py = tmp_path / "mine.py"
    py.write_text("from ray import tune\nfrom ddg_sweep.jobs import make_job\nfrom ddg_sweep.search import randint\n"
                  "SEARCH = {'lr': tune.loguniform(1e-5, 1e-3), 'batch_size': randint(8, 33),\n"
                  "          'negative': tune.choice(['domain', 'null']), 'lmd': tune.uniform(0, 1)}\n"
                  "def jobs(options):\n    return [make_job('DDG', 'DemoDigits', [0], steps=10)]\n")
    assert space_ranges(str(py)) == {"lr": loguniform(1e-5, 1e-3), "batch_size": randint(8, 33),
                                     "negative": choice(["domain", "null"]), "lmd": uniform(0, 1)}
    assert space_ranges(_json(tmp_path)) == {
        "lr": loguniform(1e-5, 1e-2), "batch_size": randint(4, 17), "weight_decay": choice([0.0, 1e-4])}


def _json(tmp_path):
    path = tmp_path / "erm.json"
    path.write_text(json.dumps(ERM_SPACE))
    return str(path)


def test_search_jobs_have_stable_ids_of_their_own(tmp_path):
    search = erm_search(tmp_path)
    config = {"lr": 1e-3, "batch_size": 8, "weight_decay": 0.0}
    (job,) = search.trial_jobs(2, config)
    assert search.trial_jobs(2, dict(config))[0].job_id == job.job_id
    assert job.hparams["lr"] == 1e-3 and job.hparams["batch_size"] == 8 and job.steps == 9
    probe = ("import json, sys; from search_spaces import SpaceOptions, space_jobs, space_ranges; "
             "from ddg_sweep.search.searches import SearchOptions, build_searches; "
             f"jobs = space_jobs({_json(tmp_path)!r}, SpaceOptions()); "
             f"(s,) = build_searches(jobs, space_ranges({_json(tmp_path)!r}), SearchOptions('optuna', 3), 'erm'); "
             f"print(s.search_id, s.trial_jobs(2, {config!r})[0].job_id)")
    other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "7"}).stdout.split()
    assert other == [search.search_id, job.job_id]
    assert search.trial_jobs(3, config)[0].job_id != job.job_id  # trial 3: a replicate, its own job
    grid = make_job("ERM", "DemoDigits", [0], hparams_seed=2, steps=9, checkpoint_freq=4,
                    overrides=config, draw_hparams=False)
    assert job.hparams_seed not in range(1000) and job.job_id != grid.job_id
    assert erm_search(tmp_path, searcher="random").search_id != search.search_id
    assert erm_search(tmp_path, metric="oracle").search_id != search.search_id


class Watched(dict):
    """A record that remembers which keys were read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def test_the_objective_never_reads_a_test_environment_unless_oracle():
    # test env 1 is perfect in both splits, the training envs are not: a test-env read would show
    records = [Watched(record(0, [0.2, 1.0, 0.4, 0.6], [0.3, 1.0, 0.5, 0.5])),
               Watched(record(5, [0.5, 1.0, 0.7, 0.3], [0.3, 1.0, 0.5, 0.5])),
               Watched(record(9, [0.1, 1.0, 0.1, 0.1], [0.3, 1.0, 0.5, 0.5]))]
    trajectory = trial_trajectory([(records, 4, (1,))], "val_acc")
    assert trajectory == pytest.approx([0.4, 0.5, 0.5])  # best so far of the training envs' out splits
    assert set().union(*(r.read for r in records)) == {"env0_out_acc", "env2_out_acc", "env3_out_acc"}
    for r in records:
        r.read.clear()
    assert trial_trajectory([(records, 4, (1,))], "oracle") == pytest.approx([1.0, 1.0, 1.0])  # last, not best
    assert set().union(*(r.read for r in records)) == {"env1_out_acc"}  # never the reported in split
    # a trial of two jobs (scope dataset): the mean of the finished job and the running one
    two = trial_trajectory([(records[:2], 4, (1,)), (records[:1], 4, (0,))], "val_acc")
    assert two == pytest.approx([0.4, 0.5, (0.5 + (1.0 + 0.4 + 0.6) / 3) / 2])


def test_a_search_trial_reports_the_objective_from_its_job_folders(tmp_path):
    from trainables.search_trial import trial_numbers

    folders = [tmp_path / "a", tmp_path / "b"]
    for folder, envs in zip(folders, ([0], [1])):
        folder.mkdir()
        (folder / "results.jsonl").write_text(
            json.dumps(record(0, [0.3, 0.6, 0.3, 0.3], [1.0, 1.0, 1.0, 1.0])) + "\n" + "{torn")
    trial = {"index": 4, "metric": "val_acc", "n_envs": 4,
             "jobs": [{"run_config": {"output_dir": str(f), "test_envs": envs}} for f, envs in zip(folders, ([0], [1]))]}
    assert trial_numbers(trial, 0) == {"objective": pytest.approx(0.4), "checkpoints": 1, "search_trial": 4}
    assert trial_numbers(trial, 1)["objective"] == pytest.approx((0.4 + 0.3) / 2)
    assert trial_numbers({**trial, "metric": "oracle"}, 1)["objective"] == pytest.approx((0.3 + 0.6) / 2)


def fill(out, job_id, records, done=True):
    folder = job_dir(out, job_id)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / ("done" if done else "checkpoint.pt")).write_bytes(b"")


@pytest.mark.parametrize("searcher", ["optuna", "hyperopt", "random"])
def test_warm_start_tells_the_searcher_what_is_on_disk_and_resumes_unfinished_trials_first(tmp_path, searcher):
    from trainables.search_tuner import Lane

    out = tmp_path / "OUT"
    search = erm_search(tmp_path, searcher)
    ids = lambda jobs: [j.job_id for j in jobs]  # noqa: E731
    first_call = Lane(Progress(search, [], num_samples=3), out, payloads=ids)
    suggested = [first_call.next(f"a{n}") for n in range(3)]
    assert [t["index"] for t in suggested] == [0, 1, 2] and first_call.next("a3") is None
    # as a killed driver leaves it: trials 0 and 1 done, trial 2 part-way
    fill(out, suggested[0]["jobs"][0], [record(0, [0.1, 0.2, 0.3, 0.4], [0.9] * 4)])
    fill(out, suggested[1]["jobs"][0], [record(0, [0.1, 0.5, 0.5, 0.5], [0.1] * 4)])
    fill(out, suggested[2]["jobs"][0], [record(0, [0.2] * 4, [0.2] * 4)], done=False)
    trials = read_trials(out, scan_headers(out)[search.search_id])
    assert [t.state for t in trials] == ["done", "done", "partial"]
    configs = [t.config for t in trials]
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == 3

    lane = Lane(Progress(search, trials, num_samples=5), out, payloads=ids)
    told = [json.loads(line) for line in (out / "searches" / f"{search.search_id}.jsonl").read_text().splitlines()]
    assert [(t["trial"], t["source"], t["objective"]) for t in told] == [
        (0, "warm start", pytest.approx(0.3)), (1, "warm start", pytest.approx(0.5))]
    if searcher == "optuna":
        assert sorted(t.value for t in lane.searcher._ot_study.get_trials()
                      if t.state.name == "COMPLETE") == pytest.approx([0.3, 0.5])
    if searcher == "hyperopt":
        assert sorted(-loss for loss in lane.searcher._hpopt_trials.losses() if loss is not None) == \
            pytest.approx([0.3, 0.5])
    resumed = lane.next("b0")
    assert resumed["index"] == 2 and resumed["jobs"] == suggested[2]["jobs"]  # the unfinished trial, same job
    new = [lane.next(f"b{n}") for n in (1, 2)]
    assert [n["index"] for n in new] == [3, 4] and lane.next("b3") is None and not lane.open
    drawn = [json.loads((job_dir(out, n["jobs"][0]) / "search.json").read_text())["config"] for n in new]
    for config in drawn:  # fresh draws: a resumed searcher does not repeat the first call's
        assert config not in configs and 1e-5 <= config["lr"] <= 1e-2 and 4 <= config["batch_size"] <= 16
        assert isinstance(config["batch_size"], int) and config["weight_decay"] in (0.0, 1e-4)
    assert drawn[0] != drawn[1]
    lane.complete("b0", {"objective": 0.25, "checkpoints": 3}, error=False)
    last = json.loads((out / "searches" / f"{search.search_id}.jsonl").read_text().splitlines()[-1])
    assert (last["trial"], last["source"], last["objective"]) == (2, "run", 0.25)


def test_plan_search_counts_trials_and_estimates_the_rest_without_torch_or_ray(tmp_path):
    out = tmp_path / "OUT"
    args = ["plan", "--space", "search", "--search", "optuna", "--num-samples", "5", "--datasets", "DemoDigits",
            "--test-envs", "0", "1", "--steps", "400", "--output-dir", out, "--format", "json"]
    empty = json.loads(run_cli(*args, check=True).stdout)
    assert [s["test_envs"] for s in empty["searches"]] == [[[0]], [[1]]]
    assert all(s["to_go"] == 5 and s["counts"] == {} for s in empty["searches"]) and empty["gpu_hours"] > 0
    jobs = space_jobs("search", SpaceOptions(datasets=("DemoDigits",), test_envs=(0, 1), steps=400))
    searches = build_searches(jobs, space_ranges("search"), SearchOptions("optuna", 5), "search")
    config = {"align_weight": 1.0, "cfg_scale": 2.0, "lmd": 0.3, "stage1_steps": 0.5}
    write_trial(out, searches[0], 0, config, [record(s, [0.2, 0.4, 0.6, 0.8], [0.5] * 4) for s in (0, 20, 39)])
    write_trial(out, searches[0], 1, config, [record(0, [0.2] * 4, [0.5] * 4)], done=False)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ddg_sweep.run", *map(str, args)],
                          capture_output=True, text=True, check=True)
    plan = json.loads(proc.stdout)
    first = plan["searches"][0]
    assert first["counts"] == {"done": 1, "partial": 1} and first["to_go"] == 3
    assert first["best"] == {"trial": 0, "objective": pytest.approx(0.6), "config": config}
    assert plan["gpu_hours"] < empty["gpu_hours"]  # one trial done, one part-way
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not {m for m in imported if m.split(".")[0] in ("torch", "ray", "optuna", "hyperopt")}
    text = run_cli(*args[:-2], check=True).stdout
    assert "1 done" in text and "1 partial" in text and "8 to go" in text and "estimated GPU-hours left" in text


def test_num_samples_counts_every_trial_on_disk_and_failed_ones_wait_for_retry(tmp_path):
    search = erm_search(tmp_path)
    trials = [Trial(i, {"lr": 1e-3}, [f"j{i}"], states, [0.1 * (i + 1)])
              for i, states in enumerate((["done"], ["stopped"], ["failed"], ["partial"], ["pending"]))]
    kept = Progress(search, trials, num_samples=7)
    assert [t.index for t in kept.evaluated] == [0, 1, 2] and [t.index for t in kept.resume] == [3, 4]
    assert kept.to_go == 2 and kept.next_index == 5 and kept.best().index == 0
    retried = Progress(search, trials, num_samples=7, retry_failed=True)
    assert [t.index for t in retried.evaluated] == [0, 1] and [t.index for t in retried.resume] == [2, 3, 4]
    assert Progress(search, trials, num_samples=3).to_go == 0  # fewer than on disk: nothing new
    assert [Trial(0, {}, ["a", "b"], s, []).state for s in (["done", "partial"], ["done", "stopped"],
                                                           ["done", "pending"], ["pending", "pending"])] == [
        "partial", "stopped", "partial", "pending"]
