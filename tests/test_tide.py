"""TIDE breakdown on hand-made scenes with known answers: each error alone moves only its own dAP."""
import numpy as np
import pytest
import torch

from utils.evaluation.bootstrap import match_images
from utils.evaluation.metrics import ap_per_class
from utils.evaluation.tide import ERRORS, tide_errors

A, B, C, D = [0, 0, 100, 100], [200, 200, 300, 300], [400, 400, 500, 500], [600, 0, 700, 100]
C_SHIFTED = [450, 400, 550, 500]  # IoU 1/3 with C
B_SHIFTED = [250, 200, 350, 300]  # IoU 1/3 with B
A_NEAR = [0, 0, 100, 95]  # IoU 0.95 with A
EMPTY = [800, 800, 850, 850]  # overlaps nothing


def labels(*rows):
    return torch.tensor([[c, *box] for c, box in rows], dtype=torch.float32).reshape(-1, 5)


def dets(*rows):
    return torch.tensor([[*box, conf, c] for box, conf, c in rows], dtype=torch.float32).reshape(-1, 6)


BASE_LABELS = [(0, A), (1, B)]
BASE_DETS = [(A, 0.9, 0), (B, 0.9, 1)]


def scene(extra_labels=(), extra_dets=()):
    return tide_errors([dets(*BASE_DETS, *extra_dets)], [labels(*BASE_LABELS, *extra_labels)])


def only(result, error):
    others = {k: v for k, v in result.dap.items() if k != error}
    assert result.dap[error] > 0.01, result.dap
    assert others == pytest.approx({k: 0.0 for k in others}, abs=1e-12), result.dap


def test_perfect_detections():
    r = scene()
    assert r.ap50 == pytest.approx(1.0)
    assert r.dap == pytest.approx({k: 0.0 for k in ERRORS}, abs=1e-12)
    assert r.dap_fp == pytest.approx(0.0, abs=1e-12) and r.dap_fn == pytest.approx(0.0, abs=1e-12)
    assert set(r.counts.values()) == {0}


def test_mislabelled_box_is_only_cls():
    r = scene([(1, C)], [(C, 0.95, 0)])  # on a class-1 label, called class 0
    only(r, "Cls")
    # class 0: FP before its TP -> AP 0.5; class 1: recall 1/2 at precision 1 -> 0.505 (101 points, COCO end)
    assert r.ap50 == pytest.approx((0.5 + 0.505) / 2)
    assert r.dap["Cls"] == pytest.approx(1 - r.ap50)
    assert r.dap_fp == pytest.approx((1 + 0.505) / 2 - r.ap50)
    assert r.dap_fn == pytest.approx((0.5 + 1) / 2 - r.ap50)
    assert r.counts["Cls"] == 1 and r.counts["Missed"] == 0


def test_poorly_localised_box_is_only_loc():
    r = scene([(1, C)], [(C_SHIFTED, 0.95, 1)])
    only(r, "Loc")
    assert r.dap["Loc"] == pytest.approx(1 - r.ap50)
    assert r.counts["Loc"] == 1 and r.counts["Missed"] == 0  # the label it points at is not missed


def test_wrong_class_and_poorly_localised_is_only_both():
    r = scene(extra_dets=[(B_SHIFTED, 0.95, 0)])
    only(r, "Both")
    assert r.dap["Both"] == pytest.approx(0.5 * (1 - 0.5))


def test_duplicate_is_only_dupe():
    r = scene([(0, D)], [(A_NEAR, 0.8, 0), (D, 0.7, 0)])  # the duplicate sits between two true positives
    only(r, "Dupe")
    assert r.dap["Dupe"] == pytest.approx(1 - r.ap50)
    assert r.counts["Dupe"] == 1


def test_background_detection_is_only_bkg():
    r = scene(extra_dets=[(EMPTY, 0.95, 0)])
    only(r, "Bkg")
    assert r.dap["Bkg"] == pytest.approx(r.dap_fp)


def test_undetected_label_is_only_missed():
    r = scene([(1, C)])
    only(r, "Missed")
    assert r.ap50 == pytest.approx((1 + 0.505) / 2)
    assert r.dap["Missed"] == pytest.approx(r.dap_fn) and r.dap_fp == pytest.approx(0.0, abs=1e-12)
    assert r.counts["Missed"] == 1


def test_two_cls_errors_on_one_label_fix_once():
    r = scene([(1, C)], [(C, 0.95, 0), (C, 0.94, 2)])
    assert r.counts["Cls"] == 2
    assert r.ap50 + r.dap["Cls"] == pytest.approx(1.0)  # one becomes the TP, the other is suppressed


def test_cls_error_on_matched_label_is_removed_not_credited():
    r = scene(extra_dets=[(B, 0.95, 0)])  # B is already found by its own class-1 detection
    only(r, "Cls")
    assert r.ap50 + r.dap["Cls"] == pytest.approx(1.0)


def test_images_without_labels_or_detections():
    preds = [dets(*BASE_DETS), dets((EMPTY, 0.95, 0)), dets()]
    labs = [labels(*BASE_LABELS), labels(), labels((1, C))]
    r = tide_errors(preds, labs)
    assert r.counts["Bkg"] == 1 and r.counts["Missed"] == 1
    assert r.dap["Bkg"] > 0 and r.dap["Missed"] > 0
    assert r.dap["Cls"] == r.dap["Loc"] == r.dap["Dupe"] == r.dap["Both"] == 0


def test_detection_order_does_not_matter():
    ex = [(C_SHIFTED, 0.95, 1), (A_NEAR, 0.8, 0)]
    a = tide_errors([dets(*BASE_DETS, *ex)], [labels(*BASE_LABELS, (1, C))])
    b = tide_errors([dets(*reversed([*BASE_DETS, *ex]))], [labels(*BASE_LABELS, (1, C))])
    assert a == b


def test_base_ap_is_val_map50():
    rng = np.random.default_rng(0)
    preds, labs = [], []
    for _ in range(20):
        m = int(rng.integers(0, 6))
        xy = rng.uniform(0, 500, (m, 2))
        lab = np.column_stack((rng.integers(0, 3, m), xy, xy + rng.uniform(20, 100, (m, 2))))
        det = np.column_stack((lab[:, 1:] + rng.normal(0, 8, (m, 4)), rng.random(m), lab[:, 0]))
        bg = np.column_stack((np.tile(rng.uniform(0, 500, (5, 2)), 2) + [0, 0, 40, 40], rng.random(5) * 0.5,
                              rng.integers(0, 3, 5)))
        preds.append(torch.tensor(np.concatenate((det, bg)), dtype=torch.float32))
        labs.append(torch.tensor(lab, dtype=torch.float32).reshape(-1, 5))
    st = match_images(preds, labs)
    ref = ap_per_class(st.tp, st.conf, st.pred_cls, st.target_cls).mean_results()[2]
    assert tide_errors(preds, labs, close_at_full_recall=True).ap50 == pytest.approx(ref, abs=1e-12)


def test_bad_thresholds_are_named():
    with pytest.raises(ValueError, match="t_b=0.6"):
        tide_errors([dets()], [labels()], t_f=0.5, t_b=0.6)
