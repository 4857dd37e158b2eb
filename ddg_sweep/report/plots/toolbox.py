"""What every figure module shares: matplotlib (Agg backend), saving, file names, mean and SEM."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def save(plt, fig, path: Path) -> Path:
    """Save atomically (temporary file, then rename) and close the figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def mean_and_sem(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Per `by` group: mean, standard error (population std / sqrt(n), as the tables) and n."""
    stats = frame.groupby(by, observed=True)[value].agg(
        mean="mean", std=lambda a: float(np.std(a)), n="size").reset_index()
    stats["sem"] = stats["std"] / np.sqrt(stats["n"])
    return stats
