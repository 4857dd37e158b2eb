"""Stage II's guidance forms on the tiny UNet: the literal form's decomposition, the forms'
agreement at w = 1, `target`'s third pass, and their place in jobs and reports."""
import dataclasses

import pandas as pd
import pytest
import torch

from ddg_sweep.algorithms.losses import batched_guidance_eps, guidance_loss, separate_guidance_eps
from ddg_sweep.bench import build_ddg, random_minibatches, unet_pass_inputs
from ddg_sweep.errors import UserError
from ddg_sweep.hparams import GUIDANCE_FORMS, resolve_hparams
from ddg_sweep.jobs import make_job
from ddg_sweep.perf import StepOptions
from ddg_sweep.report.select.variants import split_rows
from helpers.models import unet_failing_above

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ddg():
    torch.manual_seed(0)
    return build_ddg("tiny", CPU, 4, 32, StepOptions.plain())


def _eps(ddg, x_t, t, tokens):
    return ddg.sd_teacher.predict_noise(x_t, t, tokens).float()


def _inputs(ddg, n=12, seed=0):
    x_t, t, cond, neg, eps, labels = unet_pass_inputs(ddg, n, seed)
    return x_t, t, neg, eps, labels


def _mix(ddg, logits):
    """A differentiable conditioning: the softmax mix of the class tokens."""
    return torch.einsum("bk,ktd->btd", logits.softmax(-1), ddg.class_tokens)


@pytest.mark.parametrize("w", [2.0, 3.0, 5.0])
def test_literal_form_is_plain_distillation_plus_a_pull_toward_the_domain_style(ddg, w):
    """L(w) = w L(1) + w (w - 1) ||eps_c - eps_neg||^2 + a term without c: the difference is the same
    for any conditioning (to float precision), and so the gradients in c agree."""
    x_t, t, neg, eps, _ = _inputs(ddg)
    with torch.no_grad():
        eps_neg = _eps(ddg, x_t, t, neg)
    residuals, grads = [], []
    for seed in (1, 2):
        logits = (3 * torch.randn(len(x_t), 10, generator=torch.Generator().manual_seed(seed))).requires_grad_()
        eps_c = _eps(ddg, x_t, t, _mix(ddg, logits))
        literal = guidance_loss("prediction", eps_c, eps_neg, eps, w)
        plain = guidance_loss("prediction", eps_c, eps_neg, eps, 1.0)
        pull = ((eps_c - eps_neg) ** 2).mean()
        residuals.append((literal - w * plain - w * (w - 1) * pull).item())
        literal_grad = torch.autograd.grad(literal, logits, retain_graph=True)[0]
        parts_grad = torch.autograd.grad(w * plain + w * (w - 1) * pull, logits)[0]
        grads.append((literal_grad, parts_grad))
        # the term without c is -(w - 1) ||eps_neg - eps||^2
        assert residuals[-1] == pytest.approx(-(w - 1) * ((eps_neg - eps) ** 2).mean().item(), rel=1e-4)
    assert residuals[0] == pytest.approx(residuals[1], rel=1e-5, abs=1e-6)
    for literal_grad, parts_grad in grads:
        assert literal_grad.abs().sum() > 0
        torch.testing.assert_close(literal_grad, parts_grad, rtol=1e-4, atol=1e-7)


def test_every_form_is_plain_distillation_at_w_one_and_skips_the_negative_pass(ddg):
    x_t, t, neg, eps, labels = _inputs(ddg)
    plain_cond = ddg.class_tokens[labels].clone().requires_grad_()
    plain = ((_eps(ddg, x_t, t, plain_cond) - eps) ** 2).mean()
    plain_grad = torch.autograd.grad(plain, plain_cond)[0]
    calls = []
    predict_noise = ddg.sd_teacher.predict_noise
    object.__setattr__(ddg.sd_teacher, "predict_noise", lambda *a: calls.append(len(a[0])) or predict_noise(*a))
    try:
        for form in GUIDANCE_FORMS:
            ddg.hparams.update(guidance_form=form, cfg_scale=1.0)
            cond = plain_cond.detach().clone().requires_grad_()
            calls.clear()
            loss = ddg.unet_loss(x_t, t, cond, neg, eps, labels)
            loss.backward()
            assert calls == [len(x_t)], form  # the student's pass only
            assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
            torch.testing.assert_close(cond.grad, plain_grad, rtol=1e-5, atol=1e-8)
    finally:
        object.__setattr__(ddg.sd_teacher, "predict_noise", predict_noise)
        ddg.hparams.update(guidance_form="prediction", cfg_scale=3.0)


def test_target_form_regresses_on_a_stop_gradient_guided_target(ddg):
    """|| eps_c - sg[eps + (w - 1)(eps_y - eps_neg)] ||^2 with eps_y under the label's prompt, computed
    by hand from three UNet calls; the same through one batched call; interpolate likewise."""
    x_t, t, neg, eps, labels = _inputs(ddg)
    w = 3.0
    cond = _mix(ddg, torch.randn(len(x_t), 10, generator=torch.Generator().manual_seed(3))).detach()
    with torch.no_grad():
        eps_neg, eps_y = _eps(ddg, x_t, t, neg), _eps(ddg, x_t, t, ddg.class_tokens[labels])
    by_hand_cond = cond.clone().requires_grad_()
    target = eps + (w - 1) * (eps_y - eps_neg)
    by_hand = ((_eps(ddg, x_t, t, by_hand_cond) - target) ** 2).mean()
    by_hand.backward()
    for guidance in (separate_guidance_eps, batched_guidance_eps):
        ddg.ctx.step_options = dataclasses.replace(StepOptions.plain(),
                                                   batched_guidance=guidance is batched_guidance_eps)
        ddg.hparams.update(guidance_form="target", cfg_scale=w)
        try:
            mine = cond.clone().requires_grad_()
            loss = ddg.unet_loss(x_t, t, mine, neg, eps, labels)
            loss.backward()
        finally:
            ddg.hparams.update(guidance_form="prediction", cfg_scale=3.0)
            ddg.ctx.step_options = StepOptions.plain()
        assert loss.item() == pytest.approx(by_hand.item(), rel=1e-4)
        torch.testing.assert_close(mine.grad, by_hand_cond.grad, rtol=1e-3, atol=1e-7)
    eps_c = _eps(ddg, x_t, t, cond)
    assert guidance_loss("interpolate", eps_c, eps_neg, eps, w).item() == pytest.approx(
        ((eps_neg + (eps_c - eps_neg) / w - eps) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="eps_label"):
        guidance_loss("target", eps_c, eps_neg, eps, w)


def _target_step(options, max_samples=None):
    torch.manual_seed(0)
    algorithm = build_ddg("tiny", CPU, 4, 32, options, guidance_form="target")  # 12 UNet samples
    algorithm.optimizer.step = lambda: None
    calls = unet_failing_above(algorithm, max_samples) if max_samples else []
    torch.manual_seed(1)
    result = algorithm.update(random_minibatches(algorithm, 4, 3, CPU), step=1)
    grads = torch.cat([p.grad.flatten() for p in algorithm.network.parameters() if p.grad is not None])
    return result, grads, calls, algorithm


def test_target_forms_third_pass_is_covered_by_micro_batches_and_the_memory_ladder(monkeypatch):
    import ddg_sweep.algorithms.ddg as ddg_module

    reference, reference_grads, _, _ = _target_step(StepOptions.plain())
    micro, micro_grads, calls, _ = _target_step(dataclasses.replace(StepOptions.plain(), unet_micro_batch=5),
                                                max_samples=5)
    assert max(calls) == 5 and len(calls) == 3 * 3  # three micro-batches, three passes each
    assert micro["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    torch.testing.assert_close(micro_grads, reference_grads, rtol=1e-4, atol=1e-6)

    monkeypatch.setattr(ddg_module, "MIN_MICRO_BATCH", 4)
    with pytest.warns(UserWarning, match="micro-batches of 6 samples"):
        laddered, laddered_grads, calls, algorithm = _target_step(StepOptions.plain(), max_samples=6)
    assert calls[0] == 12 and set(calls[1:]) == {6}  # the no-grad passes too never exceed the micro-batch
    assert laddered["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    torch.testing.assert_close(laddered_grads, reference_grads, rtol=1e-4, atol=1e-6)


def test_guidance_form_is_checked_and_part_of_a_jobs_identity():
    with pytest.raises(UserError, match="guidance_form='cfg' must be one of prediction, target, interpolate"):
        resolve_hparams("DDG", "DemoDigits", overrides={"guidance_form": "cfg"})
    with pytest.raises(UserError, match="divides by w; pass --cfg-scale > 0"):
        resolve_hparams("DDG", "DemoDigits", overrides={"guidance_form": "interpolate", "cfg_scale": 0.0})
    with pytest.raises(UserError, match="does not apply to ERM"):
        resolve_hparams("ERM", "DemoDigits", overrides={"guidance_form": "target"})
    literal = make_job("DDG", "DemoDigits", [0], steps=120, checkpoint_freq=5)
    assert literal.hparams["guidance_form"] == "prediction"
    # the id a demo DDG job had before the hparam existed: earlier sweeps' runs stay theirs
    assert literal.job_id == "d99b2ecc8ee9b5fa1eed"
    ids = {make_job("DDG", "DemoDigits", [0], steps=120, checkpoint_freq=5,
                    overrides={"guidance_form": form}).job_id for form in GUIDANCE_FORMS}
    assert len(ids) == 3 and literal.job_id in ids


def test_variant_rows_name_the_form_and_scale_and_fill_runs_recorded_before_the_form():
    frame = pd.DataFrame({
        "algorithm": pd.Categorical(["ERM", "DDG", "DDG", "DDG", "DDG"]),
        "hp_guidance_form": pd.array([None, "target", "prediction", None, "interpolate"], dtype="string"),
        "hp_cfg_scale": [float("nan"), 3.0, 1.0, 3.0, 3.0],
    })
    split = split_rows(frame, ("guidance_form", "cfg_scale"))
    assert list(split["algorithm"]) == ["ERM", "DDG target w=3", "DDG prediction w=1", "DDG prediction w=3",
                                        "DDG interpolate w=3"]
    assert list(split["base_algorithm"]) == ["ERM"] + ["DDG"] * 4
    assert list(split_rows(frame, ())["algorithm"]) == list(frame["algorithm"])
    with pytest.raises(UserError, match="--rows-by: unknown hyperparameter"):
        split_rows(frame, ("guidance",))


def test_a_checkpoint_without_the_training_envs_in_splits_reports_its_validation_accuracy():
    """Intermediate checkpoints evaluate only what selection reads; what a trial tells Tune (and a
    search's objective) is still the mean of the training environments' out splits."""
    from ddg_sweep.config import RunConfig
    from ddg_sweep.splits import evaluated_splits
    from trainables.ddg_trainable import checkpoint_metrics

    assert evaluated_splits(4, [2], last_checkpoint=False) == ["env0_out", "env1_out", "env2_in", "env2_out",
                                                                "env3_out"]
    assert len(evaluated_splits(4, [2], last_checkpoint=True)) == 8 == len(evaluated_splits(4, [2], False, True))
    config = RunConfig(dataset="DemoDigits", algorithm="ERM", test_envs=(2,), steps=10,
                       hparams=resolve_hparams("ERM", "DemoDigits"), output_dir="unused")
    record = {"step": 5, "loss": 1.0, "step_time": 0.1, "env0_out_acc": 0.5, "env1_out_acc": 0.7,
              "env2_in_acc": 0.3, "env2_out_acc": 0.4, "env3_out_acc": 0.9}
    metrics = checkpoint_metrics(record, config)
    assert metrics["val_acc"] == pytest.approx((0.5 + 0.7 + 0.9) / 3) and metrics["held_out_acc"] == 0.3


def test_targets_extra_pass_is_one_more_unet_forward_as_bench_counts_it(ddg):
    """What `bench --guidance-form all` times per form: target's no-grad label pass is one more UNet
    forward. The UNet's weights need no gradient, so its backward (into the conditioning only)
    costs about one forward: 4 forwards' worth against the literal form's 3; interpolate's
    work is the literal form's."""
    from torch.utils.flop_counter import FlopCounterMode

    from ddg_sweep.bench import unet_pass

    inputs = unet_pass_inputs(ddg, 6)
    flops = {}
    for form in GUIDANCE_FORMS:
        ddg.hparams.update(guidance_form=form, cfg_scale=3.0)
        counter = FlopCounterMode(display=False)
        with counter:
            unet_pass(ddg, inputs)
        flops[form] = counter.get_total_flops()
    ddg.hparams.update(guidance_form="prediction")
    assert flops["interpolate"] == flops["prediction"] > 0
    assert flops["target"] == pytest.approx(flops["prediction"] * 4 / 3, rel=0.02)
