#!/usr/bin/env bash
# The GPU measurements of docs/performance.md: the paper-size DDG step at the paper's batch
# (32 images x 3 source domains), 256 and 512 px, fp32 vs bf16 vs each optimisation.
# Run from the repository root on a machine with one GPU:
#   bash benchmarks/gpu_step_bench.sh          # every row of the doc's GPU tables
#   bash benchmarks/gpu_step_bench.sh next     # only the rows not measured yet (about 9 min on an H100)
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
B="python3 -m ddg_sweep.run bench --models paper-arch --device cuda --batch-size 32 --warmup 2 --iters 4 --compare"
if [ "${1:-all}" != next ]; then
  $B --sd-resolution 256 --configs "fp32 plain,bf16 autocast,+sdpa,+channels_last,+bf16 weights,default,default+batched,default+ckpt"
  $B --sd-resolution 256 --configs "default+compile"
  $B --sd-resolution 512 --configs "default,default+ckpt,default+compile+ckpt"
fi
# Not measured yet: micro-batched UNet passes (no recompute) against checkpointing at the
# paper's 512 px, cuDNN autotuning, and the compiled rows again now that their gradients are
# checked against eager (an error row if Inductor gets them wrong). Compiles come last.
$B --sd-resolution 512 --configs "default+ckpt,default+micro48,default+micro32,default+micro24,default+compile+micro32"
$B --sd-resolution 256 --configs "default,default+cudnn,default+compile"
