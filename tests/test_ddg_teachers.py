"""The tiny CLIP and Stable Diffusion teachers: saved formats, loading, freezing, errors."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from ddg_sweep.algorithms.losses import batched_guidance_eps
from ddg_sweep.errors import UserError
from ddg_sweep.models.clip_teacher import load_clip_teacher
from ddg_sweep.models.sd_teacher import PROMPT_LENGTH, load_sd_teacher
from ddg_sweep.models.tiny import tiny_clip_teacher_path, tiny_sd_path, tiny_student_path


@pytest.fixture(scope="module")
def clip_teacher():
    return load_clip_teacher(tiny_clip_teacher_path())


@pytest.fixture(scope="module")
def sd_teacher():
    return load_sd_teacher(tiny_sd_path())


def assert_matches_saved(module, weights_file):
    saved = load_file(str(weights_file))
    state = module.state_dict()
    assert set(saved) <= set(state)
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name


def test_tiny_teachers_round_trip_through_from_pretrained(clip_teacher, sd_teacher):
    from pathlib import Path

    assert_matches_saved(clip_teacher.model, Path(tiny_clip_teacher_path()) / "model.safetensors")
    sd = Path(tiny_sd_path())
    assert json.loads((sd / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    assert_matches_saved(sd_teacher.unet, sd / "unet" / "diffusion_pytorch_model.safetensors")
    assert_matches_saved(sd_teacher.vae, sd / "vae" / "diffusion_pytorch_model.safetensors")
    assert_matches_saved(sd_teacher.text_encoder, sd / "text_encoder" / "model.safetensors")


def test_sd_schedule_is_v1_4s(sd_teacher):
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    expected = torch.cumprod(1 - betas, 0).float()
    torch.testing.assert_close(sd_teacher.alphas_cumprod, expected)
    assert sd_teacher.latent_scale == pytest.approx(0.18215)


def test_prompts_tokenise_without_unknowns_and_pad_to_77(sd_teacher, clip_teacher):
    for tokenizer in (sd_teacher.tokenizer, clip_teacher.tokenizer):
        ids = tokenizer(["a photo of a seven.", "a art painting image"], padding="max_length",
                        max_length=PROMPT_LENGTH).input_ids
        assert all(len(row) == PROMPT_LENGTH for row in ids)
        words = tokenizer.convert_ids_to_tokens(ids[0])
        assert words[0] == "<|startoftext|>" and "<|endoftext|>" in words
        assert words.count("<|endoftext|>") == PROMPT_LENGTH - 1 - len("aphotoofaseven.")
    assert sd_teacher.encode_prompts(["a photo of a seven.", ""]).shape == (2, PROMPT_LENGTH, sd_teacher.text_width)


def test_teachers_are_frozen_and_stay_in_eval_mode(clip_teacher, sd_teacher):
    for teacher in (clip_teacher, sd_teacher):
        teacher.train()
        assert not any(p.requires_grad for p in teacher.parameters())
        assert not any(m.training for m in teacher.modules())


def test_clip_teacher_outputs(clip_teacher):
    x = torch.randn(5, 3, 24, 24)  # any student size: resized to the teacher's
    assert clip_teacher.image_embeddings(x).shape == (5, clip_teacher.joint_width)
    head = clip_teacher.class_text_head(["zero", "one", "two"])
    assert head.shape == (3, clip_teacher.joint_width)
    torch.testing.assert_close(head.norm(dim=-1), torch.ones(3))


def test_batched_guidance_equals_two_unet_calls(sd_teacher):
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(3, 4, 8, 8, generator=generator)
    t = torch.tensor([0, 500, 999])
    cond = torch.randn(3, PROMPT_LENGTH, sd_teacher.text_width, generator=generator, requires_grad=True)
    neg = torch.randn(3, PROMPT_LENGTH, sd_teacher.text_width, generator=generator)
    eps_cond, eps_neg = batched_guidance_eps(sd_teacher.predict_noise, x_t, t, cond, neg)
    eps_cond.sum().backward()
    batched_grad = cond.grad.clone()
    cond.grad = None
    separate_cond = sd_teacher.predict_noise(x_t, t, cond)
    with torch.no_grad():
        separate_neg = sd_teacher.predict_noise(x_t, t, neg)
    separate_cond.sum().backward()
    torch.testing.assert_close(eps_cond, separate_cond, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eps_neg, separate_neg, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched_grad, cond.grad, rtol=1e-4, atol=1e-6)
    assert not any(p.grad is not None for p in sd_teacher.parameters())


def test_sd_text_width_mismatch_is_a_user_error(tmp_path):
    import transformers

    folder = tmp_path / "sd"
    shutil.copytree(tiny_sd_path(), folder)
    config = transformers.CLIPTextConfig.from_pretrained(folder / "text_encoder")
    config.hidden_size = 48
    shutil.rmtree(folder / "text_encoder")
    transformers.CLIPTextModel(config).save_pretrained(folder / "text_encoder")
    with pytest.raises(UserError, match="width 48 does not match the UNet's cross-attention width 64"):
        load_sd_teacher(str(folder))


def test_wrong_kind_folders_are_user_errors():
    with pytest.raises(UserError, match="model_index.json.*--sd-path"):
        load_sd_teacher(tiny_clip_teacher_path())
    with pytest.raises(UserError, match="config.json.*--clip-path"):
        load_clip_teacher(tiny_sd_path())
    with pytest.raises(UserError, match="'clip_vision_model' model, not a CLIP teacher"):
        load_clip_teacher(tiny_student_path("clip_vit-b16"))
    with pytest.raises(UserError, match="does not exist"):
        load_sd_teacher("/nonexistent/stable-diffusion")
