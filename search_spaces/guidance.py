"""`guidance`: which guidance form makes DDG's guidance debias (docs/method.md, "Guidance forms").

DDG with each form at the paper's w = 3 and the literal `prediction` form at w = 1 (plain
diffusion distillation, where all forms agree), on the paper's datasets, every single test
environment, trial seeds 0-2: 4 x 22 x 3 = 264 jobs. Each variant is a row of its own
(`DDG target w=3`), so model selection never picks across them.
"""
from ddg_sweep.data.catalog import PAPER_DATASETS
from search_spaces import grid

# hparams_seed k = the k-th variant; 0 is the paper's defaults.
VARIANTS = ({"guidance_form": "prediction", "cfg_scale": 3.0},
            {"guidance_form": "prediction", "cfg_scale": 1.0},
            {"guidance_form": "target", "cfg_scale": 3.0},
            {"guidance_form": "interpolate", "cfg_scale": 3.0})
ROWS = ("guidance_form", "cfg_scale")


def jobs(options):
    return grid(options, algorithms=("DDG",), datasets=PAPER_DATASETS, trial_seeds=(0, 1, 2),
                values=[dict(v) for v in VARIANTS])
