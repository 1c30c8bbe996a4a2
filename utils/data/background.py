"""Background threads for detect.py: reading ahead of the model (``Prefetch``) and writing behind it (``Worker``).

    for batch in Prefetch(source_generator, depth=2): ...     # the next items are decoded while this one runs
    writer = Worker(write_one, depth=4); writer.put(item) ...; writer.finish()   # in order, in one thread

Both keep at most ``depth`` items queued (bounded memory), hand an exception of their thread to the caller's thread
as the same exception (an OSError stays an OSError), and join their thread in ``close()``: no thread outlives
them. The caller's waits poll, so Ctrl-C (and ``_thread.interrupt_main``) interrupts a wait within ``POLL_S``.
OpenCV and the inference runtimes release the GIL, so decoding, drawing and encoding run beside inference.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

POLL_S = 0.1  # longest uninterrupted wait of the caller's thread
_END = object()  # the producer is done / the worker should stop


class _Failed:
    """An exception raised in the background thread, on its way to the caller's thread."""

    def __init__(self, error: BaseException):
        self.error = error


def _produce(iterable: Iterable, q: queue.Queue, stop: threading.Event) -> None:
    """Prefetch's thread: the items of ``iterable``, then _END (or _Failed), into ``q`` until ``stop``."""
    it = None
    try:
        it = iter(iterable)
        for item in it:
            if not _put(q, item, stop):
                return
        _put(q, _END, stop)
    except BaseException as e:  # handed to the consumer, raised there
        _put(q, _Failed(e), stop)
    finally:
        if hasattr(it, "close"):
            it.close()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Queue ``item``; False when stopped first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            pass
    return False


class Prefetch:
    """Iterates ``iterable`` in a daemon thread, at most ``depth`` items ahead of the consumer.

    ``close()`` (also on ``break`` through ``with`` or the owner's close) stops the thread and joins it; an
    iterable's ``close()`` (a generator's ``finally`` blocks, e.g. releasing a video) runs in that thread.
    """

    def __init__(self, iterable: Iterable, depth: int = 2, name: str = "prefetch"):
        if depth < 1:
            raise ValueError(f"Prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._ended = False
        self.thread = threading.Thread(target=_produce, args=(iterable, self._queue, self._stop), name=name,
                                       daemon=True)  # holds no reference to self: dropping it stops the thread
        self.thread.start()

    def __iter__(self) -> Iterator:
        return self

    def __next__(self) -> Any:
        if self._ended:
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=POLL_S)
                break
            except queue.Empty:
                if not self.thread.is_alive() and self._queue.empty():  # stopped by close() from elsewhere
                    self._ended = True
                    raise StopIteration from None
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stop reading ahead and join the thread. Safe to call twice."""
        self._ended = True
        self._stop.set()
        while self.thread.is_alive():
            self.thread.join(POLL_S)
        while not self._queue.empty():  # frames read ahead and not taken: let them go now
            self._queue.get_nowait()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # dropped without close(): let the thread end (not joined: this may be any thread)
        if hasattr(self, "_stop"):
            self._stop.set()


class Worker:
    """Calls ``fn(item)`` for every ``put`` item, in order, in one daemon thread; ``put`` waits while ``depth``
    items are queued. The first exception of ``fn`` is raised by the next ``put`` or by ``finish``; later items
    are then dropped. ``finish()`` does the queued items and joins; ``close()`` drops them and joins."""

    def __init__(self, fn: Callable[[Any], None], depth: int = 4, name: str = "worker"):
        if depth < 1:
            raise ValueError(f"Worker depth must be >= 1, got {depth}")
        self._fn = fn
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._raised = False
        self._drop = threading.Event()  # skip what is queued (close, or after an error)
        self._end_queued = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._drop.is_set():
                continue
            try:
                self._fn(item)
            except BaseException as e:  # raised in the caller's thread by put / finish
                self._error = e
                self._drop.set()

    def put(self, item: Any) -> None:
        """Queue ``item`` (waits while the queue is full); raises the worker's error, if any, instead."""
        while True:
            self._raise()
            try:
                self._queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                pass

    def finish(self) -> None:
        """Do every queued item, join the thread, raise the worker's error if it has not been raised yet."""
        self._join()
        self._raise()

    def close(self) -> None:
        """Drop the queued items (the one in hand is finished) and join the thread; raises nothing."""
        self._drop.set()
        self._join()

    def _join(self) -> None:
        while not self._end_queued:
            try:
                self._queue.put(_END, timeout=POLL_S)
                self._end_queued = True
            except queue.Full:
                pass
        while self.thread.is_alive():
            self.thread.join(POLL_S)

    def _raise(self) -> None:
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error
