import dataclasses
import json

import pytest
import torch

from conftest import run_cli
from ddg_sweep.bench import build_ddg, random_minibatches
from ddg_sweep.perf import StepOptions


def test_bench_cli_prints_consistent_positive_figures():
    proc = run_cli("bench", "--models", "tiny", "--device", "cpu", "--format", "json", "--iters", "2",
                   "--warmup", "1", "--batch-size", "8", check=True)
    result = json.loads(proc.stdout)
    assert result["batch_per_domain"] == 8 and result["n_domains"] == 3
    for stage in ("stage1", "stage2"):
        figures = result[stage]
        assert figures["ms_per_step"] > 0 and figures["images_per_s"] > 0 and figures["peak_memory_gb"] > 0
        assert figures["images_per_s"] == pytest.approx(24 / (figures["ms_per_step"] / 1e3), rel=1e-9)
    unet = result["unet_pass"]
    assert unet["tflop"] > 0 and unet["ms"] > 0
    assert unet["tflops_per_s"] == pytest.approx(unet["tflop"] / (unet["ms"] / 1e3), rel=1e-9)
    assert unet["mfu"] is None  # no known peak on a CPU without --peak-tflops


def _one_step(options: StepOptions, n_noise: int = 1):
    """One Stage II update; returns its scalars and the gradients it produced (the step itself
    is skipped: Adam's first step is about lr * sign(grad), which magnifies rounding noise)."""
    torch.manual_seed(0)
    algorithm = build_ddg("tiny", torch.device("cpu"), 4, 32, options)
    algorithm.hparams["n_noise"] = n_noise
    algorithm.optimizer.step = lambda: None
    batches = random_minibatches(algorithm, 4, 3, torch.device("cpu"))
    torch.manual_seed(1)
    scalars = algorithm.update(batches, step=1)
    grads = torch.cat([p.grad.flatten() for p in algorithm.network.parameters() if p.grad is not None])
    return scalars, grads


@pytest.mark.parametrize("switch", ["sdpa", "latents_once", "batched_guidance", "unet_checkpointing", "all"])
def test_optimised_step_matches_the_plain_fp32_step(switch):
    plain = StepOptions.plain()
    optimised = StepOptions() if switch == "all" else dataclasses.replace(plain, **{switch: True})
    n_noise = 2 if switch in ("latents_once", "all") else 1
    reference, reference_grads = _one_step(plain, n_noise)
    result, grads = _one_step(optimised, n_noise)
    assert result["stage"] == reference["stage"] == "diffusion"
    assert result["loss_diff"] == pytest.approx(reference["loss_diff"], rel=1e-5, abs=1e-6)
    assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5, abs=1e-6)
    assert len(grads) == len(reference_grads) > 0
    assert torch.allclose(grads, reference_grads, rtol=1e-4, atol=1e-6)  # the same gradient reached the student
