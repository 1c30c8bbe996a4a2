"""Label files checked once and cached: every image/label pair verified (readable image, label rows, class ids,
coordinates, zero-area and duplicate boxes), the issues counted per kind with examples, the result cached beside
the labels and reused while the files are unchanged (``check_labels``)."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from utils import LOGGER
from utils.data.sources import IMG_FORMATS

CACHE_VERSION = 1
MIN_SIDE = 10  # px; smaller images are rejected
CLIP_TOL = 0.01  # label values this far outside [0, 1] are clipped; further out the row is dropped
CLIP_QUIET = 1e-5  # clipping by less than this (rounding of written labels) is not reported
MIN_WH = 1e-6  # normalised box side at or below which a box has zero area
N_EXAMPLES = 3  # examples kept per issue kind
NUM_THREADS = min(8, os.cpu_count() or 1)
# issue kind -> (description, True if it makes the image/label pair unusable)
ISSUES = {
    "corrupt_image": ("corrupt or truncated image(s)", True),
    "format": ("image(s) in an unsupported format", True),
    "too_small": (f"image(s) smaller than {MIN_SIDE} px", True),
    "unreadable": ("unreadable label file(s)", True),
    "columns": ("label file(s) with a row of the wrong column count", True),
    "non_numeric": ("label file(s) with a non-numeric value", True),
    "class_id": ("label file(s) with a class id that is negative, fractional or >= nc", True),
    "out_of_bounds": ("box(es) with coordinates outside [0, 1] dropped", False),
    "clipped": ("box(es) reaching outside the image clipped to it", False),
    "zero_area": ("zero-area box(es) dropped", False),
    "duplicate": ("duplicate label row(s) dropped", False),
    # COCO JSON / VOC XML datasets (utils/data/annotations.py)
    "crowd": ("crowd box(es) (COCO iscrowd=1) not used as training/val targets", False),
    "difficult": ("VOC object(s) marked difficult skipped (keep them with 'difficult: true')", False),
    "unknown_class": ("object(s) of a class not in the data YAML's names skipped", False),
    "malformed": ("annotation(s) without a valid box skipped", False),
    "size_mismatch": ("image(s) whose annotated size differs from the image file (boxes scaled to the file)", False),
}


# ------------------------------------------------------------------ label checks
@dataclass
class LabelReport:
    """Counts of a label check: label files found / missing / empty, corrupt pairs skipped, and per issue
    kind (see ISSUES) a count and the first examples as ``file:line: what``."""

    total: int = 0
    found: int = 0
    missing: int = 0
    empty: int = 0
    corrupt: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, n: int, example: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n
        ex = self.examples.setdefault(kind, [])
        if len(ex) < N_EXAMPLES:
            ex.append(example)

    def summary(self) -> str:
        return (f"{self.found} found, {self.missing} missing, {self.empty} empty, {self.corrupt} corrupt "
                f"(of {self.total} images; {self.missing + self.empty} backgrounds)")

    def log(self, prefix: str = "", source: str = "") -> None:
        LOGGER.info(f"{prefix}{source}: {self.summary()}")
        for kind, n in self.counts.items():
            LOGGER.warning(f"{prefix}WARNING: {n} {ISSUES[kind][0]}, e.g. " + "; ".join(self.examples[kind]))


@dataclass
class ItemCheck:
    """Outcome for one image/label pair: labels (n, 5) float32 (None if the pair is unusable), the
    EXIF-aware image size (w, h), label file state and the issues found as (kind, count, example)."""

    labels: np.ndarray | None
    shape: tuple[int, int]
    found: bool = False
    empty: bool = False
    issues: list[tuple[str, int, str]] = field(default_factory=list)


def exif_size(img: Image.Image) -> tuple[int, int]:
    """(w, h) as displayed: swapped when the EXIF orientation transposes the image (5-8)."""
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - malformed EXIF: use the stored size
        orientation = None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def check_image(im_file: str) -> tuple[tuple[int, int], tuple[str, str] | None]:
    """(w, h) of an image and the (kind, message) of its problem, or None if it is usable."""
    try:
        with Image.open(im_file) as im:
            im.verify()
        with Image.open(im_file) as im:
            fmt, shape = (im.format or "").lower(), exif_size(im)
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        return (0, 0), ("corrupt_image", f"{im_file}: cannot read image ({type(e).__name__}: {e})")
    if fmt not in IMG_FORMATS:
        return shape, ("format", f"{im_file}: format {fmt or 'unknown'!r} not in {IMG_FORMATS}")
    if min(shape) < MIN_SIDE:
        return shape, ("too_small", f"{im_file}: {shape[0]}x{shape[1]} px, need >= {MIN_SIDE} px per side")
    if fmt in ("jpeg", "jpg") and not _jpeg_complete(im_file):
        return shape, ("corrupt_image", f"{im_file}: truncated JPEG (image data ends early)")
    return shape, None


def _jpeg_complete(im_file: str) -> bool:
    with open(im_file, "rb") as f:
        f.seek(-2, 2)
        if f.read() == b"\xff\xd9":
            return True
    try:  # no end marker: trailing bytes are harmless if the image still decodes fully
        with Image.open(im_file) as im:
            im.load()
        return True
    except OSError:
        return False


def _rows_to_boxes(rows: list[list[str]], lb_file: str, lines: list[int]):
    """Numeric rows -> (cls (k,), xyxy (k, 4), raw value range (k, 2)) or an issue (kind, message)."""
    k = len(rows)
    cls, xyxy, vrange = np.zeros(k), np.zeros((k, 4)), np.zeros((k, 2))
    for j, (row, line) in enumerate(zip(rows, lines)):  # per row only for the rare polygon rows
        try:
            v = np.array(row, dtype=np.float64)
        except ValueError:
            bad = next(t for t in row if not _is_float(t))
            return ("non_numeric", f"{lb_file}:{line}: value {bad!r} is not a number")
        if not np.isfinite(v).all():
            return ("non_numeric", f"{lb_file}:{line}: value {row[int(np.argmin(np.isfinite(v)))]!r} is not finite")
        cls[j] = v[0]
        if len(v) == 5:
            xyxy[j] = v[1] - v[3] / 2, v[2] - v[4] / 2, v[1] + v[3] / 2, v[2] + v[4] / 2
        else:
            xs, ys = v[1::2], v[2::2]
            xyxy[j] = xs.min(), ys.min(), xs.max(), ys.max()
        vrange[j] = v[1:].min(), v[1:].max()
    return cls, xyxy, vrange


def _is_float(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


def _fast_rows(rows: list[list[str]]):
    """Vectorised path for files whose rows are all 5 numeric columns; None when it does not apply."""
    if any(len(r) != 5 for r in rows):
        return None
    try:
        v = np.array(rows, dtype=np.float64)
    except ValueError:
        return None
    if not np.isfinite(v).all():
        return None
    xy, wh = v[:, 1:3], v[:, 3:5]
    return v[:, 0], np.concatenate((xy - wh / 2, xy + wh / 2), 1), np.stack((v[:, 1:].min(1), v[:, 1:].max(1)), 1)


def parse_label_file(lb_file: str, nc: int | None) -> ItemCheck:
    """Read and check one label file (shape is filled in by the caller). Unusable files get labels None."""
    try:
        text = Path(lb_file).read_text(encoding="utf-8")
    except FileNotFoundError:
        return ItemCheck(np.zeros((0, 5), np.float32), (0, 0))
    except (OSError, UnicodeDecodeError) as e:
        return ItemCheck(None, (0, 0), found=True, issues=[("unreadable", 1, f"{lb_file}: {type(e).__name__}: {e}")])
    numbered = [(i + 1, ln.split()) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not numbered:
        return ItemCheck(np.zeros((0, 5), np.float32), (0, 0), found=True, empty=True)
    lines, rows = [n for n, _ in numbered], [r for _, r in numbered]
    for line, row in numbered:
        if not (len(row) == 5 or (len(row) >= 7 and len(row) % 2 == 1)):
            msg = (f"{lb_file}:{line}: {len(row)} columns, expected 5 (class x y w h) "
                   f"or a polygon (class x1 y1 x2 y2 ...)")
            return ItemCheck(None, (0, 0), found=True, issues=[("columns", 1, msg)])
    parsed = _fast_rows(rows) or _rows_to_boxes(rows, lb_file, lines)
    if isinstance(parsed[0], str):
        return ItemCheck(None, (0, 0), found=True, issues=[(parsed[0], 1, parsed[1])])
    return _check_boxes(*parsed, np.asarray(lines), lb_file, nc)


def _check_boxes(cls: np.ndarray, xyxy: np.ndarray, vrange: np.ndarray, lines: np.ndarray, lb_file: str,
                 nc: int | None, row: str = "") -> ItemCheck:
    """Class ids, coordinate range, clipping, zero area and duplicates of one file's boxes (vectorised).
    Messages name ``lb_file:{row}{line}`` (``row``: e.g. 'annotation id ' where lines are not line numbers)."""
    bad_cls = (cls < 0) | (cls != np.round(cls)) | ((cls >= nc) if nc is not None else False)
    if bad_cls.any():
        j = int(np.argmax(bad_cls))
        msg = f"{lb_file}:{row}{lines[j]}: class id {cls[j]:g} not an integer in [0, {nc - 1 if nc else 'nc-1'}]"
        return ItemCheck(None, (0, 0), found=True, issues=[("class_id", 1, msg)])
    item = ItemCheck(None, (0, 0), found=True)
    keep = (vrange[:, 0] >= -CLIP_TOL) & (vrange[:, 1] <= 1 + CLIP_TOL)
    where = f"{lb_file}:{row}"
    _note(item, "out_of_bounds", ~keep, lines, where, lambda j: f"values span [{vrange[j, 0]:g}, {vrange[j, 1]:g}]")
    clipped = np.clip(xyxy, 0, 1)
    moved = keep & (np.abs(clipped - xyxy) > CLIP_QUIET).any(1)
    _note(item, "clipped", moved, lines, where,
          lambda j: f"box {np.round(xyxy[j], 4).tolist()} (xyxy) clipped to [0, 1]")
    wh = clipped[:, 2:] - clipped[:, :2]
    zero = keep & (wh <= MIN_WH).any(1)
    _note(item, "zero_area", zero, lines, where, lambda j: f"box w={wh[j, 0]:g} h={wh[j, 1]:g}")
    keep &= ~zero
    boxes = np.concatenate((cls[:, None], (clipped[:, :2] + clipped[:, 2:]) / 2, wh), 1)[keep].astype(np.float32)
    _, first = np.unique(boxes, axis=0, return_index=True)
    dup = np.ones(len(boxes), bool)
    dup[first] = False
    _note(item, "duplicate", dup, lines[keep], where, lambda j: "repeats an earlier row")
    item.labels = boxes[np.sort(first)]
    item.empty = len(item.labels) == 0
    return item


def _note(item: ItemCheck, kind: str, mask: np.ndarray, lines: np.ndarray, where: str, what) -> None:
    if mask.any():
        j = int(np.argmax(mask))
        item.issues.append((kind, int(mask.sum()), f"{where}{lines[j]}: {what(j)}"))


def verify_image_label(args: tuple[str, str, int | None]) -> ItemCheck:
    """Check one image and its label file; the pair is unusable (labels None) if either is broken."""
    im_file, lb_file, nc = args
    shape, problem = check_image(im_file)
    item = parse_label_file(lb_file, nc)
    item.shape = shape
    if problem is not None:
        item.labels = None
        item.issues.insert(0, (problem[0], 1, problem[1]))
    return item


def _dataset_hash(im_files: list[str], label_files: list[str], nc: int | None, extra: str = "") -> str:
    """md5 of the files' paths, sizes and mtimes, nc and ``extra`` (any other setting the checks depend on)."""
    h = hashlib.md5(f"v{CACHE_VERSION} nc={nc}{' ' + extra if extra else ''}".encode())
    for f in im_files + label_files:
        try:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}\0-\n".encode())
    return h.hexdigest()


@dataclass
class CheckResult:
    """Per image: labels (n, 5) float32, shape (w, h), usable flag; plus the report."""

    labels: list[np.ndarray]
    shapes: np.ndarray  # (N, 2) int (w, h)
    usable: np.ndarray  # (N,) bool
    report: LabelReport


def check_labels(im_files: list[str], label_files: list[str], nc: int | None, cache_path: Path,
                 prefix: str = "") -> CheckResult:
    """Check every image/label-file pair once and cache the outcome in ``cache_path`` (keyed by a hash of the file
    list, sizes, mtimes and nc). A stale or unreadable cache is rebuilt. The report is logged either way."""
    jobs = [(a, b, nc) for a, b in zip(im_files, label_files)]
    return check_items(jobs, verify_image_label, _dataset_hash(im_files, label_files, nc), cache_path, prefix)


def check_items(jobs: list, verify, h: str, cache_path: Path, prefix: str = "") -> CheckResult:
    """``verify(job) -> ItemCheck`` for every job (one per image, run in threads) unless ``cache_path`` holds the
    results for hash ``h``; the results are cached there and their report logged."""
    result = load_cache(cache_path, h)
    if result is None:
        result = _run_checks(jobs, verify, prefix)
        save_cache(cache_path, h, result, prefix)
    result.report.log(prefix, str(cache_path.with_suffix("")))
    return result


def _run_checks(jobs: list, verify, prefix: str) -> CheckResult:
    n = len(jobs)
    rep = LabelReport(total=n)
    labels, shapes, usable = [], np.zeros((n, 2), np.int64), np.zeros(n, bool)
    with ThreadPool(NUM_THREADS) as pool:
        bar = tqdm(pool.imap(verify, jobs, chunksize=16), total=n, desc=f"{prefix}Checking labels",
                   disable=n < 200)
        for i, item in enumerate(bar):
            rep.found += item.found
            rep.missing += not item.found
            rep.empty += item.found and item.empty and item.labels is not None
            rep.corrupt += item.labels is None
            for kind, count, example in item.issues:
                rep.add(kind, count, example)
            shapes[i] = item.shape
            usable[i] = item.labels is not None
            labels.append(item.labels if item.labels is not None else np.zeros((0, 5), np.float32))
            bar.set_postfix_str(f"{rep.found} found, {rep.missing} missing, {rep.empty} empty, {rep.corrupt} corrupt",
                                refresh=False)
    return CheckResult(labels, shapes, usable, rep)


def save_cache(path: Path, h: str, result: CheckResult, prefix: str = "") -> None:
    """Write the check results as an .npz (no pickles) through a temporary file; warn if not writeable."""
    rep = result.report
    meta = json.dumps({"version": CACHE_VERSION, "hash": h, "report": {
        "total": rep.total, "found": rep.found, "missing": rep.missing, "empty": rep.empty, "corrupt": rep.corrupt,
        "counts": rep.counts, "examples": rep.examples}})
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(meta), shapes=result.shapes, usable=result.usable,
                     counts=np.array([len(x) for x in result.labels], np.int64),
                     labels=np.concatenate(result.labels, 0) if result.labels else np.zeros((0, 5), np.float32))
        os.replace(tmp, path)
    except OSError as e:
        LOGGER.warning(f"{prefix}WARNING: cache {path} not saved, folder not writeable ({e})")
        tmp.unlink(missing_ok=True)


def load_cache(path: Path, h: str) -> CheckResult | None:
    """The cached results if ``path`` is readable, of this version and matches ``h``; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta["version"] != CACHE_VERSION or meta["hash"] != h:
                LOGGER.info(f"label cache {path} is stale, rebuilding")
                return None
            counts, flat = z["counts"], z["labels"].astype(np.float32)
            labels = np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []
            return CheckResult(labels, z["shapes"], z["usable"], LabelReport(**meta["report"]))
    except Exception as e:  # noqa: BLE001 - any damage means: rebuild
        LOGGER.warning(f"WARNING: label cache {path} unreadable ({type(e).__name__}: {e}), rebuilding")
        return None


def _cache_path(path, label_files: list[str]) -> Path:
    p = Path(path) if isinstance(path, (str, Path)) else None
    if p is not None and p.is_file() and p.suffix == ".txt":
        return p.with_suffix(".cache")
    return Path(label_files[0]).parent.with_suffix(".cache")
