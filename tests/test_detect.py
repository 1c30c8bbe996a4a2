"""detect.py on image folders, videos and a live MJPEG stream (127.0.0.1), through .pt and exported weights."""
from __future__ import annotations

import _thread
import logging
import math
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import detect
import export
from data.generators.shapes import ShapesConfig, render_image, write_video
from tests.mjpeg_server import FAST, MJPEGServer
from tests.test_export import NAMES, make_checkpoint
from utils.data.sources import safe_name
from utils.evaluation.annotate import Annotator, CropWriter, crop_box
from utils.evaluation.plots import class_colour


def count_frames(path: Path) -> tuple[int, tuple[int, int], float]:
    cap = cv2.VideoCapture(str(path))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = cap.get(cv2.CAP_PROP_FPS)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, size, fps


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("w") / "yolov5n.pt")


@pytest.fixture(scope="module")
def onnx_weights(weights: Path, tmp_path_factory) -> Path:
    pt = tmp_path_factory.mktemp("onnx") / "yolov5n.pt"
    pt.write_bytes(weights.read_bytes())
    return export.run(pt, include=["onnx"], imgsz=[64], dynamic=True)["onnx"][0]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("images")
    cfg = ShapesConfig(imgsz=64, max_objects=3, min_size=10)
    for i in range(3):
        img = render_image(cfg, "val", i)[0]
        if i == 1:
            img = cv2.resize(img, (80, 48))  # non-square: boxes must map back through the letterbox
        cv2.imwrite(str(d / f"im{i}.jpg"), img)
    (d / "notes.md").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    cfg = ShapesConfig(video_seconds=0.8, video_fps=10, video_size=(96, 64), video_objects=3)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", cfg)  # 8 frames


@pytest.fixture
def two_threads():
    """torch on 2 threads (the tests run on 1), so that detect.py runs IN_FLIGHT = 2 frames at once."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def read_labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.loadtxt(p, ndmin=2) for p in sorted(folder.glob("*.txt"))}


# ---------------------------------------------------------------------------------------------------------------
# images


@pytest.fixture(scope="module")
def pt_run(weights, image_dir, tmp_path_factory) -> detect.DetectResult:
    return detect.run(weights, image_dir, imgsz=64, conf_thres=0.0, save_txt=True, save_conf=True,
                      project=tmp_path_factory.mktemp("runs"), name="exp")


def test_image_folder_writes_annotated_images_and_labels(pt_run, image_dir):
    r = pt_run
    assert r.save_dir.name == "exp" and r.frames == 3 and r.end == "done"
    for i in range(3):
        src, out = cv2.imread(str(image_dir / f"im{i}.jpg")), cv2.imread(str(r.save_dir / f"im{i}.jpg"))
        assert out is not None and out.shape == src.shape
    labels = read_labels(r.save_dir / "labels")
    assert sorted(labels) == ["im0.txt", "im1.txt", "im2.txt"] and r.labels == 3
    for i, rows in enumerate(labels.values()):
        assert rows.shape[1] == 6 and len(rows) > 0  # cls cx cy w h conf
        im = cv2.imread(str(r.save_dir / f"im{i}.jpg"))
        last = rows[-1]  # drawn last: nothing covers its corner
        x1, y1 = ((last[1:3] - last[3:5] / 2).clip(0, 1) * (im.shape[1] - 1, im.shape[0] - 1)).round().astype(int)
        assert im[y1, x1].astype(int).tolist() == pytest.approx(class_colour(int(last[0]), bgr=True), abs=60)
        assert set(np.unique(rows[:, 0])) <= {0, 1, 2}
        assert (rows[:, 1:] >= 0).all() and (rows[:, 1:5] <= 1).all()
    assert r.speed_ms[1] > 0 and r.fps > 0 and "3 file(s)" in r.source_summary


def test_crops_nosave_and_max_det(weights, image_dir, tmp_path):
    r = detect.run(weights, image_dir, imgsz=64, conf_thres=0.0, max_det=4, save_crop=True, save_txt=True,
                   nosave=True, project=tmp_path, name="exp")
    assert not list(r.save_dir.glob("*.jpg"))  # --nosave: no annotated images
    crops = sorted((r.save_dir / "crops").rglob("*.jpg"))
    assert len(crops) == r.crops == 12  # 3 images x max_det 4
    assert {p.parent.name for p in crops} <= set(NAMES.values())
    assert all(len(np.loadtxt(p, ndmin=2)) == 4 for p in (r.save_dir / "labels").glob("*.txt"))
    assert all(cv2.imread(str(p)) is not None for p in crops)


@pytest.mark.parametrize("in_flight", [1, 2])
def test_onnx_gives_the_same_detections_as_pytorch(pt_run, onnx_weights, image_dir, tmp_path, two_threads, in_flight):
    """Also with 2 images of different shapes in flight at once (the default on 2 threads)."""
    r = detect.run(onnx_weights, image_dir, imgsz=64, conf_thres=0.01, save_txt=True, save_conf=True, nosave=True,
                   project=tmp_path, in_flight=in_flight)
    assert r.in_flight == in_flight and r.frames == 3
    b = read_labels(r.save_dir / "labels")
    # greedy NMS visits boxes by falling confidence, so the conf-0 run's rows above 0.01 are the conf-0.01 result
    a = {k: v[v[:, 5] > 0.01] for k, v in read_labels(pt_run.save_dir / "labels").items()}
    assert {k for k, v in a.items() if len(v)} == set(b) and sum(map(len, b.values())) >= 3
    for k in b:
        assert a[k].shape == b[k].shape
        np.testing.assert_allclose(a[k][np.lexsort(a[k].T[::-1])], b[k][np.lexsort(b[k].T[::-1])], atol=2e-3)


def test_classes_filter_and_bad_class_is_a_clear_error(weights, image_dir, tmp_path):
    r = detect.run(weights, image_dir, imgsz=64, conf_thres=0.0, classes=[1], save_txt=True, nosave=True,
                   project=tmp_path)
    rows = np.concatenate(list(read_labels(r.save_dir / "labels").values()))
    assert len(rows) and set(rows[:, 0]) == {1}
    with pytest.raises(ValueError, match="--classes 7: the model has 3 classes"):
        detect.run(weights, image_dir, imgsz=64, classes=[7], project=tmp_path)


def test_cli_increments_run_dirs_and_reports_errors(weights, image_dir, tmp_path, caplog):
    argv = ["--weights", str(weights), "--source", str(image_dir), "--imgsz", "64", "--project", str(tmp_path)]
    (tmp_path / "exp").mkdir()
    assert detect.main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "exp2").iterdir()) == ["im0.jpg", "im1.jpg", "im2.jpg"]
    assert detect.main(argv[:2] + ["--source", str(tmp_path / "missing.jpg")]) == 2
    assert "missing.jpg" in caplog.text and not (tmp_path / "exp3").exists()  # no run folder for a bad source


def test_weights_default_to_the_newest_trained_best_pt(weights, image_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(detect, "ROOT", tmp_path)
    argv = ["--source", str(image_dir), "--imgsz", "64", "--nosave", "--project", str(tmp_path / "out")]
    assert detect.main(argv) == 2  # nothing trained yet
    err = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert err == [f"error: no --weights given and no trained model to default to ({tmp_path}/runs/train/*/weights/"
                   f"best.pt): train one first (python train.py --cfg yolov5n.yaml) or pass --weights FILE (.pt, "
                   f".torchscript or .onnx)"]
    for i, run in enumerate(("exp2", "exp10", "exp3")):  # exp10 written last: the newest by time, not by name
        best = tmp_path / "runs" / "train" / run / "weights" / "best.pt"
        best.parent.mkdir(parents=True)
        best.write_bytes(weights.read_bytes())
        os.utime(best, (1e9 + i, 1e9 + (i if run != "exp10" else 10)))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert detect.main(argv) == 0
    newest = tmp_path / "runs" / "train" / "exp10" / "weights" / "best.pt"
    assert f"--weights not given: using the newest trained model, {newest}" in caplog.text


# ---------------------------------------------------------------------------------------------------------------
# video


@pytest.mark.parametrize("vid_stride", [1, 3])
def test_video_writes_mp4_with_source_size_and_frame_count(weights, video, tmp_path, vid_stride):
    r = detect.run(weights, video, imgsz=64, conf_thres=0.0, max_det=3, save_txt=True, vid_stride=vid_stride,
                   project=tmp_path)
    n = math.ceil(8 / vid_stride)
    frames, size, fps = count_frames(r.save_dir / "clip.mp4")
    assert (frames, size) == (n, (96, 64)) and r.frames == n
    assert fps == pytest.approx(10 / vid_stride, rel=0.01)
    assert sorted(p.name for p in (r.save_dir / "labels").glob("*.txt")) == sorted(f"clip_{k}.txt"
                                                                                 for k in range(1, n + 1))


# ---------------------------------------------------------------------------------------------------------------
# live streams


def test_stream_drops_reconnects_and_ends_cleanly(weights, tmp_path):
    with MJPEGServer([15, 15], fps=30, size=(64, 48)) as server:
        t0 = time.monotonic()
        r = detect.run(weights, server.url, imgsz=64, project=tmp_path, stream_config=FAST)
        elapsed = time.monotonic() - t0
    assert elapsed < 20 and server.connections == 2
    assert "is gone" in r.end and "1 reconnects" in r.source_summary
    assert r.frames >= 10  # frames from both connections (a slow model drops some: newest frame wins)
    frames, size, _ = count_frames(r.save_dir / f"{safe_name(server.url)}.mp4")
    assert frames == r.frames and size == (64, 48)


def test_streams_file_runs_as_one_batch_with_one_mp4_per_stream(weights, tmp_path):
    a = MJPEGServer([20], fps=30, size=(64, 48), path="/a.mjpg").start()
    b = MJPEGServer([400], fps=30, size=(80, 48), path="/b.mjpg").start()
    try:
        streams = tmp_path / "cams.streams"
        streams.write_text(f"{a.url}\n{b.url}\n")
        r = detect.run(weights, streams, imgsz=64, project=tmp_path, stream_config=FAST)
    finally:
        a.stop()
        b.stop()
    assert "stream 1" in r.end and r.shape[0] == 2 and r.frames % 2 == 0 and r.frames >= 10
    for server, size in ((a, (64, 48)), (b, (80, 48))):
        assert count_frames(r.save_dir / f"{safe_name(server.url)}.mp4")[:2] == (r.frames // 2, size)


def test_ctrl_c_ends_cleanly_with_a_playable_mp4(weights, tmp_path, ctrl_c):
    with MJPEGServer([1000], fps=30, size=(64, 48), lifetime_s=30) as server:
        def interrupt_when_streaming():
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (not server.frames_sent or server.frames_sent[0] < 15):
                time.sleep(0.02)
            _thread.interrupt_main()

        threading.Thread(target=interrupt_when_streaming, daemon=True).start()
        r = detect.run(weights, server.url, imgsz=64, project=tmp_path, stream_config=FAST)
    assert r.end == "interrupted" and r.frames >= 1
    frames, size, _ = count_frames(r.save_dir / f"{safe_name(server.url)}.mp4")
    assert frames == r.frames and size == (64, 48)


# ---------------------------------------------------------------------------------------------------------------
# --view-img


def test_view_img_headless_and_half_on_cpu_warn_and_continue(weights, image_dir, tmp_path, monkeypatch, caplog):
    import dataclasses

    from models.formats import FORMATS
    openvino = dataclasses.replace(FORMATS["openvino"], bf16=lambda: False)
    monkeypatch.setitem(FORMATS, "openvino", openvino)  # the FP32 fallback, whatever this CPU has
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with caplog.at_level(logging.WARNING, logger="headzoo"):
        r = detect.run(weights, image_dir, imgsz=64, view_img=True, half=True, device="cpu", project=tmp_path)
    assert "no display" in caplog.text and r.frames == 3 and (r.save_dir / "im0.jpg").is_file()
    assert "--half on the CPU:" in caplog.text and "running FP32" in caplog.text


def test_view_img_window_error_warns_and_continues(weights, image_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DISPLAY", ":99")

    def broken_imshow(*args):
        raise cv2.error("The function is not implemented")

    monkeypatch.setattr(detect.cv2, "imshow", broken_imshow)
    with caplog.at_level(logging.WARNING, logger="headzoo"):
        r = detect.run(weights, image_dir, imgsz=64, view_img=True, project=tmp_path)
    assert "cannot open a window" in caplog.text and r.frames == 3 and r.end == "done"


def test_q_key_stops(weights, video, tmp_path, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(detect.cv2, "imshow", lambda *a: None)
    monkeypatch.setattr(detect.cv2, "waitKey", lambda *a: ord("q"))
    monkeypatch.setattr(detect.cv2, "destroyAllWindows", lambda: None)
    r = detect.run(weights, video, imgsz=64, view_img=True, project=tmp_path)
    assert r.end == "q" and r.frames == 1 and count_frames(r.save_dir / "clip.mp4")[0] == 1


# ---------------------------------------------------------------------------------------------------------------
# drawing helpers


def test_annotator_and_crops(tmp_path):
    im = np.zeros((60, 80, 3), np.uint8)
    det = np.array([[10, 20, 40, 50, 0.9, 2], [0, 0, 5, 5, 0.5, 0]], np.float32)
    Annotator(im, line_width=1).detections(det, NAMES)
    assert im[20, 25].any() and not im[35, 25].any()  # box edge drawn, inside untouched
    assert crop_box([10, 20, 40, 50], im).shape == (41, 41, 3)  # 30 * 1.02 + 10 px, pixel-aligned
    assert crop_box([0, 0, 5, 5], im).shape == (10, 10, 3)  # clipped to the image
    writer = CropWriter(tmp_path)
    writer.save(det, im, NAMES, "a_1")
    writer.save(det[:1], im, NAMES, "a_1")
    writer.save(det[:1], im, NAMES, "a")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg")) == [
        "a/a_1.jpg", "c/a.jpg", "c/a_1.jpg", "c/a_1_2.jpg"]


# ---------------------------------------------------------------------------------------------------------------
# the reader and writer threads


def our_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("file-reader", "detect-writer")]


@pytest.fixture
def unthreaded(monkeypatch):
    """detect.py as before the reader and writer threads: everything in the main thread."""
    from utils.data import sources

    def apply():
        monkeypatch.setattr(sources, "PREFETCH", 0)
        monkeypatch.setattr(detect, "WRITE_AHEAD", 0)
    return apply


def test_threads_write_frames_in_order_with_the_same_labels_and_logs(onnx_weights, tmp_path, unthreaded,
                                                                     two_threads, caplog):
    """Reader, writer and 2 frames in flight (the default on 2 cores, ONNX Runtime) against everything in the main
    thread, one frame at a time: the same labels, log lines and frames, in order."""
    clip = tmp_path / "grey.mp4"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for k in range(24):  # frame k: grey level 10 k, so the order of the written frames can be read back
        w.write(np.full((64, 96, 3), 10 * k, np.uint8))
    w.release()
    runs = {}
    for mode in ("threaded", "unthreaded"):
        if mode == "unthreaded":
            unthreaded()
        with caplog.at_level(logging.INFO, logger="headzoo"):
            caplog.clear()
            r = detect.run(onnx_weights, clip, imgsz=64, conf_thres=0.0, max_det=3, save_txt=True, save_conf=True,
                           line_thickness=1, hide_labels=True, project=tmp_path, name=mode,
                           in_flight=None if mode == "threaded" else 1)
        lines = [m for m in caplog.messages if m.startswith("video 1/1 (")]
        runs[mode] = r, read_labels(r.save_dir / "labels"), lines
        assert not our_threads()
        assert r.in_flight == (2 if mode == "threaded" else 1)
        assert ("2 frames in flight, 1 thread(s) each" in caplog.text) == (mode == "threaded")
    (r1, labels1, lines1), (r0, labels0, lines0) = runs["threaded"], runs["unthreaded"]
    assert r1.frames == r0.frames == 24 and r1.labels == r0.labels == 24
    assert labels1.keys() == labels0.keys()  # one-thread and two-thread sessions: equal up to float rounding
    assert all(np.allclose(labels1[k], labels0[k], rtol=0, atol=1e-5) for k in labels0)
    assert [m.split(":")[0] for m in lines1] == [m.split(":")[0] for m in lines0]  # one line a frame, in order
    assert [m.split(":")[0] for m in lines1] == [f"video 1/1 ({k}/24) {clip}" for k in range(1, 25)]
    frames1, frames0 = read_frames(r1.save_dir / "grey.mp4"), read_frames(r0.save_dir / "grey.mp4")
    greys = [int(np.bincount(f[..., 1].ravel()).argmax()) for f in frames1]  # the background: the most common level
    assert len(greys) == 24 and greys == sorted(set(greys)), greys  # mp4v moves levels by a few, never reorders
    assert all(abs(g - 10 * k) <= 6 for k, g in enumerate(greys)), greys
    assert len(frames0) == 24 and all(np.abs(a.astype(int) - b).max() <= 2 for a, b in zip(frames1, frames0))


def read_frames(path: Path) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(path)), []
    while (frame := cap.read()[1]) is not None:
        frames.append(frame)
    cap.release()
    return frames


def test_a_writer_error_is_one_clear_error_and_stops_the_threads(weights, image_dir, video, tmp_path, monkeypatch,
                                                                 caplog):
    monkeypatch.setattr(detect.cv2, "imwrite", lambda *a: False)
    with caplog.at_level(logging.ERROR, logger="headzoo"):
        rc = detect.main(["--weights", str(weights), "--source", str(image_dir), "--imgsz", "64",
                          "--project", str(tmp_path), "--backend", "torch"])
    assert rc == 2 and "error: cannot write" in caplog.text and "im0.jpg" in caplog.text
    assert not our_threads()

    calls = []
    real_write = detect.VideoSinks.write

    def failing_write(self, *args):
        calls.append(1)
        if len(calls) == 4:
            raise OSError("cannot write frame 4: disk full")
        real_write(self, *args)

    monkeypatch.setattr(detect.VideoSinks, "write", failing_write)
    with pytest.raises(OSError, match="frame 4: disk full"):
        detect.run(weights, video, imgsz=64, project=tmp_path, name="video")
    assert not our_threads()
    assert count_frames(tmp_path / "video" / "clip.mp4")[0] == 3  # closed, playable: the frames before the error


@pytest.mark.parametrize("in_flight", [1, 2])
def test_ctrl_c_on_a_file_writes_every_frame_counted(onnx_weights, video, tmp_path, monkeypatch, two_threads,
                                                     in_flight):
    real_step, calls = detect._step, []

    def step(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(detect, "_step", step)
    r = detect.run(onnx_weights, video, imgsz=64, project=tmp_path, in_flight=in_flight)
    assert r.end == "interrupted" and r.frames == 4 and r.in_flight == in_flight and not our_threads()
    assert not [t for t in threading.enumerate() if t.name.startswith("detect-infer")]
    assert count_frames(r.save_dir / "clip.mp4")[0] == 4


def test_streams_and_pytorch_run_one_frame_at_a_time(weights, onnx_weights, video, tmp_path, two_threads):
    """Frames in flight need a runtime that takes concurrent calls (ONNX Runtime) and a file source; a stream keeps
    one frame at a time (the newest frame, the least delay); 0 is a clear error."""
    from models.backends import load_backend

    pt = detect.run(weights, video, imgsz=64, project=tmp_path, backend="torch")
    assert pt.in_flight == 1 and pt.frames == 8
    b = load_backend(onnx_weights)
    assert detect._in_flight(None, str(video), b)[0] == 2
    assert detect._in_flight(None, "rtsp://127.0.0.1:1/cam", b) == (1, b)
    assert detect._in_flight(1, str(video), b) == (1, b)
    with pytest.raises(ValueError, match="in_flight=0"):
        detect.run(onnx_weights, video, imgsz=64, project=tmp_path, in_flight=0)
