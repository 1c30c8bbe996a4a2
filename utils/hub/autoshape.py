"""YOLOv5's AutoShape: images in, ``Detections`` out, through detect.py's pieces (letterbox, ``postprocess``,
``scale_boxes``).

Shape shorthand: B images, H/W the batch's letterboxed size (multiples of the stride), h0/w0 an image's own
size, N predictions, nc classes.

Inputs, one or a list (YOLOv5's conventions):
    str / Path      an image file, read with PIL (EXIF rotation applied); URLs are refused: nothing downloads
    PIL.Image       any mode, converted to RGB
    numpy array     HWC **RGB** uint8 (an OpenCV frame is BGR: pass ``cv2.imread(f)[..., ::-1]``); HW grayscale,
                    HWC with 1 or 4 channels, and CHW are accepted too
    torch.Tensor    (B, 3, H, W) float in [0, 1]: goes straight to the model, and its decoded predictions
                    (B, N, 5 + nc) come back instead of Detections (as in YOLOv5)
All images of one call are letterboxed (no scale-up limit, centred grey padding) to one size: each scaled so its
longer side fits ``size``, the largest scaled height and width rounded up to the stride; a static export uses
its fixed size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from utils.boxes import postprocess, scale_boxes
from utils.data.augmentations import letterbox, round_to_stride
from utils.hub.detections import Detections
from utils.torch_utils import time_sync

ImageLike = Union[str, Path, np.ndarray, Image.Image]
STREAM_PREFIXES = ("http://", "https://", "rtsp://", "rtmp://")


class Predictor(Protocol):
    """What AutoShape needs of a model (``models.backends.Backend`` is one)."""

    stride: int  # largest stride
    names: dict[int, str]
    suppressed: bool  # outputs are final detections: no NMS
    device: torch.device
    imgsz: tuple[int, int] | None  # fixed (H, W) of a static export, else None
    train_imgsz: int | None  # the size the model was trained at (the default ``size``), None when unknown

    def __call__(self, im: Tensor) -> Tensor:  # (B, 3, H, W) in [0, 1] -> (B, N, 5 + nc) decoded
        ...


class AutoShape:
    """``AutoShape(backend)(imgs, size=None) -> Detections`` (``size`` None: the size the model was trained at, else
    640, as YOLOv5's 640). Thresholds are attributes, as in YOLOv5
    (``model.conf = 0.5``); a misspelt one is an AttributeError, not a silent no-op."""

    __slots__ = ("backend", "conf", "iou", "classes", "agnostic", "multi_label", "max_det")

    def __init__(self, backend: Predictor, conf: float = 0.25, iou: float = 0.45, classes: list[int] | None = None,
                 agnostic: bool = False, multi_label: bool = False, max_det: int = 1000):
        self.backend = backend
        self.conf, self.iou, self.classes = conf, iou, classes  # NMS confidence / IoU thresholds, class filter
        self.agnostic, self.multi_label, self.max_det = agnostic, multi_label, max_det

    @property
    def names(self) -> dict[int, str]:
        return self.backend.names

    @property
    def stride(self) -> int:
        return self.backend.stride

    @property
    def model(self):
        """The PyTorch model behind a .pt or a YAML entry (None for exported files)."""
        return getattr(self.backend, "model", None)

    def __repr__(self) -> str:
        describe = getattr(self.backend, "describe", None)
        return f"AutoShape({describe() if describe else self.backend!r}, conf={self.conf}, iou={self.iou})"

    @torch.no_grad()
    def __call__(self, ims: ImageLike | Sequence[ImageLike] | Tensor,
                 size: int | tuple[int, int] | None = None) -> Detections | Tensor:
        """Detect on ``ims`` (see the module docstring) letterboxed to at most ``size`` (int, or (h, w); None: the
        size the model was trained at, else 640)."""
        dev = self.backend.device
        if isinstance(ims, Tensor):
            return self.backend(ims.to(dev))
        t0 = time_sync(dev)
        items = list(ims) if isinstance(ims, (list, tuple)) else [ims]
        if not items:
            raise ValueError("AutoShape: no images given (an empty list)")
        loaded = [read_image(x, i) for i, x in enumerate(items)]
        ims0, files = [im for im, _ in loaded], [f for _, f in loaded]
        size = size or getattr(self.backend, "train_imgsz", None) or 640
        hw = self.backend.imgsz or batch_shape([im.shape[:2] for im in ims0], size, self.stride)
        boxed = [letterbox(im, hw, auto=False, stride=self.stride) for im in ims0]
        x = np.ascontiguousarray(np.stack([b[0] for b in boxed]).transpose(0, 3, 1, 2))  # (B, 3, H, W) RGB
        x = torch.from_numpy(x).to(dev).float() / 255
        t1 = time_sync(dev)
        pred = self.backend(x)
        t2 = time_sync(dev)
        dets = postprocess(pred, self.backend.suppressed, conf_thres=self.conf, iou_thres=self.iou,
                           classes=self.classes, agnostic=self.agnostic, multi_label=self.multi_label,
                           max_det=self.max_det)
        for det, im0, (_, ratio, pad) in zip(dets, ims0, boxed):
            det[:, :4] = scale_boxes(hw, det[:, :4], im0.shape, ratio_pad=(ratio, pad))  # original pixels
        t3 = time_sync(dev)
        speed_ms = tuple((b - a) * 1e3 / len(ims0) for a, b in ((t0, t1), (t1, t2), (t2, t3)))
        return Detections(ims0, dets, files, self.names, speed_ms, tuple(x.shape))


def batch_shape(shapes: Sequence[tuple[int, int]], size: int | tuple[int, int], stride: int) -> tuple[int, int]:
    """YOLOv5's AutoShape size: each (h0, w0) scaled to fit ``size``; the largest height and width over the
    batch, each rounded up to ``stride``."""
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[-1]))
    scaled = np.array([(h0 * min(h / h0, w / w0), w0 * min(h / h0, w / w0)) for h0, w0 in shapes]).max(0)
    return round_to_stride(int(scaled[0]), stride), round_to_stride(int(scaled[1]), stride)


def read_image(x: ImageLike, i: int) -> tuple[np.ndarray, str]:
    """Input ``i`` -> (HWC uint8 RGB contiguous array, file name for outputs: the file's stem or image{i}, .jpg)."""
    if isinstance(x, (str, Path)):
        return _read_file(x, i)
    if isinstance(x, Image.Image):
        name = Path(getattr(x, "filename", "") or f"image{i}").with_suffix(".jpg").name
        return _pil_to_rgb(x), name
    if isinstance(x, np.ndarray):
        return _array_to_rgb(x, i), f"image{i}.jpg"
    raise TypeError(f"AutoShape input {i}: {type(x).__name__} is not a file path, PIL image, numpy array or "
                    f"(B, 3, H, W) tensor")


def _read_file(path: str | Path, i: int) -> tuple[np.ndarray, str]:
    if str(path).startswith(STREAM_PREFIXES):
        raise ValueError(f"AutoShape input {i}: {path} is a URL; nothing is downloaded, pass a local file")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"AutoShape input {i}: image file not found: {p}")
    try:
        with Image.open(p) as im:
            return _pil_to_rgb(im), p.with_suffix(".jpg").name
    except OSError as e:
        raise ValueError(f"AutoShape input {i}: {p} is not an image PIL can read ({e})") from None


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))


def _array_to_rgb(a: np.ndarray, i: int) -> np.ndarray:
    if a.dtype != np.uint8:
        raise ValueError(f"AutoShape input {i}: numpy array of dtype {a.dtype}; pass uint8 (0-255) HWC RGB")
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)  # CHW -> HWC
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or min(a.shape[:2]) < 1:
        raise ValueError(f"AutoShape input {i}: numpy array of shape {a.shape} is not an HWC image")
    a = np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]
    return np.ascontiguousarray(a)
