"""DDG and VL2V updates on tiny models and random minibatches."""
import pytest
import torch

from ddg_sweep.algorithms import get_algorithm_class
from ddg_sweep.algorithms.base import RunContext
from ddg_sweep.hparams import resolve_hparams
from ddg_sweep.models.tiny import tiny_clip_teacher_path, tiny_sd_path, tiny_student_path

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ENVS = ["clean", "inverted", "sketch", "noisy"]
TRAIN_ENVS = [0, 2, 3]
BATCH = 4


def make(algorithm="DDG", backbone="clip_vit-b16", **overrides):
    hparams = resolve_hparams(algorithm, "DemoDigits", overrides={"backbone": backbone, **overrides})
    paths = {"student": tiny_student_path(backbone), "clip_teacher": tiny_clip_teacher_path(),
             "stable_diffusion": tiny_sd_path()}
    ctx = RunContext(hparams=hparams, dataset="DemoDigits", class_names=CLASSES, env_names=ENVS,
                     train_envs=TRAIN_ENVS, steps=10, device=torch.device("cpu"), model_paths=paths)
    return get_algorithm_class(algorithm)(ctx)


def minibatches(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(BATCH, 3, 32, 32, generator=generator), torch.randint(0, 10, (BATCH,), generator=generator))
            for _ in TRAIN_ENVS]


def teachers(algorithm):
    return [algorithm.clip_teacher] + ([algorithm.sd_teacher] if hasattr(algorithm, "sd_teacher") else [])


@pytest.fixture(scope="module")
def ddg():
    return make(stage1_steps=2)


def test_stage_switches_at_stage1_steps(ddg):
    records = [ddg.update(minibatches(step), step) for step in range(4)]
    assert [r["stage"] for r in records] == ["align", "align", "diffusion", "diffusion"]
    assert all("loss_diff" not in r for r in records[:2])
    for r in records[2:]:
        assert isinstance(r["loss_diff"], float) and isinstance(r["loss_align"], float)
        assert r["loss"] == pytest.approx(r["loss_diff"] + 1.0 * r["loss_align"], rel=1e-5)  # align_weight 1


def test_stage_two_gradient_reaches_student_and_projection_only(ddg):
    ddg.update(minibatches(), step=5)
    student = ddg.network.featurizer
    assert all(p.grad is not None for p in ddg.network.head.projection.parameters())
    assert sum(p.grad.abs().sum() for p in student.parameters() if p.grad is not None) > 0
    for teacher in teachers(ddg):
        assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    optimised = {id(p) for group in ddg.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for teacher in teachers(ddg) for p in teacher.parameters()}


def test_stage_one_projection_only_leaves_the_student_alone():
    ddg = make(stage1_steps=5, stage1_trainable="projection")
    ddg.update(minibatches(), step=0)
    assert all(p.grad is None for p in ddg.network.featurizer.parameters())
    assert ddg.network.head.projection.weight.grad is not None
    ddg = make(stage1_steps=5, stage1_trainable="all")
    ddg.update(minibatches(), step=0)
    assert any(p.grad is not None for p in ddg.network.featurizer.parameters())


def test_align_weight_scales_the_stage_two_alignment_term():
    record = make(stage1_steps=0, align_weight=0.0).update(minibatches(), step=0)
    assert record["loss"] == record["loss_diff"] and "loss_align" in record
    record = make(stage1_steps=0, align_weight=0.25).update(minibatches(), step=0)
    assert record["loss"] == pytest.approx(record["loss_diff"] + 0.25 * record["loss_align"], rel=1e-5)


@pytest.mark.parametrize("algorithm", ["VL2V", "DDG"])
@pytest.mark.parametrize("lmd", [0.0, 0.5, 1.0])
def test_lmd_is_the_image_text_mix_of_the_alignment_loss(algorithm, lmd):
    """L_align = -(a mean cos(z, v) + (1 - a) mean cos(z, t_y)), computed by hand for a = lmd."""
    model = make(algorithm, lmd=lmd)
    z = torch.tensor([[1.0, 0.0] + [0.0] * 62, [0.0, 2.0] + [0.0] * 62])
    v = torch.tensor([[3.0, 0.0] + [0.0] * 62, [0.0, -1.0] + [0.0] * 62])  # cosines 1 and -1: mean 0
    y = torch.tensor([4, 7])
    text = model.network.head.text_embeddings[y]  # unit rows
    text_cos = torch.stack([text[0, 0], text[1, 1]])  # cos(z_i, t_i): z is a scaled unit vector
    expected = -(lmd * 0.0 + (1 - lmd) * text_cos.mean())
    torch.testing.assert_close(model.alignment(z, v, y), expected, atol=1e-6, rtol=1e-5)


def test_guidance_scale_one_ignores_the_negative(ddg):
    ddg.hparams["cfg_scale"] = 1.0
    try:
        x = torch.cat([x for x, _ in minibatches()])
        cond = ddg.class_tokens[torch.arange(len(x)) % len(CLASSES)]
        losses = []
        for neg in (ddg.negative_tokens[0].expand(len(x), -1, -1), torch.zeros_like(cond)):
            torch.manual_seed(1)
            losses.append(ddg.guided_diffusion_loss(x, cond, neg))
        assert losses[0].item() == pytest.approx(losses[1].item(), rel=1e-6)
        ddg.hparams["cfg_scale"] = 3.0
        torch.manual_seed(1)
        assert ddg.guided_diffusion_loss(x, cond, torch.zeros_like(cond)).item() != pytest.approx(losses[0].item())
    finally:
        ddg.hparams["cfg_scale"] = 3.0


def test_domain_negatives_are_each_samples_own_source_environment(ddg):
    negatives = ddg.negative_conditioning([2, 3, 1])
    expected = ddg.sd_teacher.encode_prompts(["a clean image", "a sketch image", "a noisy image"])
    for row, env in zip(range(6), [0, 0, 1, 1, 1, 2]):
        torch.testing.assert_close(negatives[row], expected[env])


def test_null_negative_is_the_empty_prompt():
    ddg = make(negative="null")
    torch.testing.assert_close(ddg.negative_conditioning([2, 1])[2], ddg.sd_teacher.encode_prompts([""])[0])


def test_class_tokens_are_sd_text_states_of_class_prompts(ddg):
    expected = ddg.sd_teacher.encode_prompts(["a photo of a three."])[0]
    torch.testing.assert_close(ddg.class_tokens[3], expected)


def test_projected_conditioning_trains_and_checkpoints_its_token_map():
    ddg = make(stage1_steps=0, conditioning="projected", backbone="resnet50")
    ddg.update(minibatches(), step=0)
    assert "token_map" in ddg.trained_modules()
    assert ddg.token_map.linear.weight.grad.abs().sum() > 0
    assert any(key.startswith("token_map.") for key in ddg.state_dict_for_checkpoint()["modules"])


def test_vl2v_trains_the_projection_first_then_the_backbone():
    vl2v = make("VL2V", stage1_steps=0.5)  # 5 of the context's 10 steps
    assert vl2v.stage_two_start == 5
    first = vl2v.update(minibatches(), step=4)
    assert first["stage"] == "align" and "loss_diff" not in first
    assert all(p.grad is None for p in vl2v.network.featurizer.parameters())
    assert vl2v.network.head.projection.weight.grad is not None
    second = vl2v.update(minibatches(), step=5)
    assert second["stage"] == "align_backbone"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vl2v.network.featurizer.parameters())
    assert all(not p.requires_grad for p in vl2v.clip_teacher.parameters())
    assert vl2v.predict(minibatches()[0][0]).shape == (BATCH, len(CLASSES))


def test_ddg_without_guidance_signal_trains_exactly_like_vl2v():
    """cfg_scale 0 makes eps_hat = eps_neg (no gradient to the student); align_weight 1 leaves L_align."""
    weights = []
    for algorithm, extra in (("VL2V", {}), ("DDG", {"cfg_scale": 0.0, "align_weight": 1.0})):
        torch.manual_seed(3)  # the same projection P
        model = make(algorithm, stage1_steps=2, **extra)
        for step in range(4):
            model.update(minibatches(step), step)
        weights.append(torch.cat([p.detach().flatten() for p in model.network.parameters()]))
    torch.testing.assert_close(weights[0], weights[1])


def test_checkpoint_round_trip_restores_predictions(ddg):
    x = minibatches(3)[0][0]
    state = ddg.state_dict_for_checkpoint()
    restored = make(stage1_steps=2)
    restored.load_checkpoint(state)
    ddg.eval(), restored.eval()
    torch.testing.assert_close(restored.predict(x), ddg.predict(x))
    ddg.train()


def test_stage_two_update_is_reproducible_from_the_global_seed():
    records = []
    for _ in range(2):
        torch.manual_seed(7)
        records.append(make(stage1_steps=0).update(minibatches(), step=0))
    assert records[0] == records[1]
