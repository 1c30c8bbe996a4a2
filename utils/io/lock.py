"""One process per run folder: a lock file (``.lock``: pid, host, start time) taken with O_EXCL. A second process
gets one line naming the holder; a lock left by a dead process on this host (a SIGKILL, a crash) is taken over
with a warning. Two train.py on one folder, a --resume started twice or two compare.py with the same --name would
otherwise write the same checkpoints and rows at once."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from utils import LOGGER

LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class FolderLock:
    """``with FolderLock(folder, what):`` holds ``folder/.lock`` for this process; released on exit."""

    def __init__(self, folder: str | Path, what: str = "run folder"):
        self.path, self.what, self.held = Path(folder) / LOCK, what, False

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.get("pid") == os.getpid() and holder.get("host") == me["host"]:
                    return  # this process holds it already (an in-process run inside a comparison's folder)
                if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
                    LOGGER.warning(f"WARNING: {self.path} was left by process {holder['pid']} on {holder['host']} "
                                   f"(since {holder.get('since', '?')}), which is gone: taking the {self.what} over")
                    self.path.unlink(missing_ok=True)
                    continue
                raise ValueError(f"{self.path.parent} is in use by process {holder.get('pid', '?')} on "
                                 f"{holder.get('host', '?')} since {holder.get('since', '?')}: wait for it, stop it, "
                                 f"or use another --name (delete {self.path} if that process is gone)")
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise ValueError(f"{self.path}: could not take the lock")

    def _holder(self) -> dict:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) else {}
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
