"""The tiny teachers know digits they never saw: the shipped ones meet the demo's bar, and the
training recipe behind them still yields teachers above chance from scratch."""
import json
import os

import numpy as np
import pytest
import torch

from helpers.cli import run_cli
from ddg_sweep.models import synthetic_digits, tiny_training
from ddg_sweep.models.clip_teacher import load_clip_teacher
from ddg_sweep.models.sd_teacher import load_sd_teacher
from ddg_sweep.models.teacher_checks import clip_zero_shot, diffusion_classifier
from ddg_sweep.teachers import demo_images

# Issue 11's bar, on DemoDigits (chance 0.10).
CLIP_MEAN_AT_LEAST, CLIP_EACH_AT_LEAST = 0.70, 0.50
SD_CLEAN_AT_LEAST, SD_OTHERS_ABOVE = 0.50, 0.20


@pytest.fixture(scope="module")
def figures():
    proc = run_cli("teachers", "--models", "tiny", "--format", "json", "--images-per-env", "50", "--draws", "8",
                   check=True)
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_shipped_clip_teacher_zero_shot_meets_the_bar(figures):
    accuracies = figures["clip_zero_shot"]
    envs = ("clean", "inverted", "sketch", "noisy")
    assert accuracies["mean"] == pytest.approx(np.mean([accuracies[e] for e in envs]))
    assert accuracies["mean"] >= CLIP_MEAN_AT_LEAST, accuracies
    assert min(accuracies[e] for e in envs) >= CLIP_EACH_AT_LEAST, accuracies


@pytest.mark.slow
def test_shipped_sd_teacher_is_a_diffusion_classifier(figures):
    plain = figures["sd_classifier"]
    assert plain["clean"] >= SD_CLEAN_AT_LEAST, plain
    assert all(plain[e] > SD_OTHERS_ABOVE for e in ("inverted", "sketch", "noisy")), plain
    assert figures["sd_classifier_guided"]["mean"] > SD_OTHERS_ABOVE, figures["sd_classifier_guided"]
    assert figures["prompt_sensitivity"]["mean"] > 0.05, figures["prompt_sensitivity"]


@pytest.mark.slow
def test_stage_two_gradient_points_toward_the_right_class(figures):
    """Plain distillation (w = 1, where every form is the same loss) pulls the Stage-I student toward the right class, and so
    do `target` and `interpolate` at w = 3, away from the domain style; the literal `prediction` form
    at w = 3 turns back once the student is confident (its optimum carries about 1/w of the class
    evidence) and pulls toward the domain-style prediction. The signs, not tuned values."""
    gradient = figures["stage2_gradient"]
    assert gradient["batch"] == 48 and gradient["n_draws"] == 8 and gradient["temperatures"] == [0.25, 0.5, 1, 2, 4]
    assert 0.3 < gradient["student_accuracy"] <= 1 and gradient["student_true_class_prob"] > 0.1
    probs = [row["true_class_prob"] for row in gradient["scan"]]
    assert probs == sorted(probs) and probs[0] < 0.3 < 0.5 < probs[-1]  # the scan spans soft to confident
    student = next(row["cases"] for row in gradient["scan"] if row["temperature"] == 1)
    assert set(student) == {"prediction w=3", "target w=3", "interpolate w=3", "plain w=1"}
    assert student["plain w=1"]["toward_label"] > 0.2
    for name in ("target w=3", "interpolate w=3"):
        assert all(row["cases"][name]["toward_label"] > 0 for row in gradient["scan"]), (name, gradient["scan"])
        assert student[name]["domain_pull"] < 0, (name, student)
        assert gradient["sign_change_at_true_class_prob"][name] is None
    assert student["prediction w=3"]["toward_label"] < 0 < student["prediction w=3"]["domain_pull"], student
    assert gradient["scan"][0]["cases"]["prediction w=3"]["toward_label"] > 0  # a soft student: still toward
    assert 0.25 < gradient["sign_change_at_true_class_prob"]["prediction w=3"] < 0.6
    assert all(case["toward_label"] > 0.2 for case in gradient["uniform"].values()), gradient["uniform"]


def test_synthetic_digits_are_seeded():
    a_inks, a_labels = synthetic_digits.render_glyphs(per_digit=3, seed=5)
    b_inks, b_labels = synthetic_digits.render_glyphs(per_digit=3, seed=5)
    assert torch.equal(a_inks, b_inks) and torch.equal(a_labels, b_labels)
    assert not torch.equal(a_inks, synthetic_digits.render_glyphs(per_digit=3, seed=6)[0])
    assert a_inks.shape == (30, 1, 32, 32) and a_labels.tolist() == sorted(a_labels.tolist())
    assert a_inks.flatten(1).unique(dim=0).shape[0] == 30  # every glyph drawn anew


def test_looks_span_both_polarities_outlines_and_textures():
    data = synthetic_digits.SyntheticDigits(per_digit=4, seed=0)
    images, labels, tags = data.batch(400)
    assert images.shape == (400, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    counts = {tag: sum(tag in t for t in tags) for tag in synthetic_digits.LOOK_WORDS}
    assert all(counts[tag] > 40 for tag in ("dark", "outline", "textured", "plain", "colour")), counts
    border = torch.cat([images[..., :2, :].flatten(1), images[..., -2:, :].flatten(1)], 1).mean(1)
    dark = torch.tensor(["dark" in t for t in tags])
    assert border[dark].mean() < border[~dark].mean() - 0.2  # dark looks have dark grounds


def test_seeded_training_leaves_the_callers_rng_and_threads_alone():
    threads, state = torch.get_num_threads(), torch.get_rng_state()
    with tiny_training.seeded(0, threads=1):
        first = torch.rand(3)
    with tiny_training.seeded(0, threads=1):
        assert torch.equal(torch.rand(3), first)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), state)


@pytest.mark.slow
def test_a_short_training_run_yields_teachers_above_chance(tmp_path, monkeypatch):
    """The recipe, not only its shipped result: a few minutes' budget from random weights, and
    DemoDigits is never generated (the cache stays empty)."""
    session_cache = os.environ["DDG_SWEEP_CACHE"]  # DemoDigits for the evaluation: built once per session
    monkeypatch.setenv("DDG_SWEEP_CACHE", str(tmp_path / "cache"))
    summary = tiny_training.train_all(tmp_path / "weights", "test", threads=1, say=lambda line: None)
    assert set(summary["seconds"]) == {"clip", "stable_diffusion", "student_vit-base", "student_resnet50"}
    assert not (tmp_path / "cache").exists()
    lines = []  # a second call on the same folder keeps every finished part
    again = tiny_training.train_all(tmp_path / "weights", "test", threads=1, say=lines.append)
    assert again["seconds"] == summary["seconds"] and all("kept" in line for line in lines)
    monkeypatch.setenv("DDG_SWEEP_CACHE", session_cache)
    images, class_names = demo_images(per_env=60)
    clip = load_clip_teacher(str(tmp_path / "weights" / "clip"))
    sd = load_sd_teacher(str(tmp_path / "weights" / "stable-diffusion"))
    x, y = images["clean"]
    assert clip_zero_shot(clip, x, y, class_names) > 0.2
    assert diffusion_classifier(sd, x, y, class_names, 32, n_draws=8) > 0.15
