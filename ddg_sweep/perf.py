"""How a DDG step executes, not what it computes: the speed and memory switches.

Each switch keeps the loss the same up to floating-point rounding (bf16 autocast to
bf16 tolerance). `StepOptions()` is the fastest correct combination measured by
`python -m ddg_sweep.run bench` (docs/performance.md); the benchmark flips them one
by one to show each effect.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class StepOptions:
    teacher_bf16: bool = True  # bf16 autocast for the frozen teachers (CUDA only)
    teacher_bf16_weights: bool = True  # the frozen UNet and VAE stored and run in bf16, no autocast casts (CUDA only)
    sdpa: bool = True  # fused scaled-dot-product attention in the UNet
    channels_last: bool = False  # NHWC memory layout for the UNet's convolutions (CUDA only; slower on H100)
    latents_once: bool = True  # one VAE encode per image view, shared by its noise draws
    batched_guidance: bool = False  # both guidance passes in one UNet call (else neg pass under no-grad)
    compile_unet: bool = False  # torch.compile the UNet (CUDA only; slow first steps)
    unet_checkpointing: bool = False  # recompute UNet activations in backward: less memory, more time
    cudnn_benchmark: bool = False  # let cuDNN time its convolution algorithms per shape (CUDA only)
    # Samples per UNet call in Stage II, each call's backward run at once: less memory, no
    # recompute. 0 = the whole batch in one call.
    unet_micro_batch: int = 0

    def __post_init__(self):
        if self.unet_micro_batch < 0:
            raise ValueError(f"unet_micro_batch must be >= 0 (0 = whole batch), not {self.unet_micro_batch}")

    @classmethod
    def plain(cls) -> "StepOptions":
        """Everything off: the fp32, two-call, eager, whole-batch baseline."""
        return cls(**{name: False for name in SWITCHES}, unet_micro_batch=0)


SWITCHES = [f.name for f in fields(StepOptions) if f.type in (bool, "bool")]  # the on/off ones


def apply_to_sd_teacher(sd_teacher, options: StepOptions, device_type: str) -> None:
    """Configure the UNet in place for the chosen options."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet = sd_teacher.unet
    if device_type == "cuda":
        torch.backends.cudnn.benchmark = options.cudnn_benchmark  # process-wide, like the device itself
    dtype = torch.bfloat16 if options.teacher_bf16_weights and device_type == "cuda" else torch.float32
    unet.to(dtype)
    sd_teacher.vae.to(dtype)
    unet.set_attn_processor(AttnProcessor2_0() if options.sdpa else AttnProcessor())
    sd_teacher.channels_last = options.channels_last and device_type == "cuda"
    unet.to(memory_format=torch.channels_last if sd_teacher.channels_last else torch.contiguous_format)
    if options.unet_checkpointing:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
    compiled = torch.compile(unet) if options.compile_unet and device_type == "cuda" else None
    object.__setattr__(sd_teacher, "compiled_unet", compiled)
