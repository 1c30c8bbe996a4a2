"""Inputs of detect.py: images, video files, webcams and live streams.

Shape shorthand:
    B       batch: 1 for files, one per stream for a ``.streams`` file
    H, W    letterboxed input size (multiples of ``stride`` when ``auto``)
    h0, w0  original frame size
    im      (B, 3, H, W) uint8 RGB, letterboxed, contiguous      im0 (h0, w0, 3) uint8 BGR

``load_source(source, imgsz)`` picks the source from the string, as YOLOv5's detect.py does:
    image or video file, directory (non-recursive), glob, ``.txt`` list of files  -> FileSource
    webcam index ``0``, ``rtsp://`` ``rtmp://`` ``http(s)://`` URL, ``.streams`` file of URLs -> StreamSource
Both yield ``SourceBatch`` records and close on ``with``/``close()``; utils/data/sinks.py writes annotated mp4s.

Files are decoded and letterboxed by one reader thread, ``PREFETCH`` frames ahead of the consumer (a bounded
queue: errors are raised in the consumer, ``close()`` joins the thread).

A stream has one reader thread that keeps only the newest decoded frame (a slow consumer drops frames rather
than building latency), reconnects with exponential back-off when the stream drops, and ends the iteration
cleanly, with a logged reason, when a stream is gone for good (``StreamConfig``).
"""
from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils import LOGGER
from utils.data.augmentations import letterbox
from utils.data.background import Prefetch
from utils.io.files import list_files

IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")
VID_FORMATS = ("asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv")
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")
FPS_FALLBACK = 30.0
PREFETCH = 2  # FileSource: frames decoded ahead of the consumer by a reader thread (0: none)


@dataclass
class SourceBatch:
    """One step of a source. Lists are aligned with ``paths`` (length B)."""

    paths: list[str]  # file paths, stream URLs or webcam indices
    im: np.ndarray  # (B, 3, H, W) uint8 RGB, letterboxed
    im0s: list[np.ndarray]  # B original frames (h0, w0, 3) uint8 BGR
    frame: int  # 1-based frame count within the current video / stream; 0 for images
    is_video: bool  # from a video file
    is_stream: bool  # from a webcam or stream URL
    fps: list[float]  # frames per second of what is yielded (source fps / vid_stride); 0.0 for images
    size: list[tuple[int, int]]  # (w0, h0) per path, for writers
    names: list[str]  # file-system-safe stems for outputs: image/video stem, sanitised URL
    log: str  # e.g. "image 2/5 /data/a.jpg: ", "video 1/1 (12/90) /data/v.mp4: "


@dataclass(frozen=True)
class StreamConfig:
    """Reconnection and timeouts of live streams. Back-off waits initial_s, doubling up to max_s."""

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    backoff_factor: float = 2.0
    give_up_s: float = 60.0  # a stream down this long (from its drop) is gone for good
    max_attempts: int = 0  # reconnect attempts per outage; 0 = bounded by give_up_s only
    open_timeout_s: float = 10.0  # FFmpeg open timeout (URLs)
    read_timeout_s: float = 5.0  # FFmpeg read timeout: a stalled stream counts as dropped after this

    def delays(self) -> Iterator[float]:
        """Waits before each reconnect attempt of one outage."""
        delay, attempt = self.backoff_initial_s, 0
        while self.max_attempts <= 0 or attempt < self.max_attempts:
            yield delay
            attempt += 1
            delay = min(delay * self.backoff_factor, self.backoff_max_s)


@dataclass
class StreamStats:
    frames_read: int = 0  # frames decoded (after vid_stride)
    frames_dropped: int = 0  # decoded frames replaced by a newer one before the consumer took them
    reconnects: int = 0  # successful reconnections
    reconnect_attempts: int = 0
    blank_frames: int = 0  # black frames put in a batch while this stream was reconnecting


# ---------------------------------------------------------------------------------------------------------------
# source selection


def is_stream(source: str) -> bool:
    """Webcam index, stream URL or ``.streams`` file."""
    s = str(source).strip()
    return s.isnumeric() or s.lower().startswith(STREAM_PREFIXES) or s.lower().endswith(".streams")


def load_source(
    source: str | int | Path,
    imgsz: int | Sequence[int],
    stride: int = 32,
    auto: bool = True,
    vid_stride: int = 1,
    stream_config: StreamConfig | None = None,
    prefetch: int | None = None,
) -> FileSource | StreamSource:
    """The source for a ``--source`` string: files (images, videos; ``prefetch`` frames read ahead by a thread)
    or live streams (a reader thread per stream)."""
    if int(vid_stride) < 1:
        raise ValueError(f"vid_stride must be >= 1, got {vid_stride}")
    s = str(source).strip()
    if s.lower().endswith(".streams"):
        return StreamSource(read_stream_list(s), imgsz, stride, auto, vid_stride, stream_config)
    if is_stream(s):
        return StreamSource([s], imgsz, stride, auto, vid_stride, stream_config)
    return FileSource(list_media(s), imgsz, stride, auto, vid_stride, prefetch)


def read_stream_list(path: str | Path) -> list[str]:
    """URLs / webcam indices of a ``.streams`` file, one a line; blank lines and ``#`` comments skipped."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"streams file {str(p)!r} does not exist")
    urls = [x.strip() for x in p.read_text().splitlines() if x.strip() and not x.lstrip().startswith("#")]
    if not urls:
        raise ValueError(f"streams file {str(p)!r} lists no streams")
    for i, u in enumerate(urls):
        if not (u.isnumeric() or u.lower().startswith(STREAM_PREFIXES)):
            raise ValueError(f"streams file {str(p)!r}: entry {i + 1} {u!r} is not a stream URL or webcam index")
    return urls


def list_media(source: str | Path) -> list[str]:
    """Image and video files of a file, directory (non-recursive), glob or ``.txt`` list, sorted."""
    media = list_files(source, IMG_FORMATS + VID_FORMATS, check_listed=True)
    if not media:
        raise FileNotFoundError(
            f"no images or videos in {str(source)!r}; images: {', '.join(IMG_FORMATS)}; videos: {', '.join(VID_FORMATS)}"
        )
    return media


def _suffix(path: str) -> str:
    return Path(path).suffix[1:].lower()


def safe_name(path: str) -> str:
    """A file-system-safe stem for outputs: a file's stem, or a URL/webcam index with odd characters as '_'."""
    s = str(path)
    if not is_stream(s):
        return Path(s).stem
    s = re.sub(r"^[a-zA-Z]+://", "", s)
    s = re.sub(r"\.(mjpe?g|sdp|m3u8)$", "", s, flags=re.IGNORECASE)
    return re.sub(r"[^\w.-]+", "_", s).strip("_") or "stream"


def _letterbox_batch(frames: Sequence[np.ndarray], imgsz, stride: int, auto: bool) -> np.ndarray:
    """(B, 3, H, W) uint8 RGB; ``auto`` (minimal padding) only when all frames share one shape."""
    shape = _hw(imgsz)
    same = all(f.shape == frames[0].shape for f in frames)
    ims = [letterbox(f, shape, stride=stride, auto=auto and same)[0] for f in frames]
    return np.ascontiguousarray(np.stack(ims)[..., ::-1].transpose(0, 3, 1, 2))


def _hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    """(h, w) of an ``--imgsz`` value: one int or a list of one or two."""
    if isinstance(imgsz, (int, np.integer)):
        return int(imgsz), int(imgsz)
    hw = [int(x) for x in imgsz]
    if len(hw) not in (1, 2):
        raise ValueError(f"imgsz must be one int or [h, w], got {imgsz!r}")
    return (hw[0], hw[-1])


def _capture_fps(cap: cv2.VideoCapture) -> float:
    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if math.isfinite(fps) and 0 < fps <= 1000 else FPS_FALLBACK


def _frame_count(cap: cv2.VideoCapture) -> int | None:
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(n) if math.isfinite(n) and n > 0 else None


# ---------------------------------------------------------------------------------------------------------------
# files


class FileSource:
    """Images and video files, one frame a step (B = 1). Unreadable files are skipped, counted and logged.

    ``prefetch`` > 0 (None: ``PREFETCH``): a background thread decodes and letterboxes up to that many frames ahead
    of the consumer (utils/data/background.py), so the next frame is read while the model runs; 0 reads in the
    consumer's thread.
    """

    bs = 1

    def __init__(self, files: Sequence[str], imgsz, stride: int = 32, auto: bool = True, vid_stride: int = 1,
                 prefetch: int | None = None):
        self.files = list(files)
        self.imgsz, self.stride, self.auto, self.vid_stride = imgsz, stride, auto, int(vid_stride)
        self.prefetch = PREFETCH if prefetch is None else int(prefetch)
        self.skipped: list[str] = []  # files that could not be read
        self.is_video = [_suffix(f) in VID_FORMATS for f in self.files]
        self._gen: Iterator[SourceBatch] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[SourceBatch]:
        self.close()
        gen = _FileReader(self.files, self.is_video, self.imgsz, self.stride, self.auto, self.vid_stride,
                          self.skipped).frames()  # holds no reference to self: a dropped source stops its thread
        self._gen = Prefetch(gen, self.prefetch, name="file-reader") if self.prefetch > 0 else gen
        return self._gen

    def close(self) -> None:
        """Stop the iteration (and join the reader thread); releases an open video."""
        if self._gen is not None:
            self._gen.close()
            self._gen = None

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class _FileReader:
    """FileSource's decoding and letterboxing, run by its reader thread (or the consumer's, without prefetch)."""

    files: list[str]
    is_video: list[bool]
    imgsz: int | Sequence[int]
    stride: int
    auto: bool
    vid_stride: int
    skipped: list[str]  # FileSource's list: unreadable files are appended

    def frames(self) -> Iterator[SourceBatch]:
        n = len(self.files)
        for i, path in enumerate(self.files):
            if self.is_video[i]:
                yield from self._video(i, path)
                continue
            im0 = cv2.imread(path)
            if im0 is None:
                self._skip(path, "cv2.imread cannot decode it")
                continue
            yield self._batch(path, im0, 0, False, 0.0, f"image {i + 1}/{n} {path}: ")
        if self.skipped:
            LOGGER.warning(f"{len(self.skipped)} of {n} source file(s) skipped as unreadable")

    def _video(self, i: int, path: str) -> Iterator[SourceBatch]:
        cap = cv2.VideoCapture(path)
        try:
            if not cap.isOpened():
                self._skip(path, "OpenCV cannot open the video")
                return
            fps = _capture_fps(cap) / self.vid_stride
            count = _frame_count(cap)
            total = "?" if count is None else math.ceil(count / self.vid_stride)
            k = 0
            while True:
                ok, im0 = cap.read()
                if not ok:
                    break
                k += 1
                log = f"video {i + 1}/{len(self.files)} ({k}/{total}) {path}: "
                yield self._batch(path, im0, k, True, fps, log)
                for _ in range(self.vid_stride - 1):
                    if not cap.grab():
                        break
            if k == 0:
                self._skip(path, "no frame could be decoded")
        finally:
            cap.release()

    def _skip(self, path: str, why: str) -> None:
        self.skipped.append(path)
        LOGGER.warning(f"WARNING: skipping {path}: {why}")

    def _batch(self, path: str, im0: np.ndarray, frame: int, video: bool, fps: float, log: str) -> SourceBatch:
        return SourceBatch(
            paths=[path],
            im=_letterbox_batch([im0], self.imgsz, self.stride, self.auto),
            im0s=[im0],
            frame=frame,
            is_video=video,
            is_stream=False,
            fps=[fps],
            size=[(im0.shape[1], im0.shape[0])],
            names=[safe_name(path)],
            log=log,
        )


# ---------------------------------------------------------------------------------------------------------------
# streams


def _open_capture(url: str, cfg: StreamConfig) -> cv2.VideoCapture | None:
    """An opened capture, or None. URLs go through FFmpeg with bounded open/read times."""
    if url.isnumeric():
        cap = cv2.VideoCapture(int(url))
    else:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(cfg.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(cfg.read_timeout_s * 1000),
        ]  # fmt: skip
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if cap.isOpened():
        return cap
    cap.release()
    return None


class _StreamReader:
    """One stream: a daemon thread that decodes every ``vid_stride``-th frame and keeps only the newest."""

    def __init__(self, index: int, url: str, vid_stride: int, cfg: StreamConfig, cond: threading.Condition):
        self.index, self.url, self.vid_stride, self.cfg = index, url, vid_stride, cfg
        self.name = f"stream {index + 1} ({url})"
        self.stats = StreamStats()
        self.state = "live"  # live | reconnecting | gone | closed, guarded by cond
        self.fresh = False  # the newest frame has not been taken yet
        self._cond = cond
        self._stop = threading.Event()
        cap = _open_capture(url, cfg)
        ok, frame = cap.read() if cap is not None else (False, None)
        if not ok:
            if cap is not None:
                cap.release()
            raise ConnectionError(f"{self.name}: cannot open or read a first frame")
        self.fps = _capture_fps(cap) / vid_stride
        self.frame = frame
        self.stats.frames_read = 1
        self.fresh = True
        self._cap = cap
        LOGGER.info(f"{self.name}: {frame.shape[1]}x{frame.shape[0]} at {self.fps * vid_stride:.2f} FPS")
        self.thread = threading.Thread(target=self._run, name=f"stream-{index}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def discard(self) -> None:
        """Release the capture of a reader whose thread never started."""
        if self._cap is not None and not self.thread.is_alive():
            self._cap.release()
            self._cap = None

    def take(self) -> np.ndarray:
        """The newest frame (call with the condition held)."""
        self.fresh = False
        return self.frame

    def blank(self) -> np.ndarray:
        self.stats.blank_frames += 1
        return np.zeros_like(self.frame)

    def _set_state(self, state: str) -> None:
        with self._cond:
            self.state = state
            self._cond.notify_all()

    def _publish(self, frame: np.ndarray) -> None:
        with self._cond:
            if self.fresh:
                self.stats.frames_dropped += 1
            self.frame, self.fresh = frame, True
            self.stats.frames_read += 1
            self.state = "live"
            self._cond.notify_all()

    def _run(self) -> None:
        cap, n = self._cap, 0  # n: frames grabbed since the last decoded one
        self._cap = None
        try:
            while not self._stop.is_set():
                if cap is None:
                    cap, n = self._reconnect(), 0
                    if cap is None:
                        break
                    continue
                if cap.grab():
                    n += 1
                    if n < self.vid_stride:
                        continue
                    ok, frame = cap.retrieve()
                    if ok:
                        self._publish(frame)
                        n = 0
                        continue
                if self._stop.is_set():
                    break
                LOGGER.warning(f"WARNING: {self.name}: no frame (dropped or unresponsive), reconnecting")
                cap.release()
                cap = None
                self._set_state("reconnecting")
        finally:
            if cap is not None:
                cap.release()
            self._set_state("closed" if self._stop.is_set() else "gone")

    def _reconnect(self) -> cv2.VideoCapture | None:
        """A capture with a first frame published, or None when gone for good (or stopped)."""
        t0, attempt = time.monotonic(), 0
        for delay in self.cfg.delays():
            if self._stop.wait(delay):
                return None
            attempt += 1
            self.stats.reconnect_attempts += 1
            LOGGER.warning(f"WARNING: {self.name}: reconnect attempt {attempt} after {delay:.2f} s")
            cap = _open_capture(self.url, self.cfg)
            if cap is not None:
                ok, frame = cap.read()
                if ok:
                    self.stats.reconnects += 1
                    LOGGER.info(f"{self.name}: reconnected (attempt {attempt}, {time.monotonic() - t0:.1f} s down)")
                    self._publish(frame)
                    return cap
                cap.release()
            if time.monotonic() - t0 >= self.cfg.give_up_s:
                break
        if not self._stop.is_set():
            LOGGER.error(
                f"{self.name}: gone for good, no frame after {attempt} reconnect attempt(s) "
                f"in {time.monotonic() - t0:.1f} s"
            )
        return None


class StreamSource:
    """Live streams (webcams, URLs) read by one thread each and batched (B = number of streams).

    A step waits for a new frame from every live stream; a stream that is reconnecting contributes a black frame
    (so the others keep flowing); the iteration ends when any stream is gone for good, or on ``close()``.
    """

    def __init__(
        self,
        sources: Sequence[str],
        imgsz,
        stride: int = 32,
        auto: bool = True,
        vid_stride: int = 1,
        config: StreamConfig | None = None,
    ):
        self.sources = [str(s).strip() for s in sources]
        self.imgsz, self.stride, self.auto, self.vid_stride = imgsz, stride, auto, int(vid_stride)
        self.config = config or StreamConfig()
        self.bs = len(self.sources)
        self.count = 0  # batches yielded
        self.end_reason = ""  # why the iteration ended, once it has
        self._cond = threading.Condition()
        self._closed = False
        self.readers: list[_StreamReader] = []
        try:
            for i, s in enumerate(self.sources):
                self.readers.append(_StreamReader(i, s, self.vid_stride, self.config, self._cond))
        except BaseException:
            for r in self.readers:
                r.discard()
            raise
        for r in self.readers:
            r.start()
        shapes = {r.frame.shape for r in self.readers}
        if len(shapes) > 1:
            LOGGER.warning("WARNING: stream shapes differ; letterboxing to a fixed size. Similar streams run faster.")

    def __len__(self) -> int:
        return self.bs

    def __iter__(self) -> StreamSource:
        return self

    def __next__(self) -> SourceBatch:
        try:
            frames = self._wait_for_frames()
        except KeyboardInterrupt:
            self.end_reason = "interrupted"
            self.close()
            raise
        if frames is None:
            self.close()
            raise StopIteration
        self.count += 1
        return SourceBatch(
            paths=list(self.sources),
            im=_letterbox_batch(frames, self.imgsz, self.stride, self.auto),
            im0s=frames,
            frame=self.count,
            is_video=False,
            is_stream=True,
            fps=[r.fps for r in self.readers],
            size=[(f.shape[1], f.shape[0]) for f in frames],
            names=[safe_name(s) for s in self.sources],
            log=self._log_prefix(),
        )

    def _wait_for_frames(self) -> list[np.ndarray] | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                gone = [r for r in self.readers if r.state in ("gone", "closed")]
                if gone:
                    self.end_reason = self.end_reason or f"{gone[0].name} is gone"
                    LOGGER.info(f"{self.end_reason}: ending the stream source")
                    return None
                live = [r for r in self.readers if r.state == "live"]
                if live and all(r.fresh for r in live):
                    return [r.take() if r.state == "live" else r.blank() for r in self.readers]
                self._cond.wait(0.1)

    def _log_prefix(self) -> str:
        if self.bs == 1:
            return f"stream {self.sources[0]} ({self.count}): "
        return f"{self.bs} streams ({self.count}): "

    @property
    def stats(self) -> StreamStats:
        """Counters summed over the streams (``readers[i].stats`` per stream)."""
        total = StreamStats()
        for r in self.readers:
            for k in vars(total):
                setattr(total, k, getattr(total, k) + getattr(r.stats, k))
        return total

    @property
    def alive(self) -> bool:
        """Any reader thread still running."""
        return any(r.thread.is_alive() for r in self.readers)

    def summary(self) -> str:
        s = self.stats
        return (
            f"{self.bs} stream(s): {self.count} batches, {s.frames_read} frames read, {s.frames_dropped} dropped, "
            f"{s.reconnects} reconnects ({s.reconnect_attempts} attempts), {s.blank_frames} blank"
        )

    def close(self) -> None:
        """Stop and join the reader threads (bounded by the stream timeouts). Safe to call twice."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self.end_reason = self.end_reason or "closed"
            self._cond.notify_all()
        for r in self.readers:
            r.stop()
        limit = max(self.config.open_timeout_s, self.config.read_timeout_s) + 1.0
        for r in self.readers:
            if r.thread.is_alive():
                r.thread.join(limit)
        stuck = [r.name for r in self.readers if r.thread.is_alive()]
        if stuck:
            LOGGER.warning(f"WARNING: reader thread(s) still blocked after {limit:.0f} s: {', '.join(stuck)}")
        LOGGER.info(self.summary())

    def __enter__(self) -> StreamSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
