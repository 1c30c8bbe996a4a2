"""The YOLOv8 / YOLO11 head (V8Head), its loss (V8Loss) and the Task-Aligned Assigner (tal_assign) on hand-built cases.
The figures against Ultralytics' own code come from bench/crosscheck_ultralytics.py (not run here)."""
from __future__ import annotations

import math

import pytest
import torch
from test_heads import small, targets_for  # tests/ is on sys.path under pytest

from models.heads import HEADS
from models.heads.v8 import V8Head
from models.yolo import DetectionModel, load_cfg
from utils.assigners import ASSIGNERS, assigner_options, tal_assign
from utils.assigners.tal import pairwise_ciou
from utils.boxes import bbox_iou

STRIDE = 8.0


def grid_priors(n: int = 8) -> torch.Tensor:
    """(n * n, 4) cell centres of one stride-8 level, row-major."""
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
    centre = (torch.stack((x, y), -1).view(-1, 2) + 0.5) * STRIDE
    return torch.cat((centre, torch.full_like(centre, STRIDE)), 1)


def one_image(gt: list[list[float]], pred_boxes: torch.Tensor, logits: torch.Tensor | None = None, nc: int = 2,
              labels: list[int] | None = None) -> dict:
    n = pred_boxes.shape[0]
    return {"pred_boxes": pred_boxes[None], "pred_obj_logits": None, "priors": grid_priors(math.isqrt(n)),
            "pred_cls_logits": (torch.zeros(n, nc) if logits is None else logits)[None],
            "gt_boxes": torch.tensor([gt]), "gt_labels": torch.tensor([labels or [0] * len(gt)]),
            "gt_mask": torch.ones(1, len(gt), dtype=torch.bool)}


def boxes_at_priors(half: float = 6.0) -> torch.Tensor:
    centre = grid_priors()[:, :2]
    return torch.cat((centre - half, centre + half), 1)


# ------------------------------------------------------------------ TAL
def test_tal_is_registered_with_ultralytics_defaults():
    assert ASSIGNERS["tal"] is tal_assign
    assert assigner_options("tal") == {"topk": 10, "alpha": 0.5, "beta": 6.0, "min_size": 0.0, "ciou": True}


def test_tal_takes_the_topk_aligned_candidates_inside_the_box():
    gt = [4.0, 4.0, 60.0, 60.0]  # holds the centres of cells 0..6 per axis: 49 candidates
    pred = torch.tensor(gt).expand(64, 4)  # every prediction is the gt box: the class score decides
    logits = torch.full((64, 2), -4.0)
    best = torch.tensor([9, 18, 27, 36, 45])
    logits[best, 0] = 4.0
    logits[best + 1, 1] = 9.0  # the wrong class scores nothing
    logits[63, 0] = 8.0  # the outside cell (centre 60, 60 is not strictly inside) is never a candidate
    res = tal_assign(**one_image([gt], pred, logits), topk=5)
    assert res.fg_mask[0].nonzero().flatten().tolist() == best.tolist()
    assert int(res.num_fg) == 5 and (res.assigned_gt[0, best] == 0).all()


def test_tal_soft_target_is_the_normalised_alignment():
    pred = boxes_at_priors()
    gt = [0.0, 0.0, 32.0, 32.0]
    logits = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    res = tal_assign(**one_image([gt], pred, logits), topk=4)
    fg = res.fg_mask[0]
    u = pairwise_ciou(torch.tensor([[gt]]), pred[None])[0, 0].clamp(0)
    t = logits[:, 0].sigmoid().sqrt() * u.pow(6)
    expected = t * u[fg].max() / (t[fg].max() + 1e-9)
    assert fg.sum() == 4 and torch.allclose(res.matched_iou[0, fg], expected[fg], atol=1e-6)
    # the best-aligned positive's target is the gt's best IoU (up to the 1e-9 epsilon beside metrics of ~1e-6)
    assert math.isclose(float(res.matched_iou[0].max()), float(u[fg].max()), rel_tol=1e-3)
    assert (res.matched_iou[0, ~fg] == 0).all()


def test_tal_prior_claimed_by_two_gts_goes_to_the_higher_ciou():
    pred = boxes_at_priors()
    pred[27] = torch.tensor([20.0, 20.0, 40.0, 40.0])  # cell (3, 3), centre (28, 28): matches gt 1 better
    gts = [[0.0, 0.0, 36.0, 36.0], [16.0, 16.0, 42.0, 42.0]]
    res = tal_assign(**one_image(gts, pred), topk=64)  # every candidate is taken by each gt that contains it
    iou = pairwise_ciou(torch.tensor([gts]), pred[None])[0].clamp(0)
    assert iou[1, 27] > iou[0, 27] > 0
    assert int(res.assigned_gt[0, 27]) == 1
    both = [i for i in range(64) if all(g[0] < c < g[2] for g in gts for c in grid_priors()[i, :2].tolist())]
    for i in both:
        assert int(res.assigned_gt[0, i]) == int(iou[:, i].argmax())


def test_tal_padding_and_empty_images():
    pred = boxes_at_priors()
    base = tal_assign(**one_image([[4.0, 4.0, 40.0, 40.0]], pred))
    padded = one_image([[4.0, 4.0, 40.0, 40.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 60.0, 60.0]], pred, labels=[0, 1, 1])
    padded["gt_mask"] = torch.tensor([[True, False, False]])
    res = tal_assign(**padded)
    assert torch.equal(res.assigned_gt, base.assigned_gt) and torch.equal(res.matched_iou, base.matched_iou)
    two = {k: (torch.cat((v, v)) if k not in ("priors", "pred_obj_logits") else v) for k, v in padded.items()}
    two["gt_mask"] = torch.tensor([[True, False, False], [False, False, False]])  # image 1 has no gt
    res = tal_assign(**two)
    assert torch.equal(res.assigned_gt[0], base.assigned_gt[0]) and (res.assigned_gt[1] == -1).all()
    assert int(res.num_fg) == int(base.num_fg) and (res.matched_iou[1] == 0).all()
    none = {**two, "gt_boxes": torch.zeros(2, 0, 4), "gt_labels": torch.zeros(2, 0, dtype=torch.long),
            "gt_mask": torch.zeros(2, 0, dtype=torch.bool)}
    res = tal_assign(**none)
    assert (res.assigned_gt == -1).all() and int(res.num_fg) == 0


def test_tal_min_size_widens_small_gts_and_ciou_matches_the_loss_form():
    tiny = [[13.0, 13.0, 15.0, 15.0]]  # 2 px: no cell centre (4, 12, 20 ...) inside
    pred = torch.tensor(tiny[0]).expand(64, 4)
    assert int(tal_assign(**one_image(tiny, pred)).num_fg) == 0
    widened = tal_assign(**one_image(tiny, pred), min_size=16.0)  # 16 px about (14, 14): 4 centres inside
    assert widened.fg_mask[0].nonzero().flatten().tolist() == [9, 10, 17, 18]
    pred = boxes_at_priors()
    gt = torch.tensor([[[3.0, 5.0, 40.0, 30.0]]])
    ours = pairwise_ciou(gt, pred[None])[0, 0]
    theirs = bbox_iou(gt[0].expand(64, 4), pred, xywh=False, CIoU=True).squeeze(-1)
    assert torch.allclose(ours, theirs, atol=1e-6)
    with pytest.raises(ValueError, match="topk must be >= 1"):
        tal_assign(**one_image(tiny, pred), topk=0)


# ------------------------------------------------------------------ the head
def head_params(nc: int, ch: tuple[int, ...], variant: str, reg_max: int = 16) -> int:
    """Ultralytics' Detect size from its channel rules: Conv = k*k*c1*c2 (/groups) + BatchNorm 2 * c2."""
    def conv(c1, c2, k, g=1):
        return k * k * c1 * c2 // g + 2 * c2
    c2, c3 = max(16, ch[0] // 4, 4 * reg_max), max(ch[0], min(nc, 100))
    total = reg_max  # the frozen DFL bins
    for x in ch:
        total += conv(x, c2, 3) + conv(c2, c2, 3) + c2 * 4 * reg_max + 4 * reg_max
        if variant == "yolov8":
            total += conv(x, c3, 3) + conv(c3, c3, 3)
        else:
            total += conv(x, x, 3, g=x) + conv(x, c3, 1) + conv(c3, c3, 3, g=c3) + conv(c3, c3, 1)
        total += c3 * nc + nc
    return total


@pytest.mark.parametrize("variant, ultralytics", [("yolov8", 897_664), ("yolo11", 464_912)])
def test_head_parameter_count_is_ultralytics(variant, ultralytics):
    head = V8Head(80, 16, variant, ch=(64, 128, 256))
    assert sum(p.numel() for p in head.parameters()) == head_params(80, (64, 128, 256), variant) == ultralytics
    for nc, ch in ((3, (16, 32, 64)), (150, (320, 640, 640))):
        assert sum(p.numel() for p in V8Head(nc, 16, variant, ch=ch).parameters()) == head_params(nc, ch, variant)


def test_head_rejects_bad_rows_and_label_smoothing():
    assert HEADS["V8Head"] is V8Head
    with pytest.raises(ValueError, match="variant must be one of yolov8, yolo11"):
        V8Head(80, 16, "v9", ch=(64,))
    with pytest.raises(ValueError, match="reg_max must be an integer >= 2"):
        V8Head(80, 1, ch=(64,))
    with pytest.raises(ValueError, match="label smoothing"):
        V8Head(80, ch=(64,)).criterion({}, 64, label_smoothing=0.1)


def test_decode_is_the_integral_from_cell_centres():
    head = V8Head(2, 4, ch=(8,))
    head.initialize(torch.tensor([8.0]))
    raw = torch.full((1, 4 * 4 + 2, 2, 2), -30.0)
    raw[:, [1, 4 + 2, 8 + 3, 12 + 0]] = 30.0  # sides left 1, top 2, right 3, bottom 0 bins (strides)
    y = head.decode([raw])
    # cell (0, 0): centre (0.5, 0.5) -> x1y1 (-0.5, -1.5), x2y2 (3.5, 0.5) strides -> cxcywh (1.5, -0.5, 4, 2) x 8
    torch.testing.assert_close(y[0, 0, :4], torch.tensor([12.0, -4.0, 32.0, 16.0]))
    assert y.shape == (1, 4, 7) and (y[..., 4] == 1).all()
    head.export = True
    torch.testing.assert_close(head.decode([raw]), y)
    assert not head.dfl.conv.weight.requires_grad


# ------------------------------------------------------------------ the loss
def tiny(name: str = "yolov5n-v8head.yaml") -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel(small(load_cfg(name)[0]))


def test_loss_finite_with_gradients_and_zero_box_terms_without_targets():
    model = tiny().train()
    assert "model.24.dfl.conv.weight" in model.frozen_parameters()
    crit = model.criterion({}, 64)
    assert crit.loss_names == ("box", "cls", "dfl") and crit.assigner_name == "tal"
    imgs, targets = torch.rand(2, 3, 64, 64), targets_for(2)
    loss, items = crit(model(imgs), targets)
    assert torch.isfinite(loss) and (items > 0).all()
    loss.backward()
    head = model.head
    for branch in (head.cv2, head.cv3):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.parameters())
    assert torch.isclose(loss, items.sum() * 2)
    model.zero_grad()
    loss, items = crit(model(imgs), torch.zeros(0, 6))
    assert items[0] == 0 and items[2] == 0 and items[1] > 0  # no positives: only the class term (all negatives)
    loss.backward()


def test_loss_gains_are_hyp_keys_and_tal_options_reach_the_assigner():
    model = tiny().train()
    out, targets = model(torch.rand(2, 3, 64, 64)), targets_for(2)
    base = model.criterion({}, 64)(out, targets)[1]
    scaled = model.criterion({"v8_box": 15.0, "v8_cls": 1.0, "v8_dfl": 3.0}, 64)(out, targets)[1]
    torch.testing.assert_close(scaled, base * 2)
    crit = model.criterion({"tal_topk": 3}, 64)
    assert crit.assigner.keywords == {"topk": 3}
    assert set(V8Head.hyp_ranges) == {"v8_box", "v8_cls", "v8_dfl"} <= set(V8Head.hyp_keys)


def test_yolox_head_with_tal_scores_by_cls_times_obj():
    model = tiny("yolov5n-decoupled-af-tal.yaml").train()
    crit = model.criterion({}, 64)
    assert crit.assigner_name == "tal"
    calls = []
    inner = crit.assigner

    def spy(*args):
        calls.append(args)
        return inner(*args)
    crit.assigner = spy
    loss, _ = crit(model(torch.rand(2, 3, 64, 64)), targets_for(2))
    assert torch.isfinite(loss) and calls[0][2] is not None  # objectness handed to TAL
    boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask = calls[0]
    with_obj = tal_assign(boxes, cls, obj, priors, gt_boxes, gt_labels, gt_mask)
    without = tal_assign(boxes, cls + obj.reshape(*cls.shape[:2], 1), None, priors, gt_boxes, gt_labels, gt_mask)
    assert with_obj.num_fg > 0 and (with_obj.matched_iou <= 1).all()
    assert not torch.equal(with_obj.matched_iou, without.matched_iou)  # the product of sigmoids, not of logits' sum


def test_prediction_plots_skip_infinite_boxes():
    """An early YOLOX-type model may decode an infinite box (exp of a large logit); val.py's plots draw the rest
    (found by the 1-epoch smoke run of yolov5n-decoupled-af-tal.yaml)."""
    from utils.evaluation.plots import plot_images
    preds = torch.tensor([[0, 1, 32.0, 32.0, 10.0, float("inf"), 0.9], [0, 0, 20.0, 20.0, 8.0, 8.0, 0.8]])
    mosaic = plot_images(torch.rand(1, 3, 64, 64), preds, fname=None)
    assert mosaic.shape[2] == 3
