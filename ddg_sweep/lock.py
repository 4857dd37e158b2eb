"""One sweep at a time per output folder: a lock file holding host, pid and a heartbeat.

The holder rewrites the heartbeat every few seconds. A lock whose process is gone
(same host, pid not alive) or whose heartbeat is older than `stale_after` seconds
is stale and is taken over; a live one makes the second sweep stop with a message.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from ddg_sweep.errors import UserError
from ddg_sweep.io import atomic_write_json
from ddg_sweep.layout import SweepFolder

HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 60.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(out_dir: Path) -> dict | None:
    try:
        return json.loads(SweepFolder(out_dir).lock.read_text())
    except (OSError, ValueError):
        return None


def lock_is_stale(lock: dict, stale_after: float = STALE_AFTER_SECONDS) -> bool:
    if lock.get("host") == socket.gethostname() and not pid_alive(int(lock.get("pid", -1))):
        return True
    return time.time() - float(lock.get("heartbeat", 0)) > stale_after


class SweepLock:
    """Context manager: `with SweepLock(out_dir): ...` holds the folder for this process."""

    def __init__(self, out_dir: Path, stale_after: float = STALE_AFTER_SECONDS,
                 heartbeat: float = HEARTBEAT_SECONDS):
        self.out_dir = Path(out_dir)
        self.path = SweepFolder(self.out_dir).lock
        self.stale_after = stale_after
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: dict | None = None

    def _content(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time(),
                "started": self._started}

    def acquire(self) -> "SweepLock":
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create output folder {self.out_dir}: {err.strerror}; "
                            "pass a writable --output-dir") from None
        self._started = time.time()
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                current = read_lock(self.out_dir)
                if current is None:  # being written by another process, or torn
                    time.sleep(0.1)
                    current = read_lock(self.out_dir)
                if current is not None and not lock_is_stale(current, self.stale_after):
                    raise UserError(
                        f"{self.out_dir} is in use by another sweep (host {current.get('host')}, "
                        f"pid {current.get('pid')}, heartbeat {time.time() - current['heartbeat']:.0f} s ago); "
                        f"wait for it, or use another --output-dir") from None
                self.took_over = current or {}
                try:
                    self.path.unlink(missing_ok=True)
                except OSError as err:  # e.g. the folder went read-only under the dead sweep
                    raise self._unwritable(err) from None
                continue
            except OSError as err:
                raise self._unwritable(err) from None
            with os.fdopen(fd, "w") as f:
                json.dump(self._content(), f)
            break
        self._thread = threading.Thread(target=self._beat, name="sweep-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _unwritable(self, err: OSError) -> UserError:
        return UserError(f"cannot write to {self.out_dir}: {err.strerror}; pass a writable --output-dir")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                atomic_write_json(self.path, self._content())
            except OSError:
                pass  # a full disk must not kill the sweep; the lock just ages

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        lock = read_lock(self.out_dir)
        if lock and lock.get("pid") == os.getpid() and lock.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "SweepLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
