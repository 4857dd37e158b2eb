"""How far torch.compile's UNet gradients are from the truth: d(eps . w)/d(c) and d/d(x_t)
for eager fp32, Inductor-compiled fp32, aot_eager (compile without Inductor's codegen) and
ddg-sweep's compile (`perf.compile_unet`), each as a relative error against an fp64 eager
reference on the same inputs.

    python benchmarks/compiled_unet_gradients.py                       # tiny UNet, CPU
    python benchmarks/compiled_unet_gradients.py --models paper-arch --device cuda --sd-resolution 256
"""
from __future__ import annotations

import argparse
import copy

import torch

from ddg_sweep.bench import build_ddg, paper_arch_components, unet_pass_inputs
from ddg_sweep.perf import StepOptions, compile_unet


def gradients(unet, x_t, t, cond, dtype):
    c = cond.detach().to(dtype).requires_grad_(True)
    x = x_t.detach().to(dtype).requires_grad_(True)
    eps = unet(x, t, encoder_hidden_states=c).sample
    weights = torch.randn(eps.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (eps * weights.to(eps.device, dtype)).sum().backward()
    return c.grad.double(), x.grad.double()


def relative(a, b) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", choices=("tiny", "paper-arch"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--sd-resolution", type=int, default=None, help="default: 32 tiny, 256 paper-arch")
    args = parser.parse_args()
    device = torch.device(args.device)
    resolution = args.sd_resolution or (32 if args.models == "tiny" else 256)
    components = paper_arch_components() if args.models == "paper-arch" else None
    torch.manual_seed(0)
    algorithm = build_ddg(args.models, device, 8, resolution, StepOptions.plain(), components)
    x_t, t, cond, _, _ = unet_pass_inputs(algorithm, args.samples)
    unet = algorithm.sd_teacher.unet
    truth = gradients(copy.deepcopy(unet).double(), x_t, t, cond, torch.float64)
    print(f"torch {torch.__version__}, {args.models} UNet on {device}, {args.samples} samples at "
          f"{resolution // 8}x{resolution // 8} latents; relative error against fp64 eager")
    print(f"{'fp32 run':<22} {'d/d(c)':>10} {'d/d(x_t)':>10}")
    runs = (("eager", unet), ("compiled (inductor)", torch.compile(unet)),
            ("compiled (aot_eager)", torch.compile(unet, backend="aot_eager")),
            ("compiled (ddg-sweep)", compile_unet(unet)))
    for label, module in runs:
        torch._dynamo.reset()
        result = gradients(module, x_t, t, cond, torch.float32)
        print(f"{label:<22} {relative(result[0], truth[0]):>10.2e} {relative(result[1], truth[1]):>10.2e}",
              flush=True)


if __name__ == "__main__":
    main()
