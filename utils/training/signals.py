"""Stopping a run cleanly on SIGTERM (a cluster's or a spot machine's preemption, with a grace period) and SIGINT
(Ctrl-C): the step in flight is abandoned at once -- except inside a checkpoint write (``deferred``), which
finishes first -- and ``Interrupted`` (a KeyboardInterrupt, so every Ctrl-C path handles it) propagates to the
entry point, which names what was kept and the resume command and exits with 128 + the signal number (143
SIGTERM, 130 SIGINT). last.pt is only ever replaced atomically, so it holds the last finished epoch.
"""
from __future__ import annotations

import contextlib
import signal
import threading

_state = {"depth": 0, "pending": None}


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handler(signum, frame) -> None:
    if _state["depth"]:
        _state["pending"] = signum  # inside a checkpoint write: raised when it is done
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def deferred():
    """A section a signal must not cut (writing last.pt / best.pt): a signal arriving inside is raised after it."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"] is not None:
            signum, _state["pending"] = _state["pending"], None
            raise Interrupted(signum)


def install(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Route ``signals`` to ``Interrupted`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        for s in signals:
            signal.signal(s, _handler)
