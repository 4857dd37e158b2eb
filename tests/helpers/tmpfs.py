"""A small filesystem that fills up."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def mounted_tmpfs(mount_point: Path, size: str):
    """Fixture body: a tmpfs of `size` at `mount_point` (skips where mounting needs root we lack)."""
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)
