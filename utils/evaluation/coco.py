"""COCO-format detections (``val.py --save-json``) and their evaluation with pycocotools.

The JSON is YOLOv5 v7.0's: a list with one row per detection,
``{"image_id": 139, "category_id": 62, "bbox": [x, y, w, h], "score": 0.93061}``, where

- ``image_id`` is the image file's stem as an int when it is numeric (COCO's ``000000000139.jpg`` -> 139), else the
  stem itself; when a set mixes numeric and other stems, every id is the stem string (pycocotools sorts the ids);
- ``category_id`` is COCO's 91-id (``COCO80_TO_91``) when the dataset is COCO, i.e. its 80 class names are
  data/coco.yaml's in that order (coco.yaml, coco128.yaml or a copy), else the class index;
- ``bbox`` is the top-left corner and size in original-image pixels, rounded to 3 decimals; ``score`` to 5.

Shape shorthand: n detections (or labels) of one image; boxes ``xyxy`` in original-image pixels.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from utils import LOGGER
from utils.io.files import yaml_read

COCO_YAML = Path(__file__).resolve().parents[2] / "data" / "coco.yaml"
# COCO's category id of each of its 80 detection classes (ids 1..90; 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 unused)
COCO80_TO_91 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
                32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58,
                59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89,
                90)


def is_coco(names: dict[int, str]) -> bool:
    """The dataset's classes are COCO's 80, in data/coco.yaml's order (so class i is COCO category COCO80_TO_91[i])."""
    if len(names) != 80 or not COCO_YAML.is_file():
        return False
    coco = yaml_read(COCO_YAML)["names"]
    return [names.get(i) for i in range(80)] == [coco.get(i) for i in range(80)]


def image_id(path: str | Path) -> int | str:
    """YOLOv5's rule: the file stem as an int when numeric, else the stem."""
    stem = Path(path).stem
    return int(stem) if stem.isnumeric() else stem


def _xywh_rows(boxes: torch.Tensor) -> list[list[float]]:
    """(n, 4) xyxy -> [[x, y, w, h], ...] top-left corner and size."""
    b = boxes.detach().cpu().double()
    return torch.cat((b[:, :2], b[:, 2:] - b[:, :2]), 1).tolist()


@dataclass
class CocoResults:
    """Detections and labels of a validation, per image, in COCO's JSON shapes."""

    category_ids: list[int]  # COCO category id of each class index
    names: dict[int, str]
    images: list[int | str] = field(default_factory=list)  # image ids in loader order
    detections: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    image_ids: dict[str, int | str] | None = None  # image file -> id (a COCO JSON's own); else YOLOv5's stem rule

    @classmethod
    def for_dataset(cls, names: dict[int, str]) -> CocoResults:
        coco = is_coco(names)
        if coco:
            LOGGER.info("save-json: COCO's 80 classes: category ids mapped to COCO's 91-id scheme")
        return cls(list(COCO80_TO_91) if coco else sorted(names), dict(names))

    def add(self, path: str | Path, pred: torch.Tensor, labels: torch.Tensor) -> None:
        """One image: ``pred`` (n, 6) xyxy, conf, cls and ``labels`` (m, 5) cls, xyxy, original-image pixels."""
        iid = self.image_ids[str(path)] if self.image_ids and str(path) in self.image_ids else image_id(path)
        self.images.append(iid)
        for box, conf, cls in zip(_xywh_rows(pred[:, :4]), pred[:, 4].tolist(), pred[:, 5].tolist()):
            self.detections.append({"image_id": iid, "category_id": self.category_ids[int(cls)],
                                    "bbox": [round(x, 3) for x in box], "score": round(conf, 5)})
        for box, cls in zip(_xywh_rows(labels[:, 1:5]), labels[:, 0].tolist()):
            self.labels.append({"id": len(self.labels) + 1, "image_id": iid, "category_id": self.category_ids[int(cls)],
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})

    def finish(self) -> None:
        """All ids as strings when the stems mix numbers and names; warn when stems repeat."""
        if len({type(i) for i in self.images}) > 1:
            LOGGER.warning("WARNING: save-json: some image stems are numeric and some are not: all image_ids are "
                           "the stem strings")
            for row in self.detections + self.labels:
                row["image_id"] = str(row["image_id"])
            self.images = [str(i) for i in self.images]
        if len(set(self.images)) < len(self.images):
            LOGGER.warning(f"WARNING: save-json: {len(self.images) - len(set(self.images))} image stems repeat "
                           f"(images in different folders?): their detections share an image_id")

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.detections))
        LOGGER.info(f"saved {len(self.detections)} detections to {path}")
        return path

    def ground_truth(self) -> dict:
        """COCO ground truth of the labels seen (for datasets without an official annotation file)."""
        return {"images": [{"id": i} for i in dict.fromkeys(self.images)], "annotations": self.labels,
                "categories": [{"id": self.category_ids[k], "name": v} for k, v in sorted(self.names.items())]}


def coco_eval(gt: dict | Path, pred_json: Path, image_ids: list[int | str]) -> list[float] | None:
    """pycocotools' COCOeval (bbox) of ``pred_json`` against ``gt`` (an annotation file or a ground-truth dict) on
    ``image_ids``; prints its summary and returns its 12 stats (stats[0] mAP50-95, stats[1] mAP50), or None when
    it cannot run."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        LOGGER.info("pycocotools not installed: skipping COCOeval (pip install pycocotools)")
        return None
    detections = json.loads(Path(pred_json).read_text())
    if not detections:
        LOGGER.info("COCOeval: no detections")
        return None
    if isinstance(gt, dict):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
    else:
        coco_gt = COCO(str(gt))
    missing = set(image_ids) - set(coco_gt.getImgIds())
    if missing:
        LOGGER.warning(f"WARNING: COCOeval skipped: {gt} has no image with id {sorted(missing, key=str)[:5]} "
                       f"({len(missing)} missing); image ids are the file stems (an int when numeric)")
        return None
    ev = COCOeval(coco_gt, coco_gt.loadRes(detections), "bbox")
    ev.params.imgIds = sorted(set(image_ids), key=str) if image_ids else ev.params.imgIds
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    LOGGER.info(f"COCOeval (pycocotools): mAP50-95 {ev.stats[0]:.4f}, mAP50 {ev.stats[1]:.4f}")
    return [float(x) for x in ev.stats]
