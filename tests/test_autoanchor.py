"""AutoAnchor: keep anchors that fit, refit (k-means + evolution) anchors that do not, through the head."""
import numpy as np
import torch

from models.yolo import DetectionModel
from utils.autoanchor import anchor_stats, check_anchors, kmean_anchors
from utils.data.dataloaders import label_wh


def test_label_wh_scales_to_long_side():
    shapes = np.array([[640, 320], [100, 200]])
    labels = [np.array([[0, 0.5, 0.5, 0.5, 0.5]]), np.zeros((0, 5))]
    wh = label_wh(shapes, labels, 320, np.random.default_rng(0))
    assert wh.shape == (1, 2)
    assert 0.9 * 160 <= wh[0, 0] <= 1.1 * 160 and 0.9 * 80 <= wh[0, 1] <= 1.1 * 80


def test_good_anchors_are_kept():
    anchors = np.array([[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]],
                        [[116, 90], [156, 198], [373, 326]]], dtype=np.float32)
    wh = anchors.reshape(-1, 2).repeat(20, 0) * np.random.default_rng(0).uniform(0.8, 1.2, (180, 2))
    assert check_anchors(wh.astype(np.float32), anchors, thr=4.0) is None


def test_poor_anchors_are_refit_and_improve_bpr():
    rng = np.random.default_rng(0)
    wh = np.concatenate([rng.uniform(4, 8, (200, 2)), rng.uniform(150, 250, (200, 2))]).astype(np.float32)
    anchors = np.full((3, 3, 2), 40.0, dtype=np.float32)
    bpr0, _ = anchor_stats(anchors.reshape(-1, 2), wh, 4.0)
    new = check_anchors(wh, anchors, thr=4.0, gen=200)
    assert new is not None and new.shape == (3, 3, 2)
    bpr1, _ = anchor_stats(new.reshape(-1, 2), wh, 4.0)
    assert bpr1 > bpr0 and bpr1 > 0.98
    areas = new.reshape(-1, 2).prod(1)
    assert (np.diff(areas) >= 0).all()  # smallest first, so P3 gets the small ones


def test_kmean_anchors_count_and_sorted():
    wh = np.random.default_rng(1).uniform(5, 100, (300, 2)).astype(np.float32)
    k = kmean_anchors(wh, 9, gen=50)
    assert k.shape == (9, 2) and (np.diff(k.prod(1)) >= 0).all()


def test_head_fit_priors_updates_grid_units_anchors():
    model = DetectionModel("yolov5n.yaml", nc=2)
    rng = np.random.default_rng(0)
    wh = np.concatenate([rng.uniform(3, 6, (300, 2)), rng.uniform(200, 300, (300, 2))]).astype(np.float32)
    before = model.head.anchors.clone()
    model.head.fit_priors(wh, {"anchor_t": 4.0})
    after_px = model.head.anchors * model.head.stride.view(-1, 1, 1)
    assert not torch.equal(before, model.head.anchors)
    bpr, _ = anchor_stats(after_px.reshape(-1, 2).numpy(), wh, 4.0)
    assert bpr > 0.98
