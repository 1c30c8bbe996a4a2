"""Run a detector on images, videos, webcams and live streams.

    python detect.py --weights best.pt --source video.mp4        # or img.jpg, dir/, 'dir/*.jpg', list.txt
    python detect.py --weights best.onnx --source rtsp://cam/1    # or 0 (webcam), http(s)://, rtmp://, cams.streams
    python detect.py --weights best.torchscript                   # default source: the built-in shapes video
    python detect.py                                              # default weights: newest runs/train/*/weights/best.pt

Results go to runs/detect/exp{N}/: annotated images and mp4s (the source's fps and size), labels/*.txt
(``--save-txt``: ``cls cx cy w h [conf]`` normalised, ``<stem>_<frame>.txt`` for video and stream frames) and
crops/<class>/*.jpg (``--save-crop``). A log line per frame; a summary (frames, mean pre-process / inference /
NMS ms, end-to-end fps) at the end. q (with --view-img) or Ctrl-C ends the run cleanly: videos written so far
stay playable.

Reading, drawing and writing overlap with inference: a reader thread decodes and letterboxes image and video files
two frames ahead (streams have their own readers), and a writer thread draws and writes each frame's outputs and
prints its log line, in frame order, up to ``WRITE_AHEAD`` batches behind the model. Every output is written
before ``run()`` returns; a write error (e.g. a full disk) ends the run with that error. With --view-img the
outputs stay in the main thread (windows and key presses belong to it). On a CPU runtime that takes concurrent
calls (ONNX Runtime, the default for a .pt on the CPU) image and video files run ``IN_FLIGHT`` frames at once, each
on its share of the threads, since one frame on all of them leaves cores waiting (1.2-1.3x the frames/s on 2 cores:
bench/README.md); the outputs keep frame order. Streams run one frame at a time, the newest.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from models.backends import Backend, inference_size
from models.runtime import backend_choices, runtime_backend
from utils.boxes import postprocess, scale_boxes, xyxy2xywhn
from utils.data.augmentations import round_to_stride
from utils.data.background import Worker
from utils.data.check_image import check_image
from utils.data.sinks import VideoSinks
from utils.data.sources import (
    FileSource,
    SourceBatch,
    StreamConfig,
    StreamSource,
    is_stream,
    load_source,
)
from utils.evaluation.annotate import Annotator, CropWriter, describe
from utils.io.files import default_weights, increment_path
from utils.torch_utils import LOGGER, select_device, time_sync

ROOT = Path(__file__).resolve().parent
WRITE_AHEAD = 4  # batches queued for the writer thread (drawing, writing, logging); 0: write in the main thread
IN_FLIGHT = 2  # image / video frames run at once on a CPU runtime (ONNX Runtime), each on half the threads


@dataclass(frozen=True)
class OutputOptions:
    """What detect.py writes and shows for each frame."""
    save_img: bool = True
    save_txt: bool = False
    save_conf: bool = False
    save_crop: bool = False
    view_img: bool = False
    line_thickness: int = 3
    hide_labels: bool = False
    hide_conf: bool = False


@dataclass
class DetectResult:
    """What a run did. ``end``: 'done', 'q' (key pressed), 'interrupted' (Ctrl-C) or the stream's end reason."""
    save_dir: Path
    frames: int = 0  # images / frames processed
    speed_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mean per image: pre-process, inference, NMS
    seconds: float = 0.0  # wall time of the loop (reading, inference, drawing, writing)
    end: str = "done"
    labels: int = 0  # label files written
    crops: int = 0
    shape: tuple[int, ...] = ()  # the last input batch shape
    in_flight: int = 1  # frames run at once (image and video files on a CPU runtime: IN_FLIGHT)
    source_summary: str = ""  # streams: frames read / dropped, reconnects; files: count and skipped

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _Outputs:
    """Per-frame outputs: labels, crops, annotated images / videos, the log line, the display window.

    Without a window they are drawn and written by one background thread (``WRITE_AHEAD`` batches queued, in
    frame order) while the model runs on the next frames; its error is raised in the caller's thread by the next
    ``submit`` or by ``finish``. With --view-img everything stays in the caller's thread (imshow, waitKey, q)."""

    def __init__(self, save_dir: Path, names: dict[int, str], opts: OutputOptions, sinks: VideoSinks):
        self.save_dir, self.names, self.opts, self.sinks = save_dir, names, opts, sinks
        self.crops = CropWriter(save_dir / "crops")
        self.labels = 0
        self.view = opts.view_img and _display_available()
        self.quit = False
        self._writer = None if self.view or WRITE_AHEAD < 1 else Worker(self._write, WRITE_AHEAD, "detect-writer")

    def submit(self, batch: SourceBatch, im_hw: tuple[int, int], dets: list[torch.Tensor], dt_inf: float) -> None:
        """One batch's detections, per image (n, 6) [xyxy input px, conf, cls]: boxes mapped to the original
        frames here; drawn, written and logged here or by the writer thread."""
        ds = []
        for im0, det in zip(batch.im0s, dets):
            det[:, :4] = scale_boxes(im_hw, det[:, :4], im0.shape).round()
            ds.append(det.cpu().numpy())
        texts = [f"{im_hw[0]}x{im_hw[1]} {describe(d, self.names)}" for d in ds]
        text = texts[0] if len(texts) == 1 else "; ".join(f"{i}: {t}" for i, t in enumerate(texts))
        job = (batch, ds, f"{batch.log}{text}, {dt_inf * 1e3:.1f}ms")
        if self._writer is None:
            self._write(job)
        else:
            self._writer.put(job)

    def _write(self, job: tuple[SourceBatch, list[np.ndarray], str]) -> None:
        batch, ds, line = job
        for i, d in enumerate(ds):
            self._handle(batch, i, d)
        LOGGER.info(line)

    def _handle(self, batch: SourceBatch, i: int, d: np.ndarray) -> None:
        """Write and show one image's detections ``d`` (n, 6) [xyxy px of its original frame, conf, cls]."""
        im0 = batch.im0s[i]
        stem = batch.names[i] if batch.frame == 0 else f"{batch.names[i]}_{batch.frame}"
        if self.opts.save_txt and len(d):
            self._write_labels(d, im0.shape, stem)
        if self.opts.save_crop:
            self.crops.save(d, im0, self.names, stem)  # before drawing: crops are clean
        if self.opts.save_img or self.view:
            annotator = Annotator(im0, self.opts.line_thickness)
            annotator.detections(d, self.names, self.opts.hide_labels, self.opts.hide_conf)
            frame = annotator.result()
            if self.view:
                self._show(batch.paths[i], frame)
            if self.opts.save_img:
                self._save(batch, i, frame)

    def finish(self) -> None:
        """Wait until every submitted frame is written; raises the writer's error."""
        if self._writer is not None:
            self._writer.finish()

    def _write_labels(self, d: np.ndarray, shape: tuple[int, ...], stem: str) -> None:
        xywhn = xyxy2xywhn(d[:, :4], w=shape[1], h=shape[0])
        cols = (d[:, 5:6], xywhn, d[:, 4:5]) if self.opts.save_conf else (d[:, 5:6], xywhn)
        with open(self.save_dir / "labels" / f"{stem}.txt", "a") as f:
            np.savetxt(f, np.concatenate(cols, 1), fmt="%g")
        self.labels += 1

    def _save(self, batch: SourceBatch, i: int, frame: np.ndarray) -> None:
        if batch.is_video or batch.is_stream:
            self.sinks.write(i, self.save_dir / f"{batch.names[i]}.mp4", frame, batch.fps[i], batch.size[i])
            return
        path = self.save_dir / f"{batch.names[i]}{Path(batch.paths[i]).suffix}"
        if not cv2.imwrite(str(path), frame):
            raise OSError(f"cannot write {path}")

    def _show(self, key: str, frame: np.ndarray) -> None:
        try:
            cv2.imshow(key, frame)
            if cv2.waitKey(1) & 0xFF == ord("q"):
                self.quit = True
        except cv2.error as e:
            reason = str(e).strip().splitlines()[-1]
            LOGGER.warning(f"WARNING: --view-img: cannot open a window here ({reason}); continuing without display")
            self.view = False

    def close(self) -> None:
        """Stop the writer (frames not yet written are dropped: after an error or a second Ctrl-C) and close the
        window."""
        if self._writer is not None:
            self._writer.close()
        if self.view:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass


def _display_available() -> bool:
    """False (with a warning) where no window can open: Linux without DISPLAY / WAYLAND_DISPLAY. OpenCV's Qt
    backend aborts the process there instead of raising, so this is checked before the first imshow."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        LOGGER.warning("WARNING: --view-img: no display here (DISPLAY is not set); continuing without showing frames")
        return False
    return True


def check_imgsz(imgsz: int | list[int] | tuple[int, ...], backend: Backend) -> tuple[int, int]:
    """--imgsz (1 or 2 ints, h w) -> (h, w) rounded up to the stride; a static export's own size wins."""
    hw = [imgsz] if isinstance(imgsz, int) else list(imgsz)
    if len(hw) not in (1, 2) or any(int(x) < 1 for x in hw):
        raise ValueError(f"--imgsz {imgsz}: give one size or two (height width), positive")
    h, w = (int(hw[0]), int(hw[-1]))
    s = backend.stride
    new = (round_to_stride(h, s), round_to_stride(w, s))
    if new != (h, w):
        LOGGER.warning(f"WARNING: --imgsz {h} {w} must be a multiple of the stride {s}, updating to {new[0]} {new[1]}")
    if backend.imgsz is not None and backend.imgsz != new:
        LOGGER.warning(f"WARNING: {backend.weights} is a static export for {backend.imgsz[0]}x{backend.imgsz[1]} "
                       f"inputs: using that size instead of --imgsz {new[0]} {new[1]}")
        new = backend.imgsz
    return new


def _check_classes(classes: list[int] | None, names: dict[int, str]) -> list[int] | None:
    bad = [c for c in classes or [] if c not in names]
    if bad:
        raise ValueError(f"--classes {' '.join(map(str, bad))}: the model has {len(names)} classes "
                         f"(0-{len(names) - 1}: {', '.join(names.values())})")
    return classes


def _default_source() -> str:
    """The built-in dataset's demo video (generated on first use)."""
    from utils.data.dataloaders import check_dataset

    return str(Path(check_dataset("shapes.yaml")["path"]) / "videos" / "shapes.mp4")


@dataclass
class _Timer:
    dt: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # seconds: pre-process, inference, NMS


def _step(batch: SourceBatch, backend: Backend, nms: dict) -> tuple[torch.Tensor, list[torch.Tensor], tuple]:
    """Pre-process, infer, NMS one batch -> (input, detections per image, (pre, inference, NMS) seconds)."""
    dev = backend.device
    t0 = time_sync(dev)
    im = torch.from_numpy(batch.im).to(dev, backend.dtype).div_(255)  # (B, 3, H, W) in [0, 1], one new tensor
    t1 = time_sync(dev)
    pred = backend(im)
    t2 = time_sync(dev)
    dets = postprocess(pred, backend.suppressed, **nms)
    t3 = time_sync(dev)
    return im, dets, (t1 - t0, t2 - t1, t3 - t2)


def _steps(src: FileSource | StreamSource, backend: Backend, nms: dict,
           in_flight: int) -> Iterator[tuple[SourceBatch, torch.Tensor, list[torch.Tensor], tuple]]:
    """``_step`` on every batch of ``src``, in order; ``in_flight`` > 1 runs that many batches at once on as many
    threads (``backend`` then one that takes concurrent calls: ``Backend.concurrent``)."""
    if in_flight <= 1:
        for batch in src:
            yield batch, *_step(batch, backend, nms)
        return
    pending: deque[tuple[SourceBatch, Future]] = deque()
    with ThreadPoolExecutor(in_flight, thread_name_prefix="detect-infer") as pool:
        try:
            for batch in src:
                pending.append((batch, pool.submit(_step, batch, backend, nms)))
                if len(pending) == in_flight:
                    batch, job = pending.popleft()
                    yield batch, *job.result()
            while pending:
                batch, job = pending.popleft()
                yield batch, *job.result()
        finally:  # q, Ctrl-C or an error: drop what has not started; the pool waits for what has
            for _, job in pending:
                job.cancel()


def _loop(src: FileSource | StreamSource, backend: Backend, out: _Outputs, nms: dict, result: DetectResult) -> None:
    """Every batch of ``src`` through the model and the outputs; Ctrl-C and q end it cleanly (frames already
    submitted are written)."""
    timer, t_start = _Timer(), time.perf_counter()
    try:
        for batch, im, dets, dts in _steps(src, backend, nms, result.in_flight):
            for k, dt in enumerate(dts):
                timer.dt[k] += dt
            out.submit(batch, tuple(im.shape[2:]), dets, dts[1])
            result.frames += len(dets)
            result.shape = tuple(im.shape)
            if out.quit:
                result.end = "q"
                LOGGER.info("q pressed: stopping")
                break
        out.finish()
    except KeyboardInterrupt:
        result.end = "interrupted"
        LOGGER.warning("Interrupted (Ctrl-C): stopping; outputs written so far are kept")
        out.finish()
    result.seconds = time.perf_counter() - t_start
    result.speed_ms = tuple(t / max(result.frames, 1) * 1e3 for t in timer.dt)
    if result.end == "done" and isinstance(src, StreamSource) and src.end_reason:
        result.end = src.end_reason


def _in_flight(requested: int | None, source: str, backend: Backend) -> tuple[int, Backend]:
    """How many frames run at once, and the backend to run them: image and video files take ``IN_FLIGHT``
    (``requested`` when given) on a CPU runtime that allows concurrent calls, each on its share of the threads;
    streams one (their newest frame, with the least delay); everything else one on all threads."""
    n = IN_FLIGHT if requested is None else int(requested)
    if n < 1:
        raise ValueError(f"in_flight={requested}: must be 1 or more")
    concurrent = backend.concurrent(n) if n > 1 and not is_stream(source) else None
    if concurrent is None:
        return 1, backend
    LOGGER.info(f"{n} frames in flight, {torch.get_num_threads() // n} thread(s) each")
    return n, concurrent


def _source_summary(src: FileSource | StreamSource) -> str:
    if isinstance(src, StreamSource):
        return src.summary()
    return f"{len(src.files)} file(s)" + (f", {len(src.skipped)} unreadable and skipped" if src.skipped else "")


def _log_summary(result: DetectResult, opts: OutputOptions) -> None:
    LOGGER.info("Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape " % result.speed_ms
                + str(result.shape) + (f", {result.in_flight} images in flight" if result.in_flight > 1 else ""))
    LOGGER.info(f"{result.frames} frames in {result.seconds:.2f}s: {result.fps:.1f} FPS end-to-end "
                f"(reading, inference, NMS, drawing, writing); ended: {result.end}")
    LOGGER.info(f"Source: {result.source_summary}")
    if opts.save_txt:
        LOGGER.info(f"{result.labels} label file(s) saved to {result.save_dir / 'labels'}")
    if opts.save_crop:
        LOGGER.info(f"{result.crops} crop(s) saved to {result.save_dir / 'crops'}")
    LOGGER.info(f"Results saved to {result.save_dir}")


@torch.no_grad()
def run(weights: str | Path, source: str | Path | None = None, imgsz: int | list[int] | None = None,
        conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 1000, device: str = "",
        view_img: bool = False, save_txt: bool = False, save_conf: bool = False, save_crop: bool = False,
        nosave: bool = False, classes: list[int] | None = None, agnostic_nms: bool = False,
        project: str | Path = ROOT / "runs" / "detect", name: str = "exp", exist_ok: bool = False,
        line_thickness: int = 3, hide_labels: bool = False, hide_conf: bool = False, half: bool = False,
        vid_stride: int = 1, stream_config: StreamConfig | None = None, backend: str = "auto",
        in_flight: int | None = None) -> DetectResult:
    """Detect on ``source`` (see the module docstring) with the model in ``weights`` (.pt, .torchscript, .onnx, ...);
    ``backend`` runs a .pt on the CPU through a cached ONNX Runtime export ('auto', 'onnxruntime', 'openvino') or
    as PyTorch ('torch'): models/runtime.py. ``imgsz`` None: the size the model was trained at (else 640).
    ``in_flight``: frames of image and video files run at once where the runtime allows it (None: ``IN_FLIGHT``;
    1: one at a time on all threads)."""
    dev = select_device(device)
    if half and dev.type not in ("cuda", "cpu"):
        LOGGER.warning(f"WARNING: --half runs on CUDA (FP16) or the CPU (BF16); device is {dev}, running FP32")
        half = False
    size = None if not imgsz else [imgsz] if isinstance(imgsz, int) else list(imgsz)
    backend = runtime_backend(weights, dev, half, backend, tuple((size * 2)[:2]) if size else None, images=check_image)
    hw = check_imgsz(inference_size(imgsz, backend), backend)
    nms = dict(conf_thres=conf_thres, iou_thres=iou_thres, classes=_check_classes(classes, backend.names),
               agnostic=agnostic_nms, max_det=max_det)
    source = str(source) if source not in (None, "") else _default_source()
    in_flight, backend = _in_flight(in_flight, source, backend)
    opts = OutputOptions(not nosave, save_txt, save_conf, save_crop, view_img, line_thickness, hide_labels, hide_conf)
    backend.warmup(hw)
    with load_source(source, hw, backend.stride, auto=backend.dynamic, vid_stride=vid_stride,
                     stream_config=stream_config) as src:
        save_dir = increment_path(Path(project) / name, exist_ok, mkdir=True)  # once the source opened
        if save_txt:
            (save_dir / "labels").mkdir(parents=True, exist_ok=True)
        result = DetectResult(save_dir, in_flight=in_flight)
        with VideoSinks() as sinks, backend.host_threads():
            out = _Outputs(save_dir, backend.names, opts, sinks)
            try:
                _loop(src, backend, out, nms, result)
            finally:
                out.close()  # the writer thread joined before the videos close
    result.labels, result.crops, result.source_summary = out.labels, out.crops.saved, _source_summary(src)
    _log_summary(result, opts)
    return result


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=str, default=None,
                   help="model: .pt (ours or YOLOv5's), .torchscript, .onnx (default: the newest "
                        "runs/train/*/weights/best.pt)")
    p.add_argument("--source", type=str, default=None,
                   help="file, dir, glob, .txt list, video, webcam index, stream URL or .streams file "
                        "(default: the built-in shapes video)")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=None,
                   help="inference size h w (default: the size the model was trained at, else 640)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    p.add_argument("--device", default="", help="cuda device, i.e. 0, or cpu")
    p.add_argument("--view-img", action="store_true", help="show results")
    p.add_argument("--save-txt", action="store_true", help="save results to labels/*.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--project", default=ROOT / "runs" / "detect", help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--line-thickness", default=3, type=int, help="bounding box thickness (pixels)")
    p.add_argument("--hide-labels", action="store_true", help="hide labels")
    p.add_argument("--hide-conf", action="store_true", help="hide confidences")
    p.add_argument("--half", action="store_true",
                   help="half precision: FP16 on CUDA; BF16 through OpenVINO on a CPU with AVX512-BF16/AMX")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    p.add_argument("--backend", default="auto", choices=backend_choices(),
                   help="how a .pt runs on the CPU: auto (the fastest installed runtime, via a cached export), "
                        f"{', '.join(backend_choices()[1:])}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opt = parse_opt(argv)
    try:
        opt.weights = opt.weights or default_weights(ROOT / "runs" / "train")
        result = run(**vars(opt))
    except (OSError, ValueError) as e:  # missing files, unwritable outputs, unreachable streams, bad flags
        LOGGER.error(f"error: {e}")
        return 2
    except KeyboardInterrupt:  # while loading or opening the source; the loop handles its own
        LOGGER.warning("Interrupted (Ctrl-C)")
        return 130
    return 130 if result.end == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
