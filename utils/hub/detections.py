"""YOLOv5's ``Detections``: the results of one AutoShape call, in YOLOv5's formats, drawn, saved and cropped.

Per image i (B images, n_i detections):
    pred[i] = xyxy[i]   (n_i, 6) [x1, y1, x2, y2, conf, cls] in pixels of the original image
    xywh[i]             (n_i, 6) [cx, cy, w, h, conf, cls]
    xyxyn[i], xywhn[i]  the same with coordinates divided by the image's width and height
    ims[i]              the image, HWC uint8 RGB (after ``render()``: with its boxes drawn)
    files[i]            the name ``save()`` writes it under
``pandas()`` turns the four lists into per-image DataFrames with YOLOv5's columns.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from utils import LOGGER
from utils.boxes import xyxy2xywh
from utils.evaluation.annotate import Annotator, CropWriter, crop_box, describe
from utils.io.files import increment_path

XYXY_COLUMNS = ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]
XYWH_COLUMNS = ["xcenter", "ycenter", "width", "height", "confidence", "class", "name"]


class Detections:
    """Results of an AutoShape call. ``speed_ms``: mean per image (pre-process, inference, NMS); ``shape``: the
    input batch shape (B, 3, H, W)."""

    def __init__(self, ims: Sequence[np.ndarray], pred: Sequence[Tensor], files: Sequence[str],
                 names: dict[int, str], speed_ms: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 shape: tuple[int, ...] = ()):
        if not len(ims) == len(pred) == len(files):
            raise ValueError(f"Detections: {len(ims)} images, {len(pred)} predictions, {len(files)} file names")
        self._originals = list(ims)  # kept clean for save() and crop() after render()
        self.ims = list(ims)
        self.pred = list(pred)
        self.files = list(files)
        self.names = names
        self.n = len(self.pred)
        self.t = tuple(speed_ms)
        self.s = tuple(shape)
        gains = [torch.tensor([im.shape[1], im.shape[0]] * 2 + [1, 1], device=p.device, dtype=p.dtype)
                 for im, p in zip(self.ims, self.pred)]
        self.xyxy = self.pred
        self.xywh = [torch.cat((xyxy2xywh(p[:, :4]), p[:, 4:]), 1) for p in self.pred]
        self.xyxyn = [p / g for p, g in zip(self.xyxy, gains)]
        self.xywhn = [p / g for p, g in zip(self.xywh, gains)]

    def __len__(self) -> int:
        return self.n

    def __str__(self) -> str:
        lines = [f"image {i + 1}/{self.n}: {im.shape[0]}x{im.shape[1]} {describe(p.cpu().numpy(), self.names)}"
                 for i, (im, p) in enumerate(zip(self._originals, self.pred))]
        pre, inference, nms = self.t
        lines.append(f"Speed: {pre:.1f}ms pre-process, {inference:.1f}ms inference, {nms:.1f}ms NMS per image at "
                     f"shape {self.s}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"{type(self).__name__} of {self.n} image(s)\n{self}"

    def print(self) -> None:
        print(self)

    def render(self, labels: bool = True) -> list[np.ndarray]:
        """Draw the boxes (and ``name conf`` labels) on copies of the images -> ``ims`` (RGB), updated."""
        self.ims = [np.ascontiguousarray(self._drawn_bgr(i, labels)[..., ::-1]) for i in range(self.n)]
        return self.ims

    def show(self, labels: bool = True) -> None:
        """Open each annotated image in the system's image viewer (PIL)."""
        from PIL import Image

        for im in self.render(labels):
            Image.fromarray(im).show()

    def save(self, labels: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> Path:
        """Write the annotated images to ``save_dir`` (exp, exp2, ... unless ``exist_ok``) -> that folder."""
        save_dir = increment_path(save_dir, exist_ok, mkdir=True)
        for i, name in enumerate(_unique(self.files)):
            path = save_dir / name
            if not cv2.imwrite(str(path), self._drawn_bgr(i, labels)):
                raise OSError(f"cannot write {path}")
        LOGGER.info(f"Saved {self.n} image{'s' * (self.n > 1)} to {save_dir}")
        return save_dir

    def crop(self, save: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> list[dict]:
        """Every detection cut out of its image (YOLOv5's gain 1.02 and 10 px pad) -> list of {box, conf, cls,
        label, im (RGB)}; with ``save``, also written to ``save_dir``/crops/<class name>/<file stem>.jpg."""
        writer = CropWriter(increment_path(save_dir, exist_ok, mkdir=True) / "crops") if save else None
        crops = []
        for i, name in enumerate(_unique(self.files)):
            det, im = self.pred[i].cpu().numpy(), self._originals[i]
            for *box, conf, c in det.tolist():
                label = f"{self.names.get(int(c), str(int(c)))} {conf:.2f}"
                crops.append({"box": box, "conf": conf, "cls": int(c), "label": label, "im": crop_box(box, im)})
            if writer is not None:
                writer.save(det, np.ascontiguousarray(im[..., ::-1]), self.names, Path(name).stem)
        if writer is not None:
            LOGGER.info(f"Saved {writer.saved} crop(s) to {writer.dir}")
        return crops

    def pandas(self) -> Detections:
        """A copy whose ``xyxy``, ``xyxyn``, ``xywh``, ``xywhn`` are lists of DataFrames (one per image) with
        YOLOv5's columns: xmin ymin xmax ymax (or xcenter ycenter width height) confidence class name."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Detections.pandas() needs pandas (pip install pandas); the tensors are in "
                              ".xyxy / .xywh / .xyxyn / .xywhn") from None
        new = copy.copy(self)
        for attr, columns in (("xyxy", XYXY_COLUMNS), ("xyxyn", XYXY_COLUMNS), ("xywh", XYWH_COLUMNS),
                              ("xywhn", XYWH_COLUMNS)):
            setattr(new, attr, [self._frame(pd, x, columns) for x in getattr(self, attr)])
        return new

    def _frame(self, pd, x: Tensor, columns: list[str]):
        rows = [[*r[:5], int(r[5]), self.names.get(int(r[5]), str(int(r[5])))] for r in x.tolist()]
        df = pd.DataFrame(rows, columns=columns)
        return df.astype({c: float for c in columns[:5]} | {"class": int, "name": str})

    def tolist(self) -> list[Detections]:
        """One Detections per image."""
        return [Detections([self._originals[i]], [self.pred[i]], [self.files[i]], self.names, self.t,
                           (1, *self.s[1:])) for i in range(self.n)]

    def _drawn_bgr(self, i: int, labels: bool) -> np.ndarray:
        annotator = Annotator(np.ascontiguousarray(self._originals[i][..., ::-1]))  # a BGR copy, as cv2 draws
        annotator.detections(self.pred[i].cpu().numpy(), self.names, hide_labels=not labels)
        return annotator.result()


def _unique(files: Sequence[str]) -> list[str]:
    """File names for one folder: a repeated name gets ``_2``, ``_3``... before its suffix."""
    seen: set[str] = set()
    out = []
    for f in files:
        name, k = f, 1
        while name in seen:
            k += 1
            name = f"{Path(f).stem}_{k}{Path(f).suffix}"
        seen.add(name)
        out.append(name)
    return out
