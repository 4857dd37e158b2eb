"""`demo`: the paper's protocol in miniature on DemoDigits with the tiny models.

ERM, VL2V and DDG's guidance variants (each guidance form at the paper's w = 3, and the literal
form at w = 1, plain distillation: the `guidance` space's four), every algorithm with SWAD,
every DemoDigits environment held out, three trial seeds: (2 + 4) x 4 x 3 = 72 short jobs.
Each DDG variant is a table row of its own (`DDG target w=3`). Stage lengths keep the paper's
proportions (Stage II and SWAD from 5/8 of the steps, step 50); checkpoints are frequent enough
for SWAD's loss valley to converge. 80 steps (it was 120 with two DDG variants) pay for the two
new variants: the demo keeps its wall time, and the ranking holds (README).
"""
from search_spaces import grid
from search_spaces.guidance import ROWS, VARIANTS

STEPS = 80
CHECKPOINT_FREQ = 4
TRIAL_SEEDS = (0, 1, 2)
__all__ = ["ROWS", "jobs"]


def jobs(options):
    common = dict(datasets=("DemoDigits",), trial_seeds=TRIAL_SEEDS, steps=STEPS, checkpoint_freq=CHECKPOINT_FREQ)
    baselines = [job for algorithm in ("ERM", "VL2V") for job in grid(options, algorithms=(algorithm,), **common)]
    ddg = grid(options, algorithms=("DDG",), values=[dict(v) for v in VARIANTS], **common)
    return baselines + ddg
