"""An offline Hugging Face cache of the paper's five repos, in their real layout, at tiny widths.

`build_fake_hub(cache)` writes `cache/models--ORG--NAME/{refs/main, snapshots/<commit>/..., blobs/}`
(each snapshot file a link to its blob, as huggingface_hub stores them) for the repo ids of
`ddg_sweep.models.hub.PAPER_MODELS`, with the file names and formats those repos ship:

- openai/clip-vit-base-patch16, openai/clip-vit-large-patch14: two-tower `CLIPModel` configs
  and model.safetensors (the student loads only the image tower), vocab.json/merges.txt and
  tokenizer.json, preprocessor_config.json;
- google/vit-base-patch16-224-in21k: a `ViTModel` with its pooler, names without a prefix;
- microsoft/resnet-50: `ResNetForImageClassification` (names under `resnet.`, a classifier);
- CompVis/stable-diffusion-v1-4: model_index.json, a PNDM scheduler config, a vocab/merges
  tokenizer, the text encoder's `text_model.` names (and its saved position_ids), the VAE's old
  attention names (query/key/value/proj_attn), diffusion_pytorch_model.safetensors.

Configs are written as JSON here (the real repos' keys, tiny widths); weights come from models
built from those configs with a fixed seed. The tokenizer is a tiny BPE learnt here from the
prompts a PACS run writes. Returns, per repo id, its snapshot folder and the tensors of each
weights file (relative path -> {name: tensor}), to compare loaded weights against.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import save_file

IMAGE_SIZE = 32
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5)
SPECIAL = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
           "unk_token": "<|endoftext|>"}
CORPUS = ("a photo of a dog. a photo of a elephant. a photo of a giraffe. a photo of a guitar. "
          "a photo of a horse. a photo of a house. a photo of a person. a art painting image "
          "a cartoon image a photo image a sketch image")


def _byte_symbols() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def learn_bpe(text: str, n_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's BPE format: byte symbols, the same ending a word (`</w>`), merges, two specials."""
    words = Counter(tuple(word[:-1]) + (word[-1] + "</w>",) for word in text.replace(".", " .").split())
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda pair: pairs[pair])
        merges.append(best)
        merged = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}, merges


def _tokenizer_files(vocab: dict, merges: list, with_tokenizer_json: bool) -> dict[str, bytes]:
    added = lambda content: {"__type": "AddedToken", "content": content, "lstrip": False,  # noqa: E731
                             "normalized": True, "rstrip": False, "single_word": False}
    files = {
        "vocab.json": json.dumps(vocab).encode(),
        "merges.txt": ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode(),
        "special_tokens_map.json": json.dumps(SPECIAL).encode(),
        "tokenizer_config.json": json.dumps({
            "add_prefix_space": False, "bos_token": added(SPECIAL["bos_token"]), "do_lower_case": True,
            "eos_token": added(SPECIAL["eos_token"]), "errors": "replace", "model_max_length": 77,
            "pad_token": SPECIAL["pad_token"], "tokenizer_class": "CLIPTokenizer",
            "unk_token": added(SPECIAL["unk_token"])}).encode(),
    }
    if with_tokenizer_json:  # the CLIP repos ship the fast tokenizer too
        import tempfile

        from transformers import CLIPTokenizer

        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                Path(tmp, name).write_bytes(data)
            CLIPTokenizer.from_pretrained(tmp).save_pretrained(Path(tmp, "saved"))
            files["tokenizer.json"] = Path(tmp, "saved", "tokenizer.json").read_bytes()
    return files


def _text_config(vocab: dict, **extra) -> dict:
    return dict(TEXT, vocab_size=len(vocab), bos_token_id=vocab["<|startoftext|>"],
                eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"], **extra)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}


def _saved_names(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """A transformers model's weights under the names the repos were saved with (transformers 4),
    which transformers 5 renames on load."""
    from transformers.core_model_loading import revert_weight_conversion

    return {prefix + name: tensor for name, tensor in revert_weight_conversion(model, _weights(model)).items()}


def _safetensors(tensors: dict[str, torch.Tensor]) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_file(tensors, Path(tmp, "w.safetensors"), metadata={"format": "pt"})
        return Path(tmp, "w.safetensors").read_bytes()


def _clip_repo(vocab, merges, vision: dict, projection: int, seed: int):
    import transformers

    config = {"architectures": ["CLIPModel"], "model_type": "clip", "initializer_factor": 1.0,
              "logit_scale_init_value": 2.6592, "projection_dim": projection, "torch_dtype": "float32",
              "transformers_version": "4.21.0.dev0",
              "text_config": _text_config(vocab, model_type="clip_text_model", projection_dim=projection),
              "vision_config": dict(vision, model_type="clip_vision_model", projection_dim=projection)}
    torch.manual_seed(seed)
    tensors = _saved_names(transformers.CLIPModel(transformers.CLIPConfig.from_dict(config)))
    files = {"config.json": json.dumps(config).encode(), **_tokenizer_files(vocab, merges, True),
             "preprocessor_config.json": json.dumps({"crop_size": IMAGE_SIZE, "do_center_crop": True,
                                                     "do_normalize": True, "do_resize": True,
                                                     "feature_extractor_type": "CLIPFeatureExtractor",
                                                     "size": IMAGE_SIZE}).encode()}
    return files, {"model.safetensors": tensors}


def _vit_repo():
    import transformers

    config = {"architectures": ["ViTModel"], "model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": "gelu", "image_size": IMAGE_SIZE,
              "patch_size": 8, "num_channels": 3, "qkv_bias": True, "layer_norm_eps": 1e-12,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "transformers_version": "4.13.0.dev0"}
    torch.manual_seed(2)
    model = transformers.ViTModel(transformers.ViTConfig.from_dict(config), add_pooling_layer=True)
    tensors = _saved_names(model)
    return {"config.json": json.dumps(config).encode()}, {"model.safetensors": tensors}


def _resnet_repo():
    import transformers

    labels = {0: "tench", 1: "goldfish", 2: "great white shark"}
    config = {"architectures": ["ResNetForImageClassification"], "model_type": "resnet", "num_channels": 3,
              "embedding_size": 8, "hidden_sizes": [16, 32, 32, 64], "depths": [1, 1, 1, 1],
              "layer_type": "bottleneck", "hidden_act": "relu", "downsample_in_first_stage": False,
              "id2label": {str(k): v for k, v in labels.items()}, "label2id": {v: k for k, v in labels.items()},
              "transformers_version": "4.18.0.dev0"}
    torch.manual_seed(3)
    model = transformers.ResNetForImageClassification(transformers.ResNetConfig.from_dict(config))
    tensors = _saved_names(model)
    return {"config.json": json.dumps(config).encode()}, {"model.safetensors": tensors}


def _sd_repo(vocab, merges):
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    files = {"model_index.json": json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.2.2",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}).encode()}
    files["scheduler/scheduler_config.json"] = json.dumps({
        "_class_name": "PNDMScheduler", "_diffusers_version": "0.7.0.dev0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
        "clip_sample": False}).encode()
    files["feature_extractor/preprocessor_config.json"] = json.dumps({
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "size": 224}).encode()
    for name, data in _tokenizer_files(vocab, merges, False).items():
        files[f"tokenizer/{name}"] = data
    # SD v1.4's text encoder config names token ids 0, 1, 2 whatever the vocabulary: kept as shipped
    text = dict(TEXT, vocab_size=len(vocab), bos_token_id=0, eos_token_id=2, pad_token_id=1,
                architectures=["CLIPTextModel"], model_type="clip_text_model", projection_dim=32,
                torch_dtype="float32", transformers_version="4.22.0.dev0")
    files["text_encoder/config.json"] = json.dumps(text).encode()
    unet = {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.2.2", "act_fn": "silu",
            "attention_head_dim": 2, "block_out_channels": [8, 16, 16, 16], "center_input_sample": False,
            "cross_attention_dim": TEXT["hidden_size"],
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "downsample_padding": 1,
            "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 1,
            "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 4, "out_channels": 4,
            "sample_size": 8, "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}
    vae = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.2.2", "act_fn": "silu",
           "block_out_channels": [8, 8, 16, 16], "down_block_types": ["DownEncoderBlock2D"] * 4,
           "in_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4,
           "out_channels": 3, "sample_size": 64, "up_block_types": ["UpDecoderBlock2D"] * 4}
    files["unet/config.json"] = json.dumps(unet).encode()
    files["vae/config.json"] = json.dumps(vae).encode()
    torch.manual_seed(4)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig.from_dict(text))
    text_tensors = _saved_names(text_encoder, "text_model.")  # SD v1.4's names, under text_model.
    text_tensors["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)  # saved by old versions
    unet_tensors = _weights(UNet2DConditionModel.from_config(unet))
    vae_tensors = {_old_attention_name(k): v for k, v in _weights(AutoencoderKL.from_config(vae)).items()}
    return files, {"text_encoder/model.safetensors": text_tensors,
                   "unet/diffusion_pytorch_model.safetensors": unet_tensors,
                   "vae/diffusion_pytorch_model.safetensors": vae_tensors}


def _old_attention_name(name: str) -> str:
    """The VAE's attention names before diffusers 0.14: query, key, value, proj_attn."""
    for new, old in ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."),
                     (".to_out.0.", ".proj_attn.")):
        if ".attentions." in name and new in name:
            return name.replace(new, old)
    return name


def repo_folder(cache: Path, repo_id: str) -> Path:
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def write_repo(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """One repo in huggingface_hub's cache layout; returns its snapshot folder."""
    root = repo_folder(cache, repo_id)
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(Path("../" * (len(Path(name).parts) + 1)) / "blobs" / blob.name)
    return snapshot


def build_fake_hub(cache: Path) -> dict[str, dict]:
    from ddg_sweep.models.hub import PAPER_MODELS

    vocab, merges = learn_bpe(CORPUS, 40)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=8, hidden_act="quick_gelu")
    repos = {
        PAPER_MODELS["clip_vit-b16"]: _clip_repo(vocab, merges, vision, 24, seed=0),
        PAPER_MODELS["clip_teacher"]: _clip_repo(vocab, merges, dict(vision, patch_size=16), 16, seed=1),
        PAPER_MODELS["vit-base"]: _vit_repo(),
        PAPER_MODELS["resnet50"]: _resnet_repo(),
        PAPER_MODELS["stable_diffusion"]: _sd_repo(vocab, merges),
    }
    built = {}
    for repo_id, (files, weights) in repos.items():
        files = dict(files, **{name: _safetensors(tensors) for name, tensors in weights.items()})
        built[repo_id] = {"snapshot": write_repo(cache, repo_id, files), "weights": weights}
    return built


PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
PACS_ENVS = ("art_painting", "cartoon", "photo", "sketch")
SIZES = ((227, 227), (500, 400), (227, 227), (1024, 768))  # PACS's own size, and larger photos


def broken_copy(cache: Path, target: Path, repo_id: str, weights_file: str, drop: str) -> Path:
    """A copy of the cache whose `repo_id` checkpoint lacks the tensor `drop`."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(cache, target, symlinks=True)
    snapshot = next((repo_folder(target, repo_id) / "snapshots").iterdir())
    path = snapshot / weights_file
    tensors = load_file(path)
    del tensors[drop]
    path.unlink()  # a link into blobs/: replace the link, not the blob other snapshots share
    save_file(tensors, path, metadata={"format": "pt"})
    return target


def write_fake_pacs(root: Path) -> None:
    """PACS's layout, 2 JPEGs per class and environment; two of them 2048x1536."""
    import numpy as np
    from PIL import Image

    for e, env in enumerate(PACS_ENVS):
        for c, name in enumerate(PACS_CLASSES):
            folder = root / "PACS" / env / name
            folder.mkdir(parents=True)
            for i in range(2):
                n = (e * 7 + c) * 2 + i
                width, height = (2048, 1536) if n in (5, 40) else SIZES[n % len(SIZES)]
                ramp = np.linspace(0, 1, width)[None, :, None] * np.linspace(1, 0, height)[:, None, None]
                colour = np.array([(c * 37) % 256, (e * 61) % 256, (n * 13) % 256])
                pixels = (ramp * colour + (1 - ramp) * (255 - colour)).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{n:03d}.jpg", quality=90)
