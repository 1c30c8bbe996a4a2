"""Boxes stay on their objects through letterbox, mosaic, random perspective, flips and rect batches.

Each fixture image holds solid rectangles of unique colours (class c <-> colour c) on black; after
augmentation every box must be filled with its colour and tight around it.
"""
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from utils.data.augmentations import letterbox, mosaic4, random_perspective
from utils.data.dataloaders import create_dataloader

HYP = yaml.safe_load((Path(__file__).resolve().parents[1] / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
NO_COLOUR = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "mixup": 0.0}
# RGB colours from {0, 128, 255}^3 without black and mid grey (too close to the 114 padding)
COLOURS = [c for c in itertools.product((0, 128, 255), repeat=3) if len(set(c)) > 1 or c == (255, 255, 255)]
SIZES = [(96, 128), (128, 96), (120, 120), (80, 140), (140, 90), (100, 100)]  # (h, w)


@pytest.fixture(scope="module")
def rect_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rects")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    c = 0
    for i, (h, w) in enumerate(SIZES):
        im = np.zeros((h, w, 3), np.uint8)
        rows = []
        for j in range(3):  # three side-by-side slots, no overlap
            x0, x1 = sorted(rng.integers(j * w // 3 + 2, (j + 1) * w // 3 - 2, 2))
            x1 = max(x1, x0 + 8)
            y0 = int(rng.integers(2, h // 2))
            y1 = int(rng.integers(y0 + 10, h - 2))
            im[y0:y1, x0:x1] = COLOURS[c][::-1]
            rows.append(f"{c} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}")
            c += 1
        cv2.imwrite(str(root / "images" / f"{i}.png"), im)
        (root / "labels" / f"{i}.txt").write_text("\n".join(rows) + "\n")
    return root


def colour_mask(img_rgb: np.ndarray, c: int, tol: float = 60) -> np.ndarray:
    return np.linalg.norm(img_rgb.astype(float) - COLOURS[c], axis=-1) < tol


def check_boxes(img_chw, targets, filled: bool, margin: int = 2, tight: float = 2, rotated: bool = False) -> int:
    """Every box: (filled) its inside is its colour; the object of that colour under its centre spans it (tight).
    A rotated object cut by the image border has a box from its warped corners, wider than what is
    visible: those are only checked for their colour being inside the box."""
    img = img_chw.permute(1, 2, 0).numpy()  # HWC RGB
    H, W = img.shape[:2]
    for cls, cx, cy, w, h in targets[:, 1:].numpy():
        x1, y1, x2, y2 = (cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H
        assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
        mask = colour_mask(img, int(cls))
        if filled and x2 - x1 > 2 * margin + 1 and y2 - y1 > 2 * margin + 1:
            inner = mask[int(y1) + margin:int(np.ceil(y2)) - margin, int(x1) + margin:int(np.ceil(x2)) - margin]
            assert inner.mean() > 0.97, f"class {cls}: box {x1:.1f},{y1:.1f},{x2:.1f},{y2:.1f} not on its object"
        if rotated and (x1 < 1 or y1 < 1 or x2 > W - 1 or y2 > H - 1):
            inside = mask[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))]
            assert inside.any(), f"class {cls}: border box holds none of its colour"
            continue
        _, parts = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        yc, xc = int((y1 + y2) / 2), int((x1 + x2) / 2)
        ids = np.unique(parts[max(yc - 1, 0):yc + 2, max(xc - 1, 0):xc + 2])
        assert (ids > 0).any(), f"class {cls}: its colour is not at the box centre"
        py, px = np.nonzero(np.isin(parts, ids[ids > 0]))  # the object under the box, not other copies
        got = np.array([px.min(), py.min(), px.max() + 1, py.max() + 1])
        np.testing.assert_allclose(got, [x1, y1, x2, y2], atol=tight, err_msg=f"class {cls} box not tight")
    return len(targets)


def all_items(loader, epochs=(0, 1, 2)):
    for e in epochs:
        loader.dataset.set_epoch(e)
        for imgs, targets, _, _ in loader:
            for i in range(len(imgs)):
                yield imgs[i], targets[targets[:, 0] == i]


@pytest.mark.parametrize("extra", [
    {},  # mosaic + scale + translate + fliplr, YOLOv5's defaults
    {"flipud": 0.5, "scale": 0.9},
])
def test_mosaic_flip_scale_keep_boxes_on_objects(rect_dataset, extra):
    loader, _ = create_dataloader(rect_dataset / "images", 128, 6, 32, hyp={**HYP, **NO_COLOUR, **extra},
                                  augment=True, workers=0, shuffle=True)
    n = sum(check_boxes(im, t, filled=True) for im, t in all_items(loader))
    assert n > 20


def test_rotation_shear_perspective_keep_boxes_tight(rect_dataset):
    hyp = {**HYP, **NO_COLOUR, "degrees": 30.0, "shear": 10.0, "perspective": 0.0005}
    loader, _ = create_dataloader(rect_dataset / "images", 128, 6, 32, hyp=hyp, augment=True, workers=0, shuffle=True)
    n = sum(check_boxes(im, t, filled=False, tight=2.5, rotated=True) for im, t in all_items(loader))
    assert n > 20


def test_letterbox_path_and_rect_val(rect_dataset):
    hyp = {**HYP, **NO_COLOUR, "mosaic": 0.0, "degrees": 5.0}
    loader, _ = create_dataloader(rect_dataset / "images", 128, 6, 32, hyp=hyp, augment=True, workers=0)
    assert sum(check_boxes(im, t, filled=False, tight=2.5, rotated=True) for im, t in all_items(loader)) >= 15 * 3
    loader, ds = create_dataloader(rect_dataset / "images", 128, 2, 32, rect=True, pad=0.5, workers=0)
    shapes = set()
    for imgs, targets, _, _ in loader:
        shapes.add(tuple(imgs.shape[2:]))
        assert imgs.shape[2] % 32 == 0 and imgs.shape[3] % 32 == 0
        for i in range(len(imgs)):
            check_boxes(imgs[i], targets[targets[:, 0] == i], filled=True)
    assert len(shapes) > 1  # batches of different aspect ratios get different shapes
    ar = ds.shapes[:, 1] / ds.shapes[:, 0]
    assert (np.diff(ar) >= 0).all()  # sorted by aspect ratio


def test_tiny_remnants_dropped_and_boxes_clipped():
    rng = np.random.default_rng(0)
    im = np.zeros((100, 100, 3), np.uint8)
    targets = np.array([[0, 2, 40, 26, 60], [1, 60, 60, 90, 90]], np.float32)  # cls xyxy
    out, t = random_perspective(im, targets.copy(), rng=rng, degrees=0, translate=0.0, scale=0.0, shear=0,
                                border=(-25, -25))  # keep the centre 50x50: box 0 keeps a 1 px sliver
    assert out.shape == (50, 50, 3)
    assert t[:, 0].tolist() == [1] and t[0, 1:].tolist() == [35, 35, 50, 50]


def test_identity_perspective_and_mosaic_layout():
    rng = np.random.default_rng(0)
    im = np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    t = np.array([[3, 10, 10, 30, 40]], np.float32)
    out, t2 = random_perspective(im, t.copy(), rng=rng, degrees=0, translate=0, scale=0, shear=0)
    assert np.array_equal(out, im) and np.array_equal(t2, t)
    ims = [np.full((40, 40, 3), k * 50, np.uint8) for k in range(1, 5)]
    labels = [np.array([[k, 0, 0, 40, 40]], np.float32) for k in range(4)]
    canvas, lb = mosaic4(ims, labels, 64, rng)
    assert canvas.shape == (128, 128, 3)
    for k, (x1, y1, x2, y2) in zip(lb[:, 0].astype(int), lb[:, 1:].astype(int)):
        assert (canvas[y1:y2, x1:x2] == (k + 1) * 50).all()


def test_letterbox_semantics():
    im = np.zeros((480, 640, 3), np.uint8)
    out, ratio, (dw, dh) = letterbox(im, (640, 640), auto=False)
    assert out.shape == (640, 640, 3) and ratio == (1.0, 1.0) and (dw, dh) == (0.0, 80.0)
    assert (out[:80] == 114).all() and (out[80:560] == 0).all()
    out, _, (dw, dh) = letterbox(im, 640, auto=True, stride=32)
    assert out.shape == (480, 640, 3) and (dw, dh) == (0.0, 0.0)
    out, ratio, _ = letterbox(np.zeros((100, 50, 3), np.uint8), 320, auto=False, scaleup=False)
    assert ratio == (1.0, 1.0) and out.shape == (320, 320, 3)
    out, ratio, (dw, dh) = letterbox(np.zeros((101, 57, 3), np.uint8), 320, auto=True)
    assert out.shape[0] == 320 and out.shape[1] % 32 == 0 and dw == pytest.approx((out.shape[1] - 181) / 2)


def test_clipped_quad_bounds_exact():
    from utils.boxes import clip_boxes
    from utils.data.augmentations import clipped_quad_bounds

    rng = np.random.default_rng(0)
    xyxy = np.sort(rng.uniform(-50, 150, (50, 2, 2)), axis=1).reshape(50, 4)[:, [0, 2, 1, 3]]
    x1, y1, x2, y2 = xyxy.T
    quads = np.stack([np.stack(c, 1) for c in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))], 1)
    want = clip_boxes(xyxy.copy(), (100, 100))
    want[(want[:, 2] <= want[:, 0]) | (want[:, 3] <= want[:, 1])] = 0
    got = clipped_quad_bounds(quads, 100, 100)
    np.testing.assert_allclose(got[want.any(1)], want[want.any(1)], atol=1e-9)  # axis-aligned: plain clipping
    diamond = np.array([[[10, 0], [0, 10], [-10, 0], [0, -10]]], float)  # covers the image corner
    np.testing.assert_allclose(clipped_quad_bounds(diamond, 100, 100), [[0, 0, 10, 10]])
    phantom = np.array([[[-10, 5], [5, -10], [7, -8], [-8, 7]]], float)  # band x + y in [-5, -1]: never inside
    np.testing.assert_allclose(clipped_quad_bounds(phantom, 100, 100), [[0, 0, 0, 0]])


def test_mosaic_drops_an_object_the_tile_leaves_off_the_canvas():
    """A tile as large as the canvas is cropped by its quadrant: an object in its cut-off corner collapses to a
    point when clipped to the canvas. It has no label after mosaic4, and a point or a line given to the warp
    yields none either (it used to become a box over the whole image)."""
    from utils.data.augmentations import clipped_quad_bounds

    s = 64
    ims = [np.zeros((2 * s, 2 * s, 3), np.uint8)] + [np.zeros((40, 40, 3), np.uint8)] * 3
    labels = [np.array([[0, 2, 2, 20, 20]], np.float32)] + [np.zeros((0, 5), np.float32)] * 3
    for seed in range(20):  # the centre is drawn in [s/2, 3s/2): the top-left tile loses at least s/2 each way
        canvas, lb = mosaic4(ims, labels, s, np.random.default_rng(seed))
        assert len(lb) == 0, lb
        _, t = random_perspective(canvas, lb, rng=np.random.default_rng(seed), border=(-s // 2, -s // 2))
        assert len(t) == 0
    point, line = [[[5.0, 5.0]] * 4], [[[0.0, 10.0], [0.0, 10.0], [0.0, 50.0], [0.0, 50.0]]]
    np.testing.assert_array_equal(clipped_quad_bounds(np.array(point + line), 100, 100), np.zeros((2, 4)))
    flat = np.array([[0, 10, 10, 10, 10], [1, 5, 20, 5, 60], [2, 5, 20, 60, 20]], np.float32)  # point, lines
    for seed in range(20):
        _, t = random_perspective(np.zeros((100, 100, 3), np.uint8), flat.copy(), rng=np.random.default_rng(seed),
                                  degrees=10.0, shear=5.0)
        assert len(t) == 0, t


# colours at the corners of the RGB cube: no blend of the others (or of the black background) comes near one, so
# a pixel of that colour after the warp's interpolation is a pixel of its own object
CUBE = [c for c in itertools.product((0, 255), repeat=3) if any(c)]


def _random_tiles(rng: np.random.Generator):
    """4 black tiles of random sizes holding up to 7 solid, non-overlapping rectangles of the CUBE colours
    (class = colour index), half of them in a tile corner, where mosaic crops most often cut a whole object away."""
    ims = [np.zeros((int(rng.integers(24, 100)), int(rng.integers(24, 100)), 3), np.uint8) for _ in range(4)]
    labels = [[] for _ in range(4)]
    for c, colour in enumerate(CUBE):
        k = int(rng.integers(4))
        h, w = ims[k].shape[:2]
        bw, bh = int(rng.integers(4, w // 2)), int(rng.integers(4, h // 2))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        if rng.random() < 0.5:
            x0, y0 = (0 if rng.random() < 0.5 else w - bw), (0 if rng.random() < 0.5 else h - bh)
        if ims[k][y0:y0 + bh, x0:x0 + bw].any():  # would cover an earlier object
            continue
        ims[k][y0:y0 + bh, x0:x0 + bw] = colour
        labels[k].append([c, x0, y0, x0 + bw, y0 + bh])
    return ims, [np.array(lb, np.float32).reshape(-1, 5) for lb in labels]


@pytest.mark.parametrize("warp", [
    {"degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0},  # hyp.scratch-low
    {"degrees": 15.0, "translate": 0.2, "scale": 0.7, "shear": 5.0, "perspective": 0.0005},
])
def test_random_mosaics_give_boxes_inside_with_area_on_their_objects(warp):
    """Property over random mosaics and warps: every box lies inside the image, has positive width and height,
    and holds pixels of the object it labels."""
    s, boxes = 64, 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        ims, labels = _random_tiles(rng)
        canvas, lb = mosaic4(ims, labels, s, rng)
        img, t = random_perspective(canvas, lb, rng=rng, border=(-s // 2, -s // 2), **warp)
        H, W = img.shape[:2]
        for c, x1, y1, x2, y2 in t:
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H, f"seed {seed}: box {x1, y1, x2, y2} not inside"
            inside = img[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))].astype(float)
            near = np.linalg.norm(inside - CUBE[int(c)], axis=-1) < 60
            assert near.any(), f"seed {seed}: box {x1:.1f},{y1:.1f},{x2:.1f},{y2:.1f} holds none of object {c:g}"
        boxes += len(t)
    assert boxes > 300
