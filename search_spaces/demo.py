"""`demo`: the paper's protocol in miniature on DemoDigits with the tiny models.

ERM, VL2V and DDG (the paper's w = 3, and w = 1 as the guidance ablation), every algorithm
with SWAD, every DemoDigits environment held out, three trial seeds: 4 x 4 x 3 = 48 short
jobs. Stage lengths keep the paper's proportions (Stage II and SWAD from 5/8 of the
steps); checkpoints are frequent enough for SWAD's loss valley to converge.
"""
from search_spaces import grid

STEPS = 120
CHECKPOINT_FREQ = 5
TRIAL_SEEDS = (0, 1, 2)


def jobs(options):
    common = dict(datasets=("DemoDigits",), trial_seeds=TRIAL_SEEDS, steps=STEPS, checkpoint_freq=CHECKPOINT_FREQ)
    baselines = [job for algorithm in ("ERM", "VL2V") for job in grid(options, algorithms=(algorithm,), **common)]
    ddg = grid(options, algorithms=("DDG",), values=[{"cfg_scale": w} for w in (3.0, 1.0)], **common)
    return baselines + ddg
