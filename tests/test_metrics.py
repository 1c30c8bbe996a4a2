"""Metrics: match_predictions, ap_per_class against pycocotools' COCOeval, ConfusionMatrix, fitness."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from utils.evaluation.metrics import ConfusionMatrix, ap_per_class, compute_ap, fitness, match_predictions

IOUV = torch.linspace(0.5, 0.95, 10)
IMG = 640
CELL = 160  # GT boxes sit one per 160 px cell, so a detection never reaches IoU 0.5 with two of them


def _jitter(box: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Shift and rescale an xyxy box by ``level`` (fraction of its size)."""
    w, h = box[2] - box[0], box[3] - box[1]
    cx = (box[0] + box[2]) / 2 + rng.uniform(-level, level) * w
    cy = (box[1] + box[3]) / 2 + rng.uniform(-level, level) * h
    w, h = w * (1 + rng.uniform(-level, level)), h * (1 + rng.uniform(-level, level))
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _random_box(rng: np.random.Generator) -> np.ndarray:
    x1, y1 = rng.uniform(0, IMG - 40, 2)
    w, h = rng.uniform(10, 200, 2)
    return np.array([x1, y1, min(x1 + w, IMG), min(y1 + h, IMG)])


def _image(rng: np.random.Generator, nc: int, n_junk: int, max_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """One image: labels (m, 5) [cls, xyxy] and detections (n, 6) [xyxy, conf, cls] with known errors,
    sorted by confidence as NMS returns them."""
    cells = rng.permutation(16)[: rng.integers(1, max_gt + 1)]
    labels, dets = [], []
    for cell in cells:
        x0, y0 = (cell % 4) * CELL, (cell // 4) * CELL
        w, h = rng.uniform(24, 120, 2)
        cx, cy = x0 + CELL / 2 + rng.uniform(-10, 10), y0 + CELL / 2 + rng.uniform(-10, 10)
        gt = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        c = int(rng.integers(nc))
        labels.append([c, *gt])
        if rng.random() < 0.12:  # missed
            continue
        level = rng.choice([0.005, 0.03, 0.06, 0.1, 0.15, 0.3])  # IoU from ~0.98 down to ~0.3
        box = _jitter(gt, level, rng)
        conf = float(np.clip(0.9 - level * 2 + rng.normal(0, 0.1), 0.06, 0.999))
        cls = c if rng.random() > 0.1 else int((c + 1 + rng.integers(nc - 1)) % nc)  # wrong class
        dets.append([*box, conf, cls])
        dup = _jitter(gt, level * 2 + 0.05, rng)
        if rng.random() < 0.2 and _iou(dup, gt) < _iou(box, gt):  # duplicate: lower conf and lower IoU
            dets.append([*dup, conf * rng.uniform(0.3, 0.95), cls])
    for _ in range(rng.integers(0, 3)):  # confident false positives anywhere
        dets.append([*_random_box(rng), rng.uniform(0.1, 0.9), int(rng.integers(nc))])
    for _ in range(n_junk):  # the low-confidence tail a detector gives at conf-thres 0.001
        dets.append([*_random_box(rng), rng.uniform(0.001, 0.05), int(rng.integers(nc))])
    dets = np.array(dets, dtype=float).reshape(-1, 6)
    return np.array(labels, dtype=float).reshape(-1, 5), dets[np.argsort(-dets[:, 4])]


def _dataset(seed: int, n_images: int = 60, nc: int = 4, n_junk: int = 90, max_gt: int = 4):
    rng = np.random.default_rng(seed)
    return [_image(rng, nc, n_junk, max_gt) for _ in range(n_images)], nc


def _ours(images, close_at_full_recall: bool = True) -> tuple[float, float]:
    tps, confs, pcls, tcls = [], [], [], []
    for labels, dets in images:
        correct = match_predictions(torch.tensor(dets), torch.tensor(labels), IOUV)
        tps.append(correct.numpy())
        confs.append(dets[:, 4])
        pcls.append(dets[:, 5])
        tcls.append(labels[:, 0])
    res = ap_per_class(np.concatenate(tps), np.concatenate(confs), np.concatenate(pcls), np.concatenate(tcls),
                       close_at_full_recall=close_at_full_recall)
    _, _, map50, map5095 = res.mean_results()
    return map50, map5095


def _cocoeval(images, nc: int) -> tuple[float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [], "annotations": [], "categories": [{"id": c + 1, "name": str(c)} for c in range(nc)]}
    dt = []
    for img_id, (labels, dets) in enumerate(images, start=1):
        gt["images"].append({"id": img_id, "width": IMG, "height": IMG})
        for c, x1, y1, x2, y2 in labels:  # ids start at 1: COCOeval treats a matched gt id 0 as unmatched
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": img_id, "category_id": int(c) + 1,
                                      "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                      "iscrowd": 0})
        for x1, y1, x2, y2, conf, c in dets:
            dt.append({"image_id": img_id, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                       "score": conf})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dt), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0])  # mAP50, mAP50-95 (area all, maxDets 100)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_agrees_with_pycocotools(seed):
    """THE acceptance test. Data: 60 images, 4 classes, 1-4 separated GT boxes each; 12 % missed, 10 % wrong
    class, localisation jitter from IoU ~0.98 to ~0.3, duplicates (lower conf and IoU), confident false
    positives, and the long low-confidence tail a detector gives at conf-thres 0.001 (<= 100 per image, as
    COCOeval's maxDets). With separated GT and duplicates that are worse in both conf and IoU, YOLOv5's and
    COCO's matching coincide; the long tail makes YOLOv5's close-at-recall-1 term negligible."""
    pytest.importorskip("pycocotools")
    images, nc = _dataset(seed)
    assert max(len(d) for _, d in images) <= 100
    coco50, coco = _cocoeval(images, nc)
    for close in (True, False):
        ours50, ours = _ours(images, close_at_full_recall=close)
        assert 0.3 < coco < ours50 < 0.95  # the data has real errors: a broken metric cannot sit in the band by luck
        assert abs(ours50 - coco50) < 0.005, (close, ours50, coco50)
        assert abs(ours - coco) < 0.005, (close, ours, coco)


def test_map_sparse_predictions_coco_mode():
    """No low-confidence tail: COCOeval's end of the curve still agrees; YOLOv5's closes the curve at
    (recall 1, precision 0) and reads higher by the triangle beyond each class's last recall."""
    pytest.importorskip("pycocotools")
    images, nc = _dataset(3, n_junk=0, max_gt=8)
    coco50, coco = _cocoeval(images, nc)
    ours50, ours = _ours(images, close_at_full_recall=False)
    assert abs(ours50 - coco50) < 0.005 and abs(ours - coco) < 0.005, (ours50, coco50, ours, coco)
    v5_50, v5 = _ours(images, close_at_full_recall=True)
    assert v5_50 - coco50 > 0.03 and v5 - coco > 0.03


def test_map_perfect_and_empty():
    labels = np.array([[0, 10, 10, 50, 50], [1, 100, 100, 180, 160]], dtype=float)
    dets = np.array([[10, 10, 50, 50, 0.9, 0], [100, 100, 180, 160, 0.8, 1]], dtype=float)
    assert _ours([(labels, dets)]) == pytest.approx((0.995, 0.995), abs=1e-6)  # YOLOv5's familiar 0.995
    assert _ours([(labels, dets)], close_at_full_recall=False) == pytest.approx((1.0, 1.0), abs=1e-6)
    res = ap_per_class(np.zeros((0, 10), bool), np.zeros(0), np.zeros(0), labels[:, 0])
    assert res.ap.shape == (2, 10) and res.mean_results() == (0.0, 0.0, 0.0, 0.0)


def test_compute_ap_ramp_to_recall_one():
    # YOLOv5 closes the curve at (recall 1, precision 0): a class stuck at recall 0.5 with precision 1
    # scores 0.5 (the plateau) + 0.25 (the straight line from (0.5, 1) down to (1, 0)); COCOeval says ~0.5.
    ap, _, _ = compute_ap(np.array([0.5]), np.array([1.0]))
    assert ap == pytest.approx(0.75, abs=1e-9)
    ap, _, _ = compute_ap(np.array([0.5]), np.array([1.0]), close_at_full_recall=False)
    assert ap == pytest.approx(51 / 101, abs=1e-4)  # COCOeval: 51 of its 101 recall points have precision 1
    ap, _, _ = compute_ap(np.array([0.25, 0.5, 0.5, 1.0]), np.array([1.0, 1.0, 0.5, 0.8]), False)
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * 0.8, abs=2e-3)  # the envelope lifts the dip at 0.5 to 0.8


def test_match_predictions_greedy_unique():
    labels = torch.tensor([[0, 0, 0, 10, 10], [0, 100, 100, 110, 110], [1, 200, 200, 210, 210]], dtype=torch.float)
    dets = torch.tensor([
        [0, 0, 10, 10, 0.9, 0],        # perfect on label 0
        [0, 0, 10, 9, 0.8, 0],         # duplicate of label 0 (IoU 0.9): only one can be correct
        [100, 100, 110, 111.5, 0.7, 0],  # label 1 at IoU 10/11.5 = 0.87
        [200, 200, 210, 210, 0.6, 0],  # wrong class on label 2
        [300, 300, 310, 310, 0.5, 1],  # background
    ])
    correct = match_predictions(dets, labels, IOUV)
    assert correct.shape == (5, 10) and correct.dtype == torch.bool
    assert correct[0].all()
    assert not correct[1].any()
    expected = (IOUV <= 10 / 11.5)
    assert torch.equal(correct[2], expected)
    assert not correct[3:].any()
    # each detection keeps its best label; the first (highest-conf) detection wins a label
    dets2 = torch.tensor([[0, 0, 10, 8, 0.9, 0], [0, 0, 10, 10, 0.5, 0]])
    c2 = match_predictions(dets2, labels[:1], IOUV)
    assert c2[0, 0] and not c2[1, 0]  # at IoU 0.5 both qualify: the first one takes it
    assert c2[1, -1] and not c2[0, -1]  # at 0.95 only the perfect box qualifies
    assert match_predictions(dets[:0], labels, IOUV).shape == (0, 10)
    assert not match_predictions(dets, labels[:0], IOUV).any()


def test_confusion_matrix():
    cm = ConfusionMatrix(nc=3, conf=0.25, iou_thres=0.45)
    labels = torch.tensor([[0, 0, 0, 10, 10], [1, 100, 100, 110, 110], [2, 200, 200, 210, 210]], dtype=torch.float)
    dets = torch.tensor([
        [0, 0, 10, 10, 0.9, 0],          # correct class 0
        [100, 100, 110, 110, 0.8, 2],    # label 1 predicted as class 2
        [0, 0, 10, 9, 0.7, 0],           # duplicate on label 0 -> predicted background column
        [300, 300, 310, 310, 0.6, 1],    # background false positive
        [200, 200, 210, 210, 0.1, 2],    # below conf: label 2 is missed
    ])
    cm.process_batch(dets, labels)
    m = cm.matrix
    assert m[0, 0] == 1 and m[2, 1] == 1 and m[3, 2] == 1  # rows predicted, columns true, 3 = background
    assert m[0, 3] == 1 and m[1, 3] == 1
    assert m.sum() == 5
    cm.process_batch(None, labels[:, 0])          # image with labels and no detections
    cm.process_batch(dets[3:4], labels[:0])       # image with no labels: all detections are background FPs
    assert m[3, :3].tolist() == [1, 1, 2] and m[1, 3] == 2
    tp, fp = cm.tp_fp()
    assert tp.tolist() == [1, 0, 0] and fp.tolist() == [1, 2, 1]
    with pytest.raises(ValueError, match="labels of shape"):
        cm.process_batch(dets, labels[:, :3])


def test_plots_written(tmp_path):
    images, nc = _dataset(0, n_images=6, n_junk=5, max_gt=8)
    tps, confs, pcls, tcls = [], [], [], []
    cm = ConfusionMatrix(nc)
    for labels, dets in images:
        tps.append(match_predictions(torch.tensor(dets), torch.tensor(labels), IOUV).numpy())
        confs.append(dets[:, 4]), pcls.append(dets[:, 5]), tcls.append(labels[:, 0])
        cm.process_batch(torch.tensor(dets), torch.tensor(labels))
    ap_per_class(np.concatenate(tps), np.concatenate(confs), np.concatenate(pcls), np.concatenate(tcls),
                 plot=True, save_dir=tmp_path, names={i: f"c{i}" for i in range(nc)})
    cm.plot(tmp_path, names=[f"c{i}" for i in range(nc)])
    for f in ("PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png"):
        assert (tmp_path / f).stat().st_size > 1000, f


def test_fitness():
    x = np.array([[0.5, 0.6, 0.7, 0.4], [1, 1, 0.2, 0.1]])
    assert fitness(x) == pytest.approx([0.1 * 0.7 + 0.9 * 0.4, 0.1 * 0.2 + 0.9 * 0.1])
    assert fitness(np.array([0.0, 0.0, 1.0, 1.0, 5.0])) == pytest.approx([1.0])
