"""The student: a pretrained image backbone that yields one feature vector per image."""
from __future__ import annotations

import torch
from torch import nn

from ddg_sweep.models.hub import check_model_kind, load_pretrained

# backbone -> (transformers class name, accepted config model_type values)
BACKBONE_CLASSES = {
    "clip_vit-b16": ("CLIPVisionModelWithProjection", {"clip", "clip_vision_model"}),
    "vit-base": ("ViTModel", {"vit"}),
    "resnet50": ("ResNetModel", {"resnet"}),
}


class Student(nn.Module):
    """Backbone -> feature `f(x)` of width `n_outputs`.

    CLIP: the projected image embedding (512 for ViT-B/16); ViT: the [CLS] token of
    the last layer; ResNet: the pooled last stage.
    """

    def __init__(self, backbone: str, model: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.model = model
        config = model.config
        if backbone == "clip_vit-b16":
            self.n_outputs = config.projection_dim
            self.image_size = config.image_size
        elif backbone == "vit-base":
            self.n_outputs = config.hidden_size
            self.image_size = config.image_size
        else:
            self.n_outputs = config.hidden_sizes[-1]
            self.image_size = getattr(config, "image_size", None) or 224

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone == "clip_vit-b16":
            return self.model(pixel_values=x).image_embeds
        if self.backbone == "vit-base":
            return self.model(pixel_values=x).last_hidden_state[:, 0]
        return self.model(pixel_values=x).pooler_output.flatten(1)


def load_student(backbone: str, name_or_path: str, flag: str = "--student-path") -> Student:
    import transformers

    class_name, accepted = BACKBONE_CLASSES[backbone]
    check_model_kind(name_or_path, accepted, f"{backbone} student backbone", flag)
    kwargs = {"add_pooling_layer": False} if backbone == "vit-base" else {}
    kwargs["ignore_mismatched_sizes"] = True  # reported, then refused (hub.load_pretrained)
    model = load_pretrained(getattr(transformers, class_name).from_pretrained, name_or_path,
                            f"{backbone} student backbone", flag, **kwargs)
    return Student(backbone, model)


class Classifier(nn.Module):
    """What is evaluated and what SWAD averages: student features, then a head."""

    def __init__(self, featurizer: Student, head: nn.Module):
        super().__init__()
        self.featurizer = featurizer
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.featurizer(x))
