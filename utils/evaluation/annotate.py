"""Drawing detections on frames (cv2), cutting them out and counting them, for detect.py and the hub API.

Frames are HWC uint8 BGR numpy arrays (OpenCV's layout), drawn on in place. Boxes are ``xyxy`` pixels of
that frame.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from utils.evaluation.plots import class_colour

FONT = cv2.FONT_HERSHEY_SIMPLEX
TEXT_COLOUR = (255, 255, 255)


def default_line_width(shape: Sequence[int]) -> int:
    """YOLOv5's default: 0.3 % of the mean of height and width, at least 2 px."""
    return max(round((shape[0] + shape[1]) / 2 * 0.003), 2)


class Annotator:
    """Boxes with filled labels on one BGR frame: ``box_label`` per detection, then ``result()``."""

    def __init__(self, im: np.ndarray, line_width: int | None = None):
        if not isinstance(im, np.ndarray) or im.ndim != 3 or im.dtype != np.uint8:
            raise ValueError(f"Annotator needs an HWC uint8 image, got {getattr(im, 'shape', type(im))}")
        self.im = im if im.flags.writeable else im.copy()
        self.lw = int(line_width) if line_width else default_line_width(im.shape)
        self.tf = max(self.lw - 1, 1)  # label font thickness
        self.fs = self.lw / 3  # label font scale

    def box_label(self, box: Sequence[float], label: str = "", colour: tuple[int, int, int] = (128, 128, 128)) -> None:
        """One rectangle; ``label`` on a filled tab above it (inside when there is no room above)."""
        p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
        cv2.rectangle(self.im, p1, p2, colour, thickness=self.lw, lineType=cv2.LINE_AA)
        if not label:
            return
        w, h = cv2.getTextSize(label, FONT, self.fs, self.tf)[0]
        outside = p1[1] - h >= 3
        q2 = (p1[0] + w, p1[1] - h - 3 if outside else p1[1] + h + 3)
        cv2.rectangle(self.im, p1, q2, colour, -1, cv2.LINE_AA)
        org = (p1[0], p1[1] - 2 if outside else p1[1] + h + 2)
        cv2.putText(self.im, label, org, FONT, self.fs, TEXT_COLOUR, self.tf, cv2.LINE_AA)

    def detections(self, det: np.ndarray, names: dict[int, str], hide_labels: bool = False,
                   hide_conf: bool = False) -> None:
        """Draw ``det`` rows ``[x1, y1, x2, y2, conf, cls]`` with class colours and ``name conf`` labels."""
        for *xyxy, conf, c in det.tolist():
            c = int(c)
            name = names.get(c, str(c))
            label = "" if hide_labels else (name if hide_conf else f"{name} {conf:.2f}")
            self.box_label(xyxy, label, class_colour(c, bgr=True))

    def result(self) -> np.ndarray:
        return self.im


def describe(det: np.ndarray, names: dict[int, str]) -> str:
    """'2 circles, 1 ring' (class counts of ``det`` rows [..., conf, cls]) or '(no detections)'."""
    if not len(det):
        return "(no detections)"
    classes, counts = np.unique(det[:, 5].astype(int), return_counts=True)
    return ", ".join(f"{n} {names.get(c, str(c))}{'s' * (n > 1)}" for c, n in zip(classes.tolist(), counts.tolist()))


def crop_box(xyxy: Sequence[float], im: np.ndarray, gain: float = 1.02, pad: int = 10) -> np.ndarray:
    """The region of ``im`` under a box grown by ``gain`` and ``pad`` px (YOLOv5's save_one_box), clipped."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = (x2 - x1) * gain + pad, (y2 - y1) * gain + pad
    hh, ww = im.shape[:2]
    xa, xb = int(np.clip(cx - w / 2, 0, ww)), int(np.clip(cx + w / 2, 0, ww))
    ya, yb = int(np.clip(cy - h / 2, 0, hh)), int(np.clip(cy + h / 2, 0, hh))
    return im[ya:yb, xa:xb]


class CropWriter:
    """Saves crops as ``<dir>/<class name>/<stem>.jpg``, then ``<stem>_2.jpg``, ``<stem>_3.jpg``... for further
    crops of the same class and stem (numbered in memory: no directory scan per crop)."""

    def __init__(self, crop_dir: Path):
        self.dir = Path(crop_dir)
        self.counts: dict[tuple[str, str], int] = {}
        self.written: set[Path] = set()
        self.saved = 0

    def save(self, det: np.ndarray, im: np.ndarray, names: dict[int, str], stem: str) -> None:
        for *xyxy, _, c in det.tolist():
            name = names.get(int(c), str(int(c)))
            crop = crop_box(xyxy, im)
            if crop.size == 0:
                continue
            path = self._next_path(name, stem)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), crop):
                raise OSError(f"cannot write crop {path}")
            self.saved += 1

    def _next_path(self, name: str, stem: str) -> Path:
        k = self.counts.get((name, stem), 0)
        while True:  # skips a name another stem already took (video 'a_1' crop 2 vs video 'a' frame '1_2')
            k += 1
            path = self.dir / name / (f"{stem}.jpg" if k == 1 else f"{stem}_{k}.jpg")
            if path not in self.written:
                break
        self.counts[(name, stem)] = k
        self.written.add(path)
        return path
