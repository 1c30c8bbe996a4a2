"""COCO JSON and Pascal VOC XML datasets, read where they lie: a split of a data YAML may be
``{coco: annotations/instances_val2017.json, images: val2017}`` or
``{voc: VOCdevkit/VOC2007, set: test}`` (a list of such entries and plain YOLO paths also works).

Read directly, not converted to the YOLO layout, because:

- the user's folder stays as the tool that made it left it: no second copy of 118k label files, no images moved or
  linked under an ``images/`` folder (YOLO's label rule needs one, COCO and VOC keep images elsewhere), nothing
  stale to regenerate after the annotation file is edited;
- ``val.py --save-json`` scores against the very JSON the split came from (its image and category ids, its crowd
  regions), which a conversion would cut off;
- the expensive part, opening and verifying every image, goes through the same checks and the same label cache as
  YOLO labels (``<json>.cache``, ``ImageSets/Main/<set>.cache``), rebuilt when the annotation file, an image or the
  class names change. Only the JSON is parsed at each start (as torchvision and MMDetection do): about 1 s for
  COCO val2017, 20 s for train2017. VOC XML files are parsed only when the cache is rebuilt.

Handled as the reference loaders do, every skip counted in the label report (utils/data/labels.py ISSUES):

- COCO ``iscrowd: 1`` boxes are no training target (torchvision's detection references drop them) and no target of
  our own mAP in val either (a detection on a crowd counts as a false positive there, as in YOLOv5 whose converted
  labels omit them); ``val.py --save-json`` against the source JSON lets pycocotools treat them as ignore regions.
- Images without annotations are kept as background images (YOLOv5; torchvision's references drop them in train).
- Category ids map to classes by name: class i is the YAML's ``names[i]`` (names may be omitted for COCO: then the
  JSON's categories sorted by id, so COCO's 91 ids with gaps become 80 contiguous classes). Objects of a category
  not in names are skipped.
- Boxes are checked like YOLO rows: zero-area / degenerate boxes dropped, boxes reaching out of the image clipped,
  far outside dropped, duplicates dropped. A COCO bbox is ``[x, y, w, h]`` in pixels from the top-left corner; VOC
  coordinates are 1-based pixel indices (``xmin - 1``, as YOLOv5's VOC conversion and MMDetection do).
- VOC ``difficult`` objects are dropped from train and val, as YOLOv5's VOC.yaml conversion does (so mAP counts a
  detection of one as a false positive, where the VOC devkit ignores it); ``difficult: true`` keeps them as
  ordinary boxes.
- Coordinates are normalised by the size the annotation states (the image entry's width/height, VOC ``<size>``), so
  images resized after labelling keep their boxes; a size differing from the image file is counted.

Bad input: an unreadable or malformed annotation file, or an image it names that does not exist, is a one-line
error naming the file; a bad object (no valid bbox, unknown image id) is a counted skip.
"""
from __future__ import annotations

import difflib
import json
import os
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils import LOGGER
from utils.data.labels import (
    CheckResult,
    ItemCheck,
    _check_boxes,
    _dataset_hash,
    check_image,
    check_items,
)
from utils.data.sources import IMG_FORMATS

SPEC_KEYS = {"coco": ("coco", "images"), "voc": ("voc", "set", "difficult")}  # required key first


# ------------------------------------------------------------------ data YAML entries
def spec_kind(value) -> str | None:
    """'coco' or 'voc' for an annotation-file entry of a data YAML split, None for a YOLO path."""
    if isinstance(value, dict):
        return next((k for k in SPEC_KEYS if k in value), "?")
    return None


def resolve_spec(value: dict, root: Path, key: str, source: Path) -> dict:
    """A split entry ``{coco: ..., images: ...}`` or ``{voc: ..., set: ...}`` checked and with absolute paths."""
    kind = spec_kind(value)
    if kind == "?":
        raise ValueError(f"{source}: '{key}' entry {value!r} is neither a path nor {{coco: <json>, images: <dir>}} "
                         f"nor {{voc: <VOC folder>, set: <name>}}")
    allowed = SPEC_KEYS[kind]
    for k in value:
        if k not in allowed:
            near = difflib.get_close_matches(str(k), allowed, n=1)
            raise ValueError(f"{source}: '{key}' {kind} entry has unknown key {k!r}"
                             + (f", did you mean {near[0]!r}?" if near else f"; valid keys: {list(allowed)}"))
    if kind == "coco" and "images" not in value:
        raise ValueError(f"{source}: '{key}' coco entry needs 'images' (the folder of the JSON's file_name paths)")
    out = dict(value)
    for k in ("coco", "images", "voc"):
        if k in out:
            if not isinstance(out[k], str):
                raise ValueError(f"{source}: '{key}' {kind} entry: {k!r} must be a path, got {out[k]!r}")
            out[k] = str((root / out[k]).resolve())
    if "difficult" in out and not isinstance(out["difficult"], bool):
        raise ValueError(f"{source}: '{key}' voc entry: 'difficult' must be true or false, got {out['difficult']!r}")
    return out


def spec_exists(spec: dict) -> bool:
    return Path(spec.get("coco") or Path(spec["voc"]) / "Annotations").exists()


def coco_names(json_file: str | Path) -> dict[int, str]:
    """Class names of a COCO JSON: its categories sorted by id (COCO's 91 ids with gaps -> 80 classes)."""
    cats = sorted(_read_json(json_file)["categories"], key=lambda c: c["id"])
    return {i: str(c["name"]) for i, c in enumerate(cats)}


# ------------------------------------------------------------------ one image's annotations
@dataclass
class Annotated:
    """The objects of one image as the annotation file gives them, before the box checks."""

    im_file: str
    source: str  # the annotation file, for messages
    size: tuple[int, int] | None  # (w, h) the pixel coordinates refer to; None: the image file's
    cls: np.ndarray  # (k,) class index
    xyxy: np.ndarray  # (k, 4) pixels, 0-based
    ids: np.ndarray  # (k,) annotation id (COCO) or object number (VOC), for messages
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # (kind, count, example)

    def skip(self, kind: str, example: str) -> None:
        for i, (k, n, ex) in enumerate(self.skipped):
            if k == kind:
                self.skipped[i] = (k, n + 1, ex)
                return
        self.skipped.append((kind, 1, example))


def check_annotated(ann: Annotated, nc: int | None) -> ItemCheck:
    """Image check plus YOLO's box checks on the boxes normalised by the annotated size."""
    shape, problem = check_image(ann.im_file)
    if problem is not None:
        return ItemCheck(None, shape, found=True, issues=[(problem[0], 1, problem[1])])
    size = ann.size if ann.size and min(ann.size) > 0 else shape
    issues = list(ann.skipped)
    if tuple(size) != tuple(shape):
        what = f"{ann.source}: annotated {size[0]}x{size[1]}, {ann.im_file} is {shape[0]}x{shape[1]}"
        issues.append(("size_mismatch", 1, what))
    if len(ann.cls) == 0:
        return ItemCheck(np.zeros((0, 5), np.float32), shape, found=True, empty=True, issues=issues)
    xyxy = ann.xyxy / np.array([size[0], size[1], size[0], size[1]], np.float64)
    vrange = np.stack((xyxy.min(1), xyxy.max(1)), 1)
    row = "annotation id " if ann.source.endswith(".json") else "object "
    item = _check_boxes(ann.cls.astype(np.float64), xyxy, vrange, ann.ids, ann.source, nc, row=row)
    item.shape, item.issues = shape, issues + item.issues
    return item


# ------------------------------------------------------------------ COCO JSON
def _read_json(json_file: str | Path) -> dict:
    try:
        with open(json_file, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO annotation file {json_file} not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_file}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(d, dict) or k not in d]
    if missing:
        raise ValueError(f"{json_file}: not a COCO instances file, missing {missing}")
    return d


def read_coco(json_file: str | Path, images: str | Path, names: dict[int, str]) -> list[Annotated]:
    """Per image of a COCO instances JSON (sorted by file path): its non-crowd objects of known classes."""
    d, json_file, images = _read_json(json_file), str(json_file), Path(images)
    class_of = {n: i for i, n in names.items()}
    cat_cls = {c["id"]: class_of.get(str(c["name"]), -1) for c in d["categories"]}
    unmatched = sorted(str(c["name"]) for c in d["categories"] if str(c["name"]) not in class_of)
    if unmatched:
        LOGGER.warning(f"WARNING: {json_file}: categories {unmatched[:10]} are not in the data YAML's names: "
                       f"their objects are skipped")
    by_id: dict = {}
    for im in d["images"]:
        f = images / str(im["file_name"])
        if im["id"] in by_id:
            raise ValueError(f"{json_file}: image id {im['id']!r} appears twice in 'images'")
        if not f.is_file():
            raise FileNotFoundError(f"{json_file}: image {im['file_name']!r} (id {im['id']}) not found in {images}")
        by_id[im["id"]] = Annotated(str(f), json_file, (int(im.get("width") or 0), int(im.get("height") or 0)),
                                    np.zeros(0), np.zeros((0, 4)), np.zeros(0, np.int64))
    rows: dict = defaultdict(list)
    orphans = []
    for a in d["annotations"]:
        ann = by_id.get(a.get("image_id"))
        if ann is None:
            orphans.append(a.get("id"))
            continue
        rows[a["image_id"]].append(a)
    if orphans:
        LOGGER.warning(f"WARNING: {json_file}: {len(orphans)} annotation(s) name an image id not in 'images', "
                       f"skipped (e.g. annotation id {orphans[0]})")
    for iid, anns in rows.items():
        _fill_coco(by_id[iid], anns, cat_cls)
    return sorted(by_id.values(), key=lambda a: a.im_file)


def _fill_coco(ann: Annotated, anns: list[dict], cat_cls: dict) -> None:
    cls, boxes, ids = [], [], []
    for a in anns:
        where = f"{ann.source}:annotation id {a.get('id')}"
        if a.get("iscrowd"):
            ann.skip("crowd", f"{where}: iscrowd=1")
            continue
        box = a.get("bbox")
        try:
            x, y, w, h = (float(v) for v in box)
            ok = np.isfinite([x, y, w, h]).all()
        except (TypeError, ValueError):
            ok = False
        if not ok:
            ann.skip("malformed", f"{where}: bbox {box!r} is not 4 finite numbers")
            continue
        c = cat_cls.get(a.get("category_id"), -1)
        if c < 0:
            ann.skip("unknown_class", f"{where}: category_id {a.get('category_id')!r}")
            continue
        cls.append(c)
        boxes.append((x, y, x + w, y + h))
        ids.append(a.get("id", -1))
    ann.cls, ann.xyxy = np.array(cls, np.int64), np.array(boxes, np.float64).reshape(-1, 4)
    ann.ids = np.array(ids)


def coco_ids(spec: dict, names: dict[int, str]) -> tuple[dict[str, int], list[int]]:
    """For ``val.py --save-json`` against a COCO split's own JSON: image file -> its image id, and the category id
    of each class index (-1 for a class the JSON lacks)."""
    d = _read_json(spec["coco"])
    images = Path(spec["images"])
    ids = {str(images / str(im["file_name"])): im["id"] for im in d["images"]}
    cat_of = {str(c["name"]): c["id"] for c in d["categories"]}
    return ids, [cat_of.get(names[i], -1) for i in sorted(names)]


# ------------------------------------------------------------------ VOC XML
def voc_files(voc: str | Path, image_set: str | None) -> tuple[list[str], list[str], Path]:
    """(images, XML files, cache path) of a VOC folder: the ids of ``ImageSets/Main/<set>.txt``, or every
    ``Annotations/*.xml`` without a set; images ``JPEGImages/<id>.jpg`` (or another image suffix)."""
    voc = Path(voc)
    if image_set:
        list_file = voc / "ImageSets" / "Main" / f"{image_set}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"VOC image set {list_file} not found")
        ids = [ln.split()[0] for ln in list_file.read_text().splitlines() if ln.strip()]
        cache = list_file.with_suffix(".cache")
    else:
        ids = sorted(p.stem for p in (voc / "Annotations").glob("*.xml"))
        cache = voc / "Annotations.cache"
    if not ids:
        raise FileNotFoundError(f"no VOC annotations in {voc} (set {image_set!r})")
    im_files = [_voc_image(voc, i) for i in ids]
    order = sorted(range(len(ids)), key=lambda k: im_files[k])
    return [im_files[k] for k in order], [str(voc / "Annotations" / f"{ids[k]}.xml") for k in order], cache


def _voc_image(voc: Path, image_id: str) -> str:
    f = voc / "JPEGImages" / f"{image_id}.jpg"
    if f.is_file():
        return str(f)
    other = [p for p in (voc / "JPEGImages").glob(f"{image_id}.*") if p.suffix[1:].lower() in IMG_FORMATS]
    if not other:
        raise FileNotFoundError(f"VOC image {f} not found (annotation {voc / 'Annotations' / image_id}.xml)")
    return str(other[0])


def read_voc_xml(xml_file: str, im_file: str, names: dict[int, str], keep_difficult: bool) -> Annotated:
    """One VOC XML file's objects; 1-based pixel coordinates made 0-based."""
    try:
        root = ET.parse(xml_file).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(f"VOC annotation {xml_file} not found (image {im_file})") from None
    except ET.ParseError as e:
        raise ValueError(f"{xml_file}: malformed XML ({e})") from None
    try:
        size = (int(float(root.findtext("size/width"))), int(float(root.findtext("size/height"))))
    except (TypeError, ValueError):
        size = None
    ann = Annotated(im_file, xml_file, size, np.zeros(0), np.zeros((0, 4)), np.zeros(0, np.int64))
    class_of = {n: i for i, n in names.items()}
    cls, boxes, ids = [], [], []
    for k, obj in enumerate(root.iter("object"), 1):
        where, name = f"{xml_file}:object {k}", (obj.findtext("name") or "").strip()
        try:
            box = [float(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
            difficult = int(float(obj.findtext("difficult") or 0))
            ok = np.isfinite(box).all()
        except (TypeError, ValueError):
            ok = False
        if not ok:
            ann.skip("malformed", f"{where}: no numeric bndbox xmin/ymin/xmax/ymax (or a non-numeric difficult)")
        elif name not in class_of:
            ann.skip("unknown_class", f"{where}: name {name!r}")
        elif difficult and not keep_difficult:
            ann.skip("difficult", f"{where}: difficult=1")
        else:
            cls.append(class_of[name])
            boxes.append([v - 1 for v in box])
            ids.append(k)
    ann.cls, ann.xyxy = np.array(cls, np.int64), np.array(boxes, np.float64).reshape(-1, 4)
    ann.ids = np.array(ids, np.int64)
    return ann


# ------------------------------------------------------------------ a split
def load_spec(spec: dict, names: dict[int, str] | None, prefix: str = "") -> tuple[list[str], CheckResult]:
    """(image files, checked labels) of one COCO or VOC split entry, through the label cache."""
    if not names:
        raise ValueError(f"{prefix}a {spec_kind(spec)} split needs the data YAML's class names")
    nc, key = len(names), json.dumps(names, sort_keys=True)
    if spec_kind(spec) == "coco":
        anns = read_coco(spec["coco"], spec["images"], names)
        im_files = [a.im_file for a in anns]
        h = _dataset_hash(im_files, [spec["coco"]], nc, f"coco {key}")
        res = check_items(anns, lambda a: check_annotated(a, nc), h, Path(spec["coco"]).with_suffix(".cache"),
                          prefix)
        return im_files, res
    keep = bool(spec.get("difficult", False))
    im_files, xml_files, cache = voc_files(spec["voc"], spec.get("set"))
    h = _dataset_hash(im_files, xml_files, nc, f"voc difficult={keep} {key}")
    jobs = list(zip(xml_files, im_files))
    res = check_items(jobs, lambda j: check_annotated(read_voc_xml(j[0], j[1], names, keep), nc), h, cache, prefix)
    return im_files, res


def load_split(path, names: dict[int, str] | None, prefix: str = "") -> tuple[list[str], list[str], CheckResult]:
    """Any data YAML split: (image files, label sources, checked labels) of its entries in order; YOLO paths of a
    list are loaded together (one label cache, as YOLOv5), each COCO/VOC entry on its own."""
    from utils.data.config import (  # config imports this module
        img2label_paths,
        list_images,
    )
    from utils.data.labels import _cache_path, check_labels

    entries = path if isinstance(path, (list, tuple)) else [path]
    yolo = [e for e in entries if spec_kind(e) is None]
    parts = []
    if yolo:
        im_files = list_images(yolo if isinstance(path, (list, tuple)) else path)
        if im_files:
            label_files = img2label_paths(im_files)
            nc = len(names) if names else None
            parts.append((im_files, label_files,
                          check_labels(im_files, label_files, nc, _cache_path(path, label_files), prefix)))
    for spec in (e for e in entries if spec_kind(e) is not None):
        im_files, res = load_spec(spec, names, prefix)
        parts.append((im_files, [spec.get("coco") or os.path.join(spec["voc"], "Annotations")] * len(im_files), res))
    return _concat(parts)


def _concat(parts: list) -> tuple[list[str], list[str], CheckResult]:
    if len(parts) == 1:
        return parts[0]
    from utils.data.labels import LabelReport

    rep = LabelReport()
    for _, _, r in parts:
        for k in ("total", "found", "missing", "empty", "corrupt"):
            setattr(rep, k, getattr(rep, k) + getattr(r.report, k))
        for kind, n in r.report.counts.items():
            rep.counts[kind] = rep.counts.get(kind, 0) + n
            rep.examples.setdefault(kind, []).extend(r.report.examples.get(kind, [])[:1])
    return ([f for p in parts for f in p[0]], [f for p in parts for f in p[1]],
            CheckResult([lb for p in parts for lb in p[2].labels],
                        np.concatenate([p[2].shapes for p in parts] or [np.zeros((0, 2), np.int64)]),
                        np.concatenate([p[2].usable for p in parts] or [np.zeros(0, bool)]), rep))
