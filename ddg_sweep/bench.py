"""Timing DDG's training steps: images/s, ms/step, peak memory, UNet TFLOP/s and MFU.

`tiny` times the demo's models; `paper-arch` builds the paper's full-size models
(SD v1.4, CLIP ViT-L/14, ViT-B/16 student) from configs with random weights:
nothing is downloaded and speed does not depend on the weights. Steps are timed
after warm-up, synchronised; FLOPs are counted with torch's flop counter.
"""
from __future__ import annotations

import dataclasses
import resource
import time

import torch

from ddg_sweep.perf import StepOptions

# Dense bf16 tensor-core peaks (TFLOP/s), by a fragment of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0,
                    "A10G": 70.0, "RTX 4090": 165.2}
PAPER_CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]  # PACS


def device_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peak in PEAK_BF16_TFLOPS.items():  # "H100 PCIe" is listed before "H100"
        if fragment in name:
            return peak
    return None


def build_ddg(models: str, device: torch.device, batch_size: int, sd_resolution: int,
              options: StepOptions, components: dict | None = None, guidance_form: str = "prediction"):
    """A DDG algorithm whose Stage I is step 0 and Stage II every step from 1."""
    from ddg_sweep.algorithms.base import RunContext
    from ddg_sweep.algorithms.ddg import DDG
    from ddg_sweep.hparams import resolve_hparams
    from ddg_sweep.models.paths import resolve_model_paths

    dataset = "DemoDigits" if models == "tiny" else "PACS"
    family = "tiny" if models == "tiny" else "paper"
    hparams = resolve_hparams("DDG", dataset, models=family, overrides={
        "batch_size": batch_size, "sd_resolution": sd_resolution, "stage1_steps": 1, "swad_start": 1,
        "guidance_form": guidance_form})
    if models == "tiny":
        paths = resolve_model_paths("DDG", hparams)
        class_names, env_names = [f"digit {d}" for d in range(10)], ["clean", "inverted", "sketch", "noisy"]
    else:
        paths = {}
        class_names, env_names = PAPER_CLASSES, ["art_painting", "cartoon", "photo", "sketch"]
    ctx = RunContext(hparams=hparams, dataset=dataset, class_names=class_names, env_names=env_names,
                     train_envs=[0, 1, 2], steps=2, device=device, model_paths=paths,
                     components=dict(components or {}), step_options=options)
    return DDG(ctx)


def paper_arch_components() -> dict:
    from ddg_sweep.models.hub import quiet_hf_logging
    from ddg_sweep.models.paper_arch import paper_arch_clip_teacher, paper_arch_sd_teacher, paper_arch_student

    quiet_hf_logging()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same random weights in every process
        return {"student": paper_arch_student(), "clip_teacher": paper_arch_clip_teacher(),
                "sd_teacher": paper_arch_sd_teacher()}


def random_minibatches(algorithm, batch_size: int, n_domains: int, device, seed: int = 0):
    size = algorithm.network.featurizer.image_size
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch_size, 3, size, size, generator=generator).to(device),
             torch.randint(0, algorithm.ctx.n_classes, (batch_size,), generator=generator).to(device))
            for _ in range(n_domains)]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS (KiB -> GiB)


def time_update(algorithm, minibatches, step: int, warmup: int, iters: int) -> dict:
    device = algorithm.device
    for _ in range(warmup):
        algorithm.update(minibatches, step)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iters):
        scalars = algorithm.update(minibatches, step)
    _sync(device)
    seconds = (time.perf_counter() - start) / iters
    images = sum(len(x) for x, _ in minibatches)
    return {"ms_per_step": seconds * 1e3, "images_per_s": images / seconds,
            "peak_memory_gb": _peak_memory_gb(device), "loss": scalars["loss"]}


def unet_pass_inputs(algorithm, n_images: int, seed: int = 0):
    """x_t, t, a differentiable conditioning, per-sample negatives, the noise and labels, at the run's latent size."""
    teacher, device = algorithm.sd_teacher, algorithm.device
    side = algorithm.hparams["sd_resolution"] // 8
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randn(n_images, teacher.unet.config.in_channels, side, side, generator=generator).to(device)
    t = torch.randint(0, 1000, (n_images,), generator=generator).to(device)
    labels = torch.arange(n_images, device=device) % len(algorithm.class_tokens)
    cond = algorithm.class_tokens[labels]
    neg = algorithm.negative_tokens[torch.arange(n_images, device=device) % len(algorithm.negative_tokens)]
    eps = torch.randn(x_t.shape, generator=generator).to(device)
    return x_t, t, cond.clone().requires_grad_(True), neg, eps, labels


def unet_pass(algorithm, inputs) -> None:
    """Stage II's UNet work as the step runs it: the guidance passes forward, backward into
    the conditioning (in micro-batches when the options say so)."""
    algorithm.unet_loss(*inputs).backward()


def measure_unet_pass(algorithm, n_images: int, warmup: int, iters: int, peak_tflops: float | None) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    device = algorithm.device
    inputs = unet_pass_inputs(algorithm, n_images)
    compiled = algorithm.sd_teacher.compiled_unet
    object.__setattr__(algorithm.sd_teacher, "compiled_unet", None)  # count on the eager graph
    counter = FlopCounterMode(display=False)
    with counter:
        unet_pass(algorithm, inputs)
    object.__setattr__(algorithm.sd_teacher, "compiled_unet", compiled)
    flops = counter.get_total_flops()
    for _ in range(warmup):
        unet_pass(algorithm, inputs)
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        unet_pass(algorithm, inputs)
    _sync(device)
    seconds = (time.perf_counter() - start) / iters
    achieved = flops / seconds / 1e12
    return {"ms": seconds * 1e3, "tflop": flops / 1e12, "tflops_per_s": achieved,
            "mfu": achieved / peak_tflops if peak_tflops else None, "peak_tflops": peak_tflops}


def run_benchmark(models: str = "tiny", device: str = "cpu", batch_size: int = 32, n_domains: int = 3,
                  sd_resolution: int | None = None, options: StepOptions | None = None, warmup: int = 2,
                  iters: int = 5, peak_tflops: float | None = None, components: dict | None = None,
                  guidance_form: str = "prediction") -> dict:
    options = options or StepOptions()
    torch_device = torch.device(device)
    sd_resolution = sd_resolution or (32 if models == "tiny" else 512)
    torch.manual_seed(0)
    if models == "paper-arch" and components is None:
        components = paper_arch_components()
    algorithm = build_ddg(models, torch_device, batch_size, sd_resolution, options, components, guidance_form)
    minibatches = random_minibatches(algorithm, batch_size, n_domains, torch_device)
    peak = peak_tflops or device_peak_tflops(torch_device)
    result = {
        "device": torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else "cpu",
        "models": models, "batch_per_domain": batch_size, "n_domains": n_domains,
        "sd_resolution": sd_resolution, "options": dataclasses.asdict(options), "guidance_form": guidance_form,
        "stage1": time_update(algorithm, minibatches, 0, warmup, iters),
        "stage2": time_update(algorithm, minibatches, 1, warmup, iters),
        "unet_pass": measure_unet_pass(algorithm, batch_size * n_domains * algorithm.hparams["n_noise"],
                                       warmup, iters, peak),
        # relative error of the compiled UNet's gradient against eager (None when not compiled)
        "compiled_unet_gradient_error": algorithm.sd_teacher.compiled_unet_error,
    }
    return result
