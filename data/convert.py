"""Write a copy of a dataset as COCO JSON or Pascal VOC XML, with a data YAML that reads it.

    python data/convert.py --to coco                        # the built-in shapes dataset -> ../datasets/shapes-coco
    python data/convert.py --to voc --data my.yaml --out /data/my-voc

The boxes written are the source's as written (YOLO rows at full float precision, before the label checks, which
the copy then goes through the same way), so the copy reads back to the same labels and trains exactly as the
source. Images are hard-linked (copied across file systems).
COCO: <out>/<split>/*.jpg, <out>/annotations/instances_<split>.json (category ids 1..nc, image ids 1..n).
VOC: <out>/VOCdevkit/VOC/{JPEGImages, Annotations, ImageSets/Main/<split>.txt}, image ids ``<split>_<stem>``
(1-based pixel coordinates, no object marked difficult).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from utils import LOGGER  # noqa: E402
from utils.data.annotations import load_split  # noqa: E402
from utils.data.config import check_dataset  # noqa: E402
from utils.data.labels import _fast_rows, _rows_to_boxes  # noqa: E402

SPLITS = ("train", "val", "test")


def read_split(path, names: dict[int, str]) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """(image files, boxes (n, 5) ``cls x1 y1 x2 y2`` normalised float64, shapes (N, 2) w h) of a split's usable
    images. YOLO label rows are taken as written (float64, before the checks), so a copy read back goes through
    the same clipping and dropping as the source and gives the same float32 labels."""
    im_files, label_files, res = load_split(path, names)
    keep = np.flatnonzero(res.usable)
    boxes = [_source_boxes(label_files[i], res.labels[i]) for i in keep]
    return [im_files[i] for i in keep], boxes, np.asarray(res.shapes)[keep]


def _source_boxes(label_file: str, checked: np.ndarray) -> np.ndarray:
    text = Path(label_file).read_text(encoding="utf-8") if label_file.endswith(".txt") and os.path.isfile(
        label_file) else None
    rows = [ln.split() for ln in text.splitlines() if ln.strip()] if text is not None else []
    if rows:
        parsed = _fast_rows(rows) or _rows_to_boxes(rows, label_file, list(range(1, len(rows) + 1)))
        return np.concatenate((parsed[0][:, None], parsed[1]), 1)
    xy, wh = checked[:, 1:3].astype(np.float64), checked[:, 3:5].astype(np.float64)
    return np.concatenate((checked[:, :1].astype(np.float64), xy - wh / 2, xy + wh / 2), 1)


def pixel_xyxy(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    """(n, 5) cls x1 y1 x2 y2 normalised -> (n, 4) xyxy pixels, float64."""
    return boxes[:, 1:5].astype(np.float64) * np.array([w, h, w, h], np.float64)


def _place_image(src: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_coco(json_file: Path, images_dir: Path, im_files: list[str], boxes: list[np.ndarray], shapes: np.ndarray,
               names: dict[int, str], category_ids: list[int] | None = None) -> Path:
    """A COCO instances JSON of these images (placed in ``images_dir``) and boxes (per image (n, 5) ``cls x1 y1 x2
    y2`` normalised); class i gets ``category_ids[i]`` (default i + 1)."""
    cat = category_ids or [i + 1 for i in range(len(names))]
    images, annotations = [], []
    for k, (f, lb, (w, h)) in enumerate(zip(im_files, boxes, shapes.tolist()), 1):
        _place_image(f, images_dir / Path(f).name)
        images.append({"id": k, "file_name": Path(f).name, "width": int(w), "height": int(h)})
        for c, (x1, y1, x2, y2) in zip(lb[:, 0].astype(int).tolist(), pixel_xyxy(lb, w, h).tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": cat[c],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    categories = [{"id": cat[i], "name": n, "supercategory": "object"} for i, n in sorted(names.items())]
    json_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_file


def voc_xml(filename: str, w: int, h: int, objects: list[tuple[str, list[float], int]]) -> str:
    """A VOC annotation: ``objects`` as (name, [xmin, ymin, xmax, ymax] 1-based pixels, difficult)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, v in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    for name, box, difficult in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bnd = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bnd, tag).text = repr(float(v))
    return ET.tostring(root, encoding="unicode")


def write_voc(voc: Path, image_set: str, im_files: list[str], boxes: list[np.ndarray], shapes: np.ndarray,
              names: dict[int, str]) -> Path:
    """Images and XML files of one split (boxes as in ``write_coco``) into a VOC folder, listed in
    ImageSets/Main/<image_set>.txt."""
    ids = []
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    for f, lb, (w, h) in zip(im_files, boxes, shapes.tolist()):
        image_id = f"{image_set}_{Path(f).stem}"
        _place_image(f, voc / "JPEGImages" / f"{image_id}{Path(f).suffix}")
        objects = [(names[c], [v + 1 for v in box], 0)
                   for c, box in zip(lb[:, 0].astype(int).tolist(), pixel_xyxy(lb, w, h).tolist())]
        (voc / "Annotations" / f"{image_id}.xml").write_text(voc_xml(Path(f).name, w, h, objects))
        ids.append(image_id)
    sets = voc / "ImageSets" / "Main"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / f"{image_set}.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc


def convert(data: str | Path, to: str, out: str | Path | None = None) -> Path:
    """Write ``data``'s splits as COCO JSON or VOC XML under ``out``; returns the new data YAML."""
    if to not in ("coco", "voc"):
        raise ValueError(f"--to must be 'coco' or 'voc', got {to!r}")
    d = check_dataset(data)
    src = Path(d["yaml_file"])
    out = Path(out) if out else Path(d["path"]).with_name(f"{Path(d['path']).name}-{to}")
    spec = {"path": str(out.resolve())}
    for split in (s for s in SPLITS if d.get(s)):
        im_files, boxes, shapes = read_split(d[split], d["names"])
        if to == "coco":
            rel = f"annotations/instances_{split}.json"
            write_coco(out / rel, out / split, im_files, boxes, shapes, d["names"])
            spec[split] = {"coco": rel, "images": split}
        else:
            write_voc(out / "VOCdevkit" / "VOC", split, im_files, boxes, shapes, d["names"])
            spec[split] = {"voc": "VOCdevkit/VOC", "set": split}
        LOGGER.info(f"{split}: {len(im_files)} images, {sum(len(b) for b in boxes)} boxes -> {to} in {out}")
    spec["names"] = dict(d["names"])
    spec.update({k: d[k] for k in ("imgsz",) if k in d})
    yaml_file = out / f"{src.stem}-{to}.yaml"
    yaml_file.write_text(f"# {src.name} written as {to.upper()} by data/convert.py\n"
                         + yaml.safe_dump(spec, sort_keys=False))
    LOGGER.info(f"wrote {yaml_file}; train with: python train.py --data {yaml_file}")
    return yaml_file


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="shapes.yaml", help="source dataset YAML (path or name in data/)")
    p.add_argument("--to", required=True, choices=("coco", "voc"), help="annotation format to write")
    p.add_argument("--out", default=None, help="output folder (default: the source's path + '-coco' / '-voc')")
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    opt = parse_opt()
    convert(opt.data, opt.to, opt.out)
