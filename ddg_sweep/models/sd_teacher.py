"""The frozen Stable Diffusion teacher: VAE, UNet, its CLIP text encoder, DDPM schedule."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddg_sweep.data.transforms import denormalise
from ddg_sweep.errors import UserError
from ddg_sweep.models.clip_teacher import freeze
from ddg_sweep.models.hub import check_model_kind, load_pretrained
from ddg_sweep.perf import check_compiled_unet

PROMPT_LENGTH = 77


def class_prompt(class_name: str) -> str:
    return f"a photo of a {class_name}."


def domain_prompt(env_name: str) -> str:
    """The negative prompt naming a source domain's style: 'a {domain} image'."""
    return f"a {env_name.replace('_', ' ')} image"


class SDTeacher(nn.Module):
    """Frozen SD components; every method but `predict_noise` runs without gradient."""

    def __init__(self, vae: nn.Module, unet: nn.Module, text_encoder: nn.Module, tokenizer,
                 alphas_cumprod: torch.Tensor):
        super().__init__()
        text_width = text_encoder.config.hidden_size
        cross_width = unet.config.cross_attention_dim
        if text_width != cross_width:
            raise UserError(f"Stable Diffusion text encoder width {text_width} does not match the UNet's "
                            f"cross-attention width {cross_width}; point --sd-path at one consistent pipeline")
        self.vae = freeze(vae)
        self.unet = freeze(unet)
        self.text_encoder = freeze(text_encoder)
        self.tokenizer = tokenizer
        self.text_width = text_width
        self.latent_scale = float(vae.config.scaling_factor)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone(), persistent=False)
        # Set by perf.apply_to_sd_teacher; a plain attribute, so the compiled copy is no submodule.
        self.channels_last = False
        object.__setattr__(self, "compiled_unet", None)
        self.compiled_unet_error = None  # relative gradient error of compiled vs eager, once checked

    def train(self, mode: bool = True):
        return super().train(False)  # a frozen teacher: dropout off whatever the caller's mode

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Last hidden states of the text encoder, padded to 77 tokens: (N, 77, D)."""
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=PROMPT_LENGTH,
                                return_tensors="pt")
        device = self.alphas_cumprod.device
        return self.text_encoder(input_ids=tokens.input_ids.to(device)).last_hidden_state.float()

    @torch.no_grad()
    def encode_images(self, x: torch.Tensor, resolution: int) -> torch.Tensor:
        """x0: VAE posterior means of ImageNet-normalised images, in [-1, 1] at `resolution`, scaled."""
        pixels = denormalise(x.float()) * 2 - 1
        if pixels.shape[-1] != resolution or pixels.shape[-2] != resolution:
            pixels = F.interpolate(pixels, size=(resolution, resolution), mode="bilinear", align_corners=False)
        return self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mean.float() * self.latent_scale

    def add_noise(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The UNet's epsilon prediction; differentiable in `tokens` (its weights need no grad)."""
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        dtype = self.unet.dtype  # bf16 when perf's teacher_bf16_weights cast it
        x_t = x_t.to(dtype)
        if self.compiled_unet is None:
            return self.unet(x_t, t, encoder_hidden_states=tokens.to(dtype)).sample
        eps = self.compiled_unet(x_t, t, encoder_hidden_states=tokens.to(dtype)).sample
        if self.compiled_unet_error is None and tokens.requires_grad and torch.is_grad_enabled():
            check_compiled_unet(self, x_t, t, tokens, eps)  # once: Inductor has shipped silent gradient bugs
        return eps


def load_sd_teacher(name_or_path: str, flag: str = "--sd-path") -> SDTeacher:
    """SD components from a diffusers pipeline folder or a Hugging Face cache id."""
    import transformers
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    what = "Stable Diffusion pipeline"
    check_model_kind(name_or_path, {"StableDiffusionPipeline"}, what, flag, key="_class_name",
                     config_name="model_index.json")
    parts = {}
    for name, loader in (("vae", AutoencoderKL), ("unet", UNet2DConditionModel),
                         ("text_encoder", transformers.CLIPTextModel), ("tokenizer", transformers.CLIPTokenizer),
                         ("scheduler", DDPMScheduler)):
        # SD v1.4 ships a PNDM scheduler config; DDG only reads its training noise schedule
        kwargs = {"ignore_mismatched_sizes": True} if name == "text_encoder" else {}  # see load_pretrained
        parts[name] = load_pretrained(loader.from_pretrained, name_or_path, f"{what} {name}", flag,
                                      weights=name not in ("tokenizer", "scheduler"), subfolder=name, **kwargs)
    scheduler = parts["scheduler"]
    if scheduler.config.prediction_type != "epsilon":
        raise UserError(f"{name_or_path} predicts {scheduler.config.prediction_type!r}, not epsilon; "
                        "DDG needs an epsilon-prediction Stable Diffusion (v1.x)")
    return SDTeacher(parts["vae"], parts["unet"], parts["text_encoder"], parts["tokenizer"],
                     scheduler.alphas_cumprod)
