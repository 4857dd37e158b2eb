"""The paper's loading route on an offline cache laid out like the real repos (tests/helpers/fake_hub.py).

Every component loads by hub id with the saved weights; a checkpoint lacking a tensor is a
one-line error, at load and in the preflight check; a short `train --models paper` (DDG) on a
fake PACS folder of JPEGs, a few of them large, writes valid records.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from ddg_sweep.errors import UserError
from ddg_sweep.hparams import BACKBONES, resolve_hparams
from ddg_sweep.models.hub import PAPER_MODELS
from helpers.fake_hub import _old_attention_name, broken_copy, build_fake_hub, write_fake_pacs

pytestmark = pytest.mark.xdist_group("real_layout")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The fake cache, and huggingface_hub pointed at it (and offline) for this module."""
    import huggingface_hub.constants as hf

    cache = tmp_path_factory.mktemp("hf") / "hub"
    built = build_fake_hub(cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hf, "HF_HUB_CACHE", str(cache))
        patch.setattr(hf, "HF_HUB_OFFLINE", True)
        yield cache, built


def assert_weights_equal(model, saved: dict, prefix: str = "") -> None:
    """Every weight of `model` equals the saved tensor it came from (names as saved)."""
    import transformers
    from transformers.core_model_loading import revert_weight_conversion

    state = {k: v.detach() for k, v in model.state_dict().items()}
    if isinstance(model, transformers.PreTrainedModel):
        state = revert_weight_conversion(model, state)
    assert state
    for name, tensor in state.items():
        candidates = [c for c in (name, prefix + name, _old_attention_name(name)) if c in saved]
        assert candidates, f"{name} has no saved tensor"
        torch.testing.assert_close(tensor, saved[candidates[0]], rtol=0, atol=0)


def test_every_component_loads_by_hub_id_with_the_saved_weights(hub, caplog):
    from ddg_sweep.models.clip_teacher import load_clip_teacher
    from ddg_sweep.models.sd_teacher import load_sd_teacher
    from ddg_sweep.models.student import load_student

    _, built = hub
    caplog.set_level(logging.WARNING, logger="ddg_sweep.models")
    prefixes = {"clip_vit-b16": "", "vit-base": "", "resnet50": "resnet."}
    for backbone in BACKBONES:
        student = load_student(backbone, PAPER_MODELS[backbone])
        assert_weights_equal(student.model, built[PAPER_MODELS[backbone]]["weights"]["model.safetensors"],
                             prefixes[backbone])
    assert student.image_size == 224  # ResNet configs carry no size
    load_student("clip_vit-b16", PAPER_MODELS["clip_vit-b16"])  # again: its unused tower is not said again
    unused = [r.getMessage() for r in caplog.records if "not used by the model" in r.getMessage()]
    assert len(unused) == 3, unused  # CLIP's text tower, ViT's pooler, ResNet's classifier: once each
    assert any("openai/clip-vit-base-patch16" in m and "text_model." in m for m in unused)
    assert any("microsoft/resnet-50" in m and "classifier." in m for m in unused)

    clip = load_clip_teacher(PAPER_MODELS["clip_teacher"])
    assert_weights_equal(clip.model, built[PAPER_MODELS["clip_teacher"]]["weights"]["model.safetensors"])
    ids = clip.tokenizer(["a photo of a dog."]).input_ids[0]
    vocab = json.loads((built[PAPER_MODELS["clip_teacher"]]["snapshot"] / "vocab.json").read_text())
    assert ids[0] == vocab["<|startoftext|>"] and ids[-1] == vocab["<|endoftext|>"]
    assert vocab["photo</w>"] in ids  # a merge the tiny BPE learnt

    sd = load_sd_teacher(PAPER_MODELS["stable_diffusion"])
    sd_weights = built[PAPER_MODELS["stable_diffusion"]]["weights"]
    assert_weights_equal(sd.unet, sd_weights["unet/diffusion_pytorch_model.safetensors"])
    vae_saved = sd_weights["vae/diffusion_pytorch_model.safetensors"]
    assert any(".query." in name for name in vae_saved)  # the old names were loaded, renamed
    assert_weights_equal(sd.vae, vae_saved)
    assert_weights_equal(sd.text_encoder, sd_weights["text_encoder/model.safetensors"], "text_model.")
    from diffusers import DDPMScheduler

    expected = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod
    torch.testing.assert_close(sd.alphas_cumprod, expected)  # read from the PNDM config
    assert sd.encode_prompts(["a photo of a dog."]).shape == (1, 77, 32)


def test_preflight_check_finds_nothing_wrong_with_a_complete_cache(hub):
    from ddg_sweep.models.sources import check_model_sources

    for algorithm in ("ERM", "VL2V", "DDG"):
        for backbone in BACKBONES:
            hparams = resolve_hparams(algorithm, "PACS", 0, 0, "paper", {"backbone": backbone})
            assert check_model_sources(algorithm, hparams) == []


@pytest.mark.parametrize("repo_key, weights_file, drop, loader, named", [
    ("clip_vit-b16", "model.safetensors", "vision_model.encoder.layers.1.self_attn.q_proj.weight",
     "student", "vision_model.encoder.layers.1.self_attn.q_proj.weight"),
    ("stable_diffusion", "vae/diffusion_pytorch_model.safetensors", "encoder.mid_block.attentions.0.query.weight",
     "sd", "encoder.mid_block.attentions.0.to_q.weight"),
])
def test_a_removed_tensor_is_a_one_line_error_at_load_and_in_preflight(hub, tmp_path, repo_key, weights_file,
                                                                       drop, loader, named):
    import huggingface_hub.constants as hf

    from ddg_sweep.models.sd_teacher import load_sd_teacher
    from ddg_sweep.models.sources import check_model_sources
    from ddg_sweep.models.student import load_student

    cache, _ = hub
    broken = broken_copy(cache, tmp_path / "hub", PAPER_MODELS[repo_key], weights_file, drop)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hf, "HF_HUB_CACHE", str(broken))
        with pytest.raises(UserError) as err:
            if loader == "student":
                load_student("clip_vit-b16", PAPER_MODELS[repo_key])
            else:
                load_sd_teacher(PAPER_MODELS[repo_key])
        problems = check_model_sources("DDG", resolve_hparams("DDG", "PACS", 0, 0, "paper", {}))
    message = str(err.value)
    assert "\n" not in message and PAPER_MODELS[repo_key] in message
    assert f"lacks 1 weight(s) the model needs ({named})" in message
    assert problems == [message]  # the preflight says exactly what loading would


@pytest.mark.slow
def test_train_models_paper_on_the_real_layout_writes_valid_records(hub, tmp_path):
    cache, _ = hub
    write_fake_pacs(tmp_path / "data")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    command = [sys.executable, "-m", "ddg_sweep.run", "train", "--dataset", "PACS", "--algorithm", "DDG",
               "--test-envs", "0", "--models", "paper", "--steps", "3", "--checkpoint-freq", "2",
               "--batch-size", "2", "--sd-resolution", "64", "--device", "cpu", "--num-workers", "0",
               "--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(command + ["--output-dir", str(tmp_path / "run")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2]
    assert records[0]["hparams"]["models"] == "paper" and records[0]["hparams"]["sd_resolution"] == 64
    for key in ("env0_in_acc", "env0_out_acc", "env1_out_acc", "env2_out_acc", "env3_out_acc"):
        assert 0 <= records[-1][key] <= 1
    assert all(r["loss"] == r["loss"] for r in records)  # not NaN
    assert (tmp_path / "run" / "done").exists()
    unused = [line for line in proc.stderr.splitlines() if "not used by the model" in line]
    assert len(unused) == 1 and "openai/clip-vit-base-patch16" in unused[0]  # the student's text tower

    # the same run with one attention weight gone from the student: refused before training
    broken = broken_copy(cache, tmp_path / "broken", PAPER_MODELS["clip_vit-b16"], "model.safetensors",
                         "vision_model.encoder.layers.0.self_attn.k_proj.weight")
    proc = subprocess.run(command + ["--output-dir", str(tmp_path / "run-broken")], capture_output=True,
                          text=True, timeout=300, env=dict(env, HF_HUB_CACHE=str(broken)))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "lacks 1 weight(s)" in lines[0] and "k_proj" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "run-broken" / "results.jsonl").exists()
