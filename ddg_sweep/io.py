"""Files that survive a crash: atomic writes, build-once folders, the cache folder."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def cache_dir() -> Path:
    """Where ddg-sweep writes what it generates (tiny models, DemoDigits)."""
    root = os.environ.get("DDG_SWEEP_CACHE") or Path.home() / ".cache" / "ddg_sweep"
    return Path(root)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync, so a record is on disk before the checkpoint that follows it."""
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder once, atomically: concurrent builders race harmlessly."""
    folder = Path(folder)
    if (folder / ".complete").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(tmp)
        (tmp / ".complete").touch()
        if folder.exists() and not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)  # left by a build from an older version
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
