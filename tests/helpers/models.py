"""Fakes inside a built model."""
from __future__ import annotations


def unet_failing_above(algorithm, max_samples: int) -> list[int]:
    """Make a DDG algorithm's UNet raise CUDA's out-of-memory error for calls above `max_samples`
    samples; returns the list the call sizes are appended to."""
    import torch

    predict_noise = algorithm.sd_teacher.predict_noise
    calls = []

    def limited(x_t, t, tokens):
        calls.append(len(x_t))
        if len(x_t) > max_samples:
            raise torch.OutOfMemoryError(f"fake: {len(x_t)} samples")
        return predict_noise(x_t, t, tokens)

    object.__setattr__(algorithm.sd_teacher, "predict_noise", limited)
    return calls
