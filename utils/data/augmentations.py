"""Image augmentations of YOLOv5 v7.0: letterbox, mosaic, random perspective, HSV, flips, mixup and, when the
package is installed, YOLOv5's light Albumentations pipeline.

Shape shorthand:
    H, W: image height and width in pixels      s: the training image size (mosaic canvas is 2s x 2s)
    n: boxes in one image
Images are HWC uint8 BGR numpy arrays (OpenCV order). Label arrays are float (n, 5) rows of
``cls x1 y1 x2 y2`` in pixels of the image they travel with (``xyxy``), except where a function
says ``xywhn`` (centre and size, normalised by W and H, as in YOLO label files).

Every random draw comes from an explicit ``np.random.Generator`` so a caller that seeds it from
(seed, epoch, index) gets the same augmentation on every run, whatever process runs it.
"""
from __future__ import annotations

import math
import random

import cv2
import numpy as np

from utils import LOGGER
from utils.boxes import clip_boxes

FILL = 114  # padding grey of letterbox, mosaic and perspective borders
DEGENERATE = 1e-9  # a quad with area <= this x (1 px + its perimeter)^2 is a point or a line, not an object


def drop_degenerate(labels: np.ndarray) -> np.ndarray:
    """Rows of (n, 5) ``cls xyxy`` labels with positive width and height: an object that clipping moved wholly
    onto an image edge (zero width or height) is not in the image; YOLOv5's ``box_candidates`` drops it after
    the warp only while the warp neither rotates nor shears it into a box with area."""
    return labels[(labels[:, 3] > labels[:, 1]) & (labels[:, 4] > labels[:, 2])]


def round_to_stride(size: int, stride: int, floor: int | None = None) -> int:
    """``size`` rounded up to a multiple of ``stride`` and at least ``floor`` (default: one stride): image
    sizes a strided model can take (train, detect, export)."""
    return max(math.ceil(size / stride) * stride, stride if floor is None else floor)


def letterbox(
    im: np.ndarray,
    new_shape: int | tuple[int, int] = (640, 640),
    color: tuple[int, int, int] = (FILL, FILL, FILL),
    auto: bool = True,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize ``im`` keeping its aspect ratio and pad it to ``new_shape`` ``(h, w)``.

    ``auto``: pad only up to the next multiple of ``stride`` (a minimal rectangle, for inference).
    ``scaleup=False`` never enlarges (val). Returns the image, the ratio ``(r, r)`` and the padding
    ``(dw, dh)`` added on each side (half the total, possibly .5).
    """
    shape = im.shape[:2]  # (h, w)
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = (int(round(shape[1] * r)), int(round(shape[0] * r)))  # (w, h)
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (shape[1], shape[0]) != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, (r, r), (dw, dh)


def augment_hsv(im: np.ndarray, hgain: float, sgain: float, vgain: float, rng: np.random.Generator) -> None:
    """Random hue, saturation and value gains U(1 - g, 1 + g), applied in place through lookup tables."""
    if not (hgain or sgain or vgain):
        return
    r = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    im_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=im)


def box_candidates(
    box1: np.ndarray, box2: np.ndarray, wh_thr: float = 2, ar_thr: float = 100, area_thr: float = 0.1,
    eps: float = 1e-16,
) -> np.ndarray:
    """Boolean mask of boxes worth keeping after a warp: box1 (4, n) before, box2 (4, n) after, ``xyxy``.

    Kept if both sides > ``wh_thr`` px, the area kept > ``area_thr`` of the (scaled) original, and
    the aspect ratio < ``ar_thr``.
    """
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def clipped_quad_bounds(quads: np.ndarray, w: float, h: float) -> np.ndarray:
    """Exact ``xyxy`` bounds of convex quadrilaterals (n, 4, 2) (corners in order) clipped to the image
    ``[0, w] x [0, h]``; all zeros for a quad that does not reach into the image or has no area (a point or
    a line: every image corner passes the inside test of a quad whose edges are all zero).

    The clipped polygon's extremes are among: corners inside the image, crossings of quad edges with
    the image border, and image corners inside the quad. Clipping the corners' bounding box instead
    (YOLOv5) leaves a rotated object cut by the border with a box wider than what is visible of it.
    """
    p, q = quads, np.roll(quads, -1, axis=1)  # edges p -> q, (n, 4, 2)
    d = q - p
    pts = [p]
    ok = [(p[..., 0] >= 0) & (p[..., 0] <= w) & (p[..., 1] >= 0) & (p[..., 1] <= h)]
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, limit, other_limit in ((0, 0.0, h), (0, w, h), (1, 0.0, w), (1, h, w)):
            t = (limit - p[..., axis]) / d[..., axis]
            cross = p + t[..., None] * d
            cross[..., axis] = limit
            other = cross[..., 1 - axis]
            pts.append(cross)
            ok.append((t >= 0) & (t <= 1) & (other >= 0) & (other <= other_limit))
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=quads.dtype)  # (4, 2)
    rel = corners[None, None] - p[:, :, None]  # (n, 4 edges, 4 corners, 2)
    side = d[:, :, None, 0] * rel[..., 1] - d[:, :, None, 1] * rel[..., 0]
    inside = (side >= 0).all(1) | (side <= 0).all(1)  # (n, 4 corners)
    pts.append(np.broadcast_to(corners, p.shape))
    ok.append(inside)
    pts, ok = np.concatenate(pts, 1), np.concatenate(ok, 1)  # (n, k, 2), (n, k)
    lo = np.where(ok[..., None], pts, np.inf).min(1)
    hi = np.where(ok[..., None], pts, -np.inf).max(1)
    out = np.concatenate((lo, hi), 1)
    area = np.abs((p[..., 0] * q[..., 1] - q[..., 0] * p[..., 1]).sum(1)) / 2  # shoelace
    flat = area <= DEGENERATE * (1 + np.linalg.norm(d, axis=-1).sum(1)) ** 2  # rounding-proof for warped corners
    out[~ok.any(1) | flat] = 0
    return np.clip(out, 0, [w, h, w, h])


def _perspective_matrix(
    h: int, w: int, out_h: int, out_w: int, rng: np.random.Generator,
    degrees: float, translate: float, scale: float, shear: float, perspective: float,
) -> tuple[np.ndarray, float]:
    """The 3x3 warp of random_perspective and its scale gain, drawn in YOLOv5's order."""
    C = np.eye(3)
    C[0, 2], C[1, 2] = -w / 2, -h / 2  # centre the image on the origin
    P = np.eye(3)
    P[2, 0], P[2, 1] = rng.uniform(-perspective, perspective), rng.uniform(-perspective, perspective)
    R = np.eye(3)
    a = rng.uniform(-degrees, degrees)
    s = rng.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=s)
    S = np.eye(3)
    S[0, 1] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    S[1, 0] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    T = np.eye(3)
    T[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_w
    T[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_h
    return T @ S @ R @ P @ C, s


def random_perspective(
    im: np.ndarray,
    targets: np.ndarray,
    *,
    rng: np.random.Generator,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: float = 0.1,
    shear: float = 10.0,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``im`` (H, W) to (H + 2 border_y, W + 2 border_x) with a random perspective/rotation/scale/
    shear/translation and move ``targets`` (n, 5) ``cls xyxy`` pixels with it.

    Boxes are warped through their 4 corners, clipped to the output and dropped when the remnant is
    tiny (``box_candidates``); targets without area (``drop_degenerate``) are dropped before the warp.
    Returns the image and the kept targets.
    """
    out_h, out_w = im.shape[0] + border[0] * 2, im.shape[1] + border[1] * 2
    M, s = _perspective_matrix(im.shape[0], im.shape[1], out_h, out_w, rng,
                               degrees, translate, scale, shear, perspective)
    if border[0] != 0 or border[1] != 0 or (M != np.eye(3)).any():
        fill = (FILL, FILL, FILL)
        if perspective:
            im = cv2.warpPerspective(im, M, dsize=(out_w, out_h), borderValue=fill)
        else:
            im = cv2.warpAffine(im, M[:2], dsize=(out_w, out_h), borderValue=fill)
    targets = drop_degenerate(targets)
    n = len(targets)
    if n == 0:
        return im, targets
    xy = np.ones((n * 4, 3))
    xy[:, :2] = targets[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    xy = xy @ M.T
    quads = (xy[:, :2] / xy[:, 2:3] if perspective else xy[:, :2]).reshape(n, 4, 2)
    new = clipped_quad_bounds(quads[:, [0, 3, 1, 2]], out_w, out_h)  # corners in order around the box
    keep = box_candidates(box1=targets[:, 1:5].T * s, box2=new.T, area_thr=0.10)
    targets = targets[keep]
    targets[:, 1:5] = new[keep]
    return im, targets


def mosaic4(
    ims: list[np.ndarray], labels: list[np.ndarray], s: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Place 4 images around a random centre U[s/2, 3s/2] of a 2s x 2s grey canvas (YOLOv5's layout:
    top-left, top-right, bottom-left, bottom-right). ``labels[i]`` are (n, 5) ``cls xyxy`` pixels of
    ``ims[i]``. Returns the canvas and the labels shifted onto it and clipped to it; an object the tile
    leaves wholly off the canvas (clipped to a line or a point) is dropped.
    """
    yc, xc = (int(rng.uniform(s // 2, 2 * s - s // 2)) for _ in range(2))
    canvas = np.full((2 * s, 2 * s, ims[0].shape[2]), FILL, dtype=np.uint8)
    out = []
    for i, (im, lb) in enumerate(zip(ims, labels)):
        h, w = im.shape[:2]
        if i == 0:  # top left
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif i == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif i == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        canvas[y1a:y2a, x1a:x2a] = im[y1b:y2b, x1b:x2b]
        lb = lb.copy()
        lb[:, [1, 3]] += x1a - x1b
        lb[:, [2, 4]] += y1a - y1b
        out.append(lb)
    labels4 = np.concatenate(out, 0) if out else np.zeros((0, 5), np.float32)
    labels4[:, 1:5] = clip_boxes(labels4[:, 1:5].copy(), (2 * s, 2 * s))
    return canvas, drop_degenerate(labels4)


def mixup(
    im: np.ndarray, labels: np.ndarray, im2: np.ndarray, labels2: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size images with a Beta(32, 32) ratio and keep both label sets."""
    r = rng.beta(32.0, 32.0)
    im = (im * r + im2 * (1 - r)).astype(np.uint8)
    return im, np.concatenate((labels, labels2), 0)


def random_flips(
    im: np.ndarray, labels_xywhn: np.ndarray, flipud: float, fliplr: float, rng: np.random.Generator
) -> np.ndarray:
    """Flip up-down with probability ``flipud``, then left-right with ``fliplr``; ``labels_xywhn``
    (n, 5) ``cls cx cy w h`` normalised is updated in place. Returns the (maybe new) image."""
    if rng.random() < flipud:
        im = np.flipud(im)
        labels_xywhn[:, 2] = 1 - labels_xywhn[:, 2]
    if rng.random() < fliplr:
        im = np.fliplr(im)
        labels_xywhn[:, 1] = 1 - labels_xywhn[:, 1]
    return im


class Albumentations:
    """YOLOv5's light pixel-level pipeline (Blur, MedianBlur, ToGray, CLAHE, RandomBrightnessContrast,
    RandomGamma, ImageCompression quality 75-100, each p=0.01) when ``albumentations`` is installed; a no-op
    (and one log line) when it is not. No transform moves pixels, so boxes are unchanged. Each call reseeds the
    pipeline from the item's ``rng``, so the pairing of augmentation draws to (seed, epoch, index) holds."""

    def __init__(self) -> None:
        self.transform = None
        try:
            import albumentations as A  # optional: not in requirements.txt
        except ImportError:
            LOGGER.info("albumentations: not installed, its augmentations are off (pip install albumentations)")
            return
        major = int(str(getattr(A, "__version__", "1")).split(".")[0])
        quality = {"quality_range": (75, 100)} if major >= 2 else {"quality_lower": 75}
        steps = [A.Blur(p=0.01), A.MedianBlur(p=0.01), A.ToGray(p=0.01), A.CLAHE(p=0.01),
                 A.RandomBrightnessContrast(p=0.01), A.RandomGamma(p=0.01), A.ImageCompression(p=0.01, **quality)]
        self.transform = A.Compose(steps)
        LOGGER.info("albumentations: " + ", ".join(f"{type(t).__name__}(p={t.p})" for t in steps))

    def __call__(self, im: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``im`` (H, W, 3) uint8 through the pipeline; no draw from ``rng`` when the package is missing."""
        if self.transform is None:
            return im
        seed = int(rng.integers(2**31))
        if hasattr(self.transform, "set_random_seed"):  # albumentations >= 2
            self.transform.set_random_seed(seed)
            return self.transform(image=im)["image"]
        state = random.getstate(), np.random.get_state()  # 1.x draws from the global RNGs: seed, then restore
        random.seed(seed)
        np.random.seed(seed)
        try:
            return self.transform(image=im)["image"]
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])
