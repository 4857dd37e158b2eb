"""`demo`: DemoDigits with the tiny models, ERM + VL2V + DDG (cfg_scale 3.0 and 1.0), every test env.

4 test envs x 4 configurations = 16 short jobs, one trial seed: `full-benchmark --preset demo`
runs end to end on a laptop CPU in a few minutes.
"""
from search_spaces import grid

STEPS = 100
CHECKPOINT_FREQ = 20
SMALL = {"batch_size": 16, "swad_start": 50, "stage1_steps": 50}


def jobs(options):
    common = dict(datasets=("DemoDigits",), trial_seeds=(0,), steps=STEPS, checkpoint_freq=CHECKPOINT_FREQ)
    keep = {"ERM": ("batch_size",), "VL2V": ("batch_size", "swad_start"), "DDG": tuple(SMALL)}

    def small(algorithm):
        return {k: SMALL[k] for k in keep[algorithm]}

    baselines = [job for algorithm in ("ERM", "VL2V")
                 for job in grid(options, algorithms=(algorithm,), values=[small(algorithm)], **common)]
    ddg = grid(options, algorithms=("DDG",), values=[small("DDG") | {"cfg_scale": w} for w in (3.0, 1.0)],
               **common)
    return baselines + ddg
