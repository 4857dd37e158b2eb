"""How a DDG step executes, not what it computes: the speed and memory switches.

Each switch keeps the loss the same up to floating-point rounding (bf16 autocast to
bf16 tolerance). `StepOptions()` is the fastest correct combination measured by
`python -m ddg_sweep.run bench` (docs/performance.md); the benchmark flips them one
by one to show each effect.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from ddg_sweep.errors import UserError


@dataclass(frozen=True)
class StepOptions:
    teacher_bf16: bool = True  # bf16 autocast for the frozen teachers (CUDA only)
    teacher_bf16_weights: bool = True  # the frozen UNet and VAE stored and run in bf16, no autocast casts (CUDA only)
    sdpa: bool = True  # fused scaled-dot-product attention in the UNet
    channels_last: bool = False  # NHWC memory layout for the UNet's convolutions (CUDA only; slower on H100)
    latents_once: bool = True  # one VAE encode per image view, shared by its noise draws
    batched_guidance: bool = False  # both guidance passes in one UNet call (else neg pass under no-grad)
    compile_unet: bool = False  # torch.compile the UNet (first steps slow: minutes for SD on a GPU)
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
    compiled = compile_unet(unet) if options.compile_unet else None
    object.__setattr__(sd_teacher, "compiled_unet", compiled)
    sd_teacher.compiled_unet_error = None  # checked on the compiled UNet's first backward


# Inductor's reordering for peak memory (torch 2.13) runs the frozen UNet's backward kernels
# out of order: a nearest-upsampling backward's index_put lands after the kernels that read
# its buffer, so the input gradient behind every upsampler is zero (docs/performance.md).
INDUCTOR_OPTIONS = {"reorder_for_peak_memory": False}


def compile_unet(unet):
    import torch
    import torch._inductor.config as inductor_config

    # An option this torch does not have is a pass it does not run: nothing to turn off.
    options = {k: v for k, v in INDUCTOR_OPTIONS.items() if hasattr(inductor_config, k)}
    return torch.compile(unet, options=options)


class CompiledUNetMismatch(UserError):
    """torch.compile's UNet gradients disagree with eager ones (an Inductor bug, not ours)."""


def compiled_gradient_tolerance(low_precision: bool) -> float:
    # bf16 rounds every op to 8 mantissa bits; through the UNet eager-vs-compiled gradients
    # then differ by a few percent. The Inductor bug measured here gives 0.26 to 0.36
    # (docs/performance.md); fp32 ones agree to 1e-6.
    return 0.1 if low_precision else 1e-3


def check_compiled_unet(sd_teacher, x_t, t, tokens, compiled_eps, n_samples: int = 2) -> float:
    """Relative error of the compiled UNet's d(eps . w)/d(tokens) against eager, on the first
    `n_samples` of a batch it just ran; raises CompiledUNetMismatch above tolerance.

    Every UNet operation is per sample, so those samples' gradient rows equal an eager call
    on them alone. The compiled gradient comes from one more compiled pass on a detached copy of
    the same batch (same shapes: no recompile), never from the step's own graph: AOTAutograd may
    donate that backward's buffers (torch 2.13 does, depending on what compiled before), and a
    donating backward refuses retain_graph. Cost, once per run: that pass and a small eager one.
    """
    import torch

    k = min(n_samples, len(x_t))
    unet = sd_teacher.unet
    weights = torch.randn(compiled_eps[:k].shape, generator=torch.Generator().manual_seed(0))
    weights = weights.to(compiled_eps.device, compiled_eps.dtype)
    again = tokens.detach().requires_grad_(True)
    compiled_again = sd_teacher.compiled_unet(x_t, t, encoder_hidden_states=again.to(unet.dtype)).sample
    (compiled_grad,) = torch.autograd.grad(compiled_again[:k], again, weights)
    probe = tokens[:k].detach().requires_grad_(True)
    eager_eps = unet(x_t[:k], t[:k], encoder_hidden_states=probe.to(unet.dtype)).sample
    (eager_grad,) = torch.autograd.grad(eager_eps, probe, weights)
    difference = (compiled_grad[:k].float() - eager_grad.float()).norm()
    error = float(difference / eager_grad.float().norm().clamp_min(1e-30))
    sd_teacher.compiled_unet_error = error
    tolerance = compiled_gradient_tolerance(
        unet.dtype != torch.float32 or torch.is_autocast_enabled(compiled_eps.device.type))
    if not error <= tolerance:  # also catches NaN
        raise CompiledUNetMismatch(
            f"torch.compile gives the Stable Diffusion UNet wrong gradients here (torch {torch.__version__}: "
            f"relative error {error:.2g} against eager, tolerance {tolerance:g}); turn compile_unet off "
            "(drop --compile-unet)")
    return error
