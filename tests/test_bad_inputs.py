"""The catalogue of bad inputs: each is one line on stderr, exit 2, no traceback, no training.

Sweep-side cases (spaces, clusters) are in test_bad_sweep_inputs.py.
"""
import json

import pytest
from PIL import Image

from helpers.cli import assert_one_line_error, run_cli
from ddg_sweep.data.catalog import DATASETS
from ddg_sweep.run import main

DEMO = ["--dataset", "DemoDigits", "--test-envs", "0"]


def make_pacs(root, skip_env=None, empty_class=None, corrupt=False):
    for env in DATASETS["PACS"].environments:
        if env == skip_env:
            continue
        for c in range(7):
            folder = root / "PACS" / env / f"c{c}"
            folder.mkdir(parents=True)
            if (env, c) != empty_class:
                Image.new("RGB", (8, 8)).save(folder / "x.png")
    if corrupt:
        (root / "PACS" / "photo" / "c1" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


def wrong_kind_model(tmp_path):
    folder = tmp_path / "resnet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return folder


CASES = {
    "unknown dataset": (["--dataset", "CIFAR", "--test-envs", "0"], ["unknown dataset 'CIFAR'"]),
    "missing data dir": (["--dataset", "PACS", "--test-envs", "0", "--data-dir", "{tmp}/absent"],
                         ["{tmp}/absent", "does not exist"]),
    "no data dir given": (["--dataset", "VLCS", "--test-envs", "0"], ["pass --data-dir"]),
    "missing environment": (["--dataset", "PACS", "--test-envs", "0", "--data-dir", "{pacs_no_env}"],
                            ["cartoon", "is missing"]),
    "empty class folder": (["--dataset", "PACS", "--test-envs", "0", "--data-dir", "{pacs_empty}"],
                           ["sketch/c2", "holds no images"]),
    "corrupt image": (["--dataset", "PACS", "--test-envs", "0", "--data-dir", "{pacs_corrupt}"],
                      ["broken.jpg", "cannot be read"]),
    "test env out of range": (["--dataset", "DemoDigits", "--test-envs", "4"], ["out of range", "0..3"]),
    "every env held out": (["--dataset", "DemoDigits", "--test-envs", "0", "1", "2", "3"],
                           ["leaves no training environment"]),
    "unknown algorithm": ([*DEMO, "--algorithm", "IRM"], ["unknown algorithm 'IRM'"]),
    "unknown backbone": ([*DEMO, "--backbone", "vgg16"], ["backbone", "clip_vit-b16"]),
    "missing model folder": ([*DEMO, "--student-path", "{tmp}/no_model"], ["{tmp}/no_model", "--student-path"]),
    "model folder of the wrong kind": ([*DEMO, "--student-path", "{wrong_kind}"], ["'bert'", "--student-path"]),
    "paper weights not in the cache": ([*DEMO, "--models", "paper"], ["openai/clip-vit-base-patch16",
                                                                      "huggingface-cli download"]),
    "non-positive steps": ([*DEMO, "--steps", "0"], ["--steps must be > 0"]),
    "non-positive checkpoint freq": ([*DEMO, "--checkpoint-freq", "-5"], ["--checkpoint-freq"]),
    "stage1_steps > steps": ([*DEMO, "--algorithm", "DDG", "--steps", "10", "--stage1-steps", "20",
                              "--swad-start", "5"], ["stage1_steps=20", "--stage1-steps <= 10"]),
    "swad_start > steps": ([*DEMO, "--algorithm", "VL2V", "--steps", "10", "--swad-start", "11"],
                           ["swad_start=11"]),
    "lmd outside [0, 1]": ([*DEMO, "--algorithm", "DDG", "--lmd", "1.5"], ["lmd=1.5", "[0, 1]"]),
    "align weight < 0": ([*DEMO, "--algorithm", "DDG", "--align-weight", "-1"], ["align_weight=-1.0", ">= 0"]),
    "stage length neither steps nor a fraction": ([*DEMO, "--algorithm", "DDG", "--stage1-steps", "-0.5"],
                                                  ["stage1_steps=-0.5", "fraction of --steps"]),
    "cfg_scale < 0": ([*DEMO, "--algorithm", "DDG", "--cfg-scale", "-2"], ["cfg_scale=-2.0"]),
    "hparam of another algorithm": ([*DEMO, "--cfg-scale", "2"], ["does not apply to ERM"]),
    "t_min above t_max": ([*DEMO, "--algorithm", "DDG", "--t-min", "800", "--t-max", "100"], ["t_min=800"]),
    "timestep out of range": ([*DEMO, "--algorithm", "DDG", "--t-max", "1000"], ["0..999"]),
    "sd resolution not a multiple of 8": ([*DEMO, "--algorithm", "DDG", "--sd-resolution", "30"],
                                          ["multiple of 8"]),
    "unknown negative": ([*DEMO, "--algorithm", "DDG", "--negative", "style"], ["negative", "domain"]),
    "unknown conditioning": ([*DEMO, "--algorithm", "DDG", "--conditioning", "text"], ["conditioning"]),
    "holdout fraction outside (0, 1)": ([*DEMO, "--holdout-fraction", "1.2"], ["--holdout-fraction"]),
    "negative hparams seed": ([*DEMO, "--hparams-seed", "-1"], ["--hparams-seed"]),
    "unknown device": ([*DEMO, "--device", "tpu"], ["--device 'tpu'"]),
    "cuda on a machine without": ([*DEMO, "--device", "cuda"], ["no CUDA GPU"]),
    "batch size zero": ([*DEMO, "--batch-size", "0"], ["batch_size=0"]),
}


@pytest.fixture
def placeholders(tmp_path):
    return {
        "tmp": str(tmp_path),
        "pacs_no_env": str(make_pacs(tmp_path / "a", skip_env="cartoon")),
        "pacs_empty": str(make_pacs(tmp_path / "b", empty_class=("sketch", 2))),
        "pacs_corrupt": str(make_pacs(tmp_path / "c", corrupt=True)),
        "wrong_kind": str(wrong_kind_model(tmp_path)),
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_training(case, placeholders, tmp_path, capsys):
    argv, fragments = CASES[case]
    run_dir = tmp_path / "RUN"
    argv = ["train", *(a.format(**placeholders) for a in argv), "--output-dir", str(run_dir)]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment.format(**placeholders) in lines[0], (fragment, lines[0])
    assert not (run_dir / "results.jsonl").exists()


def test_a_folder_holding_another_run_is_refused(tmp_path):
    base = ["train", *DEMO, "--steps", "1", "--batch-size", "4", "--output-dir", tmp_path / "RUN"]
    run_cli(*base, check=True)
    proc = run_cli(*base[:-2], "--seed", "3", "--output-dir", tmp_path / "RUN")
    assert_one_line_error(proc, "already holds a different run")


def test_the_catalogue_is_at_least_twenty_strong():
    assert len(CASES) >= 20
