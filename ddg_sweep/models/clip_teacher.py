"""The frozen CLIP teacher: image embeddings v(x) and the zero-shot class text head T."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddg_sweep.data.transforms import denormalise
from ddg_sweep.models.hub import check_model_kind, load_pretrained

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_MAX_LOGIT_SCALE = 100.0
PROMPT_TEMPLATES = ("a photo of a {}.",)


def freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    return module.eval()


class CLIPTeacher(nn.Module):
    """CLIP's image and text towers, frozen, always in eval mode, never differentiated."""

    def __init__(self, model: nn.Module, tokenizer):
        super().__init__()
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.image_size = model.config.vision_config.image_size
        self.joint_width = model.config.projection_dim
        self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)  # a frozen teacher: dropout off whatever the caller's mode

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature (100 for the OpenAI models), clamped as CLIP does."""
        return min(float(self.model.logit_scale.exp()), CLIP_MAX_LOGIT_SCALE)

    @torch.no_grad()
    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """Projected image features (B, joint width) of ImageNet-normalised images of any size."""
        pixels = denormalise(x.float())
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bicubic",
                                   align_corners=False, antialias=True)
        pixels = (pixels - self.clip_mean) / self.clip_std
        return self.model.get_image_features(pixel_values=pixels).pooler_output

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """Projected text features (N, joint width)."""
        tokens = self.tokenizer(texts, padding="max_length", truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors="pt")
        device = self.model.logit_scale.device
        return self.model.get_text_features(input_ids=tokens.input_ids.to(device),
                                            attention_mask=tokens.attention_mask.to(device)).pooler_output

    @torch.no_grad()
    def class_text_head(self, class_names: list[str], templates=PROMPT_TEMPLATES) -> torch.Tensor:
        """T: one unit row per class, the normalised mean of its normalised prompt embeddings."""
        rows = []
        for name in class_names:
            prompts = [template.format(name) for template in templates]
            rows.append(F.normalize(self.text_embeddings(prompts).float(), dim=-1).mean(0))
        return F.normalize(torch.stack(rows), dim=-1)


def load_clip_teacher(name_or_path: str, flag: str = "--clip-path") -> CLIPTeacher:
    """A CLIPModel and its tokenizer from a local folder or a Hugging Face cache id."""
    import transformers

    what = "CLIP teacher (image and text towers)"
    check_model_kind(name_or_path, {"clip"}, what, flag)
    model = load_pretrained(transformers.CLIPModel.from_pretrained, name_or_path, what, flag,
                            ignore_mismatched_sizes=True)  # reported, then refused (hub.load_pretrained)
    tokenizer = load_pretrained(transformers.CLIPTokenizer.from_pretrained, name_or_path,
                                "CLIP teacher tokenizer", flag, weights=False)
    tokenizer.model_max_length = min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings)
    return CLIPTeacher(model, tokenizer)
