"""detect.py inputs: files, videos, live MJPEG-over-HTTP streams (127.0.0.1 only), and the mp4 writer."""
from __future__ import annotations

import _thread
import logging
import math
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.mjpeg_server import FAST, MJPEGServer
from utils.data.sinks import VideoSink, VideoSinks
from utils.data.sources import (
    FileSource,
    StreamSource,
    is_stream,
    list_media,
    load_source,
    read_stream_list,
    safe_name,
)


def _write_image(path: Path, w: int, h: int, bgr=(255, 0, 0)) -> Path:
    cv2.imwrite(str(path), np.full((h, w, 3), bgr, np.uint8))
    return path


def _write_video(path: Path, n: int, size=(64, 48), fps: float = 10.0) -> Path:
    """n flat frames of grey level 10 * i."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), 10 * i, np.uint8))
    w.release()
    return path


def _count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, size


def _level(im0: np.ndarray, server: MJPEGServer, conns: int = 1) -> tuple[int, int]:
    """(connection, frame index) of a served grey frame."""
    v = int(round(float(im0.mean())))
    conn = min(range(conns), key=lambda c: abs(v - server.value(c, 0) - 16))
    return conn, round((v - server.value(conn, 0)) / 3)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    _write_image(d / "a.jpg", 100, 50)
    _write_image(d / "b.png", 40, 80)
    _write_image(d / "c.png", 64, 64)
    (d / "notes.md").write_text("not an image")
    return d


# ---------------------------------------------------------------------------------------------------------------
# files


def test_directory_yields_letterboxed_rgb_batches(image_dir: Path):
    src = load_source(str(image_dir), 64)
    assert isinstance(src, FileSource) and len(src) == 3
    batches = list(src)
    assert [Path(b.paths[0]).name for b in batches] == ["a.jpg", "b.png", "c.png"]
    a = batches[0]
    assert a.im.dtype == np.uint8 and a.im.shape == (1, 3, 32, 64)  # 100x50 -> 64x32, stride-32 minimal padding
    assert a.im.flags["C_CONTIGUOUS"]
    assert a.im[0, 2, 16, 32] > 240 and a.im[0, 0, 16, 32] < 15  # BGR blue -> RGB channel 2
    assert a.im0s[0].shape == (50, 100, 3) and a.size == [(100, 50)] and a.names == ["a"]
    assert a.frame == 0 and not a.is_video and not a.is_stream and a.log.startswith("image 1/3 ")
    assert batches[1].im.shape == (1, 3, 64, 32)
    assert next(iter(load_source(str(image_dir), 64, auto=False))).im.shape == (1, 3, 64, 64)
    assert next(iter(load_source(str(image_dir), [32, 64], auto=False))).im.shape == (1, 3, 32, 64)


def test_glob_and_txt_list(image_dir: Path, tmp_path: Path):
    assert [Path(f).name for f in list_media(str(image_dir / "*.png"))] == ["b.png", "c.png"]
    video = _write_video(tmp_path / "clip.mp4", 5)
    lst = tmp_path / "list.txt"
    lst.write_text("# detect these\nimages/c.png\n\n" + str(video) + "\n")
    batches = list(load_source(str(lst), 64))
    assert len(batches) == 1 + 5
    assert Path(batches[0].paths[0]).name == "c.png" and not batches[0].is_video
    assert all(b.is_video for b in batches[1:]) and [b.frame for b in batches[1:]] == [1, 2, 3, 4, 5]


def test_bad_inputs_are_clear_errors(image_dir: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_source(str(tmp_path / "missing.jpg"), 64)
    with pytest.raises(FileNotFoundError, match="matches no files"):
        load_source(str(image_dir / "*.bmp"), 64)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images or videos in .*empty"):
        load_source(str(empty), 64)
    lst = tmp_path / "list.txt"
    lst.write_text("images/a.jpg\nimages/nope.jpg\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt:2: 'images/nope.jpg'"):
        load_source(str(lst), 64)
    streams = tmp_path / "cams.streams"
    streams.write_text("rtsp://cam1/live\n# spare\nnot-a-url\n")
    with pytest.raises(ValueError, match="entry 2 'not-a-url'"):
        read_stream_list(streams)
    with pytest.raises(ValueError, match="vid_stride"):
        load_source(str(image_dir), 64, vid_stride=0)


def test_unreadable_image_is_counted_and_logged(image_dir: Path, caplog):
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    src = load_source(str(image_dir), 64)
    with caplog.at_level(logging.WARNING, logger="headzoo"):
        batches = list(src)
    assert len(batches) == 3 and src.skipped == [str(image_dir / "broken.jpg")]
    assert "broken.jpg" in caplog.text and "1 of 4 source file(s) skipped" in caplog.text


def test_source_kinds():
    assert is_stream("0") and is_stream("rtsp://cam/1") and is_stream("HTTP://x/y") and is_stream("a.streams")
    assert not is_stream("video.mp4") and not is_stream("images/")
    assert safe_name("/data/clip.mp4") == "clip"
    assert safe_name("http://127.0.0.1:8080/stream.mjpg") == "127.0.0.1_8080_stream"
    assert safe_name("0") == "0"


# ---------------------------------------------------------------------------------------------------------------
# videos


@pytest.mark.parametrize("vid_stride", [1, 3])
def test_video_vid_stride(tmp_path: Path, vid_stride: int):
    n = 25
    video = _write_video(tmp_path / "clip.mp4", n)
    batches = list(load_source(str(video), 64, vid_stride=vid_stride))
    k = math.ceil(n / vid_stride)
    assert len(batches) == k
    assert [b.frame for b in batches] == list(range(1, k + 1))
    assert batches[-1].log.startswith(f"video 1/1 ({k}/{k}) ")
    assert batches[0].fps == [pytest.approx(10.0 / vid_stride)] and batches[0].size == [(64, 48)]
    levels = [float(b.im0s[0].mean()) for b in batches]  # frame i has grey level 10 * i
    assert levels == pytest.approx([10 * i for i in range(0, n, vid_stride)], abs=6)


def test_consumer_stops_early_and_restarts(tmp_path: Path):
    src = load_source(str(_write_video(tmp_path / "clip.mp4", 10)), 64)
    for b in src:
        if b.frame == 2:
            break
    src.close()
    assert [b.frame for b in src][:2] == [1, 2]  # a new iteration starts over


# ---------------------------------------------------------------------------------------------------------------
# streams


def test_stream_reconnects_then_ends_cleanly_when_gone():
    with MJPEGServer([12, 12], fps=30) as server:
        t0 = time.monotonic()
        src = load_source(server.url, 64, stream_config=FAST)
        assert isinstance(src, StreamSource)
        got = [(b.frame, _level(b.im0s[0], server, conns=2)) for b in src]
        elapsed = time.monotonic() - t0
    assert elapsed < 10, f"stream source took {elapsed:.1f} s to end"
    assert not src.alive and "is gone" in src.end_reason
    assert server.connections == 2 and server.frames_sent == [12, 12]
    stats = src.stats
    assert stats.reconnects == 1 and stats.reconnect_attempts >= 2  # one success, then failures until give-up
    assert {conn for _, (conn, _) in got} == {0, 1}  # frames from before and after the drop
    assert [f for f, _ in got] == list(range(1, len(got) + 1))
    assert len(got) >= 16 and stats.frames_read == 24
    assert stats.frames_read - stats.frames_dropped - len(got) in (0, 1)  # the last frame may be left untaken


def test_slow_consumer_drops_frames_not_latency():
    with MJPEGServer([40], fps=100) as server:
        with load_source(server.url, 64, stream_config=FAST) as src:
            got = []
            for b in src:
                got.append(_level(b.im0s[0], server)[1])
                time.sleep(0.05)
    stats = src.stats
    assert stats.frames_read == 40 and stats.frames_dropped > 10
    assert len(got) + stats.frames_dropped in (40, 39)
    assert got == sorted(set(got)) and got[-1] >= 30  # newest frames, in order, none repeated


def test_stream_vid_stride():
    with MJPEGServer([30], fps=60) as server:
        with load_source(server.url, 64, vid_stride=3, stream_config=FAST) as src:
            got = [_level(b.im0s[0], server)[1] for b in src]
            fps = src.readers[0].fps
    assert src.stats.frames_read == 10
    assert got and all(i % 3 == 0 for i in got)
    assert fps == pytest.approx(25.0 / 3)  # FFmpeg's MJPEG default rate 25, per yielded frame


def test_streams_file_batches_and_blanks_a_reconnecting_stream(tmp_path: Path):
    a = MJPEGServer([8, 8], fps=30, gap_s=0.5, path="/a.mjpg").start()
    b = MJPEGServer([200], fps=30, size=(80, 48), path="/b.mjpg").start()
    try:
        streams = tmp_path / "cams.streams"
        streams.write_text(f"{a.url}\n{b.url}\n")
        with load_source(str(streams), 64, stream_config=FAST) as src:
            batches = list(src)
    finally:
        a.stop()
        b.stop()
    assert src.bs == 2 and batches[0].paths == [a.url, b.url]
    assert batches[0].im.shape == (2, 3, 64, 64)  # shapes differ -> fixed-size letterbox
    assert batches[0].size == [(64, 48), (80, 48)]
    assert batches[0].names == [f"127.0.0.1_{a.port}_a", f"127.0.0.1_{b.port}_b"]
    ra, rb = src.readers
    assert ra.stats.reconnects == 1 and ra.stats.blank_frames > 0 and rb.stats.blank_frames == 0
    assert any(x.im0s[0].max() == 0 for x in batches) and "stream 1" in src.end_reason
    assert not src.alive


def test_unreachable_stream_is_a_clear_error():
    url = f"http://127.0.0.1:{_closed_port()}/cam.mjpg"
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match="cam.mjpg"):
        load_source(url, 64, stream_config=FAST)
    assert time.monotonic() - t0 < 5


def test_streams_file_with_one_dead_url_releases_the_others(tmp_path: Path):
    with MJPEGServer([300], fps=30) as server:
        streams = tmp_path / "cams.streams"
        streams.write_text(f"{server.url}\nhttp://127.0.0.1:{_closed_port()}/dead.mjpg\n")
        with pytest.raises(ConnectionError, match="stream 2 .*dead.mjpg"):
            load_source(str(streams), 64, stream_config=FAST)
        deadline = time.monotonic() + 5
        while not server.finished and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.finished and server.frames_sent[0] < 300  # the first stream's connection was closed


def test_keyboard_interrupt_while_waiting_closes_the_threads(ctrl_c):
    with MJPEGServer([3, 3], fps=30, gap_s=3.0) as server:
        src = load_source(server.url, 64, stream_config=FAST)
        timer = threading.Timer(0.6, _thread.interrupt_main)  # Ctrl-C while the stream is reconnecting
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            for _ in src:
                pass
        timer.cancel()
        assert src.end_reason == "interrupted" and not src.alive
        assert time.monotonic() - t0 < 5


def test_consumer_stops_a_live_stream_with_context_manager():
    with MJPEGServer([300], fps=30) as server:
        with load_source(server.url, 64, stream_config=FAST) as src:
            for b in src:
                if b.frame == 3:
                    break
        assert not src.alive and src.count == 3 and src.end_reason == "closed"
        with pytest.raises(StopIteration):
            next(src)


# ---------------------------------------------------------------------------------------------------------------
# writer


def test_video_sink_writes_a_playable_mp4(tmp_path: Path):
    with VideoSink(tmp_path / "out" / "clip.avi", fps=12.5, size=(64, 48)) as sink:
        for i in range(12):
            sink.write(np.full((48, 64, 3), 20 * i, np.uint8))
        sink.write(np.zeros((100, 100, 3), np.uint8))  # wrong size: resized, counted
    assert sink.path == tmp_path / "out" / "clip.mp4" and sink.frames == 13 and sink.resized == 1
    assert _count_frames(sink.path) == (13, (64, 48))


def test_video_sink_stays_playable_after_an_interruption(tmp_path: Path):
    with pytest.raises(KeyboardInterrupt):
        with VideoSinks() as sinks:
            for i in range(10):
                sinks.write(0, tmp_path / "a.mp4", np.full((48, 64, 3), 9, np.uint8), 10.0, (64, 48))
            for i in range(4):
                sinks.write(0, tmp_path / "b.mp4", np.full((32, 32, 3), 9, np.uint8), 10.0, (32, 32))
            raise KeyboardInterrupt
    assert _count_frames(tmp_path / "a.mp4") == (10, (64, 48))
    assert _count_frames(tmp_path / "b.mp4") == (4, (32, 32))


# ---------------------------------------------------------------------------------------------------------------
# background threads (the file reader, detect.py's writer)


def test_prefetch_reads_ahead_boundedly_and_raises_the_readers_error():
    from utils.data.background import Prefetch

    produced, closed_in = [], []

    def gen():
        try:
            for i in range(10):
                produced.append(i)
                if i == 6:
                    raise OSError("disk gone at item 6")
                yield i
        finally:
            closed_in.append(threading.current_thread().name)

    p = Prefetch(gen(), depth=2, name="reader-under-test")
    assert next(p) == 0
    time.sleep(0.3)
    assert len(produced) <= 1 + 2 + 1  # taken, queued (depth), one in hand waiting for room
    assert [next(p) for _ in range(5)] == [1, 2, 3, 4, 5]
    with pytest.raises(OSError, match="disk gone at item 6"):
        next(p)
    assert not p.thread.is_alive() and closed_in == ["reader-under-test"]


def test_file_source_reader_thread_stops_on_break_and_matches_the_unthreaded_frames(tmp_path):
    video = _write_video(tmp_path / "v.mp4", 12)
    with FileSource([str(video)], 64, prefetch=0) as src:
        plain = [(b.frame, b.log, b.im.copy()) for b in src]
    with FileSource([str(video)], 64, prefetch=2) as src:
        threaded = [(b.frame, b.log, b.im.copy()) for b in src]
        reader = src._gen.thread
    assert [f[:2] for f in threaded] == [f[:2] for f in plain] and len(plain) == 12
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(threaded, plain)) and not reader.is_alive()
    src = FileSource([str(video)], 64, prefetch=3)
    for b in src:
        if b.frame == 2:
            break
    reader = src._gen.thread
    src.close()
    assert not reader.is_alive() and not any(t.name == "file-reader" for t in threading.enumerate())
    src = FileSource([str(video)], 64, prefetch=2)
    assert next(iter(src)).frame == 1
    reader = src._gen.thread
    del src  # dropped without close(): its thread ends by itself
    reader.join(5)
    assert not reader.is_alive()


def test_worker_keeps_order_and_raises_its_error_once():
    from utils.data.background import Worker

    done = []

    def work(i):
        if i == 5:
            raise OSError(f"cannot write item {i}")
        time.sleep(0.002)
        done.append(i)

    w = Worker(work, depth=2)
    for i in range(5):
        w.put(i)
    w.finish()
    assert done == [0, 1, 2, 3, 4] and not w.thread.is_alive()
    w = Worker(work, depth=2)
    with pytest.raises(OSError, match="cannot write item 5"):
        for i in range(5, 100):
            w.put(i)
            time.sleep(0.001)
    w.finish()  # already raised: not again
    w.close()
    assert not w.thread.is_alive() and done == [0, 1, 2, 3, 4]
