"""A tiny MJPEG-over-HTTP test server on 127.0.0.1 that serves a fixed schedule of connections, then stops.

Each accepted connection ``c`` gets ``frames_per_connection[c]`` JPEG frames as ``multipart/x-mixed-replace``
parts (each with ``Content-Length``), paced at ``fps``, and is then dropped. After the last scheduled connection
(or ``lifetime_s``) the listening socket closes, so later connects are refused: a camera gone for good.
Frame ``i`` of connection ``c`` is a flat grey image of value ``value(c, i)``, so a test can tell which
connection and which frame it received.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Sequence

import cv2
import numpy as np

from utils.data.sources import StreamConfig

# stream settings for tests against this server: short back-off and timeouts, give up after 1 s
FAST = StreamConfig(backoff_initial_s=0.05, backoff_max_s=0.2, give_up_s=1.0, open_timeout_s=1.0, read_timeout_s=1.0)

BOUNDARY = "frame"


class MJPEGServer:
    def __init__(
        self,
        frames_per_connection: Sequence[int],
        size: tuple[int, int] = (64, 48),
        fps: float = 30.0,
        lifetime_s: float = 20.0,
        path: str = "/stream.mjpg",
        gap_s: float = 0.0,
    ):
        self.schedule = list(frames_per_connection)
        self.size = size  # (w, h)
        self.fps = fps
        self.lifetime_s = lifetime_s
        self.path = path
        self.gap_s = gap_s  # answer every connection after the first this late (an outage the client sees)
        self.connections = 0  # connections accepted so far
        self.frames_sent: list[int] = []  # per accepted connection
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))  # ephemeral port
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name=f"mjpeg-server-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @staticmethod
    def value(conn: int, i: int) -> int:
        """Grey level of frame ``i`` on connection ``conn`` (distinct per connection while i < 33)."""
        return (10 + 100 * conn + 3 * i) % 256

    def start(self) -> "MJPEGServer":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._close_listener()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def __enter__(self) -> "MJPEGServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _close_listener(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def _serve(self) -> None:
        deadline = time.monotonic() + self.lifetime_s
        try:
            for conn, n_frames in enumerate(self.schedule):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    break
                self._sock.settimeout(remaining)
                try:
                    client, _ = self._sock.accept()
                except OSError:  # timeout, or stop() closed the listener
                    break
                self.connections += 1
                self.frames_sent.append(0)
                if conn > 0 and self._stop.wait(self.gap_s):
                    client.close()
                    break
                with client:
                    self._handle(client, conn, n_frames, deadline)
        finally:
            self._close_listener()

    def _handle(self, client: socket.socket, conn: int, n_frames: int, deadline: float) -> None:
        client.settimeout(5.0)
        try:
            _read_request(client)
            client.sendall(
                (
                    "HTTP/1.1 200 OK\r\n"
                    f"Content-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n"
                    "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
                ).encode()
            )
            w, h = self.size
            for i in range(n_frames):
                if self._stop.is_set() or time.monotonic() > deadline:
                    break
                jpg = cv2.imencode(".jpg", np.full((h, w, 3), self.value(conn, i), np.uint8))[1].tobytes()
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n\r\n".encode()
                client.sendall(head + jpg + b"\r\n")
                self.frames_sent[conn] += 1
                time.sleep(1.0 / self.fps)
            client.shutdown(socket.SHUT_RDWR)  # drop the connection
        except OSError:  # the client went away first
            pass


def _read_request(client: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
