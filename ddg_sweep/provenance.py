"""What produced a run: code version, library versions, device (RUN/provenance.json).

A run writes one *session* entry each time it starts or resumes with different
software or hardware, so a run resumed elsewhere shows both. Versions come from
package metadata (nothing heavy is imported); the git commit from the package's
own checkout when there is one. The aggregate reads these files
(`read_provenance`) and carries them per run into selected.parquet.
"""
from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from ddg_sweep.io import atomic_write_json
from ddg_sweep.layout import RunFolder

# distribution name -> field name (also the `prov_<field>` column of the aggregate)
PACKAGES = {"ddg-sweep": "ddg_sweep", "torch": "torch", "diffusers": "diffusers",
            "transformers": "transformers", "ray": "ray"}
FIELDS = (*PACKAGES.values(), "git_commit", "python", "device")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """HEAD of the checkout holding this package (`+dirty` if tracked files changed), or None."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device) -> str:
    """'NVIDIA H100 80GB HBM3' for a CUDA device, else 'cpu (<machine>)'."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine() or 'unknown'})"


def collect(device) -> dict:
    session = {field: _version(dist) for dist, field in PACKAGES.items()}
    session.update(git_commit=git_commit(), python=platform.python_version(),
                   device=device_name(device))
    return session


def record_provenance(run_dir, device) -> dict:
    """Append this session to RUN/provenance.json unless it equals the last one."""
    path = RunFolder(run_dir).provenance
    session = collect(device)
    sessions = read_sessions(path)
    if not sessions or sessions[-1] != session:
        atomic_write_json(path, {"sessions": [*sessions, session]})
    return session


def read_sessions(path) -> list[dict]:
    try:
        sessions = json.loads(Path(path).read_text()).get("sessions")
    except (OSError, ValueError, AttributeError):
        return []
    return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []


def read_provenance(run_dir) -> dict:
    """{field: value} over a run's sessions; several different values are joined by '; '."""
    sessions = read_sessions(RunFolder(run_dir).provenance)
    merged = {}
    for field in FIELDS:
        values = list(dict.fromkeys(str(s[field]) for s in sessions if s.get(field) is not None))
        if values:
            merged[field] = "; ".join(values)
    return merged
